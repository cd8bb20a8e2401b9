"""Watch mode's passes in-process, over real HTTP to the emulator and a real state store:
requests per pass, the watermark, resuming, the lock, and what a pass queues."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sync_service.emulator import EmulatorServer
from sync_service.runtime import Service, open_service
from sync_service.scheduler import Daemon
from sync_service.watch import Mirroring, Watcher, lock_name
from tests.conftest import local_settings

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
    return Mirroring(svc.settings, svc.store, svc.client, svc.sink, page_size=page_size)


async def test_an_incremental_pass_with_nothing_changed_is_one_request(
    service: Service, emulator: EmulatorServer
) -> None:
    seed(emulator, 250)
    m = mirroring(service)
    await service.store.watch_add([COLLECTION], source="cli")
    before = listings(emulator)
    full = await m.full(COLLECTION)
    assert (full.listed, len(full.queued), listings(emulator) - before) == (250, 250, 3)
    await drain(service)

    before = listings(emulator)
    quiet = await m.incremental(COLLECTION)
    assert listings(emulator) - before == 1
    assert quiet.queued == [] and not quiet.fell_back

    # A change and a creation by someone else: queued, and only they are.
    changed = (await service.client.list_assets(COLLECTION, page=1, page_size=1)).results[0]
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
    original = service.client.list_assets

    async def flaky(*args: Any, **kwargs: Any) -> Any:
        nonlocal pages
        pages += 1
        if pages == 3:
            raise httpx.ConnectError("upstream went away")
        return await original(*args, **kwargs)

    service.client.list_assets = flaky  # type: ignore[method-assign]
    with pytest.raises(httpx.ConnectError):
        await m.full(COLLECTION)
    mirror = await service.store.mirror(COLLECTION)
    assert mirror is not None and (mirror.pass_step, mirror.pass_next_page) == ("listing", 3)
    report = await m.full(COLLECTION)
    assert pages == 4  # page 3 again; pages 1 and 2 were not listed twice
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
    ids = seed(emulator, 10)
    m = mirroring(service)
    await m.full(COLLECTION)
    await drain(service)
    # One deleted; one hidden from the listing but still there (a listing that missed it).
    httpx.delete(
        f"{emulator.url}/assets/{ids[0]}", headers={"Authorization": "Bearer sk-test-SECRET-4242"}
    ).raise_for_status()
    original = service.client.list_assets

    async def hiding(*args: Any, **kwargs: Any) -> Any:
        page = await original(*args, **kwargs)
        page.results = [a for a in page.results if a.asset_id != ids[1]]
        return page

    service.client.list_assets = hiding  # type: ignore[method-assign]
    report = await m.full(COLLECTION)
    assert report.gone == [ids[0]] and report.held is None
    kept = {r.asset_id for r in await service.store.ledger()}
    assert ids[0] not in kept and ids[1] in kept
