"""AWS plumbing shared by the `s3` and `dynamodb` hosts: client construction, error mapping.

Clients are built once per process from one boto3 Session (sessions are not thread-safe,
clients are): credentials come the standard boto3 way (environment, shared files, instance
role), the endpoint from `aws_endpoint_url` (a local or compatible service) and the region
from `aws_region`. Timeouts are short and retries few, so an unreachable endpoint fails the
call as `unavailable` within about `connect_timeout x max_attempts`.
"""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, ParamValidationError

from flotilla.hosts.base import HostError, InvocationContext

CONNECT_TIMEOUT = 1.0
READ_TIMEOUT = 10.0
MAX_ATTEMPTS = 2

DENIED_CODES = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "AllAccessDisabled",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "ExpiredToken",
        "ExpiredTokenException",
    }
)
INVALID_CODES = frozenset(
    {
        "InvalidArgument",
        "InvalidRequest",
        "KeyTooLongError",
        "EntityTooLarge",
        "ValidationException",
        "SerializationException",
    }
)


def aws_clients(
    *,
    endpoint_url: str | None,
    region: str,
    max_pool_connections: int,
    session: boto3.session.Session | None = None,
) -> tuple[Any, Any]:
    """One S3 and one DynamoDB low-level client, sized for `max_pool_connections` callers."""
    session = session or boto3.session.Session()
    config = Config(
        region_name=region,
        connect_timeout=CONNECT_TIMEOUT,
        read_timeout=READ_TIMEOUT,
        retries={"max_attempts": MAX_ATTEMPTS, "mode": "standard"},
        max_pool_connections=max_pool_connections,
        # Local and compatible endpoints rarely resolve bucket subdomains.
        s3={"addressing_style": "path"} if endpoint_url else None,
    )
    s3 = session.client("s3", endpoint_url=endpoint_url, config=config)
    dynamodb = session.client("dynamodb", endpoint_url=endpoint_url, config=config)
    return s3, dynamodb


def check_deadline(ctx: InvocationContext) -> None:
    """Fail fast once the invocation's deadline has passed."""
    if ctx.remaining() <= 0:
        raise HostError("unavailable", "the invocation's deadline has passed")


def error_code(exc: ClientError) -> str:
    """The service's error code of a ClientError ('' when missing)."""
    return str(exc.response.get("Error", {}).get("Code", ""))


def map_error(service: str, exc: Exception) -> HostError:
    """The HostError a guest sees for a boto3 failure."""
    if isinstance(exc, ClientError):
        code = error_code(exc)
        message = exc.response.get("Error", {}).get("Message", "") or code
        detail = f"{service}: {code}: {message}"
        if code in DENIED_CODES:
            return HostError("denied", detail)
        if code in INVALID_CODES:
            return HostError("invalid-argument", detail)
        return HostError("unavailable", detail)
    if isinstance(exc, ParamValidationError):
        return HostError("invalid-argument", f"{service}: {exc}")
    if isinstance(exc, BotoCoreError):
        return HostError("unavailable", f"{service} unreachable: {exc}")
    return HostError("unavailable", f"{service}: unexpected {type(exc).__name__}: {exc}")
