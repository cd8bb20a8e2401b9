"""The Mixpeek client against the emulator over real HTTP on loopback (the Gen B flow)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np
import pytest

from sync_service.emulator import EmulatorServer
from sync_service.upstream.errors import MixpeekAuthError, MixpeekError, MixpeekNotFound
from sync_service.upstream.gen_b.client import MixpeekClient, RetryPolicy
from sync_service.upstream.gen_b.models import Task, TaskOutcome
from tests.conftest import API_KEY

FAST = RetryPolicy(max_attempts=8, base_delay=0.01, max_delay=0.1, attempt_timeout=5)


@pytest.fixture
async def client(emulator: EmulatorServer) -> AsyncIterator[MixpeekClient]:
    async with MixpeekClient(base_url=emulator.url, api_key=API_KEY, policy=FAST) as c:
        yield c


async def wait_done(client: MixpeekClient, task_id: str) -> Task:
    for _ in range(100):
        task = await client.get_task(task_id)
        if task.outcome is not TaskOutcome.PENDING:
            return task
        await asyncio.sleep(0.05)
    raise AssertionError("task never finished")


async def test_index_poll_features_vectors(client: MixpeekClient, emulator: EmulatorServer) -> None:
    # The video takes 1.5 s (its early statuses last 0.45 s, not 0.12 s: a loaded machine
    # took longer than that between the index call and the first poll).
    emulator.update_config(processing_time=1.5)
    video = await client.index_video_url("https://example.com/a.mp4?duration=25", "col")
    seen_statuses = {(await client.get_task(video.task_id or "")).status}
    emulator.update_config(processing_time=0.4)
    image = await client.index_image_url("https://example.com/b.jpg", "col")
    text = await client.index_text("hello world", "col")
    for result, modality, count in ((video, "video", 3), (image, "image", 1), (text, "text", 1)):
        assert result.task_id
        task = await wait_done(client, result.task_id)
        seen_statuses.add(task.status)
        assert task.outcome is TaskOutcome.SUCCEEDED and task.asset_id
        grouped = await client.get_asset_features(task.asset_id)
        assert set(grouped.features) >= {"video", "image", "text", "audio"}
        assert grouped.asset.created_at is not None  # naive timestamp parsed
        listed = grouped.features[modality]
        assert len(listed) == count and all(f.vectors is None for f in listed)
        full = await client.get_feature(listed[0].feature_id)
        vector = np.asarray(full.vectors["multimodal-v1"])  # type: ignore[index]
        assert vector.shape == (1408,) and abs(np.linalg.norm(vector) - 1) < 1e-5
        assert full.created_at is not None and full.raw["created_at"].endswith("Z")
    assert "INITIALIZING" in seen_statuses or "DOWNLOADING" in seen_statuses


async def test_vectors_fall_back_to_return_vectors(emulator: EmulatorServer) -> None:
    emulator.update_config(vectors_param="return_vectors")
    async with MixpeekClient(base_url=emulator.url, api_key=API_KEY, policy=FAST) as client:
        task = await wait_done(client, (await client.index_text("x", "c")).task_id or "")
        (feature,) = (await client.get_asset_features(task.asset_id or "")).features["text"]
        assert (await client.get_feature(feature.feature_id)).vectors is not None
        assert (await client.get_feature(feature.feature_id)).vectors is not None
    stats = emulator.state.stats.snapshot()
    # One miss with include_vectors, then return_vectors remembered: 3 requests for 2 calls.
    assert stats["requests"]["GET /features/{feature_id}"]["200"] == 3


async def test_wrong_key_is_refused_without_printing_it(emulator: EmulatorServer) -> None:
    async with MixpeekClient(base_url=emulator.url, api_key="sk-wrong-key-99", policy=FAST) as c:
        with pytest.raises(MixpeekAuthError) as info:
            await c.get_task("anything")
    assert "sk-wrong-key-99" not in str(info.value) and "refused" in str(info.value)
    assert emulator.state.stats.snapshot()["requests"]["GET /tasks/{task_id}"] == {"401": 1}


async def test_unknown_task_is_not_found(client: MixpeekClient) -> None:
    with pytest.raises(MixpeekNotFound):
        await client.get_task("00000000-0000-4000-8000-000000000000")


async def test_5xx_and_429_are_ridden_out(emulator: EmulatorServer, client: MixpeekClient) -> None:
    emulator.update_config(error_rate=0.4, rate_limit=600, rate_burst=3)
    ids = [(await client.index_text(f"t{i}", "c")).task_id for i in range(6)]
    assert all(ids)
    counts = emulator.state.stats.snapshot()["requests"]["POST /index/text"]
    assert counts["200"] == 6 and set(counts) - {"200"}  # faults happened and were retried


async def test_pagination_walks_every_asset(client: MixpeekClient) -> None:
    for i in range(23):
        await client.index_text(f"doc {i}", "paged")
    first = await client.list_assets(["paged"], page=1, page_size=10)
    assert first.total == 23 and len(first.results) == 10 and first.has_next
    every = [a.asset_id async for a in client.iter_assets(["paged"], page_size=10)]
    assert len(every) == len(set(every)) == 23


async def test_the_breakers_probe_is_answered_by_a_healthy_api_and_not_by_a_failing_one(
    emulator: EmulatorServer,
) -> None:
    from sync_service.upstream.outage import Outage

    outage = Outage()
    async with MixpeekClient(
        base_url=emulator.url, api_key=API_KEY, policy=FAST, outage=outage
    ) as client:
        assert await outage.check()  # the probe task is unknown: a 404 is an answer
        assert not outage.is_open
        emulator.update_config(error_rate=1.0)
        assert not await outage.check()
        assert outage.is_open and outage.reason is not None and "answered 5" in outage.reason
        with pytest.raises(MixpeekError, match="Mixpeek unavailable since"):
            await client.get_task("any")  # not sent while open
        emulator.update_config(error_rate=0.0)
        assert await outage.check() and not outage.is_open
