"""``run --drain`` with nothing to do makes the Qdrant sink and the Mixpeek client only on first
use (runtime.open_service(defer_when_idle=True)); work that turns up after the check is synced.
With work, ``run`` imports Qdrant's client in a thread and makes the sink when the work first
reaches for it (``overlap_sink=True``), checking Qdrant's mark before anything is written."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from sync_service.emulator import EmulatorServer
from sync_service.engine.scheduler import Daemon
from sync_service.keep.binding import TargetMismatch
from sync_service.qdrant.sink import QdrantSink
from sync_service.runtime import OnFirstUse, SinkInMaking, open_service
from sync_service.settings import Settings
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


def _submit(emulator: EmulatorServer, text: str) -> str:
    with httpx.Client(base_url=emulator.url, headers={"Authorization": f"Bearer {API_KEY}"}) as h:
        response = h.post("/index/text", json={"text": text, "collection_id": "c"})
        return str(response.raise_for_status().json()["task_id"])


def _in_memory(tmp_path: Path, emulator: EmulatorServer) -> Settings:
    # Embedded in memory: each sink is a new, empty Qdrant. (An embedded folder is taken at
    # start instead: its lock tells other commands a daemon runs.)
    return local_settings(tmp_path, emulator, QDRANT_PATH=":memory:")


async def _drain_with_overlap(settings: Settings) -> Daemon:
    async with open_service(settings, overlap_sink=True) as service:
        assert isinstance(service.sink, SinkInMaking)
        daemon = Daemon.from_settings(service.store, service.pipeline, settings, watch=True)
        service.stop_on_failure(daemon.abort)
        try:
            assert await daemon.run(drain=True) == 0
        finally:
            made = service.sink.made
        assert isinstance(made, QdrantSink)
        store_id = await service.store.info("qdrant_target_id")
        assert store_id is not None and await made.has_mark(store_id)  # checked, then marked
    return daemon


async def test_with_work_the_sink_is_made_in_the_background_and_marked_before_writes(
    tmp_path: Path, emulator: EmulatorServer
) -> None:
    settings = _in_memory(tmp_path, emulator)
    emulator.update_config(processing_time=0.0)
    async with open_store(settings) as store:
        await store.track([_submit(emulator, "first")])
    await _drain_with_overlap(settings)
    async with open_store(settings) as store:
        assert (await store.counts())["synced"] == 1


async def test_a_qdrant_without_the_mark_stops_the_daemon_and_spends_no_attempt(
    tmp_path: Path, emulator: EmulatorServer
) -> None:
    """The check ``open_service`` makes at start otherwise, made at the first write: the
    daemon stops with the same refusal, and the task waits, its lease handed back."""
    settings = _in_memory(tmp_path, emulator)
    emulator.update_config(processing_time=0.0)
    async with open_store(settings) as store:
        await store.track([_submit(emulator, "first")])
    await _drain_with_overlap(settings)
    # The next process's Qdrant in memory is a new one: a Qdrant wiped at the same address.
    async with open_store(settings) as store:
        await store.track([second := _submit(emulator, "second")])
    with pytest.raises(TargetMismatch, match="does not carry this state store's mark"):
        async with open_service(settings, overlap_sink=True) as service:
            daemon = Daemon.from_settings(service.store, service.pipeline, settings)
            service.stop_on_failure(daemon.abort)
            await daemon.run(drain=True)
    async with open_store(settings) as store:
        (row,) = await store.list_tasks(second)
        assert row["state"] == "pending" and row["attempts"] == 0 and row["lease_owner"] is None


async def test_an_embedded_folder_is_taken_at_start(
    tmp_path: Path, emulator: EmulatorServer
) -> None:
    settings = local_settings(tmp_path, emulator)
    async with open_store(settings) as store:
        await store.track(["t-1"])
    async with open_service(settings, overlap_sink=True) as service:
        assert isinstance(service.sink, QdrantSink)
