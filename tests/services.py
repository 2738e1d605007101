"""Real services for integration tests: find them, start them when stopped, fail clearly.

Redis and RabbitMQ are started with the same commands the machine uses at boot; a moto
server (S3 and DynamoDB over HTTP) is started per test session on a free loopback port.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

REDIS_START = [
    "redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "-::1", "--port", "6379",
    "--save", "", "--appendonly", "no", "--dir", "/var/lib/redis",
    "--logfile", "/var/log/redis/ci.log",
]
RABBITMQ_START = ["rabbitmq-server", "-detached"]


def in_ci() -> bool:
    """True under CI=true, where a missing service fails the run instead of skipping."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def unavailable(message: str) -> None:
    """Fail under CI, skip locally: a test must never pass without its service."""
    if in_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for_port(host: str, port: int, timeout: float) -> bool:
    """Poll until host:port accepts connections or `timeout` seconds pass."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if port_open(host, port):
            return True
        time.sleep(0.1)
    return False


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ensure_service(name: str, port: int, start: list[str], timeout: float) -> None:
    """Make sure a local service listens on `port`, starting it if installed but stopped."""
    if port_open("127.0.0.1", port):
        return
    if shutil.which(start[0]) is None:
        unavailable(f"{name} is not running on 127.0.0.1:{port} and {start[0]} is not installed")
    subprocess.run(start, check=False, capture_output=True, timeout=60)
    if not wait_for_port("127.0.0.1", port, timeout):
        unavailable(f"{name} did not come up on 127.0.0.1:{port} after `{' '.join(start)}`")


def ensure_redis() -> str:
    """URL of a running Redis on 127.0.0.1:6379."""
    ensure_service("Redis", 6379, REDIS_START, 20)
    return "redis://127.0.0.1:6379/0"


def ensure_rabbitmq() -> str:
    """URL of a running RabbitMQ on 127.0.0.1:5672."""
    ensure_service("RabbitMQ", 5672, RABBITMQ_START, 90)
    return "amqp://guest:guest@127.0.0.1:5672/"


@contextmanager
def moto_server() -> Iterator[str]:
    """Run a moto server (S3, DynamoDB, ... over HTTP) on a free port; yield its URL."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        if not wait_for_port("127.0.0.1", port, 30):
            unavailable("moto server did not start (is moto[server] installed?)")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


# Functions the tests' envelopes and fleets name (tests.fleet.fakes.envelope: "echo"; the
# fake runners' "block", "crash"...): consumers in tests consume their job lanes.
TEST_FUNCTIONS = ("echo", "probe", "block", "crash", "work", "fail", "gone", "alpha", "sleep")


async def lane_functions(redis_url: str | None, prefix: str) -> set[str]:
    """The functions whose job lanes a test under `prefix` may have made: its registry's
    (workers declare the lane of every deployed function) and TEST_FUNCTIONS. Read it before
    the test's Redis keys are deleted; pass it to `Topology.delete`."""
    names = set(TEST_FUNCTIONS)
    if redis_url is None:
        return names
    import redis.asyncio

    from flotilla.registry import Registry

    client = redis.asyncio.from_url(redis_url)
    try:
        names.update(await Registry(client, prefix=prefix).names())
    finally:
        await client.aclose()
    return names


async def register_names(redis_url: str, prefix: str, *names: str) -> None:
    """Add `names` to the registry's function set, as deploys would: worker processes with a
    fake runner (nothing deployed) then consume their job lanes (worker/lanes.py)."""
    import redis.asyncio

    client = redis.asyncio.from_url(redis_url)
    try:
        await client.sadd(f"{prefix}:functions", *names)
    finally:
        await client.aclose()
