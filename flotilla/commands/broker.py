"""`flotilla broker heal [--watch SECONDS]`: restart the RabbitMQ dead-letter workers that
stopped forwarding the delay chain's messages (flotilla/brokerheal.py).

Exit status: 0 when nothing was held or every held queue moved, 1 when one could not be
moved or the broker did not answer, 2 on a usage error. `--watch` runs until SIGTERM or
Ctrl-C and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
import threading
from typing import Any


def add_parser(subparsers: Any) -> None:
    """Register `flotilla broker`."""
    parser = subparsers.add_parser(
        "broker", help="operate on the RabbitMQ cluster (restart stopped dead-letter workers)")
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    heal = sub.add_parser(
        "heal", help="move the leadership of quorum queues whose dead-letter worker stopped",
        description="Find the quorum queues under the queue prefix that hold dead-lettered "
        "messages their dead-letter worker does not forward (seen twice, --settle seconds "
        "apart) and move each one's leadership to another running node, which restarts the "
        "worker (RabbitMQ 3.10.8 leaves it stopped after the leader of its target queue died; "
        "docs/reliability.md). Talks to the broker through rabbitmqctl.")
    heal.add_argument("--ctl", default=os.environ.get("FLOTILLA_RABBITMQCTL", "rabbitmqctl"),
                      help="the command that runs rabbitmqctl, e.g. 'kubectl exec -n rabbitmq "
                      "flotilla-rabbitmq-server-0 -- rabbitmqctl' (env FLOTILLA_RABBITMQCTL; "
                      "default rabbitmqctl)")
    heal.add_argument("--node", dest="nodes", action="append", default=[], metavar="NODE",
                      help="ask this node (rabbit@host), then the next one given if it does "
                      "not answer (repeatable; default: rabbitmqctl's default node)")
    heal.add_argument("--prefix", default=None,
                      help="queue prefix (default FLOTILLA_QUEUE_PREFIX, else flotilla)")
    heal.add_argument("--vhost", default="/", help="virtual host (default /)")
    heal.add_argument("--settle", type=_seconds, default=2.0,
                      help="seconds between the two looks (default 2)")
    heal.add_argument("--watch", type=_seconds, default=None, metavar="SECONDS",
                      help="sweep every SECONDS until stopped instead of once")
    heal.add_argument("--json", action="store_true", help="print what was done as JSON")
    heal.set_defaults(func=heal_main)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"{text}: give seconds between 0 and 3600")
    return value


def heal_main(args: argparse.Namespace) -> int:
    """One sweep (or a watch); 0, or 1 when a queue stayed stuck or the broker failed."""
    import logging

    from flotilla.brokerheal import BrokerCtlError, DeadLetterDoctor, RabbitmqCtl

    command = shlex.split(args.ctl)
    if not command:
        print("flotilla broker heal: --ctl is empty", file=sys.stderr)
        return 2
    prefix = args.prefix or os.environ.get("FLOTILLA_QUEUE_PREFIX") or "flotilla"
    doctor = DeadLetterDoctor(RabbitmqCtl(command, args.nodes), prefix=prefix,
                              vhost=args.vhost, settle_s=args.settle)
    if args.watch is not None:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        doctor.watch(args.watch, stop)
        return 0
    try:
        moves = doctor.sweep()
    except BrokerCtlError as exc:
        print(f"flotilla broker heal: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps([m.to_dict() for m in moves], indent=1))
    elif not moves:
        print(f"no quorum queue under {prefix!r} holds dead-lettered messages")
    for m in moves if not args.json else []:
        print(f"{m.queue}: {m.held} held, " + (
            f"leadership moved {m.leader} -> {m.to}" if m.moved else f"not moved: {m.reason}"))
    return 0 if all(m.moved for m in moves) else 1
