"""Alembic migrations on SQLite and PostgreSQL: no drift, and upgrades from older revisions."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text

from sync_service.state import info as info_module
from sync_service.state import migrate as migrate_module
from sync_service.state.migrate import HEAD, SchemaMismatch, alembic_config, run_alembic
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

    monkeypatch.setattr(info_module, "run_alembic", no_alembic)
    await store.migrate()  # one query, no Alembic


async def test_only_a_command_that_may_migrates_an_older_schema(store: Store) -> None:
    await store.migrate(REVISIONS[-2])
    with pytest.raises(SchemaMismatch) as caught:
        await store.prepare(may_migrate=False)
    assert str(caught.value) == (
        f"the state store's schema {REVISIONS[-2]} is older than this sync-service ({HEAD}): "
        "run `sync-service migrate` (or start `sync-service run`) first"
    )
    assert await store.revision() == REVISIONS[-2]  # read, never changed
    await store.prepare(may_migrate=True)
    assert await store.revision() == HEAD


async def test_an_empty_store_is_created_by_any_command(store: Store) -> None:
    await store.prepare(may_migrate=False)
    assert await store.revision() == HEAD and await drift(store) == []


async def set_revision(store: Store, revision: str, compatible_from: str) -> None:
    async with store.engine.begin() as conn:
        await conn.execute(text("UPDATE alembic_version SET version_num = :r"), {"r": revision})
    await store.set_info({"schema_compatible_from": compatible_from})


async def test_a_newer_schema_is_used_only_when_it_says_this_code_may(store: Store) -> None:
    await store.migrate()
    assert await store.info("schema_compatible_from") == "0004"
    # A later release's additive migration: it says code from HEAD on can still use it.
    await set_revision(store, "0099", HEAD)
    await store.prepare(may_migrate=True)  # used as it is, never migrated down
    assert await store.revision() == "0099"
    assert await store.track(["a"]) == 1
    # One that is not additive for this code.
    await set_revision(store, "0099", "0099")
    for may in (False, True):
        with pytest.raises(SchemaMismatch) as caught:
            await store.prepare(may_migrate=may)
        assert str(caught.value) == (
            f"state store schema 0099 is newer than this sync-service ({HEAD}): upgrade it"
        )


async def test_head_is_additive_over_the_previous_revision(store: Store) -> None:
    """What lets the previous release keep running on the new schema (a rolling upgrade): every
    table and column it knows is still there with the same type, and every column it does not
    know is nullable or has a server default, so its INSERTs still work. Checked on the
    reflected schemas, and by writing and reading a task with the previous revision's SQL."""

    async def columns() -> dict[str, dict[str, tuple[str, bool, bool]]]:
        def read(conn: object) -> dict[str, dict[str, tuple[str, bool, bool]]]:
            from sqlalchemy import inspect

            inspector = inspect(conn)
            return {
                table: {
                    c["name"]: (str(c["type"]), c["nullable"], c.get("default") is not None)
                    for c in inspector.get_columns(table)
                }
                for table in inspector.get_table_names()
            }

        async with store.engine.connect() as conn:
            return await conn.run_sync(read)

    await store.migrate(REVISIONS[-2])
    before = await columns()
    await store.migrate()
    after = await columns()
    for table, cols in before.items():
        assert table in after, table
        for name, (kind, _nullable, _default) in cols.items():
            assert after[table][name][0] == kind, (table, name)
        for name, (_kind, nullable, default) in after[table].items():
            if name not in cols:
                assert nullable or default, (table, name)
    async with store.engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO tasks (task_id, state, next_poll_at, created_at, updated_at) "
                "VALUES ('old-code', 'pending', 0, 0, 0)"
            )
        )
    assert [t["task_id"] for t in await store.list_tasks("old-code")] == ["old-code"]


async def test_concurrent_migrations_of_a_fresh_store_take_turns(database_url: str) -> None:
    import asyncio

    stores = [Store.open(database_url) for _ in range(3)]
    try:
        await asyncio.gather(*(s.prepare(may_migrate=False) for s in stores))
        assert {await s.revision() for s in stores} == {HEAD}
    finally:
        for s in stores:
            await s.close()
