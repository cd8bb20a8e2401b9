"""Watch mode's passes in-process, over real HTTP to the emulator and a real state store:
requests per pass, the watermark, resuming, the lock, and what a pass queues."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from sync_service.emulator import EmulatorServer
from sync_service.engine.scheduler import Daemon
from sync_service.keep.watch import Mirroring
from sync_service.keep.watcher import PassLost, Watcher, holding, lock_name
from sync_service.qdrant.faults import SinkUnavailable
from sync_service.runtime import Service, open_service
from sync_service.upstream.port import ListOrder
from tests.conftest import local_settings

CREATED = ListOrder.CREATED

COLLECTION = "watched"


def seed(emulator: EmulatorServer, count: int) -> list[str]:
    body = {"collection_id": COLLECTION, "count": count, "modality": "text"}
    answer = httpx.post(f"{emulator.url}/_emulator/seed", json=body, timeout=30)
    ids: list[str] = answer.raise_for_status().json()["asset_ids"]
    return ids


def listings(emulator: EmulatorServer) -> int:
    stats: dict[str, Any] = httpx.get(f"{emulator.url}/_emulator/stats").json()["requests"]
    return sum(stats.get("POST /assets", {}).values())


@pytest.fixture
async def service(tmp_path: Path, emulator: EmulatorServer) -> AsyncIterator[Service]:
    settings = local_settings(tmp_path, emulator, SYNC_WATCH_OVERLAP=0)
    async with open_service(settings) as svc:
        yield svc


async def drain(svc: Service) -> None:
    daemon = Daemon.from_settings(svc.store, svc.pipeline, svc.settings)
    assert await asyncio.wait_for(daemon.run(drain=True), 60) == 0


def mirroring(svc: Service, page_size: int = 100) -> Mirroring:
    return Mirroring(svc.settings, svc.store, svc.upstream, svc.sink, page_size=page_size)


async def mirrored(
    svc: Service, emulator: EmulatorServer, count: int
) -> tuple[list[str], Mirroring]:
    """``count`` assets seeded upstream, listed by a full pass and synced."""
    ids = seed(emulator, count)
    m = mirroring(svc)
    await m.full(COLLECTION)
    await drain(svc)
    return ids, m


async def test_an_incremental_pass_with_nothing_changed_is_one_request(
    service: Service, emulator: EmulatorServer
) -> None:
    seed(emulator, 250)
    m = mirroring(service)
    await service.store.watch_add([COLLECTION], source="cli")
    before = listings(emulator)
    full = await m.full(COLLECTION)
    # Three pages, and one request for the newest change (the watermark the pass leaves).
    assert (full.listed, len(full.queued), listings(emulator) - before) == (250, 250, 4)
    await drain(service)

    before = listings(emulator)
    quiet = await m.incremental(COLLECTION)
    assert listings(emulator) - before == 1
    assert quiet.queued == [] and not quiet.fell_back

    # A change and a creation by someone else: queued, and only they are.
    changed = (await service.upstream.list_assets(COLLECTION, order=CREATED, page_size=1)).assets[0]
    httpx.post(
        f"{emulator.url}/_emulator/assets/{changed.asset_id}/reindex", json={"mode": "payload"}
    ).raise_for_status()
    (created,) = seed(emulator, 1)
    busy = await m.incremental(COLLECTION)
    assert sorted(busy.queued) == sorted([changed.asset_id, created])
    # The re-indexed asset moved on upstream (its new task finished) while its job waited for
    # it; the job synced that newest version, so the next pass has nothing to queue.
    await drain(service)
    assert (await m.incremental(COLLECTION)).queued == []
    mirror = await service.store.mirror(COLLECTION)
    assert mirror is not None and mirror.watermark is not None


async def test_a_full_pass_cut_short_resumes_at_its_next_page(
    service: Service, emulator: EmulatorServer
) -> None:
    seed(emulator, 30)
    m = mirroring(service, page_size=10)
    pages = 0
    original = service.upstream.list_assets

    async def flaky(*args: Any, **kwargs: Any) -> Any:
        nonlocal pages
        pages += 1
        if pages == 4:  # the newest-change request, pages 1 and 2, then page 3 fails
            raise httpx.ConnectError("upstream went away")
        return await original(*args, **kwargs)

    service.upstream.list_assets = flaky  # type: ignore[method-assign]
    with pytest.raises(httpx.ConnectError):
        await m.full(COLLECTION)
    mirror = await service.store.mirror(COLLECTION)
    assert mirror is not None and (mirror.pass_step, mirror.pass_next_page) == ("listing", 3)
    report = await m.full(COLLECTION)
    assert pages == 5  # page 3 again; pages 1 and 2 were not listed twice
    assert report.listed == 30 and report.swept


async def test_only_the_lock_holder_lists_a_collection(
    service: Service, emulator: EmulatorServer
) -> None:
    seed(emulator, 5)
    await service.store.watch_add([COLLECTION], source="cli")
    assert await service.store.acquire_lock(lock_name(COLLECTION), "other-replica", 30)
    watcher = Watcher(mirroring(service), owner="me", lease_seconds=30)
    await watcher.tick()
    assert watcher.running == {}  # another replica holds it
    await service.store.release_lock(lock_name(COLLECTION), "other-replica")
    await watcher.tick()
    assert list(watcher.running) == [COLLECTION]
    await asyncio.gather(*watcher.running.values())
    mirror = await service.store.mirror(COLLECTION)
    assert mirror is not None and mirror.last_full_at is not None
    assert await service.store.lock_holder(lock_name(COLLECTION)) is None  # handed back


async def test_a_sweep_confirms_each_candidate_and_keeps_what_it_cannot_confirm(
    service: Service, emulator: EmulatorServer
) -> None:
    ids, m = await mirrored(service, emulator, 10)
    # One deleted; one hidden from the listing but still there (a listing that missed it).
    httpx.delete(
        f"{emulator.url}/assets/{ids[0]}", headers={"Authorization": "Bearer sk-test-SECRET-4242"}
    ).raise_for_status()
    original = service.upstream.list_assets

    async def hiding(*args: Any, **kwargs: Any) -> Any:
        page = await original(*args, **kwargs)
        return replace(page, assets=[a for a in page.assets if a.asset_id != ids[1]])

    service.upstream.list_assets = hiding  # type: ignore[method-assign]
    report = await m.full(COLLECTION)
    assert report.gone == [ids[0]] and report.held is None
    kept = {r.asset_id for r in await service.store.ledger()}
    assert ids[0] not in kept and ids[1] in kept


def delete_upstream(emulator: EmulatorServer, ids: list[str]) -> None:
    httpx.post(
        f"{emulator.url}/_emulator/assets/delete", json={"asset_ids": ids}
    ).raise_for_status()


async def test_the_guard_counts_a_collections_own_points_when_qdrant_is_shared(
    tmp_path: Path, emulator: EmulatorServer
) -> None:
    """Two Mixpeek collections in one Qdrant collection: losing every asset of the small one
    is 100 % of it (held), though only 10 % of the Qdrant collection."""
    settings = local_settings(tmp_path, emulator, QDRANT_COLLECTION="shared")
    small = [
        *httpx.post(
            f"{emulator.url}/_emulator/seed",
            json={"collection_id": "small", "count": 2, "modality": "text"},
        ).json()["asset_ids"]
    ]
    seed(emulator, 18)
    async with open_service(settings) as svc:
        m = mirroring(svc)
        await m.full("small")
        await m.full(COLLECTION)
        await drain(svc)
        delete_upstream(emulator, small)
        report = await m.full("small")
        assert report.held is not None and (report.held.points, report.held.total) == (2, 2)
        assert await svc.sink.count("shared") == 20  # nothing deleted


async def test_a_pass_without_sweep_deletes_nothing_and_keeps_a_held_sweep(
    service: Service, emulator: EmulatorServer
) -> None:
    ids, m = await mirrored(service, emulator, 5)
    delete_upstream(emulator, ids[:2])  # 40 %: held
    assert (await m.full(COLLECTION)).held is not None
    quiet = await m.full(COLLECTION, sweep=False)
    assert quiet.gone == [] and not quiet.swept
    mirror = await service.store.mirror(COLLECTION)
    assert mirror is not None and mirror.held_points == 2  # still shown
    assert len(await service.store.ledger()) == 5


async def test_a_change_on_a_page_already_listed_is_found_by_the_next_incremental_pass(
    tmp_path: Path, emulator: EmulatorServer
) -> None:
    """The watermark a full pass leaves is upstream's newest change when it began, not the
    newest it listed: a change behind the listing's cursor still comes after it."""
    settings = local_settings(tmp_path, emulator, SYNC_WATCH_OVERLAP=0)
    ids = seed(emulator, 30)
    async with open_service(settings) as svc:
        m = mirroring(svc, page_size=10)
        original = svc.upstream.list_assets
        served: list[int] = []

        async def changing(*args: Any, **kwargs: Any) -> Any:
            page = await original(*args, **kwargs)
            if kwargs.get("order") is CREATED:
                served.append(kwargs["page"])
                first, last = page.assets[0].asset_id, ids[-1]
                if kwargs["page"] == 1:  # behind the cursor from now on
                    reindex(emulator, first)
                    await asyncio.sleep(0.01)
                    reindex(emulator, last)  # on page 3, listed with the newest stamp
            return page

        svc.upstream.list_assets = changing  # type: ignore[method-assign]
        await m.full(COLLECTION)
        listed: list[str] = []

        async def recording(*args: Any, **kwargs: Any) -> Any:
            page = await original(*args, **kwargs)
            listed.extend(a.asset_id for a in page.assets)
            return page

        svc.upstream.list_assets = recording  # type: ignore[method-assign]
        await m.incremental(COLLECTION)
        assert ids[0] in listed and ids[-1] in listed


