"""The `s3` host interface: objects in the function's `s3_buckets` only.

A bucket outside `s3_buckets` is `denied` before any request; keys are 1..1024 bytes of
UTF-8; objects read or written are at most `max_object_bytes` (64 MiB by default, an
`invalid-argument` beyond: the guest holds the whole object in memory anyway). A missing
object reads as None and deletes without error. AccessDenied is `denied`; any other service
or network failure is `unavailable`.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from flotilla.hosts import interface as wit
from flotilla.hosts.aws import check_deadline, error_code, map_error
from flotilla.hosts.base import HostError, InvocationContext
from flotilla.hosts.observe import Meter, Observe
from flotilla.hosts.policy import check_object_key
from flotilla.sandbox import abi

DEFAULT_MAX_OBJECT_BYTES = 64 * 1024 * 1024
MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound"})


class S3Host:
    """The guest's S3 calls on one shared boto3 client; thread-safe."""

    def __init__(
        self,
        client: Any,
        *,
        max_object_bytes: int = DEFAULT_MAX_OBJECT_BYTES,
        observe: Observe | None = None,
    ) -> None:
        self.client = client
        self._max = max_object_bytes
        self._meter = Meter("s3", observe)

    def get_object(self, ctx: InvocationContext, bucket: str, key: str) -> bytes | None:
        """The object's bytes, or None when it does not exist."""
        with self._meter.measure("get_object"):
            self._check(ctx, bucket, key)
            try:
                response = self.client.get_object(Bucket=bucket, Key=key)
            except ClientError as exc:
                if error_code(exc) in MISSING_CODES:
                    return None
                raise map_error("s3", exc) from None
            except Exception as exc:  # noqa: BLE001 - botocore failures become WIT cases
                raise map_error("s3", exc) from None
            stream = response["Body"]
            try:
                size = int(response.get("ContentLength") or 0)
                if size > self._max:
                    raise HostError("invalid-argument", self._too_big(size))
                data = stream.read(self._max + 1)
                if len(data) > self._max:
                    raise HostError("invalid-argument", self._too_big(len(data)))
                return bytes(data)
            except HostError:
                raise
            except Exception as exc:  # noqa: BLE001 - a broken stream is a network failure
                raise map_error("s3", exc) from None
            finally:
                stream.close()

    def put_object(
        self,
        ctx: InvocationContext,
        bucket: str,
        key: str,
        body: bytes,
        content_type: str | None,
    ) -> None:
        """Write the object, replacing any existing one."""
        with self._meter.measure("put_object"):
            self._check(ctx, bucket, key)
            if len(body) > self._max:
                raise HostError("invalid-argument", self._too_big(len(body)))
            extra = {"ContentType": content_type} if content_type else {}
            try:
                self.client.put_object(Bucket=bucket, Key=key, Body=body, **extra)
            except Exception as exc:  # noqa: BLE001 - botocore failures become WIT cases
                raise map_error("s3", exc) from None

    def delete_object(self, ctx: InvocationContext, bucket: str, key: str) -> None:
        """Delete the object; deleting an absent object is not an error."""
        with self._meter.measure("delete_object"):
            self._check(ctx, bucket, key)
            try:
                self.client.delete_object(Bucket=bucket, Key=key)
            except ClientError as exc:
                if error_code(exc) in MISSING_CODES:
                    return
                raise map_error("s3", exc) from None
            except Exception as exc:  # noqa: BLE001 - botocore failures become WIT cases
                raise map_error("s3", exc) from None

    def _check(self, ctx: InvocationContext, bucket: str, key: str) -> None:
        if bucket not in ctx.config.s3_buckets:
            raise HostError("denied", f"bucket {bucket!r} is not in the function's s3_buckets")
        problem = check_object_key(key)
        if problem is not None:
            raise HostError("invalid-argument", problem)
        check_deadline(ctx)

    def _too_big(self, size: int) -> str:
        return f"object is {size} bytes, over the {self._max}-byte limit"


# ---- the WIT interface ----------------------------------------------------------------------


def _get(host: S3Host, ctx: InvocationContext, a: Any) -> wit.Writer:
    return wit.ok(wit.opt_bytes(host.get_object(ctx, wit.arg_string(a, 0), wit.arg_string(a, 1))))


def _put(host: S3Host, ctx: InvocationContext, a: Any) -> wit.Writer:
    ct = abi.get_option(a[3])
    bucket, key, body = wit.arg_string(a, 0), wit.arg_string(a, 1), wit.arg_bytes(a, 2)
    host.put_object(ctx, bucket, key, body, None if ct is None else abi.get_string(ct))
    return wit.ok()


def _delete(host: S3Host, ctx: InvocationContext, a: Any) -> wit.Writer:
    host.delete_object(ctx, wit.arg_string(a, 0), wit.arg_string(a, 1))
    return wit.ok()


INTERFACE = wit.Interface(
    "s3",
    (
        wit.HostFunc("get-object", _get),
        wit.HostFunc("put-object", _put),
        wit.HostFunc("delete-object", _delete),
    ),
    errors={"denied": True, "unavailable": True, "invalid-argument": True},
    client="s3",
)
