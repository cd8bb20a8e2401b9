"""The state store: every SQL statement of the service lives in this module.

SQLite (embedded default) and PostgreSQL share the schema in ``schema.py`` and the Alembic
migrations in ``migrations/``. Work is handed out with leases: a claim stamps an owner, a lease
expiry taken from the database clock, and a fresh fencing token; every later write for that task
names the token, so a worker that stalled past its lease records nothing.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import CursorResult, delete, func, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from sync_service.settings import Settings
from sync_service.state.base import completes
from sync_service.state.breaker import PRUNE_CHANCE, BreakerQueries, prune_outcomes
from sync_service.state.connect import connect
from sync_service.state.info import InfoQueries
from sync_service.state.ledger import LedgerQueries, db_time, upsert_ledger
from sync_service.state.listings import ListingQueries
from sync_service.state.mirrors import WatchQueries
from sync_service.state.records import STATES, Claim, SyncResult
from sync_service.state.retries import RetryQueries
from sync_service.state.schema import (
    RELEASED,
    db_now,
    dead_letters,
    fetch_outcomes,
    mirror_assets,
    synced_features,
    tasks,
)
from sync_service.state.views import ViewQueries
from sync_service.state.webhooks import WebhookQueries

PENDING, SYNCED, FAILED = STATES

#: What a state store that is down, restarting or locked raises.
STORE_ERRORS: tuple[type[BaseException], ...] = (SQLAlchemyError, OSError, asyncio.TimeoutError)


class LeaseLost(Exception):
    """The task's lease was taken over (expired and reclaimed): this worker must not record."""


