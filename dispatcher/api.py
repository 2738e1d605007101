"""What every route shares: the app's collaborators (`Api`, in `app.state.api`), its
options, and the dependencies that reach them and check API keys.

The routes live in `dispatcher/routes/` (one module per resource) and `dispatcher/invoke.py`;
`dispatcher/app.py` builds the `Api` and the app around them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastapi import Depends, Path, Query, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from dispatcher.auth import INVOKE, Authenticator
from flotilla.config import NAME_PATTERN
from flotilla.deadletters import DeadLetterStore
from flotilla.errors import Forbidden, RateLimited, Unauthorized
from flotilla.invoker import Invoker
from flotilla.jobs import JobStore
from flotilla.metrics import DispatcherMetrics
from flotilla.registry import Deployer, Registry, ResolveCache
from flotilla.schedules import ScheduleStore
from flotilla.topics import DEFAULT_MAX_BYTES, DEFAULT_MAX_MESSAGES, TopicBus
from flotilla.transport import Transport

NAME_PARAM = Path(description="Function name", pattern=NAME_PATTERN)
VERSION_PARAM = Query(
    None, description="Version: `latest` (default), a digest, a digest prefix or a number"
)
AUTH_PROBLEMS = (Unauthorized, Forbidden, RateLimited)
BEARER = HTTPBearer(
    auto_error=False, description="An API key (`flotilla keys create`): `Bearer flk_...`"
)
BearerDep = Security(BEARER)  # declares the scheme in the OpenAPI document


@dataclass(frozen=True)
class ApiOptions:
    """The dispatcher settings the routes need (a subset of DispatcherSettings)."""

    reply_margin_ms: int = 2_000
    job_ttl_s: int = 86_400
    callback_hosts: tuple[str, ...] = ()
    retry_after_s: int = 1
    resolve_ttl_s: float = 1.0  # how long a resolved version is reused (0: never)
    # Topic subscribers (dispatcher/routes/topics.py): what one may have waiting before it
    # is cut off, how often an idle stream gets a keep-alive comment, and how long a cut-off
    # subscriber that does not read may hold its connection.
    topic_max_messages: int = DEFAULT_MAX_MESSAGES
    topic_max_bytes: int = DEFAULT_MAX_BYTES
    topic_keepalive_s: float = 15.0
    topic_grace_s: float = 30.0


@dataclass(frozen=True)
class Api:
    """The routes' collaborators (one per app, in `app.state.api`)."""

    registry: Registry
    deployer: Deployer
    jobs: JobStore
    transport: Transport
    invoker: Invoker  # invoke and jobs: resolve, publish, map the reply
    options: ApiOptions = field(default_factory=ApiOptions)
    metrics: DispatcherMetrics | None = None
    versions: ResolveCache | None = None  # the invoker's cache, when versions are cached
    auth: Authenticator | None = None  # None: auth is off (dev mode or --insecure)
    topics: TopicBus | None = None  # None: subscribing answers 503
    dead_letters: DeadLetterStore | None = None
    schedules: ScheduleStore | None = None

    def forget(self, name: str) -> None:
        """This dispatcher changed `name`: stop reusing its resolved versions."""
        if self.versions is not None:
            self.versions.forget(name)


async def get_api(request: Request) -> Api:
    """Dependency: the app's collaborators (async: FastAPI runs sync ones in a thread)."""
    api: Api = request.app.state.api
    return api


ApiDep = Depends(get_api)


def require(scope: str) -> Any:
    """Dependency: the request's API key must hold `scope` (for invoke: the path's function).

    It runs before the route's parameters are looked at, so a caller without a valid key
    learns nothing about them, and never reads the registry: a 403 does not say whether a
    function exists. The key is left in `request.state.api_key` (None when auth is off).
    """

    async def authorize(
        request: Request,
        _: HTTPAuthorizationCredentials | None = BearerDep,
    ) -> None:
        api: Api = request.app.state.api
        key = None
        if api.auth is not None:
            function = request.path_params.get("name") if scope == INVOKE else None
            key = await api.auth.authorize(request.headers.get("authorization"), scope, function)
        request.state.api_key = key

    return Depends(authorize)
