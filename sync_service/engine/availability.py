"""Whether the state store answers this process, as its daemon sees it.

The daemon's ticks are the probe: a claim that fails with a store error marks the store
unavailable (logged once, not at every tick), the first claim that succeeds marks it back. While
it is down nothing can be claimed and no attempt can be counted, so no work is lost or spent;
outcomes already in hand wait for it (``engine/persist.py``). ``/readyz`` and the
``sync_state_store_up`` metric say since when.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sync_service.state.store import Store
    from sync_service.upstream.port import Outage

log = logging.getLogger("sync_service.engine.scheduler")


def first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


class StoreHealth:
    """Down since when, and why; None while the store answers."""

    def __init__(self) -> None:
        self.since: datetime | None = None
        self.reason: str | None = None
        self._down_at = 0.0
        self._listeners: list[Callable[[StoreHealth], None]] = []

    def on_change(self, listener: Callable[[StoreHealth], None]) -> None:
        self._listeners.append(listener)

    def failed(self, exc: BaseException) -> None:
        self.reason = first_line(exc)
        if self.since is not None:
            log.debug("state store still unavailable: %s", self.reason)
            return
        self.since, self._down_at = datetime.now(UTC), time.monotonic()
        log.warning(
            "state store unavailable: %s; claims paused until it answers",
            self.reason,
            extra={"event": "store_unavailable"},
        )
        self._notify()

    def answered(self) -> None:
        if self.since is None:
            return
        down = time.monotonic() - self._down_at
        self.since, self.reason = None, None
        log.warning(
            "state store available again after %.0f s; work resumes",
            down,
            extra={"event": "store_available", "seconds": round(down, 1)},
        )
        self._notify()

    def describe(self) -> str:
        if self.since is None:
            return "ok"
        return f"unavailable since {self.since:%Y-%m-%d %H:%M:%S}Z: {self.reason}"

    def _notify(self) -> None:
        for listener in self._listeners:
            try:
                listener(self)
            except Exception:
                log.exception("store health listener failed")


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
