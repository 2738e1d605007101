"""Every error Flotilla raises on purpose: one base class, a shallow tree.

`ApiError` and its subclasses are what callers see: the HTTP API answers each with its
problem document (`dispatcher/problems.py`, same status, `type` and title) and the Python
client raises them as they are.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flotilla.outcomes import Outcome

if TYPE_CHECKING:
    from flotilla.envelope import Reply

TYPE_PREFIX = "urn:flotilla:problem:"


class FlotillaError(Exception):
    """Base class of every error Flotilla raises on purpose."""


class ConfigError(FlotillaError, ValueError):
    """A function configuration is invalid; the message names the field."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"invalid function config: {field}: {message}")


class ComponentError(FlotillaError):
    """A component was rejected: not a component, wrong world, or unsupported imports."""


class ArtifactError(FlotillaError):
    """A compiled artifact could not be trusted or loaded (bad HMAC, corrupt, wrong engine)."""


class SettingsError(FlotillaError, ValueError):
    """A process setting (environment variable or flag) is invalid."""


class ApiError(FlotillaError):
    """Base class of errors callers see: the HTTP API answers each with its problem document."""

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


class FunctionNotFound(ApiError):
    """No function (or no such version of it) is deployed under that name."""

    slug = "function-not-found"
    status = 404
    title = "Function not found"


class JobNotFound(ApiError):
    """No job with that id exists (never submitted, or too old to tell)."""

    slug = "job-not-found"
    status = 404
    title = "Job not found"


class KeyNotFound(ApiError):
    """No API key with that id (never created, or revoked)."""

    slug = "key-not-found"
    status = 404
    title = "API key not found"


class BodyTooLarge(ApiError):
    """The request body is larger than the function's max_body_bytes (or the upload cap)."""

    slug = "body-too-large"
    status = 413
    title = "Request body too large"


class HeadersTooLarge(ApiError):
    """Too many request headers, or too many bytes of them."""

    slug = "headers-too-large"
    status = 431
    title = "Request headers too large"


class InvalidConfig(ApiError):
    """The function config sent with a deploy is invalid; `field` names the culprit."""

    slug = "invalid-config"
    status = 422
    title = "Invalid function config"


class InvalidComponent(ApiError):
    """The uploaded file is not a component targeting the flotilla function world."""

    slug = "invalid-component"
    status = 422
    title = "Invalid component"


class InvalidRequest(ApiError):
    """The HTTP request itself is malformed (missing field, bad parameter)."""

    slug = "invalid-request"
    status = 422
    title = "Invalid request"


class FunctionFailed(ApiError):
    """The guest returned err, trapped, ran out of memory or returned a bad response."""

    slug = "function-failed"
    status = 502
    title = "Function failed"


class FunctionTimeout(ApiError):
    """No reply within the function's timeout plus the reply margin."""

    slug = "function-timeout"
    status = 504
    title = "Function timed out"


class Unavailable(ApiError):
    """The queue is full or the broker is unreachable; retry after `Retry-After` seconds."""

    slug = "unavailable"
    status = 503
    title = "Service unavailable"

    def __init__(self, detail: str, *, retry_after_s: int = 1, **extra: Any) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after_s)}, **extra)


def error_for_reply(reply: Reply, *, retry_after_s: int = 1) -> ApiError:
    """The API error for a reply whose outcome is not `ok` (HTTP API and Python client alike).

    timeout and expired are 504; not_found and internal (the worker could not run it) are
    503; every guest failure (err, trap, memory limit, bad response) is 502.
    """
    outcome, iid = reply.outcome, reply.invocation_id
    if outcome in (Outcome.TIMEOUT, Outcome.EXPIRED):
        return FunctionTimeout(
            reply.error or "the function timed out", outcome=outcome, invocation_id=iid
        )
    if outcome in (Outcome.NOT_FOUND, Outcome.INTERNAL):
        return Unavailable(
            reply.error or "the worker could not run the function",
            retry_after_s=retry_after_s, outcome=outcome, invocation_id=iid,
        )
    return FunctionFailed(reply.error or outcome, outcome=outcome, invocation_id=iid)


