"""`flotilla worker`: one flag per WorkerSettings field; flags override the environment."""

from __future__ import annotations

import os

import pytest

from flotilla.cli import build_parser
from flotilla.settings import WorkerSettings
from flotilla.settings import from_args as settings_from_args


def test_every_setting_has_a_flag() -> None:
    parser = build_parser()
    args = parser.parse_args(["worker"])
    for name in WorkerSettings.model_fields:
        assert hasattr(args, name), f"no --{name.replace('_', '-')} flag"


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        ([], {}, {"queue_prefix": "flotilla", "concurrency": 0}),
        ([], {"FLOTILLA_CONCURRENCY": "3"}, {"concurrency": 3}),
        (["--concurrency", "5"], {"FLOTILLA_CONCURRENCY": "3"}, {"concurrency": 5}),
        (["--queue-prefix", "blue", "--prefetch", "9"], {}, {"queue_prefix": "blue", "prefetch": 9}),
        (["--drain-timeout-s", "2.5"], {}, {"drain_timeout_s": 2.5}),
        (["--aws-endpoint-url", "http://s3.local"], {}, {"aws_endpoint_url": "http://s3.local"}),
    ],
)
def test_flags_override_environment(
    argv: list[str], env: dict[str, str], expected: dict[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in [k for k in os.environ if k.startswith("FLOTILLA_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = settings_from_args(WorkerSettings, build_parser().parse_args(["worker", *argv]))
    for key, value in expected.items():
        assert getattr(settings, key) == value


def test_bad_number_is_rejected() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["worker", "--concurrency", "many"])