class Store(
    LedgerQueries,
    ViewQueries,
    WatchQueries,
    ListingQueries,
    BreakerQueries,
    InfoQueries,
    RetryQueries,
    WebhookQueries,
):
    """Async access to the state store. Create with :meth:`open`, close with :meth:`close`.

    The task queue's queries are here; the ledger's, asset jobs' and re-index's are inherited
    from :class:`~sync_service.state.ledger.LedgerQueries`, the operator's (listings, counts,
    dead letters) from :class:`~sync_service.state.views.ViewQueries`, mirroring's from
    :class:`~sync_service.state.mirrors.WatchQueries` (watch set, passes) and
    :class:`~sync_service.state.listings.ListingQueries` (what listings saw, sweeps), the
    removal breaker's from :class:`~sync_service.state.breaker.BreakerQueries`, the schema's
    and the store's own facts from :class:`~sync_service.state.info.InfoQueries`, retries of
    failed work from :class:`~sync_service.state.retries.RetryQueries`, webhook events' from
    :class:`~sync_service.state.webhooks.WebhookQueries`.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        # SQLite has one writer at a time; connections that collide wait in its busy handler,
        # which sleeps in growing steps (up to 100 ms) and was the service's bottleneck (a
        # p95 of 1.2 s per write at 16 tasks in flight). Queuing this process's writers on a
        # lock hands the database over at once instead. PostgreSQL locks rows: no queue.
        self._writer: asyncio.Lock | None = asyncio.Lock() if self.dialect == "sqlite" else None

    @classmethod
    def open(cls, database_url: str, *, statement_timeout: float = 30.0) -> Store:
        return cls(connect(database_url, statement_timeout=statement_timeout))

    async def close(self) -> None:
        await self.engine.dispose()

    @asynccontextmanager
    async def _writing(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction (queued behind this process's other writers on SQLite)."""
        if self._writer is None:
            async with self.engine.begin() as conn:
                yield conn
            return
        async with self._writer, self.engine.begin() as conn:
            yield conn

    # -- taking work ------------------------------------------------------------------------

    @completes
    async def track(self, task_ids: Iterable[str], *, source: str = "track") -> int:
        """Start tracking tasks; ids already tracked are left as they are. Returns the new count."""
        ids = list(dict.fromkeys(task_ids))
        if not ids:
            return 0
        async with self._writing() as conn:
            before = (
                await conn.execute(select(func.count()).where(tasks.c.task_id.in_(ids)))
            ).scalar_one()
            now = await db_time(conn)
            rows = [
                {
                    "task_id": task_id,
                    "state": PENDING,
                    "source": source,
                    "next_poll_at": now,
                    "created_at": now,
                    "updated_at": now,
                }
                for task_id in ids
            ]
            await conn.execute(self._insert(tasks).on_conflict_do_nothing(), rows)
            return len(ids) - before

    @completes
    async def claim_due(
        self,
        owner: str,
        limit: int,
        lease_seconds: float,
        *,
        task_ids: Iterable[str] | None = None,
    ) -> list[Claim]:
        """Lease up to ``limit`` pending tasks whose poll time has come.

        One ``UPDATE … WHERE task_id IN (SELECT …) RETURNING`` statement: SQLite serialises
        writers, so two claimers can never lease the same row; on PostgreSQL the inner SELECT
        also takes ``FOR UPDATE SKIP LOCKED`` so concurrent claimers skip each other's rows
        instead of waiting (SQLAlchemy silently drops that clause on SQLite, docs/contract.md §6.3).
        ``task_ids`` limits the claim to those tasks.
        """
        due = (
            select(tasks.c.task_id)
            .where(
                tasks.c.state == PENDING,
                tasks.c.next_poll_at <= db_now(),
                (tasks.c.lease_expires_at.is_(None)) | (tasks.c.lease_expires_at < db_now()),
            )
            .order_by(tasks.c.next_poll_at)
            .limit(limit)
        )
        if task_ids is not None:  # only these (e.g. verify --repair's own jobs)
            due = due.where(tasks.c.task_id.in_(list(task_ids)))
        if self.dialect == "postgresql":
            due = due.with_for_update(skip_locked=True)
        stmt = (
            update(tasks)
            .where(tasks.c.task_id.in_(due.scalar_subquery()))
            .values(
                lease_owner=owner,
                lease_token=tasks.c.lease_token + 1,
                lease_expires_at=db_now() + lease_seconds,
            )
            .returning(
                tasks.c.task_id,
                tasks.c.lease_token,
                tasks.c.polls,
                tasks.c.attempts,
                tasks.c.created_at,
                tasks.c.asset_id,
                tasks.c.collection_id,
                tasks.c.upstream_done_at,
                tasks.c.polled_at,
                db_now(),
                tasks.c.dead_letters,
            )
        )
        async with self._writing() as conn:
            rows = (await conn.execute(stmt)).all()
        return [Claim(*row) for row in rows]

    @completes
    async def extend_leases(self, owner: str, claims: Iterable[Claim], lease_seconds: float) -> int:
        """Heartbeat: push back the expiry of leases this worker still holds."""
        tokens = {c.task_id: c.token for c in claims}
        if not tokens:
            return 0
        extended = 0
        async with self._writing() as conn:
            # In id order, as every multi-row write does: no lock-order deadlock on PostgreSQL.
            for task_id, token in sorted(tokens.items()):
                result = await conn.execute(
                    update(tasks)
                    .where(_fenced(task_id, token), tasks.c.lease_owner == owner)
                    .values(lease_expires_at=db_now() + lease_seconds)
                )
                extended += _rowcount(result)
        return extended

    # -- recording outcomes (all fenced by the lease token) ---------------------------------

    async def reschedule(self, claim: Claim, *, upstream_status: str | None, delay: float) -> None:
        """Not finished upstream yet: poll again after ``delay`` seconds."""
        await self._fenced_update(
            claim,
            upstream_status=upstream_status,
            polls=tasks.c.polls + 1,
            polled_at=db_now(),
            next_poll_at=db_now() + delay,
            **RELEASED,
        )

    async def retry_later(
        self,
        claim: Claim,
        *,
        error: str,
        delay: float,
        max_attempts: int | None,
        done_asset_id: str | None = None,
    ) -> bool:
        """A transient failure: retry after ``delay``, counting the attempt unless
        ``max_attempts`` is None (an outage that is not the task's fault, e.g. Qdrant down).

        ``done_asset_id``: the task was DONE upstream (with this asset) when syncing it failed;
        remembered so the redo measures its lag from the first time it was seen DONE.
        Returns True when the attempts are used up and the task is now ``failed``.
        """
        attempts = claim.attempts + (0 if max_attempts is None else 1)
        if max_attempts is not None and attempts >= max_attempts:
            await self.mark_failed(claim, f"gave up after {attempts} attempts: {error}")
            return True
        seen: dict[str, Any] = {}
        if done_asset_id is not None:
            seen = {"asset_id": done_asset_id, "upstream_done_at": _first_seen_done(claim)}
        await self._fenced_update(
            claim,
            attempts=attempts,
            error=error,
            next_poll_at=db_now() + delay,
            **seen,
            **RELEASED,
        )
        return False

    async def mark_failed(
        self, claim: Claim, error: str, *, upstream_status: str | None = None
    ) -> None:
        values: dict[str, Any] = {"state": FAILED, "error": error, **RELEASED}
        if upstream_status is not None:
            values["upstream_status"] = upstream_status
        await self._fenced_update(claim, **values)

    @completes
    async def mark_synced(self, claim: Claim, result: SyncResult) -> float | None:
        """Record a synced task, its ledger rows and its dead letters in one transaction.

        Called only after Qdrant acknowledged the points (``wait=True``): a crash before this
        commit leads to a harmless redo with the same point ids. Returns the sync lag: seconds
        from the task first seen DONE upstream to now (database clock); "seen DONE" is the
        claim whose poll found it DONE, so no separate write is spent on noting it.
        """
        async with self._writing() as conn:
            lag, synced_at = await self._fenced_update(
                claim,
                conn=conn,
                returning=(tasks.c.synced_at - tasks.c.upstream_done_at, tasks.c.synced_at),
                state=SYNCED,
                error=None,
                upstream_status=result.upstream_status,
                asset_id=result.asset_id,
                collection_id=result.collection_id,
                qdrant_collection=result.qdrant_collection,
                features_synced=len(result.features),
                dead_letters=len(result.dead_letters),
                synced_at=db_now(),
                upstream_done_at=_first_seen_done(claim),
                **RELEASED,
            )
            await upsert_ledger(conn, self._insert, claim.task_id, result, float(synced_at))
            if result.removed and result.qdrant_collection is not None:
                await conn.execute(
                    delete(synced_features).where(
                        synced_features.c.qdrant_collection == result.qdrant_collection,
                        synced_features.c.feature_id.in_(list(result.removed)),
                    )
                )
            if result.upstream is not None and result.asset_id is not None:
                await conn.execute(
                    fetch_outcomes.insert().values(
                        upstream=result.upstream, asset_id=result.asset_id, gone=0, at=db_now()
                    )
                )
                if random.random() < PRUNE_CHANCE:
                    await prune_outcomes(conn)
            if result.asset_stamp is not None and result.collection_id is not None:
                await conn.execute(
                    update(mirror_assets)
                    .where(
                        mirror_assets.c.collection_id == result.collection_id,
                        mirror_assets.c.asset_id == result.asset_id,
                    )
                    .values(updated_at=result.asset_stamp[:64])
                )
            # A redo replaces the dead letters of the earlier run instead of doubling them.
            # (The count is written with the rows, in this transaction: none counted, none kept.)
            if claim.dead_letters:
                await conn.execute(
                    delete(dead_letters).where(dead_letters.c.task_id == claim.task_id)
                )
            if result.dead_letters:
                await conn.execute(
                    dead_letters.insert(),
                    [
                        {
                            "task_id": claim.task_id,
                            "feature_id": d.feature_id,
                            "qdrant_collection": result.qdrant_collection,
                            "reason": d.reason,
                            "payload_excerpt": d.payload_excerpt,
                            "created_at": synced_at,
                        }
                        for d in result.dead_letters
                    ],
                )
        return float(lag) if lag is not None else None

    async def release(self, claim: Claim) -> None:
        """Give a lease back without recording anything (graceful shutdown)."""
        await self._fenced_update(claim, **RELEASED)

    @completes
    async def _fenced_update(
        self,
        claim: Claim,
        *,
        conn: AsyncConnection | None = None,
        keep_lease: bool = False,
        returning: Any = None,
        **values: Any,
    ) -> Any:
        """UPDATE the claimed task only while its lease token is still ours (else LeaseLost).

        Returns the ``returning`` column's value, or a row of values for a tuple of columns.
        """
        values.setdefault("updated_at", db_now())
        where = [_fenced(claim.task_id, claim.token)]
        if keep_lease:
            where.append(tasks.c.lease_expires_at >= db_now())
        stmt = update(tasks).where(*where).values(**values)
        several = isinstance(returning, tuple)
        if returning is None:
            returning = tasks.c.task_id
        columns = returning if several else (returning,)
        stmt = stmt.returning(*columns)
        if conn is None:
            async with self._writing() as own:
                rows = (await own.execute(stmt)).all()
        else:
            rows = (await conn.execute(stmt)).all()
        if len(rows) != 1:
            raise LeaseLost(f"task {claim.task_id}: lease {claim.token} is no longer held")
        return tuple(rows[0]) if several else rows[0][0]


def _fenced(task_id: str, token: int) -> Any:
    return (tasks.c.task_id == task_id) & (tasks.c.lease_token == token)


@asynccontextmanager
async def open_store(settings: Settings, *, migrate: bool = False) -> AsyncIterator[Store]:
    """The state store, its schema usable by this code: an empty store is created; an older
    one is migrated only with ``migrate`` (``SchemaMismatch`` otherwise, as for a newer one
    this code cannot use)."""
    store = Store.open(
        settings.database_url.get_secret_value(),
        statement_timeout=settings.db_statement_timeout,
    )
    try:
        await store.prepare(may_migrate=migrate)
        yield store
    finally:
        await store.close()


def _rowcount(result: Any) -> int:
    return result.rowcount if isinstance(result, CursorResult) else 0


def _first_seen_done(claim: Claim) -> Any:
    """The first time the task was seen DONE: an earlier claim's, else this claim's poll."""
    return func.coalesce(tasks.c.upstream_done_at, claim.claimed_at)
