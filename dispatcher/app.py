"""The dispatcher's HTTP API: `create_app(...)` builds a FastAPI app from its collaborators.

Routes (all JSON except invoke, which passes bodies through; all errors are RFC 9457
problem documents, `application/problem+json`, see `dispatcher/problems.py`):

- `PUT /v1/functions/{name}` deploy (multipart: `component` file, `config` JSON object);
- `GET /v1/functions`, `GET /v1/functions/{name}`, `DELETE /v1/functions/{name}`;
- `GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS /v1/functions/{name}/invoke[/{path...}][?version=]`
  synchronous invocation (public functions: no key needed);
- `POST /v1/functions/{name}/jobs[?version=&callback_url=&delay_ms=|run_at=]` asynchronous
  job (202; 200 for a repeated Idempotency-Key);
- `GET /v1/jobs/{id}[?wait=S]` job status, long-polled up to 30 s; `DELETE` cancels it;
- `GET /v1/dead-letters`, `GET/DELETE /v1/dead-letters/{id}`, `POST .../{id}/replay`;
- `PUT/GET/DELETE /v1/schedules/{name}`, `GET /v1/schedules` (cron);
- `POST /v1/keys`, `GET /v1/keys`, `DELETE /v1/keys/{id}` API keys (admin scope);
- `GET /v1/topics/{topic}/events` a topic's messages as Server-Sent Events (subscribe scope).

They live in `dispatcher/invoke.py` (invoke, served before FastAPI's stack) and
`dispatcher/routes/` (one module per resource). With an `Authenticator`
(`dispatcher/auth.py`) every route but /healthz, /readyz, /metrics and the OpenAPI document
needs `Authorization: Bearer <key>` with the route's scope (deploy, invoke, subscribe,
dead-letters or admin), but the invoke routes of public functions; without one (dev mode,
--insecure) nothing is checked.

Every response carries `flotilla-invocation-id`. The app keeps no state of its own: the
registry and jobs live in Redis, code in the artifact store, in-flight calls in the transport.
The routes reach their collaborators through `app.state.api` (an `Api`), set by `create_app`.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import FastAPI

from dispatcher import openapi
from dispatcher.api import Api, ApiOptions
from dispatcher.auth import Authenticator
from dispatcher.invoke import INVOKE_METHODS, InvokeHandler, invoked_function
from dispatcher.invoke import routes as invoke_routes
from dispatcher.passthrough import INVOCATION_HEADER, check_header_size
from dispatcher.problems import add_problem_handlers, problem_response
from dispatcher.routes import dead_letters, functions, health, jobs, keys, schedules, topics
from dispatcher.routes import secrets as secret_routes
from dispatcher.routes.functions import MAX_UPLOAD_BYTES
from flotilla import logs
from flotilla.deadletters import DeadLetterStore
from flotilla.invoker import Invoker
from flotilla.jobs import JobStore, new_id
from flotilla.metrics import DispatcherMetrics
from flotilla.registry import Deployer, Registry, ResolveCache
from flotilla.schedules import ScheduleStore
from flotilla.secrets import SecretStore
from flotilla.topics import TopicBus
from flotilla.tracing import Tracing
from flotilla.transport import Transport

log = logging.getLogger(__name__)

__all__ = ["MAX_UPLOAD_BYTES", "Api", "ApiOptions", "FlotillaApp", "create_app"]

# In the order the OpenAPI document lists them (and routing tries them).
ROUTES = (
    functions.router.routes, invoke_routes, jobs.router.routes, dead_letters.router.routes,
    schedules.router.routes, keys.router.routes, secret_routes.router.routes,
    topics.router.routes, health.router.routes,
)


def create_app(
    *,
    registry: Registry,
    deployer: Deployer,
    jobs: JobStore,
    transport: Transport,
    options: ApiOptions | None = None,
    metrics: DispatcherMetrics | None = None,
    auth: Authenticator | None = None,
    dead_letters: DeadLetterStore | None = None,
    schedules: ScheduleStore | None = None,
    secrets: SecretStore | None = None,
    topics: TopicBus | None = None,
    tracing: Tracing | None = None,
) -> FastAPI:
    """The HTTP API wired to its collaborators (nothing is started or connected here).

    With `metrics`, requests, waiting callers, reply latency and publishes are recorded and
    served at `/metrics` (Prometheus text format). With `auth`, routes need API keys;
    without it they are open (the processes decide explicitly: see service.py and dev.py).
    Without `topics`, subscribing answers 503. Dead letters and schedules live in the job
    store's Redis unless given. With `tracing`, /v1 requests and publishes are spans.
    """
    opts = options or ApiOptions()
    cache = ResolveCache(registry, ttl_s=opts.resolve_ttl_s) if opts.resolve_ttl_s > 0 else None
    invoker = Invoker(
        cache or registry, transport, jobs=jobs, reply_margin_ms=opts.reply_margin_ms,
        job_ttl_s=opts.job_ttl_s, retry_after_s=opts.retry_after_s, metrics=metrics,
        tracing=tracing,
    )
    api = Api(
        registry, deployer, jobs, transport, invoker, opts, metrics, cache, auth, topics,
        dead_letters or DeadLetterStore(jobs.redis, prefix=jobs.prefix),
        schedules or ScheduleStore(jobs.redis, prefix=jobs.prefix),
    )
    app = FlotillaApp(
        title="Flotilla",
        version="0.1.0",
        description="Deploy and invoke WebAssembly functions; errors are RFC 9457 problems.",
    )
    app.state.api = api
    app.invoke_handler = InvokeHandler(api)
    app.add_middleware(InvocationIdMiddleware, metrics=metrics)
    add_problem_handlers(app, retry_after_s=opts.retry_after_s)
    # The routes themselves, not include_router(): FastAPI wraps an included router in a
    # per-request matching layer (~5% of the dispatcher's busy samples under load).
    for routes in ROUTES:
        app.router.routes.extend(routes)
    app.state.secrets = secrets  # None: the secrets routes answer 501
    if metrics is not None:
        app.add_api_route("/metrics", health.prometheus_metrics, include_in_schema=False)
    openapi.install(app, secured=auth is not None)
    return app


class FlotillaApp(FastAPI):
    """The FastAPI app, with the invoke routes (`/v1/functions/{name}/invoke[/...]`, every
    method of `INVOKE_METHODS`) served before its stack by `invoke_handler` (see
    dispatcher/invoke.py); every other request goes through FastAPI."""

    invoke_handler: InvokeHandler

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        """Serve invoke requests directly; anything else through FastAPI."""
        if scope["type"] == "http" and scope["method"] in INVOKE_METHODS:
            root_path = self.root_path or scope.get("root_path", "")
            target = invoked_function(scope["path"], root_path)
            if target is not None:
                await self.invoke_handler(scope, receive, send, *target)
                return
        tracing = self.invoke_handler.tracing
        if tracing is not None and scope["type"] == "http" and "/v1/" in scope["path"]:
            # The API's routes (jobs, deploys...) as spans too, not probes and scrapes.
            await tracing.serve_http(super().__call__, scope, receive, send)
            return
        await super().__call__(scope, receive, send)


_FUNCTION_PATH = re.compile(r"^/v1/functions/([^/]+)")


def function_of(path: str) -> str | None:
    """The function a request path names (for log lines), or None."""
    match = _FUNCTION_PATH.match(path)
    return match.group(1) if match else None


class InvocationIdMiddleware:
    """Gives every request an invocation id (request.state.invocation_id) and echoes it in
    the `flotilla-invocation-id` response header; turns unhandled errors into a 500 problem;
    counts requests by route template and status when given metrics."""

    def __init__(
        self, app: Callable[..., Awaitable[None]], metrics: DispatcherMetrics | None = None
    ) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        invocation_id = new_id()
        scope.setdefault("state", {})["invocation_id"] = invocation_id
        logs.bind(invocation_id, function_of(scope.get("path", "")))
        started = False
        status = 500
        began = time.perf_counter()

        async def send_with_id(message: MutableMapping[str, Any]) -> None:
            nonlocal started, status
            if message["type"] == "http.response.start":
                started = True
                status = int(message["status"])
                headers = [
                    (k, v) for k, v in message.get("headers", [])
                    if k.lower() != INVOCATION_HEADER.encode()
                ]
                headers.append((INVOCATION_HEADER.encode(), invocation_id.encode()))
                message["headers"] = headers
            await send(message)

        try:
            check_header_size(scope.get("headers") or ())
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            where = f"{scope.get('method')} {scope.get('path')}"
            if started:
                log.exception("unhandled error in %s after the response started", where)
                raise
            # No `instance`: the request may never have reached a route.
            response = problem_response(exc, invocation_id=invocation_id, where=where)
            await response(scope, receive, send_with_id)
        finally:
            if self.metrics is not None:
                self._observe(scope, status, time.perf_counter() - began)

    def _observe(self, scope: MutableMapping[str, Any], status: int, seconds: float) -> None:
        assert self.metrics is not None
        # The route template, not the path: labels stay bounded.
        route = getattr(scope.get("route"), "path", None) or "unmatched"
        self.metrics.requests.labels(route, str(status)).inc()
        self.metrics.request_duration.labels(route).observe(seconds)
