"""Model-based test of the whole sync path: emulator → Pipeline → state store → Qdrant.

A ``hypothesis.stateful.RuleBasedStateMachine`` drives the real components in-process (reliability
note §6 row F1):

* upstream: the Mixpeek emulator app over ``httpx.ASGITransport`` (no sockets), on a fake clock
  the rules advance, so task progression is deterministic;
* state store: :class:`~sync_service.state.store.Store` on a SQLite file (migrated once per
  example);
* Qdrant: ``AsyncQdrantClient(":memory:")`` behind :class:`FaultySink`, which can fail the next
  upserts before or after writing (the ambiguous case), half-way, or "kill" the worker there;
* the daemon's loop is replaced by the ``tick`` rule (claim due tasks, process each one).

Time: every rule that "lets time pass" moves the emulator's clock *and* ages the store's
timestamps (``next_poll_at``, ``created_at``, ``lease_expires_at``) by the same amount, the way
procrastinate ages heartbeats in SQL, so backoff, task time-outs and expired leases of crashed
workers all follow the fake clock.

After every step the cheap invariants run (attempts ≤ ``SYNC_MAX_ATTEMPTS``, known states only,
deterministic point ids, no duplicate points, no point payload going back to an older revision).
At quiescence (the ``quiesce`` rule, and always in ``teardown``) faults are cleared, time is
advanced and the worker ticks until nothing is pending; then no task may be lost, every synced
task's points must equal what upstream served when it was synced (``tests.support``'s oracle),
poisoned features must be exactly its dead letters, and every ledger row's point must exist.

Run longer searches with an environment variable. ``-n 0`` keeps the one test in this process
(``-p no:xdist`` alone fails: pyproject's ``addopts`` pass ``-n 4``)::

    SYNC_PROPERTY_EXAMPLES=500 .venv/bin/pytest tests/property -q -n 0

Two product bugs, found while building this model and reproduced with its operations, are kept
as regression tests at the end of this module. One is fixed: a wrong-length poisoned first
vector no longer sets a new collection's size, because the model's service is configured with
``SYNC_VECTOR_SIZES`` (the size the emulator serves), so the machine poisons any vector, a
collection's first included. Around the other the default run steers (see
``stall_next_upsert``); ``SYNC_PROPERTY_KNOWN_BUGS=1`` lifts that: the machine may then freeze a
worker inside its Qdrant upsert (a SIGSTOP'd replica). Random search rarely hits those exact
sequences in a few hundred examples, hence the regression tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)
from qdrant_client import AsyncQdrantClient
from sqlalchemy import select, update

from sync_service.emulator import EmulatorConfig, content
from sync_service.emulator.app import create_app
from sync_service.engine.pipeline import Pipeline
from sync_service.engine.points import PlannedPoint, VectorSpec
from sync_service.qdrant.sink import QdrantSink, RefusedPoint
from sync_service.settings import Settings
from sync_service.state.schema import tasks
from sync_service.state.store import FAILED, PENDING, SYNCED, LeaseLost, Store
from sync_service.upstream.gen_b.adapter import GenBUpstream
from sync_service.upstream.gen_b.client import MixpeekClient, RetryPolicy
from tests.support import IN_STEP, compare_points, expected_point, point_id

# Read at import: the autouse fixture in tests/conftest.py clears SYNC_* variables per test.
EXAMPLES = int(os.environ.get("SYNC_PROPERTY_EXAMPLES", "25"))
#: Also hunt the known product bug the default run steers around (``stall_next_upsert``).
KNOWN_BUGS = os.environ.get("SYNC_PROPERTY_KNOWN_BUGS") == "1"

T = TypeVar("T")

API_KEY = "sk-property-test"
BASE_URL = "http://emulator"
MAX_ATTEMPTS = 4
#: Fake seconds per unit of time. The store's timestamps come from SQLite's real clock, aged by
#: ``_advance``; real time still passes while the test runs (much more under Hypothesis'
#: tracing explain phase), so every interval is far longer than a test's real run time. A due
#: check then never depends on how fast this machine is, and replays stay deterministic.
UNIT = 100.0
PROCESSING_TIME = 1 * UNIT
POLL_INTERVAL = 5 * UNIT
MAX_POLL_INTERVAL = 20 * UNIT
LEASE_SECONDS = 30 * UNIT
TASK_TIMEOUT = 120 * UNIT
VECTOR_SIZE = 8
COLLECTIONS = ("alpha", "beta")
UPSTREAM_KNOBS = ("error_rate", "fail_rate", "poison_rate", "stuck_rate")
UPSTREAM_FAULTS = st.sampled_from(
    [
        ("error_rate", 0.3),
        ("error_rate", 0.6),
        ("fail_rate", 0.5),
        ("fail_rate", 1.0),
        ("poison_rate", 0.5),
        ("poison_rate", 1.0),
        ("stuck_rate", 0.5),
    ]
)
#: (kind, n, video duration, collection, prevent_duplicate); small pools, so duplicates happen.
SUBMISSIONS = st.tuples(
    st.sampled_from(["video", "image", "text"]),
    st.integers(0, 3),
    st.sampled_from([10, 15, 30]),
    st.sampled_from(COLLECTIONS),
    st.booleans(),
)


def _event(text: str) -> None:
    """Coverage statistics (``--hypothesis-show-statistics``); a no-op outside Hypothesis."""
    with contextlib.suppress(InvalidArgument):
        event(text)


async def _no_sleep(_seconds: float) -> None:
    """Backoff waits of the HTTP retry policy take no real time."""


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


class SimulatedCrash(BaseException):
    """The worker process "dies" here: nothing after this point runs (kill -9)."""


class InjectedSinkError(Exception):
    """A Qdrant failure injected by :class:`FaultySink`."""


SINK_MODES = (
    "raise_before",  # nothing written, error
    "raise_mid",  # the first half written, error
    "raise_after",  # everything written, error: the ambiguous case
    "crash_before",  # the worker dies before writing
    "crash_mid",
    "crash_after",  # the worker dies after Qdrant acknowledged, before recording
)


@dataclass
class SinkFaults:
    """Qdrant's behaviour for the next upserts, plus what was written (survives worker crashes)."""

    mode: str | None = None
    remaining: int = 0
    #: point id -> revisions written, in order (from the feature's ``metadata.rev``).
    written: dict[str, list[int]] = field(default_factory=dict)
    regressions: list[str] = field(default_factory=list)
    upserts: int = 0
    #: Zombie support: each stalled upsert waits on its own gate.
    gates: list[asyncio.Event] = field(default_factory=list)
    stalled: asyncio.Event | None = None

    def arm(self, mode: str, n: int) -> None:
        self.mode, self.remaining = mode, n

    def clear(self) -> None:
        self.mode, self.remaining = None, 0

    def take(self) -> str | None:
        if self.mode is None or self.remaining <= 0:
            return None
        self.remaining -= 1
        mode = self.mode
        if self.remaining == 0:
            self.mode = None
        return mode

    def record(self, stored: Sequence[tuple[str, dict[str, Any]]]) -> None:
        """Record the revisions Qdrant holds after a write (a guarded stale write changes none)."""
        for stored_id, payload in stored:
            rev = _rev(payload)
            history = self.written.setdefault(stored_id, [])
            if history and rev < history[-1]:
                self.regressions.append(
                    f"point {stored_id} went back from rev {history[-1]} to rev {rev}"
                )
            history.append(rev)


