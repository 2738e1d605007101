"""HostClients: every host interface of a worker process, built once and closed once.

Expensive things live here and are shared by all invocations: one Redis ConnectionPool, one
urllib3 PoolManager (plus the resolver threads), one boto3 S3 client and one DynamoDB client.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import redis

from flotilla.hosts.aws import aws_clients
from flotilla.hosts.cache import CacheHost, connect_redis, fake_redis
from flotilla.hosts.dynamodb import DynamoDbHost
from flotilla.hosts.http import HttpHost
from flotilla.hosts.log import LogHost
from flotilla.hosts.observe import Observe
from flotilla.hosts.s3 import S3Host
from flotilla.hosts.secrets import SecretReader
from flotilla.hosts.spawn import JobSpawner
from flotilla.hosts.topics import TopicPublisher
from flotilla.settings import WorkerSettings


@dataclass(frozen=True)
class HostClients:
    """The host interfaces the sandbox links into every instance; thread-safe."""

    cache: CacheHost
    http: HttpHost
    s3: S3Host
    dynamodb: DynamoDbHost
    log: LogHost
    redis: redis.Redis
    # Clients that need the process's broker or stores; None answers `unavailable`.
    secrets: SecretReader | None = None
    topics: TopicPublisher | None = None
    spawn: JobSpawner | None = None

    @classmethod
    def from_settings(
        cls,
        settings: WorkerSettings,
        *,
        observe: Observe | None = None,
        dev: bool = False,
    ) -> HostClients:
        """Build every client once; `dev` swaps Redis for in-process fakeredis.

        `observe(interface, op, outcome, seconds)`, when given, is called after every host
        call (the metrics hook). Nothing connects until the first call.
        """
        concurrency = settings.effective_concurrency()
        if dev:
            client = fake_redis()
        else:
            client = connect_redis(settings.redis_url, max_connections=max(16, 4 * concurrency))
        s3, dynamodb = aws_clients(
            endpoint_url=settings.aws_endpoint_url,
            region=settings.aws_region,
            max_pool_connections=max(10, 2 * concurrency),
        )
        return cls(
            cache=CacheHost(client, observe=observe),
            http=HttpHost(pool_size=max(4, concurrency), observe=observe),
            s3=S3Host(s3, observe=observe),
            dynamodb=DynamoDbHost(dynamodb, observe=observe),
            log=LogHost(observe=observe),
            redis=client,
        )

    @classmethod
    def for_dev(
        cls, settings: WorkerSettings | None = None, *, observe: Observe | None = None
    ) -> HostClients:
        """Clients for `flotilla dev`: the cache is fakeredis, so no Redis server is needed."""
        return cls.from_settings(settings or WorkerSettings(), observe=observe, dev=True)

    def with_clients(self, **clients: Any) -> HostClients:
        """A copy with some clients set (e.g. `spawn=...` once the process has a broker)."""
        return replace(self, **clients)

    def close(self) -> None:
        """Close every pool (call once, after the last invocation finished)."""
        self.http.close()
        self.redis.close()
        self.redis.connection_pool.disconnect()
        for client in (self.s3.client, self.dynamodb.client):
            client.close()
