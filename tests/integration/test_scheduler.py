"""The daemon's scheduling: a task is claimed when it falls due, not at the next tick."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from sync_service.control.metrics import Metrics
from sync_service.engine.availability import Down, holding_back, qdrant_health
from sync_service.engine.scheduler import Daemon
from sync_service.keep.webhook_events import WebhookApplier
from sync_service.state.records import Claim
from sync_service.state.store import Store
from sync_service.upstream.port import Outage


class QdrantPing:
    """A stand-in sink's ping: raises while Qdrant is down, and counts the probes."""

    def __init__(self, up: bool = True) -> None:
        self.up = up
        self.probes = 0

    async def ping(self) -> None:
        self.probes += 1
        if not self.up:
            raise ConnectionError("Qdrant down")


class Recorder:
    """A stand-in pipeline that records when each task reached it and marks it failed."""

    def __init__(self, store: Store, daemon: list[Daemon]) -> None:
        self.store = store
        self.daemon = daemon
        self.seen: dict[str, float] = {}
        self.outage = Outage()  # never opens: no probe is attached
        self.qdrant = qdrant_health()  # up until a test says otherwise
        self.sink = QdrantPing()
        self.metrics = Metrics()

    async def held_back(self) -> list[Down]:  # as Pipeline's
        return await holding_back(self.outage, self.qdrant, self.sink.ping)

    async def process(self, claim: Claim) -> None:
        self.seen[claim.task_id] = time.monotonic()
        await self.store.mark_failed(claim, "test")
        self.daemon[0].request_stop()


async def test_a_task_is_claimed_when_due_not_at_the_next_tick(store: Store) -> None:
    await store.track(["t1"])
    [claim] = await store.claim_due("setup", 10, 30)
    await store.reschedule(claim, upstream_status="PROCESSING", delay=0.5)
    assert await store.next_due_in() == pytest.approx(0.5, abs=0.3)

    holder: list[Daemon] = []
    recorder = Recorder(store, holder)
    daemon = Daemon(
        store,
        recorder,  # type: ignore[arg-type]
        poll_interval=30.0,  # the next tick after the first is 30 s away
        claim_batch=10,
        lease_seconds=30,
        shutdown_grace=5,
    )
    holder.append(daemon)
    started = time.monotonic()
    assert await asyncio.wait_for(daemon.run(), timeout=20) == 0
    # Claimed by the wake-up at its due time: long before a second tick could have run.
    assert recorder.seen["t1"] - started < 10
    assert await store.next_due_in() is None  # nothing pending is left


async def test_next_due_in_ignores_leased_and_finished_tasks(store: Store) -> None:
    assert await store.next_due_in() is None
    await store.track(["a", "b"])
    assert (await store.next_due_in() or 0) <= 0  # both due now
    claims = await store.claim_due("w", 10, 30)
    assert await store.next_due_in() is None  # both leased
    await store.mark_failed(claims[0], "x")
    await store.reschedule(claims[1], upstream_status=None, delay=60)
    assert await store.next_due_in() == pytest.approx(60, abs=5)


class Hanging(Recorder):
    """A stand-in pipeline whose work never ends on its own (until cancelled)."""

    async def process(self, claim: Claim) -> None:
        self.seen[claim.task_id] = time.monotonic()
        await asyncio.Event().wait()


async def test_shutdown_takes_one_grace_period_in_all_not_one_per_wait(store: Store) -> None:
    """A tick stuck mid-claim and work that never ends share SYNC_SHUTDOWN_GRACE: the stop
    does not wait the grace for the tick, then the grace again for the work."""
    await store.track(["t1"])
    holder: list[Daemon] = []
    pipeline = Hanging(store, holder)
    daemon = _daemon(store, pipeline, 10, shutdown_grace=0.8)
    running = asyncio.create_task(daemon.run())
    for _ in range(200):
        if pipeline.seen:
            break
        await asyncio.sleep(0.05)
    assert pipeline.seen, "the task was never claimed"
    await daemon._tick_lock.acquire()  # a tick that never finishes its claim
    started = time.monotonic()
    daemon.request_stop()
    assert await asyncio.wait_for(running, timeout=10) == 0
    took = time.monotonic() - started
    assert 0.7 <= took < 1.5, took  # one grace period (0.8 s), not two (1.6 s)
    # Stopped: the stall report the stop armed is called off (this process goes on).
    assert daemon._stall is not None and daemon._stall.finished.is_set()
    # The abandoned work gave its lease back: the task is due again at once.
    assert [c.task_id for c in await store.claim_due("next", 10, 30)] == ["t1"]