def _rev(payload: dict[str, Any]) -> int:
    metadata = payload.get("metadata") or {}
    return int(metadata.get("rev", 0))


class FaultySink(QdrantSink):
    """The product's sink with injectable failures around ``upsert``."""

    def __init__(self, client: AsyncQdrantClient, faults: SinkFaults) -> None:
        # Small batches, so a video's segments span several upsert calls.
        super().__init__(client, batch_points=2)
        self.faults = faults

    async def _write(
        self, name: str, points: Sequence[PlannedPoint], version: float | None
    ) -> list[RefusedPoint]:
        refused = await super().upsert(name, points, version)
        self.faults.upserts += 1
        ids = [p.point_id for p in points]
        records = await self.client.retrieve(name, ids, with_payload=True) if ids else []
        self.faults.record([(str(r.id), dict(r.payload or {})) for r in records])
        return refused

    async def upsert(
        self, name: str, points: Sequence[PlannedPoint], version: float | None = None
    ) -> list[RefusedPoint]:
        mode = self.faults.take()
        if mode is None:
            return await self._write(name, points, version)
        if mode == "stall":
            gate = asyncio.Event()
            self.faults.gates.append(gate)
            assert self.faults.stalled is not None
            self.faults.stalled.set()
            await gate.wait()
            return await self._write(name, points, version)
        when = mode.split("_", 1)[1]
        if when == "mid":
            await self._write(name, points[: len(points) // 2], version)
        elif when == "after":
            await self._write(name, points, version)
        if mode.startswith("crash"):
            raise SimulatedCrash(mode)
        raise InjectedSinkError(f"injected Qdrant failure ({mode})")


@dataclass
class Worker:
    """One "process": its own HTTP client, sink (schema cache) and pipeline; the store is shared."""

    owner: str
    client: MixpeekClient
    sink: FaultySink
    pipeline: Pipeline


@dataclass
class Synced:
    """What Qdrant must hold for a task, as upstream served it when the task was synced."""

    collection: str
    points: list[dict[str, Any]]
    poisoned: set[str]


def _settings() -> Settings:
    return Settings(
        _env_file=None,
        MIXPEEK_API_URL=BASE_URL,  # type: ignore[call-arg]
        MIXPEEK_API_KEY=API_KEY,
        SYNC_POLL_INTERVAL=POLL_INTERVAL,
        SYNC_MAX_POLL_INTERVAL=MAX_POLL_INTERVAL,
        SYNC_TASK_TIMEOUT=TASK_TIMEOUT,
        SYNC_MAX_ATTEMPTS=MAX_ATTEMPTS,
        SYNC_LEASE_SECONDS=LEASE_SECONDS,
        # What the emulator serves: a poisoned (wrong-length) first vector cannot size a
        # collection (test_poisoned_first_vector_sets_the_collection_shape).
        SYNC_VECTOR_SIZES=f"{content.VECTOR_NAME}={VECTOR_SIZE}",
    )


class SyncModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.tmp = Path(tempfile.mkdtemp(prefix="sync-model-"))
        self.clock = FakeClock()
        self.app = create_app(
            EmulatorConfig(
                api_key=API_KEY,
                processing_time=PROCESSING_TIME,
                vector_size=VECTOR_SIZE,
                interval_sec=10,
                seed=0,
            ),
            clock=self.clock,
        )
        self.upstream = self.app.state.emulator
        self.transport = httpx.ASGITransport(app=self.app)
        self.control = httpx.AsyncClient(
            transport=self.transport,
            base_url=BASE_URL,
            headers={"Authorization": f"Bearer {API_KEY}"},
        )
        # The "user" who submits work and edits upstream data: retries through any 5xx share.
        self.user = MixpeekClient(
            base_url=BASE_URL,
            api_key=API_KEY,
            transport=self.transport,
            policy=RetryPolicy(max_attempts=60, base_delay=0.0, max_delay=0.0, sleep=_no_sleep),
        )
        self.settings = _settings()
        self.db_url = f"sqlite:///{self.tmp / 'sync.db'}"
        self.store = Store.open(self.db_url)
        self.run(self.store.migrate())
        self.qdrant = AsyncQdrantClient(":memory:")
        self.faults = SinkFaults(stalled=asyncio.Event())
        self.generation = 0
        self.worker = self._start_worker()
        self.zombies: list[tuple[Worker, asyncio.Task[None]]] = []
        # The model.
        self.submitted: set[str] = set()
        self.unknown: set[str] = set()
        self.deleted_assets: set[str] = set()
        self.synced_at: dict[str, float] = {}
        self.synced: dict[str, Synced | None] = {}
        #: Steer around the known product bug (see the module docstring).
        self.avoid_known_bugs = not KNOWN_BUGS
        self.rev = 0
        self.faults_seen = False  # upstream errors or sink faults: a task may give up

    # -- plumbing -------------------------------------------------------------------------

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def _start_worker(self) -> Worker:
        self.generation += 1
        client = MixpeekClient(
            base_url=BASE_URL,
            api_key=API_KEY,
            transport=self.transport,
            policy=RetryPolicy(max_attempts=3, base_delay=0.0, max_delay=0.0, sleep=_no_sleep),
        )
        sink = FaultySink(self.qdrant, self.faults)
        pipeline = Pipeline(self.settings, self.store, GenBUpstream(client), sink)
        return Worker(f"worker-{self.generation}", client, sink, pipeline)

    def _crash(self) -> None:
        """kill -9: the worker's memory (client, schema cache, leases held) is gone.

        The SQLite file and Qdrant's data stay. The store's engine is reopened, as a new
        process would. Leases the dead worker held expire with time (``advance_clock``).
        """
        self.run(self.worker.client.aclose())
        self.run(self.store.close())
        self.store = Store.open(self.db_url)
        self.worker = self._start_worker()
        for zombie, _ in self.zombies:
            zombie.pipeline.store = self.store

    def _advance(self, seconds: float) -> None:
        self.clock.now += seconds

        async def age() -> None:
            async with self.store.engine.begin() as conn:
                await conn.execute(
                    update(tasks).values(
                        next_poll_at=tasks.c.next_poll_at - seconds,
                        created_at=tasks.c.created_at - seconds,
                        lease_expires_at=tasks.c.lease_expires_at - seconds,
                        upstream_done_at=tasks.c.upstream_done_at - seconds,
                    )
                )

        self.run(age())

    async def _process(self, worker: Worker, claim: Any) -> None:
        """Process one claim; a claim whose upsert stalls becomes a zombie worker."""
        assert self.faults.stalled is not None
        self.faults.stalled.clear()
        job = asyncio.ensure_future(worker.pipeline.process(claim))
        stalled = asyncio.ensure_future(self.faults.stalled.wait())
        await asyncio.wait({job, stalled}, return_when=asyncio.FIRST_COMPLETED)
        if job.done():
            stalled.cancel()
            job.result()
            return
        # The worker froze inside Qdrant's upsert (SIGSTOP): another replica takes over.
        self.zombies.append((worker, job))
        _event("a worker froze in an upsert (zombie)")
        self.worker = self._start_worker()

    def _tick(self, limit: int) -> None:
        worker = self.worker
        claims = self.run(self.store.claim_due(worker.owner, limit, LEASE_SECONDS))
        for claim in claims:
            if self.worker is not worker:
                break  # the worker froze: the rest of its claims wait for their leases to expire
            try:
                self.run(self._process(worker, claim))
            except LeaseLost:
                _event("a worker lost its lease")
            except SimulatedCrash:
                _event("a worker crashed mid-task")
                self._crash()
                break
        self._observe_synced()

    def _observe_synced(self, *, by_zombie: bool = False) -> None:
        """Snapshot what upstream serves for every task that became synced just now.

        Upstream cannot change while a tick runs, so this is exactly what the worker fetched.
        Not so for a zombie, which fetched before it froze: its tasks get no snapshot (the
        sink's revision history still catches a stale write).
        """
        for row in self.run(self.store.list_tasks()):
            task_id = row["task_id"]
            if row["state"] != SYNCED or self.synced_at.get(task_id) == row["synced_at"]:
                continue
            self.synced_at[task_id] = row["synced_at"]
            assert task_id in self.submitted, f"unknown task {task_id} recorded synced"
            if by_zombie:
                self.synced[task_id] = None
                continue
            task = self.upstream.tasks[task_id]
            asset = self.upstream.assets.get(task.asset_id)
            assert asset is not None, f"task {task_id} synced but its asset is gone upstream"
            asset_view = self.upstream.asset_view(asset)
            points, poisoned = [], set()
            for feature in self.upstream.features_of(asset.asset_id):
                full = {
                    **self.upstream.feature_view(feature),
                    **self.upstream.feature_view(feature, with_vectors=True),
                }
                if full["feature_id"] in self.upstream.poisoned:
                    poisoned.add(full["feature_id"])
                else:
                    points.append(expected_point(task_id, asset_view, full))
            snapshot = Synced(row["qdrant_collection"], points, poisoned)
            self.synced[task_id] = snapshot
            self._check_synced(task_id, snapshot)

    def _check_synced(self, task_id: str, snapshot: Synced) -> None:
        """Durable before recorded, effectively once, dead letters = poisoned features."""
        ledger = self.run(self.store.synced_features(task_id))
        letters = self.run(self.store.dead_letters(task_id))
        want_ids = [p["id"] for p in snapshot.points]
        assert sorted(r["point_id"] for r in ledger) == sorted(want_ids), (task_id, ledger)
        records = (
            self.run(self.qdrant.retrieve(snapshot.collection, want_ids, with_vectors=True))
            if want_ids
            else []
        )
        diff = compare_points(snapshot.points, records)
        assert diff == IN_STEP, (task_id, diff)
        dead = {d["feature_id"] for d in letters}
        assert dead == snapshot.poisoned, (
            f"task {task_id}: dead letters {sorted(dead)} != poisoned {sorted(snapshot.poisoned)}",
            [d["reason"] for d in letters],
        )

    def _patch_upstream(self, changes: dict[str, Any]) -> None:
        answer = self.run(self.control.patch("/_emulator/config", json=changes))
        assert answer.status_code == 200, answer.text

    def _quiesce(self) -> None:
        """Faults off, zombies resumed, time passes, the worker ticks until nothing is pending."""
        self.faults.clear()
        self._patch_upstream(dict.fromkeys(UPSTREAM_KNOBS, 0.0))
        self._resume_zombies()
        # Each round passes every lease, backoff and poll interval, and half the task time-out.
        for _ in range(40):
            if self.run(self.store.pending_count()) == 0:
                break
            self._advance(2 * LEASE_SECONDS + UNIT)
            self._tick(limit=1000)
        else:
            raise AssertionError("did not quiesce: tasks still pending after 40 ticks")
        self._check_quiescent()
        rows = self.run(self.store.list_tasks())
        synced = sum(r["state"] == SYNCED for r in rows)
        _event(f"tasks synced at quiescence: {min(synced, 5)}{'+' if synced >= 5 else ''}")
        if any(r["dead_letters"] for r in rows if r["state"] == SYNCED):
            _event("a synced task has dead letters")
        if any(r["attempts"] for r in rows):
            _event("a task was retried after a transient failure")
        if any((r["error"] or "").startswith("gave up") for r in rows):
            _event("a task gave up after SYNC_MAX_ATTEMPTS")

    def _resume_zombies(self) -> None:
        for gate in self.faults.gates:
            gate.set()
        self.faults.gates.clear()
        for zombie, job in self.zombies:
            # LeaseLost: fenced, the zombie records nothing (but see the points it wrote).
            with contextlib.suppress(LeaseLost):
                self.run(job)
            self.run(zombie.client.aclose())
        self.zombies.clear()
        self._observe_synced(by_zombie=True)

    def _check_quiescent(self) -> None:
        rows = {r["task_id"]: r for r in self.run(self.store.list_tasks())}
        assert set(rows) == self.submitted | self.unknown
        for task_id, row in rows.items():
            state, error = row["state"], row["error"] or ""
            assert state in (SYNCED, FAILED), (task_id, state)
            assert row["lease_owner"] is None, f"finished task {task_id} still leased"
            if state == FAILED:
                assert error, f"task {task_id} failed without a reason"
            gave_up = self.faults_seen and error.startswith("gave up after")
            if task_id in self.unknown:
                # Under upstream 5xx faults a poll may fail every attempt before one answers
                # 404: giving up is then the documented outcome, as for any task.
                assert state == FAILED, (task_id, state, error)
                assert "not found" in error or gave_up, (task_id, error)
                continue
            task = self.upstream.tasks[task_id]
            if task.outcome == "failed":
                assert state == FAILED, (task_id, state)
                assert error.startswith("failed upstream") or gave_up, error
            elif task.outcome == "stuck":
                assert state == FAILED, (task_id, state)
                assert error.startswith("timed out") or gave_up, error
            elif state == FAILED:
                deleted = task.asset_id in self.deleted_assets
                assert gave_up or (deleted and "not found" in error), (task_id, error)
            else:
                snapshot = self.synced[task_id]
                if snapshot is not None:
                    self._check_synced(task_id, snapshot)
        # No point belongs to a task the store never heard of.
        for record in self._all_points():
            assert record.payload["task_id"] in self.submitted, record.payload

    def _all_points(self) -> list[Any]:
        records: list[Any] = []
        for name in COLLECTIONS:
            if self.run(self.qdrant.collection_exists(name)):
                records.extend(self.run(self.worker.sink.scroll_all(name)))
        return records

    # -- rules: upstream ------------------------------------------------------------------

    @initialize(
        seed=st.integers(0, 3),
        upstream_fault=st.none() | UPSTREAM_FAULTS,
        sink_fault=st.none() | st.tuples(st.sampled_from(SINK_MODES), st.integers(1, 3)),
        items=st.lists(SUBMISSIONS, min_size=1, max_size=4),
    )
    def start(
        self,
        seed: int,
        upstream_fault: tuple[str, float] | None,
        sink_fault: tuple[str, int] | None,
        items: list[tuple[str, int, int, str, bool]],
    ) -> None:
        """Seed the emulator, maybe turn a fault on, and submit a first batch.

        Hypothesis' swarm testing switches whole rules off for an example (``submit`` and the
        fault rules included): this start makes every example exercise the pipeline. Qdrant
        already has collection ``alpha`` (made by the product's sink, as a previous run
        would have); ``beta`` is created by the pipeline on first use.
        """
        self._patch_upstream({"seed": seed})
        spec = {content.VECTOR_NAME: VectorSpec(size=VECTOR_SIZE)}
        assert self.run(self.worker.sink.ensure_vectors(COLLECTIONS[0], spec)) == []
        if upstream_fault is not None:
            self.set_upstream_fault(upstream_fault)
        if sink_fault is not None:
            self.sink_fault(*sink_fault)
        for item in items:
            self._submit_one(*item)

    @rule(items=st.lists(SUBMISSIONS, min_size=1, max_size=3))
    def submit(self, items: list[tuple[str, int, int, str, bool]]) -> None:
        """Index 1-3 videos (10-30 s: 1-3 segments), images or texts and track their tasks."""
        for item in items:
            self._submit_one(*item)

    def _submit_one(
        self, kind: str, n: int, duration: int, collection: str, prevent_duplicate: bool
    ) -> None:
        metadata = {"rev": 0, "n": n}
        if kind == "video":
            url = f"https://media.example/v{n}.mp4?duration={duration}"
            call = self.user.index_video_url(
                url, collection, metadata=metadata, prevent_duplicate=prevent_duplicate
            )
        elif kind == "image":
            url = f"https://media.example/i{n}.jpg"
            call = self.user.index_image_url(
                url, collection, metadata=metadata, prevent_duplicate=prevent_duplicate
            )
        else:
            call = self.user.index_text(f"text number {n}", collection, metadata=metadata)
        result = self.run(call)
        # A duplicate answers with the original asset, whose task is tracked (again).
        assert result.task_id, result
        new = self.run(self.store.track([result.task_id], source="submit"))
        assert new == (0 if result.task_id in self.submitted else 1), (result, new)
        self.submitted.add(result.task_id)

    @rule(task_id=st.uuids())
    def track_unknown(self, task_id: Any) -> None:
        self.run(self.store.track([str(task_id)]))
        self.unknown.add(str(task_id))

    @rule(units=st.sampled_from([0.5, 1.0, 5.0, 30.0]))
    def advance_clock(self, units: float) -> None:
        self._advance(units * UNIT)

    @rule(knob=UPSTREAM_FAULTS)
    def set_upstream_fault(self, knob: tuple[str, float]) -> None:
        """A share of 5xx answers, of FAILED or stuck tasks, or of poisoned features."""
        name, value = knob
        changes = {name: value}
        config = self.upstream.config
        if name == "fail_rate":
            changes["stuck_rate"] = min(config.stuck_rate, 1.0 - value)
        elif name == "stuck_rate":
            changes["fail_rate"] = min(config.fail_rate, 1.0 - value)
        self._patch_upstream(changes)
        if name == "error_rate":
            self.faults_seen = True

    @rule(heal_poison=st.booleans())
    def clear_upstream_faults(self, heal_poison: bool) -> None:
        """Knobs back to 0; ``heal_poison``: upstream also fixes its poisoned features.

        Features already dead-lettered stay so until their task is retried.
        """
        self._patch_upstream(dict.fromkeys(UPSTREAM_KNOBS, 0.0))
        if heal_poison:
            answer = self.run(self.control.post("/_emulator/poison/clear"))
            assert answer.status_code == 200

    @precondition(lambda self: self.upstream.features)
    @rule(data=st.data())
    def update_feature_metadata(self, data: st.DataObject) -> None:
        self._update_feature(data.draw(st.sampled_from(sorted(self.upstream.features))))

    def _update_feature(self, feature_id: str) -> None:
        """``PUT /features/{id}`` with the next revision number in its metadata."""
        self.rev += 1

        async def put() -> httpx.Response:
            for _ in range(60):  # through the injected 5xx share
                answer = await self.control.put(
                    f"/features/{feature_id}", json={"metadata": {"rev": self.rev}}
                )
                if answer.status_code < 500:
                    return answer
            raise AssertionError("PUT /features kept failing")

        assert self.run(put()).status_code == 200

    @precondition(lambda self: self.upstream.assets)
    @rule(data=st.data())
    def delete_asset(self, data: st.DataObject) -> None:
        asset_id = data.draw(st.sampled_from(sorted(self.upstream.assets)))
        self.run(self.user.delete_asset(asset_id))
        self.deleted_assets.add(asset_id)

    # -- rules: Qdrant, the worker, the operator ------------------------------------------

    @rule(mode=st.sampled_from(SINK_MODES), n=st.integers(1, 3))
    def sink_fault(self, mode: str, n: int) -> None:
        self.faults.arm(mode, n)
        self.faults_seen = True

    @precondition(lambda self: not self.avoid_known_bugs and not self.zombies)
    @rule()
    def stall_next_upsert(self) -> None:
        """The worker that makes the next upsert freezes inside it (SIGSTOP)."""
        self.faults.arm("stall", 1)

    @precondition(lambda self: self.zombies)
    @rule()
    def resume_zombies(self) -> None:
        self._resume_zombies()

    @rule(limit=st.integers(1, 4))
    def tick(self, limit: int) -> None:
        self._tick(limit)

    @rule(units=st.sampled_from([1.0, 5.0, 30.0]), limit=st.integers(1, 4))
    def advance_and_tick(self, units: float, limit: int) -> None:
        """The common case of a running daemon: time passes, then a tick (also more ticks)."""
        self._advance(units * UNIT)
        self._tick(limit)

    @rule(after_claim=st.integers(0, 4))
    def crash_and_restart(self, after_claim: int) -> None:
        """kill -9 and restart; with ``after_claim`` the worker first leases that many tasks.

        Leases the dead worker held must expire before anyone processes those tasks again.
        """
        if after_claim:
            self.run(self.store.claim_due(self.worker.owner, after_claim, LEASE_SECONDS))
        self._crash()

    @rule(data=st.data())
    def retry_dead_letter(self, data: st.DataObject) -> None:
        letters = self.run(self.store.dead_letters())
        if not letters:
            return
        letter = data.draw(st.sampled_from(letters))
        assert self.run(self.store.retry_dead_letter(letter["id"])) == letter["task_id"]

    @rule()
    def quiesce(self) -> None:
        self._quiesce()

    # -- invariants -----------------------------------------------------------------------

    @invariant()
    def store_is_sane(self) -> None:
        async def rows() -> list[Any]:
            async with self.store.engine.connect() as conn:
                stmt = select(tasks.c.task_id, tasks.c.state, tasks.c.attempts)
                return list((await conn.execute(stmt)).all())

        found = self.run(rows())
        assert {r.task_id for r in found} == self.submitted | self.unknown
        for row in found:
            assert row.state in (PENDING, SYNCED, FAILED), row
            assert 0 <= row.attempts <= MAX_ATTEMPTS, row

    @invariant()
    def no_stale_overwrite(self) -> None:
        assert not self.faults.regressions, self.faults.regressions

    @invariant()
    def points_are_deterministic_and_unique(self) -> None:
        seen: dict[str, str] = {}
        for record in self._all_points():
            feature_id = record.payload["feature_id"]
            assert str(record.id) == point_id(feature_id), (record.id, feature_id)
            assert feature_id not in seen, f"feature {feature_id} has two points"
            seen[feature_id] = str(record.id)

    def teardown(self) -> None:
        try:
            # Only when every step passed: a quiescence failure must not mask the real one.
            if sys.exc_info()[0] is None:
                # The daemon runs on for a while with the faults still armed, so a fault set
                # late (or while ticks were switched off) still hits the pipeline; then the
                # faults are cleared and everything must settle.
                for _ in range(3):
                    self._advance(LEASE_SECONDS + UNIT)
                    self._tick(limit=1000)
                self._quiesce()
        finally:
            for _, job in self.zombies:
                job.cancel()
            for gate in self.faults.gates:
                gate.set()
            for zombie, job in self.zombies:
                with contextlib.suppress(asyncio.CancelledError, LeaseLost):
                    self.run(job)
                self.run(zombie.client.aclose())
            self.run(self.worker.client.aclose())
            self.run(self.user.aclose())
            self.run(self.control.aclose())
            self.run(self.store.close())
            self.run(self.qdrant.close())
            self.loop.close()
            shutil.rmtree(self.tmp, ignore_errors=True)


SyncModel.TestCase.settings = settings(
    max_examples=EXAMPLES,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
# pytest-timeout's 120 s (pyproject) is for one ordinary test; a long search, or the shrinking
# after a failure, needs more. Being cut mid-example would also look like flakiness to Hypothesis.
TestSyncModel = pytest.mark.timeout(120 + 6 * EXAMPLES)(SyncModel.TestCase)


# -- the product bugs found, as minimal regression sequences ------------------------------------


def test_zombie_worker_overwrites_newer_point() -> None:
    """Regression: a worker that lost its lease used to overwrite the newer point in Qdrant;
    the sink's version guard (``_sync_version`` + ``update_filter``) now ignores its write."""
    """A frozen worker's late upsert replaces a newer point; the store still says synced.

    Written by hand from the machine's operations (with ``SYNC_PROPERTY_KNOWN_BUGS=1`` the
    machine has the same moves: ``stall_next_upsert``, ``resume_zombies``): submit an image;
    advance 5 time units; the worker claims it, fetches rev 0 and freezes inside
    ``sink.upsert``; upstream updates the feature's metadata to rev 1; 35 units pass, the lease
    (30) expires, a second worker reclaims the task, writes rev 1 and records ``synced``; the
    first worker resumes, writes rev 0 over it, and only then gets ``LeaseLost`` from
    ``mark_synced``. Qdrant keeps rev 0 for good (docs/testing.md §2 I3 / row A11: an older
    revision processed late must never win).
    """
    machine = SyncModel()
    try:
        machine._patch_upstream({"seed": 0})
        machine._submit_one("image", 0, 10, "alpha", False)
        machine._advance(5 * UNIT)
        machine.faults.arm("stall", 1)
        machine._tick(1)
        if len(machine.zombies) != 1:
            raise RuntimeError("set-up: the worker did not freeze in its upsert")
        machine._update_feature(next(iter(machine.upstream.features)))
        machine._advance(LEASE_SECONDS + 5 * UNIT)
        machine._tick(1)
        if [t["state"] for t in machine.run(machine.store.list_tasks())] != [SYNCED]:
            raise RuntimeError("set-up: the second worker did not sync the task")
        machine._resume_zombies()
        assert not machine.faults.regressions, machine.faults.regressions
        machine._quiesce()
    finally:
        machine.teardown()


def test_poisoned_first_vector_sets_the_collection_shape() -> None:
    """Regression: one bad vector used to poison every good feature after it (docs/contract.md §4:
    it must not); with ``SYNC_VECTOR_SIZES`` the collection takes the configured size instead.

    Found by the machine with ``SYNC_PROPERTY_KNOWN_BUGS=1`` (which then also poisoned a new
    collection's first vector); this is its shrunk sequence::

        state.start(seed=0, upstream_fault=('poison_rate', 1.0), sink_fault=None,
                    items=[('video', 0, 10, 'alpha', False), ('video', 0, 10, 'alpha', False),
                           ('video', 0, 10, 'beta', False)])
        state.quiesce()

    Every feature is poisoned and the emulator cycles the kinds nan, inf, wrong_length, so the
    third single-segment video (the first asset of collection ``beta``, which Qdrant does not
    have yet) serves 7 floats instead of 8. The nan and inf features become dead letters, but
    the wrong-length one is *written*: ``plan_points`` sizes a new collection by the most
    common length in the plan, which for a one-feature asset is the poisoned vector itself.
    Qdrant then holds a point that was never valid upstream (its ledger row exists, no dead
    letter does), and every correct 8-float feature synced into ``beta`` afterwards is set
    aside as "length 8 but the collection expects 7".

    Now the model's service sets ``SYNC_VECTOR_SIZES=multimodal-v1=8``: the 7-float feature is
    a dead letter saying so, and a clean video synced into ``beta`` afterwards lands in a
    collection of size 8.
    """
    machine = SyncModel()
    try:
        machine.start(
            seed=0,
            upstream_fault=("poison_rate", 1.0),
            sink_fault=None,
            items=[
                ("video", 0, 10, "alpha", False),
                ("video", 0, 10, "alpha", False),
                ("video", 0, 10, "beta", False),
            ],
        )
        machine._quiesce()  # the poisoned features are exactly the dead letters
        reasons = [d["reason"] for d in machine.run(machine.store.dead_letters())]
        assert (
            f"vector '{content.VECTOR_NAME}' has length {VECTOR_SIZE - 1} but the collection "
            f"expects {VECTOR_SIZE} (SYNC_VECTOR_SIZES {content.VECTOR_NAME}={VECTOR_SIZE})"
        ) in reasons, reasons
        machine._submit_one("video", 1, 10, "beta", False)  # _quiesce turned the poison off
        machine._quiesce()  # ... and this clean feature must land
        beta = machine.run(machine.worker.sink.schema("beta"))
        assert beta == {content.VECTOR_NAME: VectorSpec(size=VECTOR_SIZE)}, beta
        assert len(machine.run(machine.qdrant.scroll("beta"))[0]) == 1
    finally:
        machine.teardown()
