"""``status``'s SQLite peek (state/peek.py) reads what the store reads, and steps aside for the
store whenever it cannot be sure to."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, update

from sync_service.state.peek import StorePeek, peek_sqlite
from sync_service.state.schema import dead_letters, mirrors, synced_features, tasks
from sync_service.state.store import Store
from sync_service.state.webhooks import HELD, Applied, WebhookEvent


async def _populated(url: str) -> Store:
    store = Store.open(url)
    await store.migrate()
    await store.track(["t-1", "t-2", "t-3"])
    await store.track(["t-4"], source="submit")
    await store.watch_add(["c-watched", "c-other"], source="cli")
    await store.hold_sweep("c-other", points=3, total=10, assets=["b", "a"])
    # Collections a webhook says were deleted: one watched, one known from the ledger only.
    gone = [WebhookEvent(f"e-{c}", "collection.deleted", None, c) for c in ("c-watched", "x")]
    await store.receive_webhooks(gone)
    assert len(await store.claim_webhooks("w", 10, 30)) == 2
    await store.finish_webhooks(
        "w", {e.event_id: Applied(HELD, "held", e.collection_id) for e in gone}
    )
    async with store.engine.begin() as conn:
        await conn.execute(
            update(tasks)
            .where(tasks.c.task_id == "t-2")
            .values(state="synced", asset_id="a-2", collection_id="c-watched", features_synced=3)
        )
        await conn.execute(
            update(tasks)
            .where(tasks.c.task_id == "t-3")
            .values(state="failed", error="boom", dead_letters=1)
        )
        await conn.execute(
            update(mirrors).where(mirrors.c.collection_id == "c-other").values(watched=0)
        )
        await conn.execute(
            update(mirrors)
            .where(mirrors.c.collection_id == "c-watched")
            .values(pass_step="listing", pass_next_page=3, watermark=1.5, last_full_at=2.25)
        )
        await conn.execute(
            insert(dead_letters),
            [
                {"task_id": "t-3", "feature_id": "f-1", "reason": "bad vector", "created_at": 1.0},
                {"task_id": "t-3", "feature_id": None, "reason": "whole task", "created_at": 2.0},
                {"task_id": "t-1", "feature_id": "f-9", "reason": "other", "created_at": 3.0},
            ],
        )
        for feature, asset, collection in [
            ("f-a", "a-1", "c-watched"),
            ("f-b", "a-1", "c-watched"),
            ("f-c", "a-2", "c-watched"),
            ("f-d", "a-3", "not-mirrored"),
        ]:
            await conn.execute(
                insert(synced_features).values(
                    feature_id=feature,
                    qdrant_collection="q",
                    point_id=feature,
                    task_id="t-2",
                    asset_id=asset,
                    collection_id=collection,
                    vectors="{}",
                    payload_fp="p",
                    vectors_fp="v",
                    synced_at=1.0,
                )
            )
    return store


@pytest.mark.parametrize("task_id", [None, "t-3", "t-1", "missing"])
async def test_the_peek_reads_what_the_store_reads(tmp_path: Path, task_id: str | None) -> None:
    url = f"sqlite:///{tmp_path / 'sync.db'}"
    store = await _populated(url)

    async def read(source: Store | StorePeek) -> dict[str, Any]:
        return {
            "counts": await source.counts(),
            "tasks": await source.list_tasks(task_id),
            "letters": await source.dead_letters(task_id),
            "known": await source.assets_known(),
            "mirrors": await source.mirrors(),
            "deleted": await source.deleted_upstream(),
            "now": await source.now(),
        }

    try:
        expected = await read(store)
    finally:
        await store.close()
    peeked = await peek_sqlite(url, read)
    assert peeked is not None
    assert abs(peeked.pop("now") - expected.pop("now")) < 5
    assert peeked == expected
    assert set(peeked["deleted"]) == {"c-watched", "x"}
    assert [list(row) for row in peeked["tasks"]] == [list(row) for row in expected["tasks"]]


async def test_the_peek_steps_aside_for_a_store_to_create_or_migrate(tmp_path: Path) -> None:
    async def read(source: StorePeek) -> int:
        return 1

    missing = tmp_path / "missing.db"
    assert await peek_sqlite(f"sqlite:///{missing}", read) is None
    assert not missing.exists()  # the peek never creates a store
    old = tmp_path / "old.db"
    with sqlite3.connect(old) as conn:
        conn.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)")
        conn.execute("INSERT INTO alembic_version VALUES ('0001')")
    assert await peek_sqlite(f"sqlite:///{old}", read) is None
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    assert await peek_sqlite(f"sqlite:///{empty}", read) is None


async def test_the_peek_leaves_other_urls_to_the_store(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sync.db'}"
    await (await _populated(url)).close()

    async def read(source: StorePeek) -> dict[str, int]:
        return await source.counts()

    assert await peek_sqlite(url, read) == {"pending": 2, "synced": 1, "failed": 1}
    assert await peek_sqlite(f"sqlite+aiosqlite:///{tmp_path / 'sync.db'}", read) is not None
    for other in [
        f"sqlite:///{tmp_path / 'sync.db'}?timeout=5",
        f"sqlite:///{tmp_path}/sync%2Edb",
        "postgresql://u:p@127.0.0.1:1/sync",
    ]:
        assert await peek_sqlite(other, read) is None