async def test_incremental_passes_go_on_while_a_full_pass_waits_to_retry(
    service: Service, emulator: EmulatorServer
) -> None:
    seed(emulator, 30)
    m = mirroring(service, page_size=10)
    await m.full(COLLECTION)
    service.settings.watch_interval = 0.01
    svc_list = service.upstream.list_assets

    async def page_2_fails(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("order") is CREATED and kwargs.get("page") == 2:
            raise httpx.ConnectError("page 2 is broken")
        return await svc_list(*args, **kwargs)

    service.upstream.list_assets = page_2_fails  # type: ignore[method-assign]
    await service.store.watch_add([COLLECTION], source="cli")
    with pytest.raises(httpx.ConnectError):
        await m.full(COLLECTION)
    await service.store.pass_failed(COLLECTION, "page 2 is broken", retry_in=30, full=True)
    (created,) = seed(emulator, 1)
    assert (COLLECTION, "incremental") in await service.store.due_mirrors()
    assert created in (await m.incremental(COLLECTION)).queued


async def test_a_full_pass_does_not_requeue_assets_synced_without_points(
    service: Service, emulator: EmulatorServer
) -> None:
    ids = seed(emulator, 3)
    m = mirroring(service)
    await m.full(COLLECTION)
    # One synced without points (its only vector refused, say), one given up after retries.
    claims = {c.asset_id: c for c in await service.store.claim_due("w", 10, 30)}
    from sync_service.state.records import SyncResult

    await service.store.mark_synced(claims[ids[0]], SyncResult("DONE", ids[0], COLLECTION, None))
    await service.store.mark_failed(claims[ids[1]], "gave up after 8 attempts: 503")
    await service.store.mark_failed(claims[ids[2]], "failed upstream (asset status FAILED)")
    assert (await m.full(COLLECTION)).queued == [ids[1]]


async def test_losing_the_lock_ends_the_pass_not_the_process(service: Service) -> None:
    store = service.store
    assert await store.acquire_lock("watch:x", "me", 0.3)
    calls = 0
    real = store.acquire_lock

    async def stolen(name: str, owner: str, seconds: float) -> bool:
        nonlocal calls
        calls += 1
        return False if calls >= 1 else await real(name, owner, seconds)

    store.acquire_lock = stolen  # type: ignore[method-assign]
    with pytest.raises(PassLost):
        async with holding(store, "watch:x", "me", 0.3):
            await asyncio.sleep(5)
    assert asyncio.current_task() is not None and not asyncio.current_task().cancelling()  # type: ignore[union-attr]


async def test_a_pass_ending_mid_renewal_leaves_the_store_writable(service: Service) -> None:
    """The lock's renewal cut off mid-statement when a pass ends (its write returns rows)
    stranded a SQLite transaction: every later write waited on its lock, and a daemon told
    to stop did not (seen in CI). Passes ending at every moment of a renewal leave none."""
    store = service.store
    rng = random.Random(7)
    for _ in range(150):
        assert await store.acquire_lock("watch:x", "me", 30)
        async with holding(store, "watch:x", "me", 0.006):  # renewed every 2 ms
            await asyncio.sleep(rng.random() * 0.006)
        # Released, and the store takes the next write at once.
        assert await store.lock_holder("watch:x") is None
        assert await asyncio.wait_for(store.acquire_lock("watch:y", "me", 30), 2)


def reindex(emulator: EmulatorServer, asset_id: str) -> None:
    httpx.post(
        f"{emulator.url}/_emulator/assets/{asset_id}/reindex", json={"mode": "payload"}
    ).raise_for_status()


async def test_ticks_at_once_start_one_pass_per_collection(
    service: Service, emulator: EmulatorServer
) -> None:
    """The scheduled tick and a wake-up may run together: still one pass."""
    seed(emulator, 3)
    await service.store.watch_add([COLLECTION], source="cli")
    watcher = Watcher(mirroring(service), owner="me", lease_seconds=30)
    started: list[str] = []
    real = watcher.mirroring.full

    async def counted(collection_id: str, **kwargs: Any) -> Any:
        started.append(collection_id)
        return await real(collection_id, **kwargs)

    watcher.mirroring.full = counted  # type: ignore[method-assign]
    await asyncio.gather(watcher.tick(), watcher.tick(), watcher.tick())
    await asyncio.gather(*watcher.running.values())
    assert started == [COLLECTION]


async def test_a_pass_finding_qdrant_down_reports_the_outage_and_passes_wait_for_it(
    service: Service, emulator: EmulatorServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Qdrant's outage is logged once (the pipeline's ``qdrant_unavailable``), not as a
    failed pass every few seconds; while it lasts the daemon starts no pass, and the tick that
    finds it answering again resumes them."""
    seed(emulator, 3)
    await service.store.watch_add([COLLECTION], source="cli")
    m = mirroring(service)

    async def qdrant_down(collection_id: str) -> None:
        raise SinkUnavailable("Qdrant answered 503: Service Unavailable")

    m.full = qdrant_down  # type: ignore[method-assign]
    daemon = Daemon.from_settings(service.store, service.pipeline, service.settings)
    daemon.watcher = Watcher(m, owner="me", lease_seconds=30, qdrant=service.pipeline.qdrant)
    caplog.set_level("DEBUG")
    await daemon.watch_tick()
    await asyncio.gather(*daemon.watcher.running.values())
    qdrant = service.pipeline.qdrant
    assert qdrant.down and qdrant.reason == "Qdrant answered 503: Service Unavailable"
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert [getattr(r, "event", None) for r in warnings] == ["qdrant_unavailable"]
    failed = [r for r in caplog.records if getattr(r, "event", None) == "watch_pass_failed"]
    assert [r.levelname for r in failed] == ["DEBUG"]
    await service.store.watch_add([COLLECTION], source="cli")  # due again at once
    mirror = await service.store.mirror(COLLECTION)
    assert mirror is not None and mirror.last_error  # `status` still shows why
    m.full = mirroring(service).full  # type: ignore[method-assign]
    await daemon.watch_tick()
    assert daemon.watcher.running == {}  # Qdrant is down: no pass starts
    qdrant._next_probe = 0  # the probe is due: the claims' tick asks Qdrant, which answers
    await daemon.tick()
    assert qdrant.down and not qdrant.holds_work  # on trial until a write lands
    await daemon.watch_tick()
    assert list(daemon.watcher.running) == [COLLECTION]
    await asyncio.gather(*daemon.watcher.running.values())
