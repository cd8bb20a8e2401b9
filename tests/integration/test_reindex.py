"""``reindex`` and ``rollback`` over real HTTP to the emulator, Qdrant and SQLite in tmp_path.

Each test syncs a few seeded assets through the real daemon (the alias ``reindex-col`` over
``reindex-col__v1``), then re-indexes and checks the result against what the emulator serves
(the independent oracle of ``tests/support.py``).
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from qdrant_client import QdrantClient, models

from sync_service.emulator import EmulatorServer
from sync_service.emulator.lifecycle import ReindexMode
from sync_service.engine.scheduler import Daemon
from sync_service.keep.forget import apply_removal, plan_removal
from sync_service.keep.reindex import ReindexError, ReindexReport, reindex, rollback
from sync_service.runtime import Service, open_service
from sync_service.settings import Distance, Settings
from sync_service.upstream.errors import MixpeekNotFound
from sync_service.upstream.port import AssetContent
from tests.conftest import API_KEY, local_settings
from tests.qdrant_server import QdrantStandIn
from tests.support import IN_STEP, compare_points, expected_point, served

ALIAS = "reindex-col"
V1, V2, V3 = (f"{ALIAS}__v{n}" for n in (1, 2, 3))
ASSETS = 4
POINTS = 2 * ASSETS  # 20 s videos: two segments each
CLEAN = IN_STEP


class Crash(Exception):
    """Stands for whatever stops a run half-way (the process dying, upstream falling over)."""


class Synced:
    """A service whose ledger and Qdrant hold ``ASSETS`` synced assets behind ``ALIAS``."""

    def __init__(self, service: Service, emulator: EmulatorServer, seeded: dict[str, Any]):
        self.service, self.sink, self.emulator = service, service.sink, emulator
        self.asset_ids: list[str] = seeded["asset_ids"]
        #: asset id → the task whose sync its points carry
        self.tasks: dict[str, str] = dict(zip(self.asset_ids, seeded["task_ids"], strict=True))

    async def drain(self) -> None:
        settings = self.service.settings
        daemon = Daemon.from_settings(self.service.store, self.service.pipeline, settings)
        assert await daemon.run(drain=True) == 0

    async def oracle(self, name: str = ALIAS) -> dict[str, int]:
        """``name``'s points against what the emulator serves now for every asset."""
        expected = []
        for task_id in self.tasks.values():
            asset, features = served(self.emulator.url, API_KEY, task_id)
            expected += [expected_point(task_id, asset, f) for f in features]
        return compare_points(expected, await self.sink.scroll_all(name))

    async def query_vector(self) -> tuple[str, list[float]]:
        [record] = await self.sink.retrieve(ALIAS, [str((await self.points())[0].id)])
        assert isinstance(record.vector, dict)
        name, vector = next(iter(record.vector.items()))
        assert isinstance(vector, list) and all(isinstance(x, float) for x in vector)
        return name, [float(x) for x in vector]  # type: ignore[arg-type]

    async def points(self, name: str = ALIAS) -> list[models.Record]:
        return await self.sink.scroll_all(name)


@asynccontextmanager
async def synced_service(settings: Settings, emulator: EmulatorServer) -> AsyncIterator[Synced]:
    seeded = emulator.seed(ALIAS, ASSETS, modality="video", duration=20)
    async with open_service(settings) as service:
        await service.store.track(seeded["task_ids"])
        state = Synced(service, emulator, seeded)
        await state.drain()
        assert await service.sink.alias_target(ALIAS) == V1
        assert len(await state.points()) == POINTS
        yield state


@pytest.fixture
async def synced(tmp_path: Path, emulator: EmulatorServer) -> AsyncIterator[Synced]:
    async with synced_service(local_settings(tmp_path, emulator), emulator) as state:
        yield state


def _payloads(records: list[models.Record]) -> dict[str, dict[str, Any]]:
    return {
        str(r.id): {k: v for k, v in (r.payload or {}).items() if k != "_sync_version"}
        for r in records
    }


