"""Fixtures shared by the hardening tests (auth, hostile input, envelopes, guests, faults).

Fixture names are either generic (reusable by every hardening test) or prefixed `auth_`.
"""

from __future__ import annotations
