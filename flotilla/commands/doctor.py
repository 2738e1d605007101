"""`flotilla doctor [--json] [--for USE] [--require CHECK]`: what is here, what is missing.

Exit status: 0 when every required check passes (nothing is required unless --for or
--require says so), 1 when one fails, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

# Kept in step with flotilla.doctor.USES and CHECKS (tests/unit/test_doctor.py checks it);
# listed here so building the parser imports nothing.
USES = ("worker", "dispatcher", "build", "dev")


def add_parser(subparsers: Any) -> None:
    """Register `flotilla doctor`."""
    parser = subparsers.add_parser(
        "doctor",
        help="report versions, call path, services, toolchains and cache; check a use's needs",
        description="Report what this installation and the current settings give Flotilla: "
        "versions, the sandbox's call path (c-extension or ctypes), whether RabbitMQ, Redis "
        "and S3 answer, guest toolchains, installed extras and the compile cache. Exits 1 "
        "when a check required by --for or --require fails.",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--for", dest="uses", action="append", default=[], choices=USES, metavar="USE",
        help=f"make the checks this use needs fatal: {', '.join(USES)} (repeatable)",
    )
    parser.add_argument(
        "--require", dest="requires", action="append", default=[], metavar="CHECK",
        help="make one check fatal, e.g. c-extension, redis, rust (repeatable or "
        "comma-separated; `flotilla doctor --json` lists every check under `checks`)",
    )
    parser.add_argument("--no-services", dest="services", action="store_false",
                        help="skip RabbitMQ, Redis and S3 (e.g. while building an image)")
    parser.add_argument("--timeout", type=_seconds, default=2.0,
                        help="seconds each service may take to answer (default 2)")
    parser.set_defaults(func=main)


def _seconds(text: str) -> float:
    value = float(text)
    if not 0 < value <= 60:
        raise argparse.ArgumentTypeError(f"{text}: give seconds between 0 and 60")
    return value


def main(args: argparse.Namespace) -> int:
    """Print the report; 1 if a required check failed, 2 on a usage error."""
    import logging

    from flotilla import doctor
    from flotilla.doctor.text import format_report

    # Client libraries log connection failures; the report already says what failed.
    logging.getLogger().addHandler(logging.NullHandler())
    names = [n.strip() for value in args.requires for n in value.split(",") if n.strip()]
    try:
        needed = doctor.required(args.uses, names, services=args.services)
    except doctor.UsageError as exc:
        print(f"flotilla doctor: {exc} (checks: {', '.join(doctor.CHECKS)})", file=sys.stderr)
        return 2
    report = doctor.diagnose(services=args.services, timeout=args.timeout)
    failures = doctor.failed(report, needed)
    if args.json:
        report |= {"required": needed, "failed": failures, "ok": not failures}
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(format_report(report, needed, failures))
    return 1 if failures else 0