async def test_reindex_to_another_distance_swaps_and_rollback_goes_back(synced: Synced) -> None:
    sink, store = synced.sink, synced.service.store
    before = _payloads(await synced.points())
    progress: list[tuple[str, int, int]] = []
    report = await reindex(
        synced.service, ALIAS, distance=Distance.dot, on_progress=lambda *p: progress.append(p)
    )
    assert (report.old_physical, report.new_physical, report.distance) == (V1, V2, "dot")
    assert (report.assets, report.points, report.skipped, report.rejected) == (ASSETS, POINTS, 0, 0)
    assert report.check_passed and not report.resumed and not report.migrated
    assert ("fill", ASSETS, ASSETS) in progress
    lines = report.summary_lines()
    assert any("check: passed" in line for line in lines) and any(V1 in line for line in lines)

    assert await sink.alias_target(ALIAS) == V2
    assert (await sink.distance_of(ALIAS), await sink.distance_of(V1)) == ("dot", "cosine")
    assert _payloads(await synced.points()) == before  # same ids, same payloads
    assert await synced.oracle() == CLEAN  # vectors as served (unit length: dot keeps them)
    assert await sink.count(V1) == POINTS  # kept for rollback
    run = await store.reindex(ALIAS)
    assert run is not None and (run.state, run.physical, run.previous) == ("swapped", V2, V1)

    assert await rollback(synced.service, ALIAS) == V1
    assert await sink.alias_target(ALIAS) == V1
    assert await sink.distance_of(ALIAS) == "cosine"
    assert await synced.oracle() == CLEAN
    run = await store.reindex(ALIAS)
    assert run is not None and run.state == "rolled_back"
    with pytest.raises(ReindexError, match="no swapped re-index"):
        await rollback(synced.service, ALIAS)

    # The next run takes the next free version: v2 (rolled away from) is kept as it was.
    again = await reindex(synced.service, ALIAS)
    assert (again.old_physical, again.new_physical, again.distance) == (V1, V3, "cosine")
    assert await sink.exists(V2) and await synced.oracle() == CLEAN


async def test_nothing_to_reindex_is_an_error(synced: Synced) -> None:
    with pytest.raises(ReindexError, match="nothing to re-index") as nothing:
        await reindex(synced.service, "no-such-alias")
    assert not nothing.value.held  # refused, not held: the CLI exits 1
    with pytest.raises(ReindexError, match="no swapped re-index"):
        await rollback(synced.service, ALIAS)


async def test_one_reindex_of_an_alias_at_a_time(synced: Synced) -> None:
    store = synced.service.store
    assert await store.acquire_lock(f"reindex:{ALIAS}", "another-process", 30)
    with pytest.raises(ReindexError, match="another reindex or rollback"):
        await reindex(synced.service, ALIAS, distance=Distance.dot)
    with pytest.raises(ReindexError, match="another reindex or rollback"):
        await rollback(synced.service, ALIAS)
    assert await store.reindex(ALIAS) is None  # refused before anything was recorded
    await store.release_lock(f"reindex:{ALIAS}", "another-process")
    report = await reindex(synced.service, ALIAS, distance=Distance.dot)
    assert report.new_physical == f"{ALIAS}__v2"
    # The run released its lock: anyone may take it now.
    assert await store.acquire_lock(f"reindex:{ALIAS}", "another-process", 30)


async def test_the_lock_of_a_killed_run_on_this_host_is_taken_over(synced: Synced) -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    dead = f"{socket.gethostname()}:{gone.stdout.strip()}:abc123"
    assert await synced.service.store.acquire_lock(f"reindex:{ALIAS}", dead, 600)
    report = await reindex(synced.service, ALIAS, distance=Distance.dot)
    assert report.new_physical == f"{ALIAS}__v2"


