"""The daemon loop: APScheduler ticks that claim due tasks and run them, and a clean shutdown.

Each tick claims as many due tasks as there is room for and starts them in the background, so a
slow asset never delays the next tick. APScheduler 3's ``shutdown()`` cancels running coroutine
jobs at once (docs/contract.md §6.1), so shutdown is ours: stop claiming, give all that runs one
grace period, cancel what is left, hand its leases back (a stop that hangs is reported: stall.py).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Awaitable, Callable
from contextlib import suppress
from datetime import UTC, datetime
from typing import Any, cast

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from sync_service.engine.availability import OutageReports, store_health, task_store_unavailable
from sync_service.engine.ending import finish_in_flight
from sync_service.engine.idle import worker_name as worker_name  # its callers import it here
from sync_service.engine.pipeline import FatalError, Pipeline
from sync_service.engine.stall import report_stall
from sync_service.keep.watch import Mirroring
from sync_service.keep.watcher import Watcher
from sync_service.keep.webhook_events import WebhookApplier, applier_for
from sync_service.settings import Settings
from sync_service.state.records import Claim
from sync_service.state.store import STORE_ERRORS, LeaseLost, Store

log = logging.getLogger(__name__)

JOB_DEFAULTS = {"misfire_grace_time": 1, "coalesce": True, "max_instances": 1}


class Daemon:
    """Runs the pipeline on a schedule until stopped (or, with ``drain``, until idle)."""

    def __init__(
        self,
        store: Store,
        pipeline: Pipeline,
        *,
        poll_interval: float,
        claim_batch: int,
        lease_seconds: float,
        shutdown_grace: float,
        owner: str | None = None,
        on_progress: Callable[[], None] | None = None,
        drain_outage_wait: float = 300.0,
    ) -> None:
        self.store = store
        self.pipeline = pipeline
        self.poll_interval = poll_interval
        self.claim_batch = claim_batch
        self.lease_seconds = lease_seconds
        self.shutdown_grace = shutdown_grace
        self.owner = owner or worker_name()
        self.on_progress = on_progress
        self.drain_outage_wait = drain_outage_wait
        self.store_health = store_health(pipeline.metrics.store_answered)
        self.outage_reports = OutageReports(store, self.owner)
        self.in_flight: dict[asyncio.Task[None], Claim] = {}
        self.fatal: BaseException | None = None
        #: A failure outside any task (``abort``), raised by ``run``.
        self.failure: BaseException | None = None
        self._aborted: dict[asyncio.Task[None], Claim] = {}
        self._stop = asyncio.Event()
        self._forced = False
        self._drain = False
        self._tick_lock = asyncio.Lock()
        self._kicks: set[asyncio.Task[None]] = set()
        self._short = False  # the last claim took every due task (it came up short)
        self._jobs: set[asyncio.Task[Any]] = set()  # scheduled jobs running now
        self._wake: asyncio.TimerHandle | None = None
        self._stall: threading.Timer | None = None  # the stall report a stop arms (stall.py)
        self.deadline: float | None = None  # loop time the stop's grace ends, once stopping
        #: Watch mode: the passes when due, the events any replica's receiver queued (None: off).
        self.watcher: Watcher | None = None
        self.webhooks: WebhookApplier | None = None
        self._watch_wake: asyncio.TimerHandle | None = None

    @classmethod
    def from_settings(
        cls,
        store: Store,
        pipeline: Pipeline,
        settings: Settings,
        *,
        watch: bool = False,
    ) -> Daemon:
        """A daemon with the schedule, batch, lease and grace the settings name; with
        ``watch``, it also runs the watched collections' passes."""
        daemon = cls(
            store,
            pipeline,
            poll_interval=settings.poll_interval,
            claim_batch=settings.claim_batch,
            lease_seconds=settings.lease_seconds,
            shutdown_grace=settings.shutdown_grace,
            drain_outage_wait=settings.drain_outage_wait,
        )
        if watch:
            mirroring = Mirroring(
                settings,
                store,
                pipeline.upstream,
                pipeline.sink,
                pipeline.metrics,
                on_queued=daemon._kick,
            )
            daemon.watcher = Watcher(
                mirroring,
                owner=daemon.owner,
                lease_seconds=settings.lease_seconds,
                on_fatal=daemon._fatal,
                qdrant=pipeline.qdrant,
            )
            daemon.webhooks = applier_for(daemon.watcher, daemon._kick_watch, daemon._kick)
        return daemon

    # -- control ----------------------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def request_stop(self) -> None:
        """First call: graceful stop. Second call: abandon the work in flight at once."""
        if self._stop.is_set():
            self._forced = True
            for task in self.in_flight:
                task.cancel()
            return
        log.info("stopping", extra={"event": "daemon_stopping", "in_flight": len(self.in_flight)})
        self._stall = report_stall(self.shutdown_grace + 10, "stopping", asyncio.get_running_loop())
        self._stop.set()

    def abort(self, exc: BaseException) -> None:
        """Stop at once for a failure outside any one task (the Qdrant sink could not be made):
        the work in flight is cancelled, its leases go back, and ``run`` raises ``exc``."""
        if self.failure is None:
            self.failure = exc
        self._aborted.update(self.in_flight)  # they leave in_flight as they end
        for task in self.in_flight:
            task.cancel()
        self._stop.set()

    async def run(self, *, drain: bool = False) -> int:
        """Run until stopped; returns the process exit code."""
        self._drain = drain
        for down in (self.pipeline.outage, self.pipeline.qdrant):  # for `status` to show
            down.on_change(self.outage_reports.report)
        scheduler = AsyncIOScheduler(job_defaults=JOB_DEFAULTS, timezone=UTC)
        scheduler.add_job(
            self._job(self.tick),
            "interval",
            seconds=self.poll_interval,
            next_run_time=datetime.now(UTC),
            id="tick",
        )
        scheduler.add_job(
            self._job(self.heartbeat),
            "interval",
            seconds=max(self.lease_seconds / 3, 0.5),
            id="heartbeat",
        )
        if self.watcher is not None:
            settings = self.watcher.mirroring.settings
            try:  # due times stored under other intervals (a restart with new settings)
                await self.store.reconcile_intervals(
                    settings.watch_interval, settings.watch_full_interval
                )
            except STORE_ERRORS as exc:
                self.store_health.failed(exc)
            await self.watch_tick()  # before the first claim: a drain waits for these passes
            scheduler.add_job(
                self._job(self.watch_tick), "interval", seconds=self.poll_interval, id="watch"
            )
        if self.webhooks is not None:
            tick, every = self._job(self.webhooks.tick), self.poll_interval
            scheduler.add_job(tick, "interval", seconds=every, id="webhooks")
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.request_stop)
        scheduler.start()
        log.info(
            "daemon started", extra={"event": "daemon_started", "owner": self.owner, "drain": drain}
        )
        try:
            await self._stop.wait()
        finally:
            until = self.deadline = loop.time() + self.shutdown_grace  # one for all that follows
            scheduler.pause()
            if self._wake is not None:
                self._wake.cancel()
            if self._watch_wake is not None:
                self._watch_wake.cancel()
            # A tick or kick may be mid-claim: let it finish (shutdown would cancel it mid-SQL).
            with suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._tick_lock.acquire(), until - loop.time())
                self._tick_lock.release()
            await asyncio.gather(*self._kicks, return_exceptions=True)
            if self.webhooks is not None:  # events cut short are claimed again later
                await self.webhooks.stop(until - loop.time())
            if self.watcher is not None:
                await self.watcher.stop()  # a pass cut short resumes at its next page
            pending = {**self._aborted, **self.in_flight}
            await finish_in_flight(self.store, pending, until - loop.time())
            if self._jobs:  # they end before the scheduler would cancel them
                await asyncio.wait(self._jobs, timeout=max(until - loop.time(), 0))
            scheduler.shutdown(wait=False)
            await self.outage_reports.close()
            for sig in (signal.SIGTERM, signal.SIGINT):
                with suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)
            if self._stall is not None:  # stopped: no stall to report (this process may go on)
                self._stall.cancel()
        if self.failure is not None:
            raise self.failure
        if self.fatal is not None:
            log.error("stopped: %s", self.fatal, extra={"event": "daemon_fatal"})
            return 1
        log.info("daemon stopped", extra={"event": "daemon_stopped"})
        return 1 if self._forced else 0

    # -- scheduled jobs ---------------------------------------------------------------------

    def _job(self, job: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
        """A scheduled job that ends quietly when shutdown cancels it mid-statement (APScheduler
        would log the cancellation as a crash, with a traceback, on a clean stop)."""

        async def run() -> None:
            self._jobs.add(task := cast("asyncio.Task[Any]", asyncio.current_task()))
            try:
                await job()
            except asyncio.CancelledError:
                if not self._stop.is_set():
                    raise
            finally:
                self._jobs.discard(task)

        run.__qualname__ = getattr(job, "__qualname__", "job")
        return run

    async def tick(self) -> None:
        """Claim due tasks up to the free capacity and start them."""
        if self._stop.is_set() or self._tick_lock.locked():
            return  # a tick is already claiming; one at a time is enough
        async with self._tick_lock:
            await self._claim_and_start()

    def _fatal(self, exc: BaseException) -> None:
        """A problem no retry can fix (the API key was refused): stop the daemon."""
        self.fatal = FatalError(str(exc))
        self._stop.set()

    async def watch_tick(self) -> None:
        """Start the watched collections' passes that are due, and wake up for the next one
        if it falls due before the next tick (a pass then starts on time, not up to a poll
        interval late)."""
        if self._stop.is_set() or self.watcher is None or self.pipeline.outage.is_open:
            return  # a listing now would only fail: the passes wait for Mixpeek as tasks do
        if self.pipeline.qdrant.holds_work:  # and for Qdrant (the claims' ticks probe it)
            return
        try:
            await self.watcher.tick()
            due_in = await self.store.next_watch_due_in()
        except STORE_ERRORS as exc:
            self.store_health.failed(exc)
            return
        if due_in is not None and due_in < self.poll_interval and not self._stop.is_set():
            if self._watch_wake is not None:
                self._watch_wake.cancel()
            self._watch_wake = asyncio.get_running_loop().call_later(
                max(due_in, 0.0) + 0.005, self._kick_watch
            )

    def _kick_watch(self) -> None:
        if not self._stop.is_set():
            kick = asyncio.create_task(self.watch_tick())
            self._kicks.add(kick)
            kick.add_done_callback(self._kicks.discard)

    def _kick(self) -> None:
        """Claim again now: a finished task's place should not idle until the next tick."""
        if not self._stop.is_set() and not self._tick_lock.locked():
            kick = asyncio.create_task(self.tick())
            self._kicks.add(kick)  # keep a reference until it is done
            kick.add_done_callback(self._kicks.discard)

    async def _claim_and_start(self) -> None:
        if await self._paused():
            return
        room = self.claim_batch - len(self.in_flight)
        try:
            claims = (
                await self.store.claim_due(self.owner, room, self.lease_seconds) if room else []
            )
            idle = self._drain and not claims and not self.in_flight
            if self.watcher is not None and self.watcher.running:
                idle = False  # a pass may still queue work
            drained = idle and await self.store.pending_count() == 0
        except STORE_ERRORS as exc:
            self.store_health.failed(exc)  # ride it out: the next tick tries again
            return
        self.store_health.answered()
        self._short = room > 0 and len(claims) < room  # no due work left behind (_after_task)
        for claim in claims:
            task = asyncio.create_task(self._process(claim), name=f"task:{claim.task_id}")
            self.in_flight[task] = claim
        if len(claims) < room:
            await self._wake_when_due()
        if drained:
            log.info("nothing pending: drained", extra={"event": "drained"})
            self._stop.set()

    async def _paused(self) -> bool:
        """While Mixpeek or Qdrant is down a tick probes instead of claiming (claimed work could
        only wait); a drain gives up after ``drain_outage_wait``, leaving the work pending."""
        held = await self.pipeline.held_back()
        for down in held:
            if self._drain and down.unavailable_for() > self.drain_outage_wait and not self.fatal:
                self.fatal = FatalError(
                    f"{down.describe()}; gave up waiting after SYNC_DRAIN_OUTAGE_WAIT="
                    f"{self.drain_outage_wait:g} s: the work stays pending, no attempts were spent"
                )
                self._stop.set()
        return bool(held)

    async def _wake_when_due(self) -> None:
        """Claim again when the next task falls due, not at the tick after it.

        Ticks alone add up to a whole poll interval to every task's wait: a task due just
        after a tick waited for the next one (freshness p95 2.3 s at a 1 s poll interval).
        """
        try:
            due_in = await self.store.next_due_in()
        except STORE_ERRORS:
            return  # the ticks go on regardless
        if due_in is None or due_in >= self.poll_interval or self._stop.is_set():
            return
        if self._wake is not None:
            self._wake.cancel()
        self._wake = asyncio.get_running_loop().call_later(max(due_in, 0.0) + 0.005, self._kick)

    async def heartbeat(self) -> None:
        """Keep the leases of long-running work from expiring under it."""
        if not self.in_flight:
            return
        try:
            await self.store.extend_leases(self.owner, self.in_flight.values(), self.lease_seconds)
        except STORE_ERRORS as exc:
            self.store_health.failed(exc)

    async def _process(self, claim: Claim) -> None:
        try:
            await self.pipeline.process(claim)
        except LeaseLost as exc:
            log.warning(
                "lease lost: %s", exc, extra={"event": "lease_lost", "task_id": claim.task_id}
            )
        except FatalError as exc:
            self.fatal = exc
            self._stop.set()
            with suppress(Exception):  # the next start may take the task at once
                await self.store.release(claim)
        except asyncio.CancelledError:
            raise
        except STORE_ERRORS as exc:
            # Points in Qdrant but not recorded: redone (same ids) once the lease expires.
            task_store_unavailable(exc, claim.task_id)
        except Exception:
            # A bug, not an upstream fault: the daemon lives; the task is retried after its lease.
            log.exception(
                "unexpected error", extra={"event": "task_crashed", "task_id": claim.task_id}
            )
        finally:
            self.in_flight.pop(asyncio.current_task(), None)  # type: ignore[arg-type]
            if self.on_progress is not None:
                self.on_progress()
            self._after_task()

    def _after_task(self) -> None:
        """A task ended: claim again if the last claim may have left due work behind (it
        filled its room), or if a drain may be over. Else a claim would find nothing (one per
        ended task did: 83 for 100 tasks in bench scenario 10); look when the next task falls
        due instead, its own reschedule included (a claim then, at once if due now)."""
        if not self._short or (self._drain and not self.in_flight):
            self._kick()
        elif not self._stop.is_set():
            look = asyncio.create_task(self._wake_when_due())
            self._kicks.add(look)
            look.add_done_callback(self._kicks.discard)
