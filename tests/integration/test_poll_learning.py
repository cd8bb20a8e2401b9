"""The pipeline teaches its poll schedule from real polls (real HTTP to the emulator)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from sync_service.emulator import EmulatorServer
from sync_service.engine.scheduler import Daemon
from sync_service.runtime import open_service
from tests.conftest import API_KEY, local_settings


def _submit(emulator: EmulatorServer, count: int) -> list[str]:
    with httpx.Client(base_url=emulator.url, headers={"Authorization": f"Bearer {API_KEY}"}) as h:
        return [
            h.post("/index/text", json={"text": f"note {i}", "collection_id": "learn"})
            .raise_for_status()
            .json()["task_id"]
            for i in range(count)
        ]


async def test_tasks_seen_running_teach_the_schedule_and_done_ones_do_not(
    tmp_path: Path, emulator: EmulatorServer
) -> None:
    settings = local_settings(tmp_path, emulator)
    async with open_service(settings) as service:
        schedule = service.pipeline.poll_schedule
        # Tracked as soon as submitted: the first poll sees them running (1.5 s upstream).
        emulator.update_config(processing_time=1.5)
        running = _submit(emulator, 3)
        await service.store.track(running)
        daemon = Daemon.from_settings(service.store, service.pipeline, settings)
        assert await daemon.run(drain=True) == 0
        assert schedule.learned == 3
        # Tracked after they finished: DONE at the first poll says nothing about durations.
        emulator.update_config(processing_time=0.1)
        finished = _submit(emulator, 2)
        time.sleep(0.5)
        await service.store.track(finished)
        daemon = Daemon.from_settings(service.store, service.pipeline, settings)
        assert await daemon.run(drain=True) == 0
        assert schedule.learned == 3
        assert {t["state"] for t in await service.store.list_tasks()} == {"synced"}


async def test_the_backoff_schedule_learns_nothing(
    tmp_path: Path, emulator: EmulatorServer
) -> None:
    settings = local_settings(tmp_path, emulator, SYNC_POLL_SCHEDULE="backoff")
    async with open_service(settings) as service:
        await service.store.track(_submit(emulator, 2))
        daemon = Daemon.from_settings(service.store, service.pipeline, settings)
        assert await daemon.run(drain=True) == 0
        assert service.pipeline.poll_schedule.learned == 0
