"""State-store queries that give failed work another go (``sync-service retry``), keeping the
failure each retry cleared in ``task_history``.

Part of the state store: :class:`~sync_service.state.store.Store` inherits these.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, update

from sync_service.state.base import Queries, completes
from sync_service.state.schema import RELEASED, db_now, task_history, tasks


@dataclass
class Requeued:
    """What a retry did (or, dry, would do)."""

    task_ids: list[str] = field(default_factory=list)
    #: Task ids given that were not re-queued, with why (not tracked, or not failed).
    skipped: dict[str, str] = field(default_factory=dict)


class RetryQueries(Queries):
    """Mixed into :class:`~sync_service.state.store.Store`, which provides the plumbing."""

    @completes
    async def requeue_failed(
        self,
        task_ids: Sequence[str] = (),
        *,
        since: float | None = None,
        dry_run: bool = False,
    ) -> Requeued:
        """Re-queue failed tasks and asset jobs with fresh attempts: ``task_ids`` (none: every
        failed one), only those that failed at or after ``since`` (epoch seconds)."""
        result = Requeued()
        stmt = select(
            tasks.c.task_id, tasks.c.state, tasks.c.updated_at, tasks.c.error, tasks.c.attempts
        )
        if task_ids:
            stmt = stmt.where(tasks.c.task_id.in_(list(dict.fromkeys(task_ids))))
        else:
            stmt = stmt.where(tasks.c.state == "failed")
        async with self._writing() as conn:
            rows = {r.task_id: r for r in (await conn.execute(stmt)).all()}
            for task_id in task_ids:
                row = rows.get(task_id)
                if row is None:
                    result.skipped[task_id] = "not tracked"
                elif row.state != "failed":
                    result.skipped[task_id] = f"not failed ({row.state})"
            chosen = [
                r
                for r in rows.values()
                if r.state == "failed" and (since is None or r.updated_at >= since)
            ]
            result.task_ids = sorted(r.task_id for r in chosen)
            if dry_run or not chosen:
                return result
            # Read in this same write transaction: the failures are the ones cleared below.
            history: list[dict[str, Any]] = [
                {
                    "task_id": r.task_id,
                    "failed_error": r.error,
                    "failed_attempts": r.attempts,
                    "failed_at": r.updated_at,
                }
                for r in chosen
            ]
            await conn.execute(task_history.insert().values(retried_at=db_now()), history)
            await conn.execute(
                update(tasks)
                .where(tasks.c.task_id.in_(result.task_ids), tasks.c.state == "failed")
                .values(
                    state="pending",
                    error=None,
                    attempts=0,
                    polls=0,
                    next_poll_at=db_now(),
                    updated_at=db_now(),
                    **RELEASED,
                )
            )
        return result

    async def task_history(self, task_id: str) -> list[dict[str, Any]]:
        """The failures retries cleared for this task, oldest first."""
        stmt = (
            select(task_history)
            .where(task_history.c.task_id == task_id)
            .order_by(task_history.c.id)
        )
        async with self.engine.connect() as conn:
            return [dict(row._mapping) for row in (await conn.execute(stmt)).all()]
