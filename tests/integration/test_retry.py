"""Failed work can be retried (fresh attempts, the failure kept), and errors no retry can fix
fail at once with their reason."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from sync_service.emulator import EmulatorServer
from sync_service.engine.scheduler import Daemon
from sync_service.runtime import Service, open_service
from sync_service.state.store import Store
from sync_service.upstream.port import AssetContent, MixpeekBadRequest
from tests.conftest import local_settings


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    s = Store.open(database_url)
    await s.prepare(may_migrate=True)
    yield s
    await s.close()


async def fail(store: Store, errors: dict[str, str]) -> None:
    for claim in await store.claim_due("w", 10, 30):
        if claim.task_id in errors:
            await store.mark_failed(claim, errors[claim.task_id])
        else:
            await store.release(claim)


async def test_retry_requeues_failed_work_and_keeps_its_failure(store: Store) -> None:
    await store.track(["a", "b", "c"])
    await fail(store, {"a": "gave up after 5 attempts: ConnectError", "b": "boom"})
    dry = await store.requeue_failed(["a", "c", "zzz"], dry_run=True)
    assert dry.task_ids == ["a"]
    assert dry.skipped == {"c": "not failed (pending)", "zzz": "not tracked"}
    assert (await store.list_tasks("a"))[0]["state"] == "failed"  # a dry run changes nothing

    done = await store.requeue_failed(["a"])
    assert done.task_ids == ["a"]
    (row,) = await store.list_tasks("a")
    assert (row["state"], row["attempts"], row["error"]) == ("pending", 0, None)
    (history,) = await store.task_history("a")
    assert history["failed_error"] == "gave up after 5 attempts: ConnectError"
    assert history["retried_at"] >= history["failed_at"]
    # Every failed one, only those failed since a time.
    now = await store.now()
    assert (await store.requeue_failed(since=now + 60, dry_run=True)).task_ids == []
    assert (await store.requeue_failed(since=now - 60)).task_ids == ["b"]
    assert await store.claim_due("w", 10, 30)  # due again at once


@pytest.fixture
async def service(tmp_path: Path, emulator: EmulatorServer) -> AsyncIterator[Service]:
    async with open_service(local_settings(tmp_path, emulator)) as svc:
        yield svc


async def drain(svc: Service) -> None:
    daemon = Daemon.from_settings(svc.store, svc.pipeline, svc.settings)
    assert await asyncio.wait_for(daemon.run(drain=True), 60) == 0


def submit(http: httpx.Client, collection_id: str) -> str:
    answer = http.post(
        "/index/videos/url",
        json={"url": "https://example.com/v.mp4", "collection_id": collection_id},
    )
    answer.raise_for_status()
    return str(answer.json()["task_id"])


async def test_a_collection_name_qdrant_refuses_fails_at_once(
    service: Service, http: httpx.Client
) -> None:
    task_id = submit(http, "c" * 300)
    await service.store.track([task_id])
    await drain(service)
    (row,) = await service.store.list_tasks(task_id)
    assert row["state"] == "failed" and row["attempts"] == 0  # not retried
    assert "(not retried)" in row["error"] and "at most 255 characters" in row["error"]


async def test_a_request_upstream_refuses_fails_at_once(
    service: Service, http: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def refused(asset_id: str, *, only_if_done: bool = False) -> AssetContent:
        raise MixpeekBadRequest("asset id is malformed", status=422)

    monkeypatch.setattr(service.upstream, "fetch_content", refused)
    task_id = submit(http, "films")
    await service.store.track([task_id])
    await drain(service)
    (row,) = await service.store.list_tasks(task_id)
    assert row["state"] == "failed" and row["attempts"] == 0
    assert "(not retried)" in row["error"] and "asset id is malformed" in row["error"]
    # Fixed upstream: the retry syncs it.
    monkeypatch.undo()
    assert (await service.store.requeue_failed([task_id])).task_ids == [task_id]
    await drain(service)
    (row,) = await service.store.list_tasks(task_id)
    assert row["state"] == "synced"
    assert len(await service.store.task_history(task_id)) == 1