async def test_a_webhook_batch_under_way_keeps_to_the_same_grace(store: Store) -> None:
    """A webhook batch that does not end (Mixpeek slow to answer) is cut when the stop's one
    grace period ends: it had 5 s of its own, after the tick's wait and before the work's."""
    daemon = Daemon(
        store,
        Recorder(store, []),  # type: ignore[arg-type]
        poll_interval=30.0,
        claim_batch=10,
        lease_seconds=30,
        shutdown_grace=0.8,
    )
    # Only its batches are run here (drain replaced): no settings or upstream are reached.
    applier = WebhookApplier(None, store, None, Metrics(), owner=daemon.owner)  # type: ignore[arg-type]
    applying, cut = asyncio.Event(), asyncio.Event()

    async def batch_never_ending() -> int:
        applying.set()
        try:
            await asyncio.Event().wait()
        finally:
            cut.set()
        return 0

    applier.drain = batch_never_ending  # type: ignore[method-assign]
    daemon.webhooks = applier
    running = asyncio.create_task(daemon.run())
    await asyncio.sleep(0.2)  # the daemon has started
    applier.wake()  # as the receiver does for an event it queued
    await asyncio.wait_for(applying.wait(), timeout=5)
    started = time.monotonic()
    daemon.request_stop()
    assert await asyncio.wait_for(running, timeout=10) == 0
    took = time.monotonic() - started
    assert 0.7 <= took < 1.5, took  # the grace (0.8 s), not the batch's own 5 s
    assert cut.is_set() and daemon.deadline is not None


class Counting:
    """Counts the daemon's claims (``Store.claim_due``) on a real store."""

    def __init__(self, store: Store) -> None:
        self.claims = 0
        self._claim_due = store.claim_due

        async def claim_due(*args: Any, **kwargs: Any) -> list[Claim]:
            self.claims += 1
            return await self._claim_due(*args, **kwargs)

        store.claim_due = claim_due  # type: ignore[method-assign]


class Finishing(Recorder):
    """A stand-in pipeline that marks each task failed (its work is over) and goes on; the
    tasks end 0.1 s apart (ending together, their claims would be one)."""

    async def process(self, claim: Claim) -> None:
        self.seen[claim.task_id] = time.monotonic()
        await asyncio.sleep(0.1 * len(self.seen))
        await self.store.mark_failed(claim, "test")


def _daemon(store: Store, pipeline: Recorder, claim_batch: int, **settings: Any) -> Daemon:
    """By default no tick after the first: what happens comes from the kicks."""
    defaults: dict[str, Any] = {"poll_interval": 30.0, "lease_seconds": 30, "shutdown_grace": 5}
    return Daemon(
        store,
        pipeline,  # type: ignore[arg-type]
        claim_batch=claim_batch,
        **{**defaults, **settings},
    )


async def test_a_task_ending_claims_again_only_if_due_work_may_be_left(store: Store) -> None:
    """The first claim took every due task, so the tasks that end do not claim again (each
    such claim found nothing); the last one does, and the drain ends."""
    await store.track(["a", "b", "c"])
    counting = Counting(store)
    pipeline = Finishing(store, [])
    assert await asyncio.wait_for(_daemon(store, pipeline, 10).run(drain=True), 20) == 0
    assert set(pipeline.seen) == {"a", "b", "c"}
    assert counting.claims == 2  # the first, and the drain's last look (it was 4)


async def test_with_more_due_than_room_each_ending_task_claims_the_next(store: Store) -> None:
    await store.track([f"t{i}" for i in range(5)])
    counting = Counting(store)
    pipeline = Finishing(store, [])
    started = time.monotonic()
    assert await asyncio.wait_for(_daemon(store, pipeline, 2).run(drain=True), 20) == 0
    assert len(pipeline.seen) == 5
    assert time.monotonic() - started < 10  # not one task per 30 s tick
    assert counting.claims >= 3


