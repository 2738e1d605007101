"""Every case of the table (cases.py) against every language's conformance guest.

Real Sandbox, real Redis, the moto server and a local HTTP server. A language whose guest
cannot be built here skips its cases; `test_every_language_is_here` then skips locally and
fails under CI=true (guests.py).
"""

from __future__ import annotations

import string
import uuid

import pytest

from flotilla.config import FunctionConfig
from flotilla.sandbox.results import Request
from tests.conformance.cases import CASES, Case, Env
from tests.conformance.conftest import Conformance, fill
from tests.conformance.guests import LANGUAGES, why_unavailable
from tests.services import unavailable

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_case(case: Case, language: str, conformance: Conformance, unique: str) -> None:
    sandbox, fn = conformance.function(case.hosts, language)
    env = Env({**conformance.vars, "unique": unique}, conformance.redis,
              conformance.env.published, conformance.env.spawned)
    subst = lambda text: string.Template(text).substitute(env.vars)
    config = FunctionConfig(name=unique, **{k: fill(v, subst) for k, v in case.config.items()})
    try:
        for index, call in enumerate(case.calls):
            where = f"{language} guest, {case.name} call {index} (op {call.op!r})"
            body = call.body.replace(b"$unique", unique.encode())
            request = Request(uuid.uuid4().hex, unique, call.headers(subst), body, case.call_info)
            result = sandbox.invoke(fn, config, request)
            assert result.outcome is call.outcome, f"{where}: {result.outcome.value}: {result.error}"
            if call.status is not None:
                assert result.response is not None
                shown = result.response.body[:200]
                assert result.response.status == call.status, f"{where}: body {shown!r}"
            if call.expect is not None:
                assert result.response is not None
                assert result.response.body == call.expect, where
            if call.check is not None:
                try:
                    call.check(result, request, env)
                except AssertionError as exc:
                    raise AssertionError(f"{where}: {exc}") from exc
    finally:
        conformance.forget(unique)


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_language_is_here(language: str) -> None:
    """Each language's guest, builder and toolchain exist: under CI=true a gap fails here."""
    reason = why_unavailable(language)
    if reason is not None:
        unavailable(reason)
