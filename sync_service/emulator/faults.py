"""Rate limiting and request statistics: the parts of the emulator tests inspect."""

from __future__ import annotations

import threading
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any


class TokenBucket:
    """Classic token bucket refilled continuously at ``per_minute / 60`` tokens per second.

    Driven by the injectable clock so tests can age it without sleeping.
    """

    def __init__(self, per_minute: int, burst: int, clock: Callable[[], float]) -> None:
        self.rate = per_minute / 60.0
        self.capacity = float(burst)
        self._clock = clock
        self._tokens = float(burst)
        self._stamp = clock()

    def take(self) -> float:
        """Take one token; returns 0.0 on success, else seconds until one is free."""
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self.rate


class Stats:
    """Request counters keyed by route template, guarded by a lock.

    The app mutates them on the server's event-loop thread while a test may read them from
    its own thread through ``EmulatorServer.state``.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self._vector_fetches: Counter[str] = Counter()
        self._rate_limited = 0

    def record(self, route: str, status: int) -> None:
        with self._lock:
            self._requests[route][str(status)] += 1
            if status == 429:
                self._rate_limited += 1

    def vector_fetch(self, feature_id: str) -> None:
        with self._lock:
            self._vector_fetches[feature_id] += 1

    def reset(self) -> None:
        with self._lock:
            self._requests.clear()
            self._vector_fetches.clear()
            self._rate_limited = 0

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready copy: ``requests``, ``total``, ``vector_fetches``, ``rate_limited``."""
        with self._lock:
            requests = {route: dict(codes) for route, codes in self._requests.items()}
            return {
                "requests": requests,
                "total": sum(sum(codes.values()) for codes in requests.values()),
                "vector_fetches": dict(self._vector_fetches),
                "rate_limited": self._rate_limited,
            }
