"""State-store queries for keeping Qdrant in step: the ledger, backfill cursors, re-index runs.

Part of the state store (``store.py`` holds the task queue): :class:`Store` inherits these, so
every SQL statement still lives in these two modules and nowhere else.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from sync_service.schema import backfills, db_now, locks, reindexes, synced_features, tasks

#: Task ids of asset jobs (backfill, repair): synced straight from the asset, no task to poll.
ASSET_JOB_PREFIX = "asset:"


def asset_job_id(asset_id: str) -> str:
    return f"{ASSET_JOB_PREFIX}{asset_id}"


@dataclass(frozen=True)
class LedgerRow:
    """What the state store believes one Qdrant point holds."""

    feature_id: str
    qdrant_collection: str
    point_id: str
    task_id: str
    asset_id: str | None
    vectors: dict[str, int]
    payload_fp: str
    vectors_fp: str
    synced_at: float


@dataclass(frozen=True)
class Backfill:
    collection_id: str
    next_page: int
    total_pages: int | None
    assets_listed: int
    started_at: float
    finished_at: float | None


@dataclass(frozen=True)
class Reindex:
    alias: str
    state: str  # filling | check_failed | catching_up | swapped | rolling_back | rolled_back
    physical: str
    previous: str | None
    started_at: float
    finished_at: float | None


class LedgerQueries:
    """Mixed into :class:`sync_service.store.Store`, which provides the connection plumbing."""

    engine: AsyncEngine
    dialect: str

    def _writing(self) -> AbstractAsyncContextManager[AsyncConnection]:
        raise NotImplementedError

    def _insert(self, table: Any) -> Any:
        raise NotImplementedError

    # -- the ledger ---------------------------------------------------------------------

    async def ledger(
        self, *, asset_id: str | None = None, collection: str | None = None
    ) -> list[LedgerRow]:
        """Ledger rows, optionally of one asset and/or one Qdrant collection."""
        stmt = select(
            synced_features.c.feature_id,
            synced_features.c.qdrant_collection,
            synced_features.c.point_id,
            synced_features.c.task_id,
            synced_features.c.asset_id,
            synced_features.c.vectors,
            synced_features.c.payload_fp,
            synced_features.c.vectors_fp,
            synced_features.c.synced_at,
        ).order_by(synced_features.c.asset_id, synced_features.c.feature_id)
        if asset_id is not None:
            stmt = stmt.where(synced_features.c.asset_id == asset_id)
        if collection is not None:
            stmt = stmt.where(synced_features.c.qdrant_collection == collection)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        return [
            LedgerRow(
                feature_id=r.feature_id,
                qdrant_collection=r.qdrant_collection,
                point_id=r.point_id,
                task_id=r.task_id,
                asset_id=r.asset_id,
                vectors=json.loads(r.vectors),
                payload_fp=r.payload_fp,
                vectors_fp=r.vectors_fp,
                synced_at=float(r.synced_at),
            )
            for r in rows
        ]

    async def ledger_collections(self) -> list[str]:
        """The Qdrant collections the ledger has points in."""
        stmt = select(synced_features.c.qdrant_collection).distinct()
        async with self.engine.connect() as conn:
            return sorted(str(r[0]) for r in (await conn.execute(stmt)).all())

    async def forget_features(self, collection: str, feature_ids: Iterable[str]) -> int:
        """Drop ledger rows whose points were deleted from ``collection``."""
        ids = list(feature_ids)
        if not ids:
            return 0
        async with self._writing() as conn:
            result = await conn.execute(
                delete(synced_features).where(
                    synced_features.c.qdrant_collection == collection,
                    synced_features.c.feature_id.in_(ids),
                )
            )
        return int(getattr(result, "rowcount", 0) or 0)

    # -- asset jobs and backfill --------------------------------------------------------

    async def enqueue_assets(
        self,
        asset_ids: Sequence[str],
        *,
        collection_id: str | None = None,
        source: str = "backfill",
        cursor: tuple[int, int | None] | None = None,
    ) -> int:
        """Make each asset a pending asset job (a finished one is made pending again).

        With ``cursor`` = (next page, total pages), the collection's backfill cursor moves in
        the same transaction: a crash either lost the page and its cursor, or kept both.
        Jobs already pending (or leased) are left alone. Returns how many became pending.
        """
        async with self._writing() as conn:
            queued = 0
            if asset_ids:
                now = await db_time(conn)
                rows = [
                    {
                        "task_id": asset_job_id(a),
                        "state": "pending",
                        "source": source,
                        "asset_id": a,
                        "collection_id": collection_id,
                        "next_poll_at": now,
                        "created_at": now,
                        "updated_at": now,
                    }
                    for a in dict.fromkeys(asset_ids)
                ]
                stmt = self._insert(tasks)
                stmt = stmt.on_conflict_do_update(
                    index_elements=[tasks.c.task_id],
                    set_={
                        # A new run of the job: its timeout, poll backoff and lag start over.
                        "state": "pending",
                        "source": stmt.excluded.source,
                        "attempts": 0,
                        "polls": 0,
                        "polled_at": None,
                        "error": None,
                        "created_at": stmt.excluded.created_at,
                        "upstream_done_at": None,
                        "synced_at": None,
                        "next_poll_at": stmt.excluded.next_poll_at,
                        "updated_at": stmt.excluded.updated_at,
                    },
                    where=tasks.c.state != "pending",
                )
                # RETURNING, not rowcount: asyncpg reports -1 for a multi-row statement.
                queued = len((await conn.execute(stmt.returning(tasks.c.task_id), rows)).all())
            if cursor is not None and collection_id is not None:
                next_page, total_pages = cursor
                await conn.execute(
                    update(backfills)
                    .where(backfills.c.collection_id == collection_id)
                    .values(
                        next_page=next_page,
                        total_pages=total_pages,
                        assets_listed=backfills.c.assets_listed + len(asset_ids),
                        updated_at=db_now(),
                    )
                )
        return queued

    async def start_backfill(self, collection_id: str) -> Backfill:
        """The collection's unfinished backfill (to resume), else a fresh one from page 1."""
        async with self._writing() as conn:
            row = (
                await conn.execute(
                    select(backfills).where(backfills.c.collection_id == collection_id)
                )
            ).one_or_none()
            if row is None:
                now = await db_time(conn)
                await conn.execute(
                    backfills.insert().values(
                        collection_id=collection_id, started_at=now, updated_at=now
                    )
                )
            elif row.finished_at is not None:
                await conn.execute(
                    update(backfills)
                    .where(backfills.c.collection_id == collection_id)
                    .values(
                        next_page=1,
                        total_pages=None,
                        assets_listed=0,
                        started_at=db_now(),
                        finished_at=None,
                        updated_at=db_now(),
                    )
                )
        backfill = await self.backfill(collection_id)
        assert backfill is not None
        return backfill

    async def finish_backfill(self, collection_id: str) -> None:
        async with self._writing() as conn:
            await conn.execute(
                update(backfills)
                .where(backfills.c.collection_id == collection_id)
                .values(finished_at=db_now(), updated_at=db_now())
            )

    async def backfill(self, collection_id: str) -> Backfill | None:
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(backfills).where(backfills.c.collection_id == collection_id)
                )
            ).one_or_none()
        if row is None:
            return None
        return Backfill(
            row.collection_id,
            row.next_page,
            row.total_pages,
            row.assets_listed,
            row.started_at,
            row.finished_at,
        )

    async def asset_job_counts(
        self, collection_ids: Sequence[str] | None = None, *, source: str | None = None
    ) -> dict[str, int]:
        """Asset jobs by state (pending/synced/failed), optionally of some collections."""
        stmt = select(tasks.c.state, func.count()).where(
            tasks.c.task_id.startswith(ASSET_JOB_PREFIX)
        )
        if collection_ids is not None:
            stmt = stmt.where(tasks.c.collection_id.in_(list(collection_ids)))
        if source is not None:
            stmt = stmt.where(tasks.c.source == source)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(stmt.group_by(tasks.c.state))).all()
        counts = {"pending": 0, "synced": 0, "failed": 0}
        counts.update({str(state): int(n) for state, n in rows})
        return counts

    # -- re-index runs ------------------------------------------------------------------

    async def reindex(self, alias: str) -> Reindex | None:
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(select(reindexes).where(reindexes.c.alias == alias))
            ).one_or_none()
        if row is None:
            return None
        return Reindex(
            row.alias, row.state, row.physical, row.previous, row.started_at, row.finished_at
        )

    async def save_reindex(
        self, alias: str, *, state: str, physical: str, previous: str | None
    ) -> Reindex:
        """Record the alias's re-index run (one row per alias: the latest run)."""
        async with self._writing() as conn:
            now = await db_time(conn)
            values = {
                "state": state,
                "physical": physical,
                "previous": previous,
                "updated_at": now,
                "finished_at": None if state == "filling" else now,
            }
            stmt = self._insert(reindexes).values(alias=alias, started_at=now, **values)
            # A run starts when it begins filling; later states keep that start time.
            stmt = stmt.on_conflict_do_update(
                index_elements=[reindexes.c.alias],
                set_={**values, "started_at": now} if state == "filling" else values,
            )
            await conn.execute(stmt)
        run = await self.reindex(alias)
        assert run is not None
        return run

    # -- named locks --------------------------------------------------------------------

    async def acquire_lock(self, name: str, owner: str, seconds: float) -> bool:
        """Take lock ``name`` for ``seconds`` if it is free, expired, or already ``owner``'s
        (then this renews it). Returns whether ``owner`` holds it now."""
        stmt = self._insert(locks).values(name=name, owner=owner, expires_at=db_now() + seconds)
        stmt = stmt.on_conflict_do_update(
            index_elements=[locks.c.name],
            set_={"owner": stmt.excluded.owner, "expires_at": stmt.excluded.expires_at},
            where=(locks.c.expires_at < db_now()) | (locks.c.owner == stmt.excluded.owner),
        ).returning(locks.c.name)
        async with self._writing() as conn:
            return (await conn.execute(stmt)).first() is not None

    async def lock_holder(self, name: str) -> tuple[str, float] | None:
        """Who holds lock ``name`` and for how many more seconds, or None."""
        stmt = select(locks.c.owner, locks.c.expires_at - db_now()).where(locks.c.name == name)
        async with self.engine.connect() as conn:
            row = (await conn.execute(stmt)).first()
        return None if row is None else (str(row[0]), float(row[1]))

    async def release_lock(self, name: str, owner: str) -> None:
        async with self._writing() as conn:
            await conn.execute(delete(locks).where(locks.c.name == name, locks.c.owner == owner))


async def db_time(conn: AsyncConnection) -> float:
    """The database clock, in epoch seconds."""
    return float((await conn.execute(select(db_now()))).scalar_one())
