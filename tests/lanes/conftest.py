"""Fixtures of the lanes tests: the guests (built once per session, cached by content)."""

from tests.guests.build import probe_wasm  # noqa: F401 - fixture
