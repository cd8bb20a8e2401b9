"""Whether the state store answers this process, as its daemon sees it.

The daemon's ticks are the probe: a claim that fails with a store error marks the store
unavailable (logged once, not at every tick), the first claim that succeeds marks it back. While
it is down nothing can be claimed and no attempt can be counted, so no work is lost or spent;
outcomes already in hand wait for it (``engine/persist.py``). ``/readyz`` and the
``sync_state_store_up`` metric say since when.

Qdrant's availability is read from the pipeline's writes: the first write that finds it down
logs it and pauses the claims; a tick then probes it, at growing intervals, and the first answer
(or a write that lands) logs its return. The tasks that reached it meanwhile wait without a line
each.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sync_service.state.store import Store
    from sync_service.upstream.port import Outage

log = logging.getLogger("sync_service.engine.scheduler")


def first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


#: Seconds between probes of a dependency found down: the first wait, and the longest.
FIRST_PROBE, MAX_PROBE = 1.0, 30.0


class Availability:
    """Whether a dependency answers, as the work sees it. Its going away is logged once (a
    warning saying what waits meanwhile), and so is its return, with how long it was away:
    one line each instead of one per task or tick. ``on_change(up)`` feeds the metrics (the
    time it went down is kept there once, which ``/readyz`` reads too)."""

    def __init__(
        self,
        what: str,
        meanwhile: str,
        event: str,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        self.what = what
        self.meanwhile = meanwhile
        self.event = event
        self._on_change = on_change
        self._down_at: float | None = None
        self._wait = FIRST_PROBE  # before the next probe (holding); doubles up to MAX_PROBE
        self._next_probe = 0.0

    @property
    def down(self) -> bool:
        return self._down_at is not None

    async def holding(self, probe: Callable[[], Awaitable[object]]) -> bool:
        """True while it is down: the caller holds new work back. When the wait since the last
        probe is over, ``probe`` decides (raising: still down, and the next wait doubles)."""
        if self._down_at is None:
            return False
        if time.monotonic() < self._next_probe:
            return True
        try:
            await probe()
        except Exception as exc:
            self._wait = min(MAX_PROBE, self._wait * 2)
            self._next_probe = time.monotonic() + self._wait
            log.debug("%s still unavailable: %s", self.what, first_line(exc))
            return True
        self.answered()
        return False

    def failed(self, exc: BaseException) -> None:
        reason = first_line(exc)
        if self._down_at is not None:
            log.debug("%s still unavailable: %s", self.what, reason)
            return
        self._down_at = time.monotonic()
        self._wait = FIRST_PROBE
        self._next_probe = self._down_at + FIRST_PROBE
        log.warning(
            "%s unavailable: %s; %s",
            self.what,
            reason,
            self.meanwhile,
            extra={"event": f"{self.event}_unavailable"},
        )
        if self._on_change is not None:
            self._on_change(False)

    def answered(self) -> None:
        if self._down_at is None:
            return
        down = time.monotonic() - self._down_at
        self._down_at = None
        log.warning(
            "%s available again after %.0f s; work resumes",
            self.what,
            down,
            extra={"event": f"{self.event}_available", "seconds": round(down, 1)},
        )
        if self._on_change is not None:
            self._on_change(True)


def store_health(on_change: Callable[[bool], None]) -> Availability:
    """The state store, as the daemon's ticks see it: while it is down nothing is claimed."""
    return Availability("state store", "claims paused until it answers", "store", on_change)


def qdrant_health() -> Availability:
    """Qdrant, as the pipeline's writes see it: while it is down the daemon claims nothing
    (claimed work would fetch its content from Mixpeek only to find Qdrant down) and probes it;
    a task already under way waits (``SYNC_MAX_POLL_INTERVAL``) without spending an attempt."""
    return Availability("Qdrant", "claims paused, no attempts spent, until it answers", "qdrant")


def task_store_unavailable(exc: BaseException, task_id: str) -> None:
    """A task's work could not be recorded: its lease expires and it is redone."""
    log.warning(
        "state store unavailable: %s",
        first_line(exc),
        extra={"event": "store_unavailable", "task_id": task_id},
    )


class OutageReports:
    """Writes this process's view of Mixpeek's breaker where ``status`` (another process) reads
    it (``service_info``); re-written at each failed probe, so a report that stops is stale."""

    def __init__(self, store: Store, owner: str) -> None:
        self.store = store
        self.owner = owner
        self._writes: set[asyncio.Task[None]] = set()

    def report(self, outage: Outage) -> None:
        if outage.since is not None:
            write = self.store.report_outage(self.owner, "Mixpeek", outage.since, outage.reason)
        else:
            write = self.store.clear_outage(self.owner)
        task = asyncio.ensure_future(write)
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # best effort

    async def close(self, outage: Outage) -> None:
        await asyncio.gather(*self._writes, return_exceptions=True)
        if outage.is_open:  # this process will no longer report on it
            with contextlib.suppress(Exception):
                await self.store.clear_outage(self.owner)
