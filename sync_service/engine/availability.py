"""Whether the state store and Qdrant answer this process, as its daemon sees them, and the
outage reports ``status`` reads.

The daemon's ticks are the probe: a claim that fails with a store error marks the store
unavailable (logged once, not at every tick), the first claim that succeeds marks it back. While
it is down nothing can be claimed and no attempt can be counted, so no work is lost or spent;
outcomes already in hand wait for it (``engine/persist.py``). ``/readyz`` and the
``sync_state_store_up`` metric say since when.

Qdrant's availability is read from the pipeline's writes (and watch passes): the first that
finds it down logs it and pauses the claims; a tick then probes it, at growing intervals; an
answer lets work through on trial, and the first write that lands logs its return. The tasks
that reached it meanwhile wait without a line each. Each daemon writes its Mixpeek and Qdrant
outages to the state store (``OutageReports``), where ``status`` reads them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from sync_service.state.store import Store
    from sync_service.upstream.port import Outage

log = logging.getLogger("sync_service.engine.scheduler")


def first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


#: Seconds between probes of a dependency found down: the first wait, and the longest.
FIRST_PROBE, MAX_PROBE = 1.0, 30.0
#: Seconds of work on trial after a probe answered, with nothing failing, that end an outage.
TRIAL = 30.0


class Availability:
    """Whether a dependency answers, as the work sees it. Its going away is logged once (a
    warning saying what waits meanwhile), and so is its return, with how long it was away:
    one line each instead of one per task or tick. Listeners (``on_change``: the metrics,
    ``OutageReports``) hear of each change and of each failed probe, which refreshes the
    reason and tells ``status`` the outage goes on.

    A probe that answers lets work through on trial; only a write that lands (or ``TRIAL``
    seconds with none failing) ends the outage. A Qdrant that answers its probe but fails
    writes (a full disk) is one outage, not an "available again" every probe."""

    def __init__(self, what: str, meanwhile: str, event: str) -> None:
        self.what = what
        self.meanwhile = meanwhile
        self.event = event
        #: When it went down (wall clock), and why; None while it answers.
        self.since: datetime | None = None
        self.reason: str | None = None
        self._down_at: float | None = None
        self._wait = FIRST_PROBE  # before the next probe (holding); doubles up to MAX_PROBE
        self._next_probe = 0.0
        self._trial_since: float | None = None  # a probe answered: work goes through on trial
        self._listeners: list[Callable[[Availability], None]] = []

    def on_change(self, listener: Callable[[Availability], None]) -> None:
        self._listeners.append(listener)

    @property
    def down(self) -> bool:
        return self._down_at is not None

    @property
    def holds_work(self) -> bool:
        """Down, and not on trial: new work waits (``holding`` also probes when due)."""
        return self._down_at is not None and self._trial_since is None

    def unavailable_for(self) -> float:
        """Seconds since it went down (0 while it answers)."""
        return 0.0 if self._down_at is None else time.monotonic() - self._down_at

    def describe(self) -> str:
        """``Qdrant unavailable since <UTC time> (<seconds> s): <reason>``, or that it is up."""
        if self.since is None:
            return f"{self.what} available"
        return (
            f"{self.what} unavailable since {self.since:%Y-%m-%d %H:%M:%S}Z "
            f"({self.unavailable_for():.0f} s): {self.reason}"
        )

    async def holding(self, probe: Callable[[], Awaitable[object]]) -> bool:
        """True while the caller should hold new work back. When the wait since the last probe
        is over, ``probe`` decides: raising, still down (the next wait doubles); answering, the
        work goes through on trial (False) until a write lands, fails, or ``TRIAL`` passes."""
        if self._down_at is None:
            return False
        now = time.monotonic()
        if self._trial_since is not None:
            if now - self._trial_since >= TRIAL:  # nothing it was given failed
                self.answered()
            return False
        if now < self._next_probe:
            return True
        try:
            await probe()
        except Exception as exc:
            self._still_down(first_line(exc))
            return True
        self._trial_since = time.monotonic()
        log.debug("%s answers a probe: work resumes on trial", self.what)
        return False

    def _still_down(self, reason: str) -> None:
        self._trial_since = None
        self._wait = min(MAX_PROBE, self._wait * 2)
        self._next_probe = time.monotonic() + self._wait
        self.reason = reason
        log.debug("%s still unavailable: %s", self.what, reason)
        self._notify()

    def failed(self, exc: BaseException) -> None:
        reason = first_line(exc)
        if self._down_at is not None:
            if self._trial_since is not None:  # it answered a probe, but not the work
                self._still_down(reason)
            else:
                log.debug("%s still unavailable: %s", self.what, reason)
            return
        self._down_at = time.monotonic()
        self.since = datetime.now(UTC)
        self.reason = reason
        self._wait = FIRST_PROBE
        self._next_probe = self._down_at + FIRST_PROBE
        log.warning(
            "%s unavailable: %s; %s",
            self.what,
            reason,
            self.meanwhile,
            extra={"event": f"{self.event}_unavailable"},
        )
        self._notify()

    def answered(self) -> None:
        if self._down_at is None:
            return
        down = time.monotonic() - self._down_at
        self._down_at = self._trial_since = self.since = self.reason = None
        log.warning(
            "%s available again after %.0f s; work resumes",
            self.what,
            down,
            extra={"event": f"{self.event}_available", "seconds": round(down, 1)},
        )
        self._notify()

    def _notify(self) -> None:
        for listener in self._listeners:
            try:
                listener(self)
            except Exception:  # a listener (metrics, a store write) must not break the work
                log.exception("availability listener failed")


def store_health(on_change: Callable[[bool], None]) -> Availability:
    """The state store, as the daemon's ticks see it: while it is down nothing is claimed."""
    health = Availability("state store", "claims paused until it answers", "store")
    health.on_change(lambda h: on_change(not h.down))
    return health


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


