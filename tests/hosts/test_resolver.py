"""Resolver: deadline-bounded lookups and the short answer cache (unit, fake clock)."""

from __future__ import annotations

import threading

import pytest

from flotilla.hosts.resolver import ResolveFn, Resolver


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def counting(answers: dict[str, list[str]]) -> tuple[list[str], ResolveFn]:
    calls: list[str] = []

    def resolve(host: str, port: int) -> list[str]:
        calls.append(host)
        if host not in answers:
            raise OSError(f"unknown host {host}")
        return answers[host]

    return calls, resolve


def test_answers_are_cached_for_ttl_seconds() -> None:
    clock = Clock()
    calls, resolve = counting({"a.test": ["10.0.0.1"]})
    resolver = Resolver(resolve, ttl=30, clock=clock)
    try:
        assert resolver.addresses("a.test", 80, 1) == ["10.0.0.1"]
        clock.now += 29.9
        assert resolver.addresses("a.test", 80, 1) == ["10.0.0.1"]
        assert calls == ["a.test"]
        clock.now += 0.2
        assert resolver.addresses("a.test", 80, 1) == ["10.0.0.1"]
        assert calls == ["a.test", "a.test"]
    finally:
        resolver.close()


def test_failures_are_not_cached_and_ttl_zero_disables_the_cache() -> None:
    calls, resolve = counting({"b.test": ["10.0.0.2"]})
    resolver = Resolver(resolve, ttl=0)
    try:
        for _ in range(2):
            with pytest.raises(OSError):
                resolver.addresses("missing.test", 80, 1)
            assert resolver.addresses("b.test", 80, 1) == ["10.0.0.2"]
        assert calls == ["missing.test", "b.test"] * 2
    finally:
        resolver.close()


def test_cache_is_bounded_least_recently_used_first() -> None:
    calls, resolve = counting({f"h{i}.test": [f"10.0.0.{i}"] for i in range(4)})
    resolver = Resolver(resolve, max_entries=2)
    try:
        for host in ("h0.test", "h1.test", "h0.test", "h2.test", "h0.test", "h1.test"):
            resolver.addresses(host, 80, 1)
        assert calls == ["h0.test", "h1.test", "h2.test", "h1.test"]
    finally:
        resolver.close()


def test_empty_answer_is_an_error() -> None:
    resolver = Resolver(lambda host, port: [])
    try:
        with pytest.raises(OSError, match="no addresses"):
            resolver.addresses("c.test", 80, 1)
    finally:
        resolver.close()


def test_a_hanging_lookup_times_out() -> None:
    release = threading.Event()
    resolver = Resolver(lambda host, port: ["10.0.0.9"] if release.wait(5) else [])
    try:
        with pytest.raises(TimeoutError):
            resolver.addresses("slow.test", 80, 0.05)
    finally:
        release.set()
        resolver.close()