class Rescheduling(Recorder):
    """Still running at the first look (asked again in 0.4 s), over at the second."""

    async def process(self, claim: Claim) -> None:
        if claim.task_id in self.seen:
            self.seen["again"] = time.monotonic()
            await self.store.mark_failed(claim, "test")
            self.daemon[0].request_stop()
            return
        self.seen[claim.task_id] = time.monotonic()
        await self.store.reschedule(claim, upstream_status="PROCESSING", delay=0.4)


async def test_a_task_rescheduled_is_claimed_at_its_due_time_without_a_claim_before(
    store: Store,
) -> None:
    await store.track(["t1"])
    counting = Counting(store)
    holder: list[Daemon] = []
    pipeline = Rescheduling(store, holder)
    holder.append(_daemon(store, pipeline, 10))
    assert await asyncio.wait_for(holder[0].run(), 20) == 0
    assert 0.3 <= pipeline.seen["again"] - pipeline.seen["t1"] < 2.0  # its due time, not a tick
    assert counting.claims == 2  # the first, and the one at its due time (it was 3)


async def test_while_qdrant_is_down_nothing_is_claimed_and_a_probe_resumes_claims(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """A write that found Qdrant down pauses the claims: a claimed task would fetch its
    content from Mixpeek only to find Qdrant down again. Ticks probe it instead; the first
    answer logs its return, and the waiting task is claimed."""
    caplog.set_level("WARNING", logger="sync_service.engine.scheduler")
    await store.track(["t1"])
    holder: list[Daemon] = []
    recorder = Recorder(store, holder)
    recorder.sink = QdrantPing(up=False)
    daemon = _daemon(store, recorder, 10)  # ticks by hand below
    holder.append(daemon)
    recorder.qdrant.failed(ConnectionError("Qdrant down"))  # as a task's write would
    for _ in range(3):
        await daemon.tick()
    assert recorder.seen == {}  # down, and the first probe not due yet (1 s): no claim
    assert recorder.sink.probes == 0
    await asyncio.sleep(1.05)
    await daemon.tick()  # the probe is due: still down, so still nothing claimed
    assert recorder.sink.probes == 1 and recorder.seen == {}
    await daemon.tick()  # the next probe waits 2 s now
    assert recorder.sink.probes == 1
    recorder.sink.up = True
    await asyncio.sleep(2.05)
    await daemon.tick()
    await asyncio.gather(*daemon.in_flight)
    assert "t1" in recorder.seen  # the probe answered: work goes through, on trial
    assert recorder.qdrant.down  # until a write lands (a probe is not a write)
    recorder.qdrant.answered()  # as the task's write landing does (Pipeline.sync)
    # One line as it went, one as it came back; the failed probe in between only at DEBUG.
    events = [getattr(r, "event", None) for r in caplog.records if r.levelname == "WARNING"]
    assert events == ["qdrant_unavailable", "qdrant_available"], events


async def test_a_drain_gives_up_on_a_qdrant_down_longer_than_its_outage_wait(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """As for Mixpeek's outage: ``run --drain`` (a CronJob) does not wait forever for Qdrant;
    after ``SYNC_DRAIN_OUTAGE_WAIT`` it exits 1 saying why, the work left pending."""
    await store.track(["t1"])
    holder: list[Daemon] = []
    recorder = Recorder(store, holder)
    recorder.sink = QdrantPing(up=False)
    daemon = _daemon(store, recorder, 10, poll_interval=0.1, drain_outage_wait=0.5)
    holder.append(daemon)
    recorder.qdrant.failed(ConnectionError("connection refused"))  # as a task's write would
    assert await asyncio.wait_for(daemon.run(drain=True), timeout=20) == 1
    assert recorder.seen == {}  # never claimed: it stays pending, no attempt spent
    assert (await store.counts())["pending"] == 1
    assert isinstance(daemon.fatal, Exception)
    message = str(daemon.fatal)
    assert message.startswith("Qdrant unavailable since "), message
    assert "connection refused; gave up waiting after SYNC_DRAIN_OUTAGE_WAIT=0.5 s" in message
