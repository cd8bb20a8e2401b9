"""``run --drain`` with nothing to do makes the Qdrant sink and the Mixpeek client only on first
use (runtime.open_service(defer_when_idle=True)); work that turns up after the check is synced."""

from __future__ import annotations

from pathlib import Path

import httpx

from sync_service.emulator import EmulatorServer
from sync_service.engine.scheduler import Daemon
from sync_service.qdrant.sink import QdrantSink
from sync_service.runtime import OnFirstUse, open_service
from sync_service.state.store import open_store
from tests.conftest import API_KEY, local_settings


async def test_an_idle_store_defers_the_parts_and_late_work_still_lands(
    tmp_path: Path, emulator: EmulatorServer
) -> None:
    settings = local_settings(tmp_path, emulator)
    async with open_service(settings, defer_when_idle=True) as service:
        assert isinstance(service.sink, OnFirstUse) and isinstance(service.upstream, OnFirstUse)
        assert service.sink.made is None and service.upstream.made is None
        assert not (tmp_path / "qdrant").exists()  # the embedded folder is not even opened
        # Tracked after the check (another process's `track`): the drain still syncs it.
        with httpx.Client(
            base_url=emulator.url, headers={"Authorization": f"Bearer {API_KEY}"}
        ) as h:
            task_id = (
                h.post("/index/text", json={"text": "late", "collection_id": "late"})
                .raise_for_status()
                .json()["task_id"]
            )
        await service.store.track([task_id])
        emulator.update_config(processing_time=0.0)
        daemon = Daemon.from_settings(service.store, service.pipeline, settings, watch=True)
        assert await daemon.run(drain=True) == 0
        assert isinstance(service.sink.made, QdrantSink) and service.upstream.made is not None
        assert (await service.store.counts())["synced"] == 1


async def test_a_store_with_work_makes_the_parts_at_once(
    tmp_path: Path, emulator: EmulatorServer
) -> None:
    settings = local_settings(tmp_path, emulator)
    async with open_store(settings) as store:
        await store.track(["t-1"])
    async with open_service(settings, defer_when_idle=True) as service:
        assert isinstance(service.sink, QdrantSink)
    settings = local_settings(tmp_path / "watching", emulator)
    async with open_store(settings) as store:
        await store.watch_add(["c"], source="cli")
    async with open_service(settings, defer_when_idle=True) as service:
        assert isinstance(service.sink, QdrantSink)
