"""FLOTILLA_AMQP_URL as a list of broker URLs and FLOTILLA_QUORUM_SIZE (unit tests)."""

from __future__ import annotations

import pytest

from flotilla.cli import build_parser
from flotilla.errors import SettingsError
from flotilla.settings import DispatcherSettings, WorkerSettings, from_args
from flotilla.topology import Topology

A, B = "amqp://u:p@rabbit-0:5672/", "amqp://u:p@rabbit-1:5672/"


@pytest.mark.parametrize(("raw", "expected"), [
    (A, (A,)),
    (f"{A},{B}", (A, B)),
    (f" {A} , {B} ,", (A, B)),  # blanks and a trailing comma are forgiven
])  # fmt: skip
def test_variable_is_a_comma_separated_list(raw: str, expected: tuple[str, ...]) -> None:
    assert WorkerSettings.from_env({"FLOTILLA_AMQP_URL": raw}).amqp_url == expected
    assert DispatcherSettings.from_env({"FLOTILLA_AMQP_URL": raw}).amqp_url == expected


def test_default_is_the_local_broker_and_lists_are_accepted() -> None:
    assert WorkerSettings.from_env({}).amqp_url == ("amqp://guest:guest@127.0.0.1:5672/",)
    assert WorkerSettings(amqp_url=[A, B]).amqp_url == (A, B)
    assert WorkerSettings(amqp_url=[A, B]).with_(concurrency=2).amqp_url == (A, B)


def test_flag_takes_the_same_list() -> None:
    args = build_parser().parse_args(["worker", "--amqp-url", f"{A},{B}", "--quorum-size", "3"])
    settings = from_args(WorkerSettings, args)
    assert (settings.amqp_url, settings.quorum_size) == ((A, B), 3)


@pytest.mark.parametrize(("raw", "message"), [
    ("http://rabbit/", "must be amqp://host... or amqps://host..., got 'http://rabbit/'"),
    ("amqp://", "must be amqp://host..."),
    (f"{A},{A}", "names the same URL twice"),
    (f"{A},amqps://u:p@rabbit-1/", "all URLs must use the same scheme"),
    ("amqp://u:secret@h:port/", "not a URL: 'amqp://***@h:port/'"),  # no password shown
    (" , ", "must name at least one amqp:// URL"),
])  # fmt: skip
def test_bad_lists_are_errors_naming_the_variable(raw: str, message: str) -> None:
    with pytest.raises(SettingsError) as info:
        WorkerSettings.from_env({"FLOTILLA_AMQP_URL": raw})
    assert str(info.value).startswith(f"FLOTILLA_AMQP_URL: {message}")
    assert "secret" not in str(info.value)


def test_quorum_size_is_checked() -> None:
    with pytest.raises(SettingsError, match=r"^FLOTILLA_QUORUM_SIZE: must be >= 0, got -1"):
        WorkerSettings.from_env({"FLOTILLA_QUORUM_SIZE": "-1"})


def test_quorum_size_becomes_the_group_size_of_every_quorum_queue() -> None:
    three = Topology("p", quorum_size=3)
    for args in (three.sync_arguments(), three.job_arguments(), three.job_result_arguments(),
                 three.dead_letter_arguments()):
        assert args["x-queue-type"] == "quorum"
        assert args["x-quorum-initial-group-size"] == 3
    # 0 (the default) sends no argument: queues declared before keep matching.
    assert "x-quorum-initial-group-size" not in Topology("p").job_arguments()
