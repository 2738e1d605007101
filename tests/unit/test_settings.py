"""Process settings: FLOTILLA_* variables parsed to the fields' types, ranges checked, errors
naming the variable; the environment comes only through `from_env`; the README lists them all."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from flotilla.cli import build_parser
from flotilla.errors import SettingsError
from flotilla.settings import DispatcherSettings, WorkerSettings, env_name, from_args

README = Path(__file__).resolve().parents[2] / "README.md"
Settings = type[WorkerSettings] | type[DispatcherSettings]


@pytest.mark.parametrize(
    ("cls", "environ", "expected"),
    [
        (WorkerSettings, {}, {"concurrency": 0, "prefetch": 0, "metrics_port": 9102}),
        (WorkerSettings, {"FLOTILLA_CONCURRENCY": "3"}, {"concurrency": 3}),
        (WorkerSettings, {"FLOTILLA_CONCURRENCY": ""}, {"concurrency": 0}),  # empty: unset
        (WorkerSettings, {"FLOTILLA_DRAIN_TIMEOUT_S": "2.5"}, {"drain_timeout_s": 2.5}),
        (WorkerSettings, {"FLOTILLA_METRICS_PORT": "0"}, {"metrics_port": 0}),  # any free port
        (WorkerSettings, {"FLOTILLA_AWS_ENDPOINT_URL": "http://s3"},
         {"aws_endpoint_url": "http://s3"}),
        (WorkerSettings, {"FLOTILLA_LOG_FORMAT": "text"}, {"log_format": "text"}),
        (WorkerSettings, {"FLOTILLA_WORKER_PROCESSES": "4"}, {"worker_processes": 4}),
        (WorkerSettings, {"FLOTILLA_LISTEN": "x", "FLOTILLA_API_KEY": "k"}, {}),  # not its own
        (DispatcherSettings, {"FLOTILLA_INSECURE": "true"}, {"insecure": True}),
        (DispatcherSettings, {"FLOTILLA_INSECURE": "0"}, {"insecure": False}),
        (DispatcherSettings, {"FLOTILLA_LISTEN": "[::1]:9000"}, {"listen": "[::1]:9000"}),
        (DispatcherSettings, {"FLOTILLA_REPLY_MARGIN_MS": "0"}, {"reply_margin_ms": 0}),
    ],
)
def test_environment_is_parsed_to_the_fields_types(
    cls: Settings, environ: dict[str, str], expected: dict[str, Any]
) -> None:
    settings = cls.from_env(environ)
    for key, value in expected.items():
        assert getattr(settings, key) == value


@pytest.mark.parametrize(
    ("cls", "variable", "raw", "message"),
    [
        (WorkerSettings, "FLOTILLA_CONCURRENCY", "-1", "must be >= 0, got -1"),
        (WorkerSettings, "FLOTILLA_CONCURRENCY", "many", "must be an integer, got 'many'"),
        (WorkerSettings, "FLOTILLA_PREFETCH", "-4", "must be >= 0, got -4"),
        (WorkerSettings, "FLOTILLA_POISON_RUNS", "0", "must be >= 1, got 0"),
        (WorkerSettings, "FLOTILLA_METRICS_PORT", "65536", "must be <= 65535, got 65536"),
        (WorkerSettings, "FLOTILLA_DRAIN_TIMEOUT_S", "0", "must be > 0, got 0"),
        (WorkerSettings, "FLOTILLA_DRAIN_TIMEOUT_S", "soon", "must be a number, got 'soon'"),
        (WorkerSettings, "FLOTILLA_MAX_ABANDONED_THREADS", "-1", "must be >= 0, got -1"),
        (WorkerSettings, "FLOTILLA_QUEUE_MAX_LENGTH", "0", "must be >= 1, got 0"),
        (WorkerSettings, "FLOTILLA_WORKER_PROCESSES", "-1", "must be >= 0, got -1"),
        (WorkerSettings, "FLOTILLA_WORKER_PROCESSES", "257", "must be <= 256, got 257"),
        (WorkerSettings, "FLOTILLA_LOG_FORMAT", "xml", "must be one of 'json' or 'text'"),
        (WorkerSettings, "FLOTILLA_LOG_LEVEL", "LOUD", "must be one of DEBUG, INFO"),
        (DispatcherSettings, "FLOTILLA_LISTEN", "localhost", "must be host:port"),
        (DispatcherSettings, "FLOTILLA_LISTEN", "127.0.0.1:0", "must be host:port with a port"),
        (DispatcherSettings, "FLOTILLA_LISTEN", "h:65536", "must be host:port with a port"),
        (DispatcherSettings, "FLOTILLA_JOB_TTL_S", "0", "must be >= 1, got 0"),
        (DispatcherSettings, "FLOTILLA_REPLY_MARGIN_MS", "-1", "must be >= 0, got -1"),
        (DispatcherSettings, "FLOTILLA_INSECURE", "maybe", "must be true or false, got 'maybe'"),
    ],
)
def test_bad_value_is_an_error_naming_the_variable(
    cls: Settings, variable: str, raw: str, message: str
) -> None:
    with pytest.raises(SettingsError) as info:
        cls.from_env({variable: raw})
    assert str(info.value).startswith(f"{variable}: {message}")


def test_overrides_and_constructor_arguments_are_checked_alike() -> None:
    with pytest.raises(SettingsError, match=r"^FLOTILLA_CONCURRENCY: must be >= 0, got -2$"):
        WorkerSettings.from_env({}, concurrency=-2)
    with pytest.raises(SettingsError, match=r"^FLOTILLA_METRICS_PORT: must be <= 65535"):
        WorkerSettings(metrics_port=70_000)
    with pytest.raises(SettingsError, match=r"^FLOTILLA_BOGUS: is not a setting"):
        WorkerSettings(bogus=1)
    with pytest.raises(SettingsError, match=r"^FLOTILLA_LISTEN: must be host:port"):
        DispatcherSettings.from_env({}).with_(listen="nowhere")


def test_only_from_env_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOTILLA_CONCURRENCY", "7")
    assert WorkerSettings().concurrency == 0  # the constructor reads its arguments only
    assert WorkerSettings.from_env({}).concurrency == 0  # an injected environment only
    assert WorkerSettings.from_env().concurrency == 7  # os.environ by default
    assert WorkerSettings.from_env(concurrency=None).concurrency == 7  # None: not given


def test_settings_are_frozen() -> None:
    settings = WorkerSettings()
    with pytest.raises(ValueError, match="frozen"):
        settings.concurrency = 3  # type: ignore[misc]
    assert settings.with_(concurrency=3).concurrency == 3
    assert settings.concurrency == 0


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["worker", "--concurrency", "5", "--drain-timeout-s", "1.5"],
         {"concurrency": 5, "drain_timeout_s": 1.5}),
        (["worker", "--log-format", "text"], {"log_format": "text"}),
        (["worker", "--processes", "3"], {"worker_processes": 3}),
        (["worker", "--worker-processes", "3"], {"worker_processes": 3}),
        (["dispatcher", "--insecure", "--job-ttl-s", "60"], {"insecure": True, "job_ttl_s": 60}),
        (["dispatcher", "--no-insecure"], {"insecure": False}),
    ],
)
def test_flags_are_typed_like_their_fields(argv: list[str], expected: dict[str, Any]) -> None:
    cls: Settings = WorkerSettings if argv[0] == "worker" else DispatcherSettings
    settings = from_args(cls, build_parser().parse_args(argv))
    for key, value in expected.items():
        assert getattr(settings, key) == value


@pytest.mark.parametrize(
    "argv",
    [["worker", "--concurrency", "many"], ["worker", "--log-format", "xml"],
     ["dispatcher", "--job-ttl-s", "1.5"]],
)
def test_flag_of_the_wrong_type_is_a_usage_error(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(argv)


def test_flag_out_of_range_names_the_variable() -> None:
    args = build_parser().parse_args(["worker", "--poison-runs", "0"])
    with pytest.raises(SettingsError, match=r"^FLOTILLA_POISON_RUNS: must be >= 1, got 0$"):
        from_args(WorkerSettings, args)


def _readme_settings() -> dict[str, str]:
    """The README's settings table: variable -> "used by"."""
    section = README.read_text().split("## Settings", 1)[1].split("\n## ", 1)[0]
    row = r"^\| `(FLOTILLA_[A-Z_]+)` \| [^|]* \| ([^|]+) \|"
    rows = re.findall(row, section, re.MULTILINE)
    return {name: used_by.strip() for name, used_by in rows}