async def test_queries_during_a_reindex_never_fail(synced: Synced) -> None:
    """Embedded Qdrant is one process: queries share the reindex's event loop."""
    sink = synced.sink
    name, vector = await synced.query_vector()
    done = asyncio.Event()
    failures: list[BaseException] = []
    served_by: list[str | None] = []
    hits: list[int] = []

    async def query() -> None:
        while not done.is_set():
            try:
                served_by.append(await sink.alias_target(ALIAS))
                hits.append(len(await sink.search(ALIAS, name, vector, limit=3)))
            except Exception as exc:
                failures.append(exc)
            await asyncio.sleep(0.001)

    async def run() -> None:
        try:
            await reindex(synced.service, ALIAS, distance=Distance.euclid)
        finally:
            done.set()

    await asyncio.gather(query(), run())
    assert failures == []
    assert hits and min(hits) == 3
    assert served_by[0] == V1 and served_by[-1] == V2  # the queries spanned the swap


async def test_queries_over_http_during_a_reindex_never_fail(
    tmp_path: Path, emulator: EmulatorServer
) -> None:
    """Qdrant as a server (the REST stand-in): a thread queries while the loop re-indexes."""
    with QdrantStandIn() as qdrant:
        settings = local_settings(tmp_path, emulator, QDRANT_URL=qdrant.url)
        async with synced_service(settings, emulator) as synced:
            name, vector = await synced.query_vector()
            stop = threading.Event()
            failures: list[BaseException] = []
            hits: list[int] = []

            def query() -> None:
                client = QdrantClient(url=qdrant.url, check_compatibility=False)
                try:
                    while not stop.is_set():
                        try:
                            answer = client.query_points(ALIAS, vector, using=name, limit=3)
                            hits.append(len(answer.points))
                        except Exception as exc:
                            failures.append(exc)
                        time.sleep(0.002)
                finally:
                    client.close()

            thread = threading.Thread(target=query, daemon=True)
            qdrant.reset_requests()
            thread.start()
            try:
                await asyncio.sleep(0.2)  # some queries against v1 first
                report = await reindex(synced.service, ALIAS, distance=Distance.dot)
                await asyncio.sleep(0.2)  # and some against v2
            finally:
                stop.set()
                thread.join(10)
            assert report.check_passed and await synced.sink.alias_target(ALIAS) == V2
            assert failures == [] and hits and min(hits) == 3
            log = qdrant.requests()
            queries = [r for r in log if r["path"] == f"/collections/{ALIAS}/points/query"]
            assert queries and {r["status"] for r in queries} == {200}
            [swap] = [i for i, r in enumerate(log) if r["path"] == "/collections/aliases"]
            assert any(i < swap for i, r in enumerate(log) if r in queries)
            assert any(i > swap for i, r in enumerate(log) if r in queries)
            assert await synced.oracle() == CLEAN


async def _reindex_while_the_daemon_syncs(
    synced: Synced,
    monkeypatch: pytest.MonkeyPatch,
    mode: ReindexMode,
    *,
    crash_catch_up: bool = False,
) -> ReindexReport:
    """Re-index while the daemon syncs a change of one asset into v1 half-way through the fill.

    The fill's fetch of that asset (its old content) is held until the daemon's write is in
    v1; with ``crash_catch_up`` the catch-up's fetch of it then fails as a crash would.
    """
    pipeline = synced.service.pipeline
    real = pipeline.fetch_asset
    changed = max(synced.asset_ids)  # the fill's last asset (sizing the vectors samples the first)
    fetched, release = asyncio.Event(), asyncio.Event()
    draining = False

    async def held(asset_id: str, *, only_if_done: bool = False) -> AssetContent:
        answer = await real(asset_id, only_if_done=only_if_done)
        if asset_id == changed and not draining:
            if not fetched.is_set():  # the fill's fetch: its write waits for the daemon's
                fetched.set()
                await release.wait()
            elif crash_catch_up:
                raise Crash("killed during the catch-up")
        return answer

    monkeypatch.setattr(pipeline, "fetch_asset", held)
    run = asyncio.create_task(reindex(synced.service, ALIAS))
    await asyncio.wait_for(fetched.wait(), 30)
    task_id = synced.emulator.reindex(changed, mode)["task_id"]
    await synced.service.store.track([task_id])
    draining = True
    await synced.drain()  # into v1, through the alias
    draining = False
    synced.tasks[changed] = task_id
    assert await synced.oracle(V1) == CLEAN
    release.set()
    try:
        return await asyncio.wait_for(run, 60)
    finally:
        monkeypatch.setattr(pipeline, "fetch_asset", real)


