"""State-store reads and the dead-letter queue: listings, counts, the clock, leases held.

Part of the state store: :class:`~sync_service.state.store.Store` inherits these, so every SQL
statement of the service lives in ``state/``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from sync_service.state.base import Queries, completes
from sync_service.state.records import STATES
from sync_service.state.schema import (
    RELEASED,
    db_now,
    dead_letters,
    mirrors,
    synced_features,
    tasks,
)


@dataclass(frozen=True)
class StoreStats:
    """The shared figures behind the metrics gauges."""

    counts: dict[str, int]
    oldest_pending_age: float | None
    dead_letters: int
    #: Watched collection → seconds since its watermark (None before its first pass).
    watch_lag: dict[str, float | None] = field(default_factory=dict)


class ViewQueries(Queries):
    """Mixed into :class:`~sync_service.state.store.Store`, which provides the plumbing."""

    # -- dead letters -----------------------------------------------------------------------

    @completes
    async def retry_dead_letter(self, letter_id: int) -> str | None:
        """Make the dead letter's task pending again; its redo re-syncs the whole asset.

        Features that land this time leave the dead-letter list (the redo replaces the task's
        dead letters). Returns the task id, or None if there is no such dead letter.
        """
        async with self._writing() as conn:
            task_id = (
                await conn.execute(
                    select(dead_letters.c.task_id).where(dead_letters.c.id == letter_id)
                )
            ).scalar_one_or_none()
            if task_id is None:
                return None
            await conn.execute(
                update(tasks)
                .where(tasks.c.task_id == task_id)
                .values(
                    state="pending",
                    attempts=0,
                    error=None,
                    next_poll_at=db_now(),
                    updated_at=db_now(),
                    **RELEASED,
                )
            )
        return str(task_id)

    @completes
    async def drop_dead_letter(self, letter_id: int) -> bool:
        """Forget a dead letter for good (the feature stays out of Qdrant)."""
        async with self._writing() as conn:
            task_id = (
                await conn.execute(
                    delete(dead_letters)
                    .where(dead_letters.c.id == letter_id)
                    .returning(dead_letters.c.task_id)
                )
            ).scalar_one_or_none()
            if task_id is None:
                return False
            await conn.execute(
                update(tasks)
                .where(tasks.c.task_id == task_id, tasks.c.dead_letters > 0)
                .values(dead_letters=tasks.c.dead_letters - 1)
            )
        return True

    # -- reading ----------------------------------------------------------------------------

    async def counts(self) -> dict[str, int]:
        """Tasks by state; every state is present."""
        async with self.engine.connect() as conn:
            return await _counts(conn)

    async def stats(self) -> StoreStats:
        async with self.engine.connect() as conn:
            counts = await _counts(conn)
            oldest = (
                await conn.execute(
                    select(db_now() - func.min(tasks.c.created_at)).where(
                        tasks.c.state == "pending"
                    )
                )
            ).scalar_one_or_none()
            letters = (
                await conn.execute(select(func.count()).select_from(dead_letters))
            ).scalar_one()
            lags = (
                await conn.execute(
                    select(mirrors.c.collection_id, db_now() - mirrors.c.watermark).where(
                        mirrors.c.watched == 1
                    )
                )
            ).all()
        return StoreStats(
            counts,
            float(oldest) if oldest is not None else None,
            int(letters),
            {str(c): None if lag is None else float(lag) for c, lag in lags},
        )

    async def list_tasks(
        self, task_id: str | None = None, *, newest: int | None = None
    ) -> list[dict[str, Any]]:
        """Task rows, oldest first: all of them, one, or only the ``newest`` n."""
        stmt = select(tasks)
        if task_id is not None:
            stmt = stmt.where(tasks.c.task_id == task_id)
        if newest is not None:
            stmt = stmt.order_by(tasks.c.created_at.desc(), tasks.c.task_id.desc()).limit(newest)
        sub = stmt.subquery()
        stmt = select(sub).order_by(sub.c.created_at, sub.c.task_id)
        async with self.engine.connect() as conn:
            return [dict(row._mapping) for row in (await conn.execute(stmt)).all()]

    async def synced_features(self, task_id: str | None = None) -> list[dict[str, Any]]:
        stmt = select(synced_features).order_by(synced_features.c.feature_id)
        if task_id is not None:
            stmt = stmt.where(synced_features.c.task_id == task_id)
        async with self.engine.connect() as conn:
            return [dict(row._mapping) for row in (await conn.execute(stmt)).all()]

    async def dead_letters(
        self, task_id: str | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        stmt = select(dead_letters).order_by(dead_letters.c.id)
        if task_id is not None:
            stmt = stmt.where(dead_letters.c.task_id == task_id)
        if limit is not None:
            stmt = stmt.limit(limit)
        async with self.engine.connect() as conn:
            return [dict(row._mapping) for row in (await conn.execute(stmt)).all()]

    # -- the clock, due times, health ----------------------------------------------------

    async def ping(self) -> None:
        """Raise if the state store does not answer."""
        async with self.engine.connect() as conn:
            await conn.execute(select(1))

    async def now(self) -> float:
        """The database clock (epoch seconds): the clock leases and write versions use."""
        async with self.engine.connect() as conn:
            return float((await conn.execute(select(db_now()))).scalar_one())

    async def held_leases(self) -> set[tuple[str, int]]:
        """(task id, fencing token) of every lease held now (expired ones excluded)."""
        stmt = select(tasks.c.task_id, tasks.c.lease_token).where(
            tasks.c.lease_owner.is_not(None), tasks.c.lease_expires_at >= db_now()
        )
        async with self.engine.connect() as conn:
            return {(str(t), int(k)) for t, k in (await conn.execute(stmt)).all()}

    async def next_due_in(self) -> float | None:
        """Seconds until the earliest unleased pending task is due (≤ 0: due now), or None."""
        stmt = select(func.min(tasks.c.next_poll_at) - db_now()).where(
            tasks.c.state == "pending",
            (tasks.c.lease_expires_at.is_(None)) | (tasks.c.lease_expires_at < db_now()),
        )
        async with self.engine.connect() as conn:
            value = (await conn.execute(stmt)).scalar_one_or_none()
        return None if value is None else float(value)

    async def has_work(self) -> bool:
        """Whether a daemon has anything to act on: a pending task, or a collection that is
        watched, in a full pass or holding a sweep. ``run --drain`` without any stops at its
        first tick, so it need not load Qdrant's client or the Mixpeek client for nothing."""
        busy_mirror = (
            (mirrors.c.watched == 1)
            | mirrors.c.pass_step.is_not(None)
            | mirrors.c.held_at.is_not(None)
        )
        async with self.engine.connect() as conn:
            for stmt in (
                select(tasks.c.task_id).where(tasks.c.state == "pending").limit(1),
                select(mirrors.c.collection_id).where(busy_mirror).limit(1),
            ):
                if (await conn.execute(stmt)).first() is not None:
                    return True
        return False

    async def pending_count(self) -> int:
        async with self.engine.connect() as conn:
            return (await _counts(conn))["pending"]


async def _counts(conn: AsyncConnection) -> dict[str, int]:
    """Tasks by state; every state is present."""
    rows = (await conn.execute(select(tasks.c.state, func.count()).group_by(tasks.c.state))).all()
    found = {str(state): int(count) for state, count in rows}
    return {state: found.get(state, 0) for state in STATES}