def test_readme_table_lists_every_setting_with_its_process() -> None:
    table = _readme_settings()
    worker, dispatcher = set(WorkerSettings.model_fields), set(DispatcherSettings.model_fields)
    expected = {env_name(f): "both" for f in worker & dispatcher}
    expected |= {env_name(f): "worker" for f in worker - dispatcher}
    expected |= {env_name(f): "dispatcher" for f in dispatcher - worker}
    # FLOTILLA_API_KEY is read by the CLI's client commands, not by a process's settings.
    assert {k: v for k, v in table.items() if k != "FLOTILLA_API_KEY"} == expected


@pytest.mark.parametrize(
    ("values", "cpus", "processes", "concurrency"),
    [
        ({}, 4, 4, 2),  # one process per CPU, two invocations each
        ({}, 1, 1, 1),  # one CPU: one process with one invocation at a time
        ({"worker_processes": 1}, 4, 1, 4),  # one process: as many invocations as CPUs
        ({"worker_processes": 3}, 1, 3, 2),
        ({"worker_processes": 2, "concurrency": 5}, 8, 2, 5),  # explicit values win
        ({"concurrency": 1}, 2, 2, 1),
    ],
)
def test_processes_and_concurrency_default_from_the_cpus(
    values: dict[str, int], cpus: int, processes: int, concurrency: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("flotilla.settings.available_cpus", lambda: cpus)
    settings = WorkerSettings(**values)
    assert (settings.effective_processes(), settings.effective_concurrency()) == (
        processes, concurrency)
    assert settings.effective_prefetch() == 16 * concurrency  # per process
