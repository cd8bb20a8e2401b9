"""The retry policy every upstream call runs under: attempts, full-jitter backoff, deadlines."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["RandomSource", "RetryPolicy"]


class RandomSource(Protocol):
    """What the policy needs from a random generator (``random.Random`` fits)."""

    def uniform(self, a: float, b: float, /) -> float: ...


@dataclass(frozen=True)
class RetryPolicy:
    """One retry policy for every call. ``sleep``, ``rng`` and ``clock`` are injectable for tests.

    Waits use full jitter, ``uniform(0, min(max_delay, base_delay * 2**(attempt-1)))``, but never
    less than a server hint (``Retry-After`` or ``details.retry_after``, capped at
    ``max_retry_after``). No wait starts that would end past ``call_deadline``.
    """

    max_attempts: int = 6
    base_delay: float = 0.5
    max_delay: float = 30.0
    attempt_timeout: float = 30.0
    call_deadline: float = 120.0
    max_retry_after: float = 300.0
    sleep: Callable[[float], Awaitable[None]] = field(default=asyncio.sleep, repr=False)
    rng: RandomSource = field(default_factory=random.Random, repr=False, compare=False)
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("RetryPolicy.max_attempts must be at least 1")
        for name in ("base_delay", "max_delay", "max_retry_after"):
            if getattr(self, name) < 0:
                raise ValueError(f"RetryPolicy.{name} must not be negative")
        for name in ("attempt_timeout", "call_deadline"):
            if getattr(self, name) <= 0:
                raise ValueError(f"RetryPolicy.{name} must be positive")

    def backoff(self, attempt: int) -> float:
        """Full-jitter backoff after the given (1-based) failed attempt."""
        ceiling = min(self.max_delay, self.base_delay * 2.0 ** max(attempt - 1, 0))
        return self.rng.uniform(0.0, ceiling)

    def wait_for(self, attempt: int, error: BaseException | None) -> float:
        """The wait after ``attempt`` failed with ``error``: backoff, raised to any server hint."""
        wait = self.backoff(attempt)
        hint = getattr(error, "retry_after", None)
        if isinstance(hint, int | float):
            wait = max(wait, min(float(hint), self.max_retry_after))
        return wait
