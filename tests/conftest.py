"""Session-wide fixtures: real services, unique names, AWS test credentials."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from flotilla.settings import WorkerSettings
from tests import services

# boto3 reads credentials the standard way; moto accepts any. Never touch real AWS.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
# One cache for built guests and compiled artifacts across the whole suite (and `make run`):
# componentize-py builds and first compiles cost seconds each, so they are paid once per machine.
os.environ.setdefault("FLOTILLA_CACHE_DIR", WorkerSettings.from_env({}).cache_dir)


@pytest.fixture(scope="session")
def redis_url() -> str:
    """A real Redis server (started if installed and stopped)."""
    return services.ensure_redis()


@pytest.fixture(scope="session")
def amqp_url() -> str:
    """A real RabbitMQ broker (started if installed and stopped)."""
    return services.ensure_rabbitmq()


@pytest.fixture(scope="session")
def aws_endpoint_url() -> Iterator[str]:
    """A moto server process speaking S3 and DynamoDB over HTTP on a free loopback port."""
    with services.moto_server() as url:
        yield url


@pytest.fixture
def unique(request: pytest.FixtureRequest) -> str:
    """A short name unique to this test, for queues, keys, buckets and tables."""
    return f"t{uuid.uuid4().hex[:10]}"
