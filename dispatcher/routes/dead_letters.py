"""Dead letters, `dead-letters` scope (an admin key holds it): `GET /v1/dead-letters`
(newest first, paged), `GET /v1/dead-letters/{id}`, `POST /v1/dead-letters/{id}/replay`
(a new job of the same function and body) and `DELETE /v1/dead-letters/{id}`.

The dispatchers' `DeadLetterConsumer` fills the store from `<prefix>.dead`
(flotilla/deadletters.py says what is kept, for how long, and why each reason happens).
"""

from __future__ import annotations

import base64
from typing import Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse, Response

from dispatcher import openapi
from dispatcher.api import AUTH_PROBLEMS, VERSION_PARAM, Api, ApiDep, require
from dispatcher.auth import DEAD_LETTERS
from flotilla.config import NAME_PATTERN
from flotilla.deadletters import MAX_PAGE, DeadLetterStore
from flotilla.envelope import Envelope, EnvelopeError
from flotilla.errors import (
    BodyTooLarge,
    DeadLetterNotFound,
    FunctionNotFound,
    InvalidRequest,
    NotReplayable,
    Unavailable,
)

router = APIRouter()
ID_PARAM = Path(description="The dead letter's id", pattern=r"^[0-9a-f]{32}$")


def _store(api: Api) -> DeadLetterStore:
    assert api.dead_letters is not None, "create_app always sets the dead-letter store"
    return api.dead_letters


@router.get(
    "/v1/dead-letters",
    summary="Dead letters, newest first",
    operation_id="list_dead_letters",
    description=(
        "Each with its reason (exhausted, expired, poison, malformed, delivery_limit, maxlen, "
        "job_result, other), attempts, last error and time. Pass `next_cursor` back as "
        "`cursor` for the next page (null: this was the last)."
    ),
    responses=openapi.problem_responses(InvalidRequest, *AUTH_PROBLEMS),
    dependencies=[require(DEAD_LETTERS)],
)
async def list_dead_letters(
    function: str | None = Query(None, pattern=NAME_PATTERN, description="Only this function's"),
    cursor: str | None = Query(None, pattern=r"^[0-9a-f]{32}$",
                               description="`next_cursor` of the previous page"),
    limit: int = Query(50, ge=1, le=MAX_PAGE, description="Letters per page"),
    api: Api = ApiDep,
) -> dict[str, Any]:
    """A page of dead letters and the cursor of the next one."""
    letters, next_cursor = await _store(api).page(function=function, cursor=cursor, limit=limit)
    return {"dead_letters": [d.to_dict() for d in letters], "next_cursor": next_cursor}


@router.get(
    "/v1/dead-letters/{letter_id}",
    summary="One dead letter, with the envelope's headers and body",
    operation_id="get_dead_letter",
    description="`envelope` holds the headers and body (base64) of a replayable letter; "
                "`raw_base64` the stored bytes of one that is not an envelope.",
    responses=openapi.problem_responses(InvalidRequest, DeadLetterNotFound, *AUTH_PROBLEMS),
    dependencies=[require(DEAD_LETTERS)],
)
async def get_dead_letter(letter_id: str = ID_PARAM, api: Api = ApiDep) -> dict[str, Any]:
    """The dead letter's description and contents."""
    store = _store(api)
    letter = await store.get(letter_id)
    raw = await store.body(letter_id)
    if letter is None or raw is None:
        raise DeadLetterNotFound(f"no dead letter {letter_id!r}")
    out = letter.to_dict()
    try:
        envelope = Envelope.decode(raw)
        out["envelope"] = {
            "headers": [list(h) for h in envelope.headers],
            "body_base64": base64.b64encode(envelope.body).decode("ascii"),
        }
    except EnvelopeError:
        out["raw_base64"] = base64.b64encode(raw).decode("ascii")
    return out


@router.post(
    "/v1/dead-letters/{letter_id}/replay",
    status_code=202,
    summary="Run a dead letter again, as a new job",
    operation_id="replay_dead_letter",
    description=(
        "A new job of the same function (its latest version, or `version`) with the same "
        "headers and body; the dead letter records the new job id. Letters that are not "
        "envelopes (malformed, job results) cannot be replayed (409)."
    ),
    responses={
        202: {"description": "Queued; poll `status_url`", "links": openapi.JOB_LINKS},
        **openapi.problem_responses(
            InvalidRequest, DeadLetterNotFound, NotReplayable, FunctionNotFound, BodyTooLarge,
            Unavailable, *AUTH_PROBLEMS,
        ),
    },
    dependencies=[require(DEAD_LETTERS)],
)
async def replay_dead_letter(
    letter_id: str = ID_PARAM, version: str | None = VERSION_PARAM, api: Api = ApiDep,
) -> JSONResponse:
    """Submit the dead letter's envelope again as a job."""
    store = _store(api)
    letter = await store.get(letter_id)
    raw = await store.body(letter_id)
    if letter is None or raw is None:
        raise DeadLetterNotFound(f"no dead letter {letter_id!r}")
    if not letter.replayable:
        raise NotReplayable(
            f"dead letter {letter_id} ({letter.reason}) is not an envelope that can run again: "
            f"{letter.last_error}", reason=letter.reason,
        )
    envelope = Envelope.decode(raw)
    fn = await api.invoker.resolve(envelope.function, version)
    job_id = await api.invoker.submit(fn, envelope.body, envelope.headers)
    await store.mark_replayed(letter_id, job_id)
    if api.metrics is not None:
        api.metrics.dead_letter_replays.inc()
    return JSONResponse(
        {"job_id": job_id, "status_url": f"/v1/jobs/{job_id}", "dead_letter_id": letter_id},
        status_code=202, headers={"Location": f"/v1/jobs/{job_id}"},
    )


@router.delete(
    "/v1/dead-letters/{letter_id}",
    status_code=204,
    summary="Forget a dead letter",
    operation_id="delete_dead_letter",
    responses=openapi.problem_responses(InvalidRequest, DeadLetterNotFound, *AUTH_PROBLEMS),
    dependencies=[require(DEAD_LETTERS)],
)
async def delete_dead_letter(letter_id: str = ID_PARAM, api: Api = ApiDep) -> Response:
    """Remove it from the store (its replays, if any, are jobs of their own)."""
    if not await _store(api).delete(letter_id):
        raise DeadLetterNotFound(f"no dead letter {letter_id!r}")
    return Response(status_code=204)