class JobNotCancellable(ApiError):
    """The job already runs or has finished (its `job_status` says which): too late to cancel."""

    slug = "job-not-cancellable"
    status = 409
    title = "Job cannot be cancelled"


class IdempotencyConflict(ApiError):
    """An Idempotency-Key was reused for the same function with a different request body."""

    slug = "idempotency-conflict"
    status = 409
    title = "Idempotency key reused with a different request"


class DeadLetterNotFound(ApiError):
    """No dead letter with that id (never stored, purged, or aged out)."""

    slug = "dead-letter-not-found"
    status = 404
    title = "Dead letter not found"


class NotReplayable(ApiError):
    """The dead letter is not an envelope that can run again (malformed, or a job result)."""

    slug = "dead-letter-not-replayable"
    status = 409
    title = "Dead letter cannot be replayed"


class ScheduleNotFound(ApiError):
    """No schedule with that name."""

    slug = "schedule-not-found"
    status = 404
    title = "Schedule not found"


class InvalidSchedule(ApiError):
    """A schedule document is invalid (cron expression, time zone, body...); `field` names it."""

    slug = "invalid-schedule"
    status = 422
    title = "Invalid schedule"


class CallbackNotAllowed(ApiError):
    """A job's callback URL is not http(s) or its host is not in settings.callback_hosts."""

    slug = "callback-not-allowed"
    status = 403
    title = "Callback URL not allowed"


class Unauthorized(ApiError):
    """No API key, a malformed Authorization header, or a key that is unknown or revoked."""

    slug = "unauthorized"
    status = 401
    title = "Unauthorized"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": 'Bearer realm="flotilla"'}, **extra)


class Forbidden(ApiError):
    """A valid API key without the scope (or the function) the request needs."""

    slug = "forbidden"
    status = 403
    title = "Forbidden"


class RateLimited(ApiError):
    """The API key used up its request rate; retry after `Retry-After` seconds."""

    slug = "rate-limited"
    status = 429
    title = "Too many requests"

    def __init__(self, detail: str, *, retry_after_s: int = 1, **extra: Any) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after_s)}, **extra)


class FunctionRateLimited(RateLimited):
    """The function's fleet-wide `rate_limit` is used up; retry after `Retry-After` seconds."""

    slug = "function-rate-limited"
    status = 429
    title = "Function rate limit reached"


class SecretNotFound(ApiError):
    """The function has no secret of that name (never set, or deleted)."""

    slug = "secret-not-found"
    status = 404
    title = "Secret not found"


class TooManySecrets(ApiError):
    """The function already holds the most secrets allowed; delete one before adding another."""

    slug = "too-many-secrets"
    status = 409
    title = "Too many secrets"


class SecretsNotConfigured(ApiError):
    """The dispatcher has no FLOTILLA_SECRETS_KEY, so it can neither store nor list secrets."""

    slug = "secrets-not-configured"
    status = 501
    title = "Secrets not configured"


ALL_ERRORS: tuple[type[ApiError], ...] = (
    FunctionNotFound,
    JobNotFound,
    KeyNotFound,
    BodyTooLarge,
    HeadersTooLarge,
    InvalidConfig,
    InvalidComponent,
    InvalidRequest,
    FunctionFailed,
    FunctionTimeout,
    Unavailable,
    CallbackNotAllowed,
    Unauthorized,
    Forbidden,
    RateLimited,
    FunctionRateLimited,
    JobNotCancellable,
    IdempotencyConflict,
    DeadLetterNotFound,
    NotReplayable,
    ScheduleNotFound,
    InvalidSchedule,
    SecretNotFound,
    TooManySecrets,
    SecretsNotConfigured,
)
