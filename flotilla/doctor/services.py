"""Reachability of RabbitMQ, Redis and S3 from the current settings, each with a short timeout.

Every probe returns a `Probe` and never raises: a failure is reported with what was tried
(the URL, passwords masked) and what went wrong. The three run at once, so a whole check
takes at most about one timeout.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

SERVICES = ("rabbitmq", "redis", "s3")


@dataclass(frozen=True)
class Probe:
    """One service check: where it looked, whether it answered, and what it said or why not."""

    target: str
    ok: bool
    detail: str
    seconds: float

    def as_json(self) -> dict[str, Any]:
        """The JSON form used by `flotilla doctor --json`."""
        return {
            "target": self.target,
            "ok": self.ok,
            "detail" if self.ok else "error": self.detail,
            "seconds": round(self.seconds, 3),
        }


def mask_url(url: str) -> str:
    """`url` with its password replaced by `***` (safe to print)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname or ''}"
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def probe_all(settings: Any, timeout: float) -> dict[str, Probe]:
    """Probe RabbitMQ, Redis and S3 named by `settings` concurrently."""
    probes: dict[str, Callable[[], Probe]] = {
        "rabbitmq": lambda: probe_rabbitmq(settings.amqp_url, timeout),
        "redis": lambda: probe_redis(settings.redis_url, timeout),
        "s3": lambda: probe_s3(
            settings.artifact_bucket, settings.aws_endpoint_url, settings.aws_region, timeout
        ),
    }
    with ThreadPoolExecutor(len(probes)) as pool:
        futures = {name: pool.submit(run) for name, run in probes.items()}
        return {name: future.result() for name, future in futures.items()}


def _timed(target: str, check: Callable[[], str]) -> Probe:
    started = time.perf_counter()
    try:
        detail, ok = check(), True
    except Exception as exc:  # noqa: BLE001 - any failure is the answer: report it
        detail, ok = _describe(exc), False
    return Probe(target, ok, detail, time.perf_counter() - started)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip() or repr(exc)
    return f"{type(exc).__name__}: {text}"


def probe_rabbitmq(urls: str | Sequence[str], timeout: float) -> Probe:
    """Open (and close) one AMQP connection per URL (the nodes of a cluster, at once):
    proves the addresses, the vhost and the login. OK when at least one node answers (a
    process can work then); the detail names each node that did not."""
    import asyncio

    nodes = [urls] if isinstance(urls, str) else list(urls)

    async def connect(url: str) -> str:
        import aiormq

        try:
            connection = await asyncio.wait_for(aiormq.connect(url), timeout)
        except TimeoutError:
            raise TimeoutError(f"no AMQP handshake within {timeout:g} s") from None
        try:
            props = connection.server_properties
            return f"{_text(props.get('product'))} {_text(props.get('version'))}".strip()
        finally:
            await connection.close()

    async def connect_all() -> list[str | BaseException]:
        return await asyncio.gather(*(connect(u) for u in nodes), return_exceptions=True)

    def check() -> str:
        answers = asyncio.run(connect_all())
        failed = [f"{mask_url(u)}: {_describe(a)}" for u, a in zip(nodes, answers, strict=True)
                  if isinstance(a, BaseException)]
        good = [a for a in answers if isinstance(a, str)]
        if not good:
            if len(nodes) == 1:
                raise answers[0]  # type: ignore[misc]  # an exception: none is good
            raise ConnectionError("no node answered: " + "; ".join(failed))
        if len(nodes) == 1:
            return good[0]
        return f"{good[0]}, {len(good)}/{len(nodes)} nodes" + (
            f" (unreachable: {'; '.join(failed)})" if failed else "")

    return _timed(",".join(mask_url(u) for u in nodes), check)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value or "")


def probe_redis(url: str, timeout: float) -> Probe:
    """PING Redis and read its version."""

    def check() -> str:
        import redis

        client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
        try:
            client.ping()
            return f"Redis {client.info('server').get('redis_version', '?')}"
        finally:
            client.close()

    return _timed(mask_url(url), check)


def probe_s3(bucket: str, endpoint_url: str | None, region: str, timeout: float) -> Probe:
    """HEAD the artifact bucket; a missing bucket is fine (it is created on first deploy)."""

    def check() -> str:
        import boto3
        from botocore.config import Config
        from botocore.exceptions import ClientError

        client = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            config=Config(
                connect_timeout=timeout, read_timeout=timeout, retries={"max_attempts": 1}
            ),
        )
        try:
            client.head_bucket(Bucket=bucket)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("404", "NoSuchBucket", "NotFound"):
                return f"bucket {bucket} does not exist yet (created on the first deploy)"
            raise
        return f"bucket {bucket} exists"

    target = f"{mask_url(endpoint_url) if endpoint_url else 'AWS S3'} (bucket {bucket})"
    return _timed(target, check)
