"""Rate limiting and request statistics: the parts of the emulator tests inspect."""

from __future__ import annotations

import threading
from collections import Counter, defaultdict, deque
from collections.abc import Callable
from typing import Any

# Counted in stats["faults"]; always listed, zero included, so tests can index them blindly.
FAULT_KINDS = ("slow_drip", "reset", "truncate", "garbage", "hang", "storm")
# A retry this much earlier than announced still counts as honouring Retry-After.
RETRY_AFTER_TOLERANCE = 0.05
MAX_WAITS = 1000
_MAX_PENDING = 10_000

RetryKey = tuple[str, str, str]  # (method, concrete path, Authorization header)


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

    def remaining(self) -> int:
        """Whole tokens left now, without taking one (for rate-limit headers)."""
        now = self._clock()
        return int(min(self.capacity, self._tokens + (now - self._stamp) * self.rate))

    def seconds_to_full(self) -> float:
        """Seconds until the bucket is full again (what ``X-RateLimit-Reset`` announces)."""
        now = self._clock()
        tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
        return (self.capacity - tokens) / self.rate

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

    Retry-After compliance is measured here too: every 429 is remembered with the seconds it
    announced, per (method, concrete path, Authorization header). The next request with the
    same key is a *retry*: its wait lands in ``retry_after_waits`` and, if it came more than
    ``RETRY_AFTER_TOLERANCE`` early, in ``retry_after_violations``.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self._vector_fetches: Counter[str] = Counter()
        self._rate_limited = 0
        self._faults: Counter[str] = Counter()
        self._announced: dict[RetryKey, tuple[float, float]] = {}  # key -> (at, seconds)
        self._waits: deque[dict[str, Any]] = deque(maxlen=MAX_WAITS)
        self._violations = 0

    def record(self, route: str, status: int) -> None:
        with self._lock:
            self._requests[route][str(status)] += 1
            if status == 429:
                self._rate_limited += 1

    def vector_fetch(self, feature_id: str) -> None:
        with self._lock:
            self._vector_fetches[feature_id] += 1

    def fault(self, kind: str) -> None:
        with self._lock:
            self._faults[kind] += 1

    def announce(self, key: RetryKey, at: float, seconds: float) -> None:
        """A 429 for ``key`` told the client, at clock time ``at``, to wait ``seconds``."""
        with self._lock:
            if len(self._announced) >= _MAX_PENDING:  # forget long-expired announcements
                self._announced = {k: (t, s) for k, (t, s) in self._announced.items() if t + s > at}
            self._announced[key] = (at, seconds)

    def arrival(self, key: RetryKey, at: float) -> None:
        """A request for ``key`` arrived at ``at``: judge it if a 429 for the key is pending."""
        with self._lock:
            pending = self._announced.pop(key, None)
            if pending is None:
                return
            announced_at, seconds = pending
            waited = at - announced_at
            if waited < seconds - RETRY_AFTER_TOLERANCE:
                self._violations += 1
            self._waits.append(
                {
                    "method": key[0],
                    "path": key[1],
                    "announced": seconds,
                    "waited": round(waited, 4),
                }
            )

    def reset(self) -> None:
        with self._lock:
            self._requests.clear()
            self._vector_fetches.clear()
            self._rate_limited = 0
            self._faults.clear()
            self._announced.clear()
            self._waits.clear()
            self._violations = 0

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready copy: ``requests``, ``total``, ``vector_fetches``, ``rate_limited``,
        ``faults`` (per kind), ``retry_after_violations`` and ``retry_after_waits``."""
        with self._lock:
            requests = {route: dict(codes) for route, codes in self._requests.items()}
            return {
                "requests": requests,
                "total": sum(sum(codes.values()) for codes in requests.values()),
                "vector_fetches": dict(self._vector_fetches),
                "rate_limited": self._rate_limited,
                "faults": {kind: self._faults[kind] for kind in FAULT_KINDS},
                "retry_after_violations": self._violations,
                "retry_after_waits": [dict(wait) for wait in self._waits],
            }
