"""Alembic environment for the state store (SQLite and PostgreSQL, one set of revisions)."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from sync_service.settings import Settings, async_database_url
from sync_service.state.connect import connect
from sync_service.state.schema import metadata

target_metadata = metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things in place; batch mode copies the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_with_own_engine() -> None:
    engine = connect(Settings().database_url.get_secret_value())  # with the URL's SSL options
    async with engine.begin() as connection:
        await connection.run_sync(_run)
    await engine.dispose()


given = context.config.attributes.get("connection")
if given is not None:
    # Called by sync_service.state.store.Store.migrate() with a connection already open.
    _run(given)
elif context.is_offline_mode():
    context.configure(
        url=str(async_database_url(Settings().database_url.get_secret_value())),
        target_metadata=target_metadata,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_with_own_engine())
