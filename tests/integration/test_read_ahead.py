"""``run``'s read-ahead (engine/read_ahead.py): the first claim's tasks, read without
SQLAlchemy, are polled while the daemon loads, and each answer replaces the pipeline's poll."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import update

from sync_service.emulator import EmulatorConfig, EmulatorServer
from sync_service.engine.read_ahead import ReadAhead, due_at_start
from sync_service.state.schema import tasks
from sync_service.state.store import Store
from sync_service.upstream.port import MixpeekUnavailable, TaskOutcome, TaskState
from tests.conftest import API_KEY
from tests.harness import Service


class FakeUpstream:
    """get_task alone, answered once ``gate`` is open: ids starting with "down" raise, those
    starting with "run" are still running, the others DONE."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def get_task(self, task_id: str) -> TaskState:
        self.asked.append(task_id)
        await self.gate.wait()
        if task_id.startswith("down"):
            raise MixpeekUnavailable("Mixpeek is down")
        if task_id.startswith("run"):
            return TaskState(task_id, "PROCESSING", TaskOutcome.PENDING)
        return TaskState(task_id, "DONE", TaskOutcome.SUCCEEDED, asset_id=f"asset-{task_id}")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_an_answer_is_taken_once_while_fresh_and_a_failure_is_none() -> None:
    upstream, clock = FakeUpstream(), Clock()
    ids = ["a", "b", "down-1", "run-1", "run-2"]
    ahead = ReadAhead(upstream, ids, max_age=2.0, clock=clock)  # type: ignore[arg-type]
    await asyncio.sleep(0)  # the polls go out at once, before any claim
    assert upstream.asked == ids
    state = await ahead.take("a")
    assert state is not None and state.asset_id == "asset-a"
    assert await ahead.take("a") is None  # once: a later poll is the pipeline's own
    assert await ahead.take("never-read") is None
    assert await ahead.take("down-1") is None  # failed: the pipeline polls, with its handling
    running = await ahead.take("run-1")
    assert running is not None and running.status == "PROCESSING"  # fresh
    clock.now += 2.5
    assert await ahead.take("run-2") is None  # still running 2.5 s ago: asked again
    finished = await ahead.take("b")
    assert finished is not None and finished.asset_id == "asset-b"  # finished stays finished
    assert (ahead.used, ahead.sent) == (3, 5)
    await ahead.close()


async def test_a_claim_waits_for_its_poll_on_the_way_and_close_stops_the_rest() -> None:
    upstream = FakeUpstream()
    upstream.gate.clear()  # answers held back
    ahead = ReadAhead(upstream, ["a", "b"], max_age=2.0)  # type: ignore[arg-type]
    taking = asyncio.create_task(ahead.take("a"))
    await asyncio.sleep(0.01)
    assert not taking.done()  # not polled again: it waits for the answer on its way
    upstream.gate.set()
    state = await taking
    assert state is not None and state.task_id == "a" and upstream.asked == ["a", "b"]
    upstream.gate.clear()
    late = ReadAhead(upstream, ["c"], max_age=2.0)  # type: ignore[arg-type]
    await asyncio.sleep(0)
    await asyncio.wait_for(late.close(), 1)  # the unclaimed poll is cancelled, not awaited
    await ahead.close()


async def test_the_tasks_read_are_those_the_first_claim_takes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sync.db'}"
    assert await due_at_start(url, 10) == []  # no store yet: no read-ahead
    store = Store.open(url)
    try:
        await store.migrate()
        await store.track([f"t-{i}" for i in range(6)])
        await store.enqueue_assets(["a1"], collection_id="c")  # an asset job: nothing to poll
        async with store.engine.begin() as conn:
            await conn.execute(update(tasks).where(tasks.c.task_id == "t-0").values(state="synced"))
            later = update(tasks).where(tasks.c.task_id == "t-1")
            await conn.execute(later.values(next_poll_at=time.time() + 60))  # not due yet
            for i in range(2, 6):  # due in this order
                due = update(tasks).where(tasks.c.task_id == f"t-{i}")
                await conn.execute(due.values(next_poll_at=time.time() - 10 + i))
        await store.claim_due("other", 1, 30, task_ids=["t-2"])  # leased elsewhere
        assert await due_at_start(url, 10) == ["t-3", "t-4", "t-5"]
        assert await due_at_start(url, 2) == ["t-3", "t-4"]
        claimed = await store.claim_due("w", 10, 30)
        assert {c.task_id for c in claimed} == {"t-3", "t-4", "t-5", "asset:a1"}
    finally:
        await store.close()


@pytest.mark.parametrize("url", ["sqlite:///{db}?timeout=5", "postgresql://h/db"])
async def test_stores_the_peek_does_not_read_have_no_read_ahead(tmp_path: Path, url: str) -> None:
    assert await due_at_start(url.format(db=tmp_path / "sync.db"), 10) == []


@pytest.fixture
def emulator() -> Iterator[EmulatorServer]:
    with EmulatorServer(EmulatorConfig(api_key=API_KEY, processing_time=0.0, seed=5)) as server:
        yield server


def test_a_drain_polls_each_finished_task_once(tmp_path: Path, emulator: EmulatorServer) -> None:
    service = Service(tmp_path, emulator, SYNC_LOG_LEVEL="DEBUG", SYNC_LOG_FORMAT="json")
    assert len(service.submit("--text", "one", "--text", "two", "--text", "three")) == 3
    before = _polls(service)
    run = service.cli("run", "--drain")
    assert service.status()["counts"] == {"pending": 0, "synced": 3, "failed": 0}
    assert _polls(service) - before == 3  # the read-ahead's polls, none again
    events = [json.loads(line) for line in run.stderr.splitlines() if line.startswith("{")]
    (used,) = [e for e in events if e.get("event") == "read_ahead_used"]
    assert (used["used"], used["sent"]) == (3, 3)


def _polls(service: Service) -> int:
    requests = service.stats()["requests"]  # route -> status -> count
    return sum(n for route, by in requests.items() if "/tasks/" in route for n in by.values())
