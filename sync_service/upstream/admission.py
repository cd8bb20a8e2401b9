"""Who may send the next upstream request, and when: one gate for every Mixpeek call.

Three rules, in one place so they cannot fight each other:

- at most ``max_in_flight`` requests are in flight (``SYNC_MAX_CONCURRENCY``);
- waiting requests go in priority order, then first come first served: listing a watched
  collection goes first (one page finds the work of many requests, and a change's freshness
  waits on it), then fetching the features of a DONE task, then polling a task that is still
  processing, because a fetch turns budget into points and a poll only tells us to come back
  later;
- with a rate limit (``SYNC_RATE_LIMIT_PER_MINUTE``) requests leave evenly spaced, one per
  ``60 / rate`` seconds, so the budget is spent smoothly instead of in bursts that earn 429s.
  A 429 slows the pace down (to 80 %); each success brings it back a little (additive increase),
  up to the configured rate.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

#: Priorities: lower goes first.
LIST, FETCH, POLL = -1, 0, 1


class Admission:
    def __init__(
        self,
        max_in_flight: int | None = None,
        rate_per_minute: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_in_flight = max_in_flight
        self.rate = rate_per_minute
        self.current_rate = rate_per_minute
        self.clock = clock
        self.in_flight = 0
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._next_slot = 0.0
        self._timer: asyncio.TimerHandle | None = None

    @asynccontextmanager
    async def slot(self, priority: int = FETCH) -> AsyncIterator[None]:
        """Hold a place for one request (never during a retry's backoff sleep)."""
        await self._acquire(priority)
        try:
            yield
        finally:
            self.in_flight -= 1
            self._dispatch()

    def rate_limited(self) -> None:
        """A 429 came back: slow down (multiplicative decrease)."""
        if self.rate is not None and self.current_rate is not None:
            self.current_rate = max(self.rate * 0.1, self.current_rate * 0.8)

    def succeeded(self) -> None:
        """A request went through: recover towards the configured rate (additive increase)."""
        if self.rate is not None and self.current_rate is not None:
            self.current_rate = min(self.rate, self.current_rate + self.rate * 0.01)

    async def _acquire(self, priority: int) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (priority, next(self._order), future))
        self._dispatch()
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                # Granted in the same instant as the cancellation: give the place back.
                self.in_flight -= 1
                self._dispatch()
            raise

    def _dispatch(self) -> None:
        """Grant places to waiters, best priority first, as far as room and pace allow."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._waiters:
            if self.max_in_flight is not None and self.in_flight >= self.max_in_flight:
                return
            now = self.clock()
            if self.current_rate is not None and now < self._next_slot:
                loop = asyncio.get_running_loop()
                self._timer = loop.call_later(self._next_slot - now, self._dispatch)
                return
            _, _, future = heapq.heappop(self._waiters)
            if future.cancelled():
                continue
            future.set_result(None)
            self.in_flight += 1
            if self.current_rate is not None:
                self._next_slot = max(now, self._next_slot) + 60.0 / self.current_rate
