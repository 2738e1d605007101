"""Probes and metrics: `GET /healthz`, `GET /readyz` and `GET /metrics` (no API key)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import Response

from dispatcher import openapi
from dispatcher.api import Api, ApiDep
from flotilla.errors import Unavailable

READY_TIMEOUT_S = 1.0

router = APIRouter()


@router.get("/healthz", summary="Liveness", operation_id="healthz")
async def healthz() -> dict[str, str]:
    """Always ok while the process serves HTTP."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness: Redis answers",
    operation_id="readyz",
    responses=openapi.problem_responses(Unavailable),
)
async def readyz(request: Request, api: Api = ApiDep) -> dict[str, str]:
    """Ready when the broker connection is open, Redis answers a PING within a second, and
    (with API keys on) Redis did not lose every key (dispatcher/redis_watch.py)."""
    if not api.transport.is_connected:
        raise Unavailable("the RabbitMQ connection is not open")
    try:
        await asyncio.wait_for(api.registry.redis.ping(), READY_TIMEOUT_S)
    except (TimeoutError, OSError) as exc:
        raise Unavailable(f"Redis did not answer: {exc or 'timeout'}") from None
    watch = getattr(request.app.state, "redis_watch", None)
    if watch is not None and watch.keys_missing:
        raise Unavailable("API keys missing: Redis lost its data; create keys again "
                          "(`flotilla keys create`)")
    return {"status": "ready"}


async def prometheus_metrics(api: Api = ApiDep) -> Response:
    """The dispatcher's metrics in Prometheus text format (routed only with metrics on)."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    assert api.metrics is not None
    return Response(generate_latest(api.metrics.registry), media_type=CONTENT_TYPE_LATEST)
