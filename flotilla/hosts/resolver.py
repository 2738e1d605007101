"""Name resolution for outbound HTTP: getaddrinfo on a few threads, bounded, briefly cached.

getaddrinfo has no timeout of its own, so lookups run on a small thread pool and the caller
waits at most its remaining budget. Answers are cached for `ttl` seconds (getaddrinfo does
not report record TTLs; 30 s is short enough for failover and saves a lookup per request on
keep-alive paths). Caching does not weaken the address checks: every answer, cached or
fresh, is checked before each connection. Failures are not cached.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

ResolveFn = Callable[[str, int], list[str]]

DEFAULT_TTL = 30.0
MAX_ENTRIES = 1024


def system_resolve(host: str, port: int) -> list[str]:
    """Addresses of `host` from the system resolver (getaddrinfo), in its preference order."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    seen: list[str] = []
    for info in infos:
        address = str(info[4][0])
        if address not in seen:
            seen.append(address)
    return seen


class Resolver:
    """Thread-safe, deadline-bounded, caching front of a resolve function."""

    def __init__(
        self,
        resolve: ResolveFn = system_resolve,
        *,
        threads: int = 4,
        ttl: float = DEFAULT_TTL,
        max_entries: int = MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._resolve = resolve
        self._ttl = ttl
        self._max = max_entries
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: OrderedDict[tuple[str, int], tuple[float, list[str]]] = OrderedDict()
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="flotilla-dns")

    def addresses(self, host: str, port: int, timeout: float) -> list[str]:
        """The addresses of host:port; TimeoutError past `timeout`, OSError when unresolvable."""
        key = (host, port)
        now = self._clock()
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and hit[0] > now:
                self._cache.move_to_end(key)
                return list(hit[1])
        future = self._pool.submit(self._resolve, host, port)
        try:
            answer = future.result(timeout=max(0.0, timeout))
        except TimeoutError:
            future.cancel()
            raise
        if not answer:
            raise OSError(f"no addresses for {host}")
        if self._ttl > 0:
            with self._lock:
                self._cache[key] = (self._clock() + self._ttl, list(answer))
                self._cache.move_to_end(key)
                while len(self._cache) > self._max:
                    self._cache.popitem(last=False)
        return list(answer)

    def close(self) -> None:
        """Stop the lookup threads (lookups in flight finish on their own)."""
        self._pool.shutdown(wait=False, cancel_futures=True)
