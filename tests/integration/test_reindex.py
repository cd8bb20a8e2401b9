"""``reindex`` and ``rollback`` over real HTTP to the emulator, Qdrant and SQLite in tmp_path.

Each test syncs a few seeded assets through the real daemon (the alias ``reindex-col`` over
``reindex-col__v1``), then re-indexes and checks the result against what the emulator serves
(the independent oracle of ``tests/support.py``).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from qdrant_client import QdrantClient, models

from sync_service import reindex as reindex_module
from sync_service.emulator import EmulatorServer
from sync_service.emulator.lifecycle import ReindexMode
from sync_service.mixpeek_errors import MixpeekNotFound
from sync_service.pipeline import FetchedAsset
from sync_service.reindex import ReindexError, reindex, rollback
from sync_service.runtime import Service, open_service
from sync_service.scheduler import Daemon
from sync_service.settings import Distance, Settings
from tests.conftest import API_KEY
from tests.qdrant_server import QdrantStandIn
from tests.support import compare_points, expected_point, served

ALIAS = "reindex-col"
V1, V2, V3 = (f"{ALIAS}__v{n}" for n in (1, 2, 3))
ASSETS = 4
POINTS = 2 * ASSETS  # 20 s videos: two segments each
CLEAN = {"lost": 0, "extra": 0, "wrong": 0, "duplicated": 0}


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
        daemon = Daemon(
            self.service.store,
            self.service.pipeline,
            poll_interval=settings.poll_interval,
            claim_batch=settings.claim_batch,
            lease_seconds=settings.lease_seconds,
            shutdown_grace=settings.shutdown_grace,
        )
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


def _settings(tmp_path: Path, emulator: EmulatorServer, **extra: Any) -> Settings:
    return Settings(
        _env_file=None,
        MIXPEEK_API_URL=emulator.url,
        MIXPEEK_API_KEY=API_KEY,
        QDRANT_PATH=tmp_path / "qdrant",
        DATABASE_URL=f"sqlite:///{tmp_path / 'sync.db'}",
        SYNC_POLL_INTERVAL=0.05,
        SYNC_MAX_POLL_INTERVAL=0.1,
        SYNC_API_PORT=0,
        **extra,
    )


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


@pytest.fixture(autouse=True)
def _no_settle(monkeypatch: pytest.MonkeyPatch) -> None:
    # Nothing writes behind the tests' backs: the catch-up's second look needs no wait.
    monkeypatch.setattr(reindex_module, "CATCH_UP_SETTLE", 0.0)


@pytest.fixture
async def synced(tmp_path: Path, emulator: EmulatorServer) -> AsyncIterator[Synced]:
    async with synced_service(_settings(tmp_path, emulator), emulator) as state:
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
    with pytest.raises(ReindexError, match="nothing to re-index"):
        await reindex(synced.service, "no-such-alias")
    with pytest.raises(ReindexError, match="no swapped re-index"):
        await rollback(synced.service, ALIAS)


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
        settings = _settings(tmp_path, emulator, QDRANT_URL=qdrant.url)
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


@pytest.mark.parametrize("mode", ["payload", "features"])
async def test_writes_during_the_fill_are_caught_up_after_the_swap(
    synced: Synced, monkeypatch: pytest.MonkeyPatch, mode: ReindexMode
) -> None:
    """The daemon syncs a changed asset into v1 while v2 is filled with its old content.

    ``features``: one feature of the asset is replaced by another, so the catch-up must also
    delete the point the fill wrote for the feature that is gone.
    """
    pipeline = synced.service.pipeline
    real = pipeline.fetch_asset
    fetched, release = asyncio.Event(), asyncio.Event()
    calls = 0

    async def held(asset_id: str) -> FetchedAsset:
        nonlocal calls
        calls += 1
        answer = await real(asset_id)
        if calls == ASSETS:  # the fill has fetched every asset: hold it before the last write
            fetched.set()
            await release.wait()
        return answer

    monkeypatch.setattr(pipeline, "fetch_asset", held)
    run = asyncio.create_task(reindex(synced.service, ALIAS))
    await asyncio.wait_for(fetched.wait(), 30)
    changed = synced.asset_ids[0]
    task_id = synced.emulator.reindex(changed, mode)["task_id"]
    await synced.service.store.track([task_id])
    await synced.drain()  # into v1, through the alias
    synced.tasks[changed] = task_id
    assert await synced.oracle(V1) == CLEAN
    release.set()
    report = await asyncio.wait_for(run, 60)

    assert report.check_passed and report.caught_up >= 1
    assert await synced.sink.alias_target(ALIAS) == V2
    assert await synced.oracle(V2) == CLEAN


@pytest.mark.parametrize("how", ["error", "cancel"])
async def test_a_crashed_fill_keeps_the_alias_and_the_next_run_resumes(
    synced: Synced, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    pipeline, sink, store = synced.service.pipeline, synced.sink, synced.service.store
    real = pipeline.fetch_asset
    stuck = asyncio.Event()
    calls = 0

    async def crashing(asset_id: str) -> FetchedAsset:
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

    async def gone(asset_id: str) -> FetchedAsset:
        raise MixpeekNotFound(f"asset {asset_id} not found", status=404)

    monkeypatch.setattr(synced.service.pipeline, "fetch_asset", gone)
    with pytest.raises(ReindexError, match="SYNC_DELETE_GUARD") as failed:
        await reindex(synced.service, ALIAS)
    assert failed.value.report is not None and failed.value.report.skipped == ASSETS
    assert await synced.sink.alias_target(ALIAS) == V1 and await synced.oracle() == CLEAN
