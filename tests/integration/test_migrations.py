"""Alembic migrations on SQLite and PostgreSQL: no drift, and upgrades from older revisions."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text

from sync_service.state import migrate as migrate_module
from sync_service.state import store as store_module
from sync_service.state.migrate import alembic_config, run_alembic
from sync_service.state.schema import metadata
from sync_service.state.store import Store

REVISIONS = [
    r.revision
    for r in reversed(list(ScriptDirectory.from_config(alembic_config()).walk_revisions()))
]


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    s = Store.open(database_url)
    yield s
    await s.close()


async def drift(store: Store) -> list[object]:
    async with store.engine.connect() as conn:
        return await conn.run_sync(
            lambda c: compare_metadata(MigrationContext.configure(c), metadata)
        )


async def test_head_matches_the_schema_the_code_declares(store: Store) -> None:
    await store.migrate()
    assert await drift(store) == []


@pytest.mark.parametrize("start", REVISIONS)
async def test_upgrading_from_each_revision_keeps_the_data(store: Store, start: str) -> None:
    await store.migrate(start)
    async with store.engine.begin() as conn:
        # Written with the first revision's columns only, as an old install would have it.
        await conn.execute(
            text(
                "INSERT INTO tasks (task_id, state, next_poll_at, created_at, updated_at) "
                "VALUES ('old-task', 'pending', 0, 0, 0)"
            )
        )
    await store.migrate()
    assert await drift(store) == []
    (row,) = await store.list_tasks("old-task")
    assert row["state"] == "pending" and row["attempts"] == 0 and row["lease_token"] == 0
    (claim,) = await store.claim_due("w", 10, 30)
    assert claim.task_id == "old-task"


async def test_downgrade_to_nothing_and_back(store: Store) -> None:
    await store.migrate()
    async with store.engine.begin() as conn:
        await conn.run_sync(run_alembic, "downgrade", "base")
    await store.migrate()
    assert await drift(store) == []
    assert await store.track(["a"]) == 1


def test_the_head_constant_is_alembics_head() -> None:
    assert ScriptDirectory.from_config(alembic_config()).get_current_head() == migrate_module.HEAD


async def test_a_store_at_head_is_not_migrated_again(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store.migrate()
    assert await store.revision() == migrate_module.HEAD

    def no_alembic(*_args: object) -> None:
        raise AssertionError("Alembic ran on a store already at head")

    monkeypatch.setattr(store_module, "run_alembic", no_alembic)
    await store.migrate()  # one query, no Alembic