class Down(Protocol):
    """An outage as ``status`` shows it: Mixpeek's breaker (``upstream/outage.py``) or an
    ``Availability`` (Qdrant)."""

    what: str
    since: datetime | None
    reason: str | None

    def describe(self) -> str: ...

    def unavailable_for(self) -> float: ...


async def holding_back(
    outage: Outage, qdrant: Availability, ping_qdrant: Callable[[], Awaitable[object]]
) -> list[Down]:
    """What holds the claims back now, each probed when its wait is over: Mixpeek's breaker,
    Qdrant. Empty while both answer."""
    if outage.probe_due():
        await outage.check()
    held: list[Down] = [outage] if outage.is_open else []
    if qdrant.down and await qdrant.holding(ping_qdrant):  # no coroutine while Qdrant is up
        held.append(qdrant)
    return held


class OutageReports:
    """Writes this process's view of its outages (Mixpeek's, Qdrant's) where ``status``
    (another process) reads it (``service_info``); re-written at each failed probe, so a report
    that stops is stale."""

    def __init__(self, store: Store, owner: str) -> None:
        self.store = store
        self.owner = owner
        self._open: set[str] = set()  # what this process has reported down
        #: The last write for each ``what``: the next one waits for it, so a report that was
        #: slow cannot land after the clear that followed it.
        self._last: dict[str, asyncio.Task[None]] = {}
        self._closed = False

    def report(self, down: Down) -> None:
        if self._closed:
            return
        if down.since is not None:
            self._open.add(down.what)
            write = self.store.report_outage(self.owner, down.what, down.since, down.reason)
        else:
            self._open.discard(down.what)
            write = self.store.clear_outage(self.owner, down.what)
        task = asyncio.ensure_future(_after(self._last.get(down.what), write))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # best effort
        self._last[down.what] = task

    async def close(self) -> None:
        """This process will no longer report: its writes end, then its reports are cleared."""
        self._closed = True
        await asyncio.gather(*self._last.values(), return_exceptions=True)
        for what in list(self._open):
            with contextlib.suppress(Exception):
                await self.store.clear_outage(self.owner, what)


async def _after(previous: asyncio.Task[None] | None, write: Awaitable[None]) -> None:
    if previous is not None:
        await asyncio.gather(previous, return_exceptions=True)
    await write
