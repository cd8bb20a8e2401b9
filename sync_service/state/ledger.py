"""State-store queries for keeping Qdrant in step: the ledger, asset jobs, re-index runs.

Part of the state store (``store.py`` holds the task queue): :class:`Store` inherits these, so
every SQL statement of the service lives in ``state/``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, delete, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from sync_service.state.base import Queries, completes
from sync_service.state.records import ASSET_JOB_PREFIX, SyncResult
from sync_service.state.schema import db_now, locks, reindexes, synced_features, tasks


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
class Reindex:
    alias: str
    state: str  # filling | check_failed | catching_up | swapped | rolling_back | rolled_back
    physical: str
    previous: str | None
    started_at: float
    finished_at: float | None


class LedgerQueries(Queries):
    """Mixed into :class:`~sync_service.state.store.Store`, which provides the plumbing."""

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

    @completes
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

    @completes
    async def enqueue_assets(
        self,
        asset_ids: Sequence[str],
        *,
        collection_id: str | None = None,
        source: str = "backfill",
    ) -> int:
        """Make each asset a pending asset job (a finished one is made pending again).

        Jobs already pending (or leased) are left alone. Returns how many became pending.
        """
        async with self._writing() as conn:
            queued = await queue_asset_jobs(
                conn, self._insert, asset_ids, collection_id=collection_id, source=source
            )
        return len(queued)

    async def asset_job_counts(
        self,
        collection_ids: Sequence[str] | None = None,
        *,
        source: str | None = None,
        since: float | None = None,
    ) -> dict[str, int]:
        """Asset jobs by state (pending/synced/failed), optionally of some collections, and
        (``since``, database clock) only those pending or finished since then."""
        stmt = select(tasks.c.state, func.count()).where(_asset_jobs(collection_ids, source, since))
        async with self.engine.connect() as conn:
            rows = (await conn.execute(stmt.group_by(tasks.c.state))).all()
        counts = {"pending": 0, "synced": 0, "failed": 0}
        counts.update({str(state): int(n) for state, n in rows})
        return counts

    async def failed_asset_jobs(
        self, collection_ids: Sequence[str], *, since: float | None = None
    ) -> list[tuple[str, str]]:
        """(asset id, error) of the collections' asset jobs that failed (since ``since``)."""
        stmt = select(tasks.c.asset_id, tasks.c.error).where(
            _asset_jobs(collection_ids, None, since), tasks.c.state == "failed"
        )
        async with self.engine.connect() as conn:
            return [(str(a), str(e or "")) for a, e in (await conn.execute(stmt)).all()]

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

    @completes
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

    @completes
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

    @completes
    async def release_lock(self, name: str, owner: str) -> None:
        async with self._writing() as conn:
            await conn.execute(delete(locks).where(locks.c.name == name, locks.c.owner == owner))


def _asset_jobs(
    collection_ids: Sequence[str] | None, source: str | None, since: float | None
) -> Any:
    where = [tasks.c.task_id.startswith(ASSET_JOB_PREFIX)]
    if collection_ids is not None:
        where.append(tasks.c.collection_id.in_(list(collection_ids)))
    if source is not None:
        where.append(tasks.c.source == source)
    if since is not None:
        where.append((tasks.c.state == "pending") | (tasks.c.updated_at >= since))
    return and_(*where)


async def queue_asset_jobs(
    conn: AsyncConnection,
    insert: Any,
    asset_ids: Sequence[str],
    *,
    collection_id: str | None,
    source: str,
) -> list[str]:
    """Make each asset a pending asset job inside ``conn``'s transaction (a finished job is
    made pending again, as a new run; one pending or leased is left alone). Returns the ids
    of the assets queued."""
    if not asset_ids:
        return []
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
        # In id order, as every multi-row write does: no lock-order deadlock on PostgreSQL.
        for a in sorted(set(asset_ids))
    ]
    stmt = insert(tasks)
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
    returned = (await conn.execute(stmt.returning(tasks.c.asset_id), rows)).all()
    return [str(r[0]) for r in returned]


async def db_time(conn: AsyncConnection) -> float:
    """The database clock, in epoch seconds."""
    return float((await conn.execute(select(db_now()))).scalar_one())


async def upsert_ledger(
    conn: AsyncConnection, insert: Any, task_id: str, result: SyncResult, now: float
) -> None:
    """Write the ledger rows of the features a sync wrote (inside its transaction), stamped
    ``now`` (the task's ``synced_at``, from the same transaction)."""
    if not result.features or result.qdrant_collection is None:
        return
    features = [
        f for f in result.features if result.written is None or f.feature_id in result.written
    ]
    if not features:
        return
    rows = [
        {
            "feature_id": f.feature_id,
            "qdrant_collection": result.qdrant_collection,
            "point_id": f.point_id,
            "task_id": task_id,
            "asset_id": f.asset_id,
            "collection_id": result.collection_id,
            "modality": f.modality,
            "vectors": json.dumps(f.vectors, sort_keys=True),
            "payload_fp": f.payload_fp,
            "vectors_fp": f.vectors_fp,
            "synced_at": now,
            "version": result.version,
        }
        for f in features
    ]
    stmt = insert(synced_features)
    replaced = (
        "point_id",
        "task_id",
        "asset_id",
        "collection_id",
        "modality",
        "vectors",
        "payload_fp",
        "vectors_fp",
        "synced_at",
        "version",
    )
    current = synced_features.c.version
    stmt = stmt.on_conflict_do_update(
        index_elements=[synced_features.c.feature_id, synced_features.c.qdrant_collection],
        set_={name: stmt.excluded[name] for name in replaced},
        # Newest write wins, as in Qdrant's guarded upsert (an unversioned write always).
        where=current.is_(None)
        | stmt.excluded.version.is_(None)
        | (current < stmt.excluded.version),
    )
    await conn.execute(stmt, rows)