@pytest.mark.parametrize("mode", ["payload", "features"])
async def test_writes_during_the_fill_are_caught_up_after_the_swap(
    synced: Synced, monkeypatch: pytest.MonkeyPatch, mode: ReindexMode
) -> None:
    """The daemon syncs a changed asset into v1 while v2 is filled with its old content.

    ``features``: one feature of the asset is replaced by another, so the catch-up must also
    delete the point the fill wrote for the feature that is gone.
    """
    report = await _reindex_while_the_daemon_syncs(synced, monkeypatch, mode)
    assert report.check_passed and report.caught_up >= 1
    assert await synced.sink.alias_target(ALIAS) == V2
    assert await synced.oracle(V2) == CLEAN
    run = await synced.service.store.reindex(ALIAS)
    assert run is not None and run.state == "swapped"


async def test_a_crashed_catch_up_is_resumed_not_rebuilt(
    synced: Synced, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink, store = synced.sink, synced.service.store
    with pytest.raises(Crash):
        await _reindex_while_the_daemon_syncs(synced, monkeypatch, "payload", crash_catch_up=True)
    assert await sink.alias_target(ALIAS) == V2
    run = await store.reindex(ALIAS)
    assert run is not None and (run.state, run.physical, run.previous) == ("catching_up", V2, V1)

    report = await reindex(synced.service, ALIAS)
    assert report.resumed and (report.old_physical, report.new_physical) == (V1, V2)
    assert report.check_passed and report.caught_up >= 1
    assert not await sink.exists(V3)  # no new build
    assert await sink.alias_target(ALIAS) == V2 and await synced.oracle(V2) == CLEAN
    run = await store.reindex(ALIAS)
    assert run is not None and (run.state, run.physical, run.previous) == ("swapped", V2, V1)


async def test_the_catch_up_waits_for_leases_held_at_the_swap(
    synced: Synced, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A daemon writes a new asset into v1 before the swap but records it in the ledger only
    after it, later than any fixed wait: the catch-up must wait for its lease, then sync it."""
    service, sink, store = synced.service, synced.sink, synced.service.store
    seeded = synced.emulator.seed(ALIAS, 1, modality="video", duration=10)
    [asset_id], [task_id] = seeded["asset_ids"], seeded["task_ids"]
    await store.track([task_id])
    [claim] = await store.claim_due("slow", 1, service.settings.lease_seconds, task_ids=[task_id])
    wrote, swapped = asyncio.Event(), asyncio.Event()
    record, swap = store.mark_synced, sink.point_alias

    async def record_late(claim: Any, result: Any) -> float | None:
        wrote.set()  # its points are in v1 by now
        await swapped.wait()
        await asyncio.sleep(1.5)  # longer than the old fixed settle (1 s)
        return await record(claim, result)

    async def swapping(alias: str, physical: str) -> None:
        await swap(alias, physical)
        swapped.set()

    monkeypatch.setattr(store, "mark_synced", record_late)
    monkeypatch.setattr(sink, "point_alias", swapping)
    daemon = asyncio.create_task(service.pipeline.process(claim))
    await asyncio.wait_for(wrote.wait(), 30)
    assert await sink.asset_point_ids(V1, asset_id)  # written before the swap, into v1

    report = await asyncio.wait_for(reindex(service, ALIAS), 60)
    await asyncio.wait_for(daemon, 30)
    synced.tasks[asset_id] = task_id
    assert report.check_passed and report.assets == ASSETS and report.caught_up >= 1
    assert await sink.asset_point_ids(V2, asset_id)
    assert await sink.alias_target(ALIAS) == V2 and await synced.oracle(V2) == CLEAN


async def test_the_catch_up_spares_a_write_claimed_after_the_swap(
    synced: Synced, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A daemon claims a new asset right after the swap and writes it into v2, but records it
    only after the catch-up read the ledger: the pruning of unlisted assets must spare it."""
    service, sink, store = synced.service, synced.sink, synced.service.store
    seeded = synced.emulator.seed(ALIAS, 1, modality="video", duration=10)
    [asset_id], [task_id] = seeded["asset_ids"], seeded["task_ids"]
    await store.track([task_id])
    snapshot, record = store.held_leases, store.mark_synced
    wrote, finished = asyncio.Event(), asyncio.Event()
    daemon: list[asyncio.Task[None]] = []

    async def claim_after_the_snapshot() -> set[tuple[str, int]]:
        leases = await snapshot()
        if not daemon:  # the catch-up's look at the leases held at the swap
            [claim] = await store.claim_due("late", 1, 60, task_ids=[task_id])
            daemon.append(asyncio.create_task(service.pipeline.process(claim)))
            await asyncio.wait_for(wrote.wait(), 30)
        return leases

    async def record_late(claim: Any, result: Any) -> float | None:
        wrote.set()  # its points are in v2 by now
        await finished.wait()
        return await record(claim, result)

    monkeypatch.setattr(store, "held_leases", claim_after_the_snapshot)
    monkeypatch.setattr(store, "mark_synced", record_late)
    report = await asyncio.wait_for(reindex(service, ALIAS), 60)
    finished.set()
    await asyncio.wait_for(daemon[0], 30)
    synced.tasks[asset_id] = task_id
    assert report.check_passed and report.pruned == 0
    assert await sink.asset_point_ids(V2, asset_id)
    assert await sink.alias_target(ALIAS) == V2 and await synced.oracle(V2) == CLEAN


async def test_a_reindex_takes_the_vector_size_upstream_serves_now(synced: Synced) -> None:
    """The emulator's embedding size changes (a new model): the rebuild is sized for it."""
    sink = synced.sink
    [(name, spec)] = (await sink.schema(V1)).items()
    assert spec.size == 1408
    synced.emulator.update_config(vector_size=64)

    report = await reindex(synced.service, ALIAS)
    assert report.check_passed and (report.points, report.rejected) == (POINTS, 0)
    assert (await sink.schema(V2))[name].size == 64
    assert await sink.alias_target(ALIAS) == V2 and await synced.oracle(V2) == CLEAN
    assert (await sink.schema(V1))[name].size == 1408  # kept as it was, for rollback


async def test_a_resumed_fill_is_rebuilt_at_the_size_upstream_serves_now(
    synced: Synced, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink, pipeline = synced.sink, synced.service.pipeline
    [name] = await sink.schema(V1)
    real = pipeline.fetch_asset
    calls = 0

    async def crashing(asset_id: str, *, only_if_done: bool = False) -> AssetContent:
        nonlocal calls
        calls += 1
        if calls > 2:
            raise Crash("upstream fell over")
        return await real(asset_id, only_if_done=only_if_done)

    monkeypatch.setattr(pipeline, "fetch_asset", crashing)
    with pytest.raises(Crash):
        await reindex(synced.service, ALIAS)
    assert (await sink.schema(V2))[name].size == 1408
    monkeypatch.setattr(pipeline, "fetch_asset", real)
    synced.emulator.update_config(vector_size=64)

    report = await reindex(synced.service, ALIAS)
    assert report.resumed and report.new_physical == V2 and report.check_passed
    assert (await sink.schema(V2))[name].size == 64 and report.points == POINTS
    assert await sink.alias_target(ALIAS) == V2 and await synced.oracle(V2) == CLEAN


async def test_rollback_does_not_bring_back_assets_forgotten_after_the_swap(
    synced: Synced,
) -> None:
    sink, store = synced.sink, synced.service.store
    await reindex(synced.service, ALIAS)
    forgotten = synced.asset_ids[1]
    await apply_removal(store, sink, await plan_removal(store, sink, [forgotten]))
    del synced.tasks[forgotten]
    assert await sink.asset_point_ids(V1, forgotten)  # the old build still holds it

    assert await rollback(synced.service, ALIAS) == V1
    assert await sink.asset_point_ids(ALIAS, forgotten) == []
    assert await synced.oracle() == CLEAN


async def test_an_interrupted_rollback_is_resumed(
    synced: Synced, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Upstream falls over during the rollback's catch-up: running it again finishes it."""
    sink, store, pipeline = synced.sink, synced.service.store, synced.service.pipeline
    await reindex(synced.service, ALIAS)
    changed = synced.asset_ids[0]
    task_id = synced.emulator.reindex(changed, "payload")["task_id"]
    await store.track([task_id])
    await synced.drain()  # into v2, through the alias: the rollback must bring it to v1
    synced.tasks[changed] = task_id
    real = pipeline.fetch_asset

    async def down(asset_id: str, *, only_if_done: bool = False) -> AssetContent:
        raise Crash("upstream fell over")

    monkeypatch.setattr(pipeline, "fetch_asset", down)
    with pytest.raises(Crash):
        await rollback(synced.service, ALIAS)
    assert await sink.alias_target(ALIAS) == V1
    run = await store.reindex(ALIAS)
    assert run is not None and (run.state, run.physical, run.previous) == ("rolling_back", V2, V1)
    with pytest.raises(ReindexError, match="--rollback"):
        await reindex(synced.service, ALIAS)  # would build from v1 and lose the catch-up

    monkeypatch.setattr(pipeline, "fetch_asset", real)
    assert await rollback(synced.service, ALIAS) == V1
    run = await store.reindex(ALIAS)
    assert run is not None and run.state == "rolled_back"
    assert await sink.alias_target(ALIAS) == V1 and await synced.oracle() == CLEAN


@pytest.mark.parametrize("how", ["error", "cancel"])
async def test_a_crashed_fill_keeps_the_alias_and_the_next_run_resumes(
    synced: Synced, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    pipeline, sink, store = synced.service.pipeline, synced.sink, synced.service.store
    real = pipeline.fetch_asset
    stuck = asyncio.Event()
    calls = 0

    async def crashing(asset_id: str, *, only_if_done: bool = False) -> AssetContent:
        nonlocal calls
        calls += 1
        if calls > 2:
            if how == "error":
                raise Crash("upstream fell over")
            stuck.set()
            await asyncio.Event().wait()  # hangs until cancelled
        return await real(asset_id)

    monkeypatch.setattr(pipeline, "fetch_asset", crashing)
    if how == "error":
        with pytest.raises(Crash):
            await reindex(synced.service, ALIAS, distance=Distance.dot)
    else:
        task = asyncio.create_task(reindex(synced.service, ALIAS, distance=Distance.dot))
        await asyncio.wait_for(stuck.wait(), 30)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    assert await sink.alias_target(ALIAS) == V1
    assert await synced.oracle() == CLEAN  # still served, whole, by v1
    run = await store.reindex(ALIAS)
    assert run is not None and (run.state, run.physical, run.previous) == ("filling", V2, V1)
    assert await sink.exists(V2) and await sink.count(V2) < POINTS

    monkeypatch.setattr(pipeline, "fetch_asset", real)
    report = await reindex(synced.service, ALIAS)  # no distance: the resumed run's (dot)
    assert report.resumed and (report.new_physical, report.distance) == (V2, "dot")
    assert report.check_passed and report.points == POINTS
    assert await sink.alias_target(ALIAS) == V2 and await sink.distance_of(V2) == "dot"
    assert not await sink.exists(V3)
    assert await synced.oracle() == CLEAN


async def test_a_failed_check_does_not_swap(
    synced: Synced, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink, store = synced.sink, synced.service.store
    real = sink.upsert

    async def lossy(name: str, points: Any, version: float | None = None) -> Any:
        if name == V2:  # a write that "succeeded" without landing one point
            points = points[:-1]
        return await real(name, points, version)

    monkeypatch.setattr(sink, "upsert", lossy)
    with pytest.raises(ReindexError, match="failed its check") as failed:
        await reindex(synced.service, ALIAS)
    assert failed.value.report is not None and not failed.value.report.check_passed
    assert f"still serves {V1}" in str(failed.value)
    assert failed.value.held  # a guard that held: the CLI exits 3
    assert await sink.alias_target(ALIAS) == V1
    run = await store.reindex(ALIAS)
    assert run is not None and (run.state, run.physical) == ("check_failed", V2)

    monkeypatch.setattr(sink, "upsert", real)
    report = await reindex(synced.service, ALIAS)
    assert report.resumed and report.new_physical == V2 and report.check_passed
    assert await sink.alias_target(ALIAS) == V2 and await synced.oracle() == CLEAN


async def _make_pre_alias(synced: Synced) -> dict[str, dict[str, Any]]:
    """Rebuild the layout of an install from before aliases: a plain collection named ALIAS."""
    sink = synced.sink
    records = await synced.points()
    schema = await sink.schema(ALIAS)
    await sink.client.update_collection_aliases(
        change_aliases_operations=[
            models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=ALIAS))
        ]
    )
    await sink.drop(V1)
    await sink.client.create_collection(
        ALIAS,
        vectors_config={
            n: models.VectorParams(size=s.size or 0, distance=models.Distance.COSINE)
            for n, s in schema.items()
        },
    )
    await sink.client.upsert(
        ALIAS,
        [models.PointStruct(id=r.id, vector=r.vector or {}, payload=r.payload) for r in records],
        wait=True,
    )
    assert await sink.alias_target(ALIAS) is None and await sink.physical_collections() == [ALIAS]
    return _payloads(records)


async def test_a_pre_alias_collection_is_migrated_behind_an_alias(synced: Synced) -> None:
    sink, store = synced.sink, synced.service.store
    before = await _make_pre_alias(synced)

    report = await reindex(synced.service, ALIAS)
    assert report.migrated and report.check_passed and report.new_physical == V1
    assert (report.assets, report.points) == (ASSETS, POINTS)
    assert await sink.alias_target(ALIAS) == V1
    assert await sink.physical_collections() == [V1]  # the plain collection is gone
    assert _payloads(await synced.points()) == before
    assert await synced.oracle() == CLEAN
    run = await store.reindex(ALIAS)
    assert run is not None and (run.state, run.physical, run.previous) == ("swapped", V1, None)
    assert any("no rollback" in line for line in report.summary_lines())
    with pytest.raises(ReindexError, match="migrated"):
        await rollback(synced.service, ALIAS)


async def test_a_migration_that_died_in_the_gap_is_finished_by_the_next_run(
    synced: Synced, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink = synced.sink
    await _make_pre_alias(synced)
    real = sink.point_alias

    async def dies(alias: str, physical: str) -> None:
        raise Crash("killed between dropping the plain collection and creating the alias")

    monkeypatch.setattr(sink, "point_alias", dies)
    with pytest.raises(Crash):
        await reindex(synced.service, ALIAS)
    assert not await sink.exists(ALIAS) and await sink.physical_collections() == [V1]

    monkeypatch.setattr(sink, "point_alias", real)
    report = await reindex(synced.service, ALIAS)
    assert report.migrated and report.resumed and report.new_physical == V1
    assert await sink.alias_target(ALIAS) == V1 and await synced.oracle() == CLEAN


async def test_upstream_losing_most_assets_does_not_swap(
    synced: Synced, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every asset 404s (a wrong key or namespace, most likely): the delete guard holds."""

    async def gone(asset_id: str, *, only_if_done: bool = False) -> AssetContent:
        raise MixpeekNotFound(f"asset {asset_id} not found", status=404)

    monkeypatch.setattr(synced.service.pipeline, "fetch_asset", gone)
    with pytest.raises(ReindexError, match="SYNC_DELETE_GUARD") as failed:
        await reindex(synced.service, ALIAS)
    assert failed.value.report is not None and failed.value.report.skipped == ASSETS
    assert failed.value.held
    assert await synced.sink.alias_target(ALIAS) == V1 and await synced.oracle() == CLEAN
