"""An idle ``run --drain`` on SQLite is told without SQLAlchemy (engine/idle.py) only when the
daemon would find nothing to do either; every other case is left to the daemon, which is told
that work is waiting (False: it goes upstream first) only when it is (None: it cannot tell)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import update

from sync_service.engine.idle import drained_at_once
from sync_service.state.peek import StorePeek, peek_sqlite
from sync_service.state.schema import mirrors, tasks
from sync_service.state.store import Store

TARGET = "path /somewhere/qdrant"


async def _agree(url: str, store: Store) -> bool:
    """``has_work`` as the peek reads it, checked against the store's own."""

    async def read(peek: StorePeek) -> bool:
        return await peek.has_work()

    peeked = await peek_sqlite(url, read)
    assert peeked is not None and peeked == await store.has_work()
    return peeked


async def test_only_a_bound_store_without_work_is_drained_at_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sync.db'}"
    assert await drained_at_once(url, TARGET) is None  # no store yet: the daemon creates it
    store = Store.open(url)
    try:
        await store.migrate()
        assert not await _agree(url, store)
        assert await drained_at_once(url, TARGET) is None  # not bound yet: the daemon binds it
        await store.track(["t-0"])
        assert await drained_at_once(url, TARGET) is False  # work waits: bound on the way
        async with store.engine.begin() as conn:
            await conn.execute(update(tasks).values(state="synced"))
        await store.set_info({"qdrant_target": TARGET}, only_if_unset=True)
        assert await drained_at_once(url, TARGET)
        assert await drained_at_once(url, "path /elsewhere") is None  # the daemon refuses it

        await store.track(["t-1"])
        assert await _agree(url, store) and await drained_at_once(url, TARGET) is False
        assert await drained_at_once(url, "path /elsewhere") is None  # refused, work or not
        async with store.engine.begin() as conn:
            await conn.execute(update(tasks).values(state="synced"))
        assert not await _agree(url, store) and await drained_at_once(url, TARGET)

        await store.watch_add(["c"], source="cli")
        assert await _agree(url, store) and await drained_at_once(url, TARGET) is False
        for busy in ({"pass_step": "sweeping"}, {"held_at": 1.0}):
            async with store.engine.begin() as conn:
                await conn.execute(update(mirrors).values(watched=0, **busy))
            assert await _agree(url, store) and await drained_at_once(url, TARGET) is False
            async with store.engine.begin() as conn:
                await conn.execute(update(mirrors).values(pass_step=None, held_at=None))
        assert not await _agree(url, store) and await drained_at_once(url, TARGET)
    finally:
        await store.close()


@pytest.mark.parametrize("url", ["sqlite:///{db}?timeout=5", "sqlite://", "postgresql://h/db"])
async def test_urls_the_peek_does_not_read_go_to_the_daemon(tmp_path: Path, url: str) -> None:
    assert await drained_at_once(url.format(db=tmp_path / "sync.db"), TARGET) is None
