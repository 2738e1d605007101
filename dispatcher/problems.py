"""Problem documents (RFC 9457) and the typed errors the HTTP API turns into them.

Each error class carries a stable `type` URI, an HTTP status and a title; raising one
anywhere below the routes yields an `application/problem+json` response. Extra members
(e.g. `outcome`, `field`) travel in `extra`.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from flotilla.errors import FlotillaError

PROBLEM_MEDIA_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:flotilla:problem:"


class Problem(BaseModel):
    """An RFC 9457 problem document; extension members are allowed."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    invocation_id: str | None = None


class DispatcherError(FlotillaError):
    """Base class of errors the HTTP API reports as problem documents."""

    slug = "internal"
    status = 500
    title = "Internal error"

    def __init__(
        self,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = dict(headers or {})
        self.extra = extra

    @property
    def type(self) -> str:
        """The stable problem type URI."""
        return TYPE_PREFIX + self.slug

    def to_problem(self, *, instance: str | None = None) -> dict[str, Any]:
        """The JSON body of the problem document."""
        body: dict[str, Any] = {
            "type": self.type,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if instance is not None:
            body["instance"] = instance
        body.update(self.extra)
        return body


class FunctionNotFound(DispatcherError):
    """No function (or no such version of it) is deployed under that name."""

    slug = "function-not-found"
    status = 404
    title = "Function not found"


class JobNotFound(DispatcherError):
    """No job with that id exists (never submitted, or too old to tell)."""

    slug = "job-not-found"
    status = 404
    title = "Job not found"


class BodyTooLarge(DispatcherError):
    """The request body is larger than the function's max_body_bytes (or the upload cap)."""

    slug = "body-too-large"
    status = 413
    title = "Request body too large"


class InvalidConfig(DispatcherError):
    """The function config sent with a deploy is invalid; `field` names the culprit."""

    slug = "invalid-config"
    status = 422
    title = "Invalid function config"


class InvalidComponent(DispatcherError):
    """The uploaded file is not a component targeting the flotilla function world."""

    slug = "invalid-component"
    status = 422
    title = "Invalid component"


class InvalidRequest(DispatcherError):
    """The HTTP request itself is malformed (missing field, bad parameter)."""

    slug = "invalid-request"
    status = 422
    title = "Invalid request"


class FunctionFailed(DispatcherError):
    """The guest returned err, trapped, ran out of memory or returned a bad response."""

    slug = "function-failed"
    status = 502
    title = "Function failed"


class FunctionTimeout(DispatcherError):
    """No reply within the function's timeout plus the reply margin."""

    slug = "function-timeout"
    status = 504
    title = "Function timed out"


class Unavailable(DispatcherError):
    """The queue is full or the broker is unreachable; retry after `Retry-After` seconds."""

    slug = "unavailable"
    status = 503
    title = "Service unavailable"

    def __init__(self, detail: str, *, retry_after_s: int = 1, **extra: Any) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after_s)}, **extra)


class CallbackNotAllowed(DispatcherError):
    """A job's callback URL is not http(s) or its host is not in settings.callback_hosts."""

    slug = "callback-not-allowed"
    status = 403
    title = "Callback URL not allowed"


ALL_ERRORS: tuple[type[DispatcherError], ...] = (
    FunctionNotFound,
    JobNotFound,
    BodyTooLarge,
    InvalidConfig,
    InvalidComponent,
    InvalidRequest,
    FunctionFailed,
    FunctionTimeout,
    Unavailable,
    CallbackNotAllowed,
)
