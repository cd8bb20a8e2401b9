"""State-store queries about the store itself: its schema revision and migrations, and the
``service_info`` facts (which Qdrant it feeds, which code can use its schema).

Part of the state store: :class:`~sync_service.state.store.Store` inherits these.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select, text
from sqlalchemy.exc import SQLAlchemyError

from sync_service.state.base import Queries, completes
from sync_service.state.migrate import HEAD, needs_migration, run_alembic
from sync_service.state.records import fresh_outages, outage_key, stale_outage_keys
from sync_service.state.schema import service_info, synced_features

#: Any fixed number: PostgreSQL's advisory lock that makes concurrent migrations take turns.
_MIGRATION_LOCK = 0x5E7C_0001


class InfoQueries(Queries):
    """Mixed into :class:`~sync_service.state.store.Store`, which provides the plumbing."""

    async def prepare(self, *, may_migrate: bool) -> None:
        """Make the schema usable by this code: create an empty store, migrate an older one if
        allowed, accept a newer compatible one; :class:`SchemaMismatch` otherwise."""
        revision = await self.revision()
        compatible = None
        if revision not in (None, HEAD):
            compatible = await self.info("schema_compatible_from")
        if needs_migration(revision, compatible, may=may_migrate):
            await self.migrate()

    async def migrate(self, revision: str = "head") -> None:
        """Bring the schema to the newest Alembic revision, or to ``revision`` (idempotent).

        A store already at the newest revision (every start but the first after an upgrade)
        is told by one query, without loading Alembic and its scripts (a third of a second).
        Processes that migrate at once take turns (PostgreSQL: an advisory lock; SQLite: a
        lock file beside the database), and one that waited finds the work done.
        """
        if revision == "head" and await self.revision() == HEAD:
            return
        if self.dialect == "sqlite":
            async with _file_lock(self.engine.url.database):
                if revision == "head" and await self.revision() == HEAD:
                    return  # another process migrated while this one waited
                async with self.engine.begin() as conn:
                    await conn.run_sync(run_alembic, "upgrade", revision)
            return
        async with self.engine.begin() as conn:
            if self.dialect == "postgresql":
                await conn.execute(text(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})"))
                exists = await conn.execute(text("SELECT to_regclass('alembic_version')"))
                if revision == "head" and exists.scalar() is not None:
                    done = await conn.execute(text("SELECT version_num FROM alembic_version"))
                    if done.scalar_one_or_none() == HEAD:
                        return
            await conn.run_sync(run_alembic, "upgrade", revision)

    async def revision(self) -> str | None:
        """The schema's Alembic revision, or None on an empty store."""
        async with self.engine.connect() as conn:
            try:
                return (
                    await conn.execute(text("SELECT version_num FROM alembic_version"))
                ).scalar_one_or_none()
            except SQLAlchemyError:  # no such table yet
                return None

    async def info(self, key: str) -> str | None:
        """One ``service_info`` fact (None if unset, or on a schema without the table)."""
        async with self.engine.connect() as conn:
            try:
                found = await conn.execute(
                    select(service_info.c.value).where(service_info.c.key == key)
                )
            except SQLAlchemyError:
                return None
            return found.scalar_one_or_none()

    @completes
    async def set_info(self, values: dict[str, str], *, only_if_unset: bool = False) -> None:
        """Write facts in one transaction; with ``only_if_unset``, keep any already set (the
        first process to record wins, even when several start at once)."""
        async with self._writing() as conn:
            for key, value in values.items():
                statement = self._insert(service_info).values(key=key, value=value)
                if only_if_unset:
                    statement = statement.on_conflict_do_nothing(index_elements=["key"])
                else:
                    statement = statement.on_conflict_do_update(
                        index_elements=["key"], set_={"value": value}
                    )
                await conn.execute(statement)

    async def report_outage(
        self, owner: str, what: str, since: datetime, reason: str | None
    ) -> None:
        """Record that ``what`` (Mixpeek, Qdrant) is unavailable to process ``owner``, for
        ``status``."""
        now = time.time()
        report = {
            "what": what,
            "owner": owner,
            "since": since.isoformat(),
            "reason": reason,
            "reported": now,
        }
        await self.set_info({outage_key(owner, what): json.dumps(report)})
        await self._drop_stale_outages(now)

    @completes
    async def _drop_stale_outages(self, now: float) -> None:
        """Reports of processes killed mid-outage: `status` ignores them, and they go here."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(service_info.c.key, service_info.c.value).where(
                    service_info.c.key.like("outage/%")
                )
            )
            stale = stale_outage_keys([(key, value) for key, value in rows], now)
        if stale:
            async with self._writing() as conn:
                await conn.execute(delete(service_info).where(service_info.c.key.in_(stale)))

    @completes
    async def clear_outage(self, owner: str, what: str) -> None:
        key = outage_key(owner, what)
        async with self._writing() as conn:
            await conn.execute(delete(service_info).where(service_info.c.key == key))

    async def outages(self) -> list[dict[str, Any]]:
        """The outages processes report now (``OUTAGE_FRESH``), oldest first."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(service_info.c.value).where(service_info.c.key.like("outage/%"))
            )
            return fresh_outages([row[0] for row in rows], time.time())

    async def has_synced(self) -> bool:
        """Whether the ledger holds any point (this store has fed its Qdrant)."""
        async with self.engine.connect() as conn:
            found = await conn.execute(select(synced_features.c.feature_id).limit(1))
            return found.first() is not None


@asynccontextmanager
async def _file_lock(database: str | None) -> AsyncIterator[None]:
    """An exclusive lock on ``<database>.migrate.lock``, held while the body runs."""
    if not database or database == ":memory:":
        yield
        return
    path = Path(database).expanduser().with_name(Path(database).name + ".migrate.lock")
    with path.open("a") as handle:
        await asyncio.to_thread(fcntl.flock, handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
