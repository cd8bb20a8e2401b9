"""State-store queries for mirroring whole collections: the watch set, pass state, the assets
listings saw, held sweeps, and the shared removal breaker.

Part of the state store: :class:`~sync_service.state.store.Store` inherits these, so every SQL
statement lives in the ``store*.py`` modules. Each page a pass lists is recorded in one
transaction together with the asset jobs it queues and the pass's cursor: a crash either lost
the page and its cursor, or kept both.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import case, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from sync_service.state.base import Queries, completes
from sync_service.state.ledger import db_time
from sync_service.state.listings import raise_watermark
from sync_service.state.records import Mirror
from sync_service.state.schema import (
    db_now,
    mirrors,
    synced_features,
)
from sync_service.state.webhooks import requested_since

#: Pass steps of a full pass in progress.
LISTING, SWEEPING = "listing", "sweeping"


class WatchQueries(Queries):
    """Mixed into :class:`~sync_service.state.store.Store`, which provides the plumbing."""

    # -- the watch set ------------------------------------------------------------------

    @completes
    async def watch_add(self, collection_ids: Iterable[str], *, source: str) -> list[str]:
        """Add collections to the watch set; returns those that were not watched before.

        A newly watched collection's passes are due at once (a full pass first: it has no
        watermark yet).
        """
        ids = list(dict.fromkeys(collection_ids))
        if not ids:
            return []
        async with self._writing() as conn:
            now = await db_time(conn)
            # Replicas starting together add the same collections: no read-then-insert race.
            await conn.execute(
                self._insert(mirrors).on_conflict_do_nothing(),
                [
                    {"collection_id": cid, "watched": 0, "added_at": now, "updated_at": now}
                    for cid in ids
                ],
            )
            rows = await conn.execute(
                update(mirrors)
                .where(mirrors.c.collection_id.in_(ids), mirrors.c.watched == 0)
                .values(
                    watched=1,
                    source=source,
                    added_at=now,
                    full_due_at=now,
                    incremental_due_at=now,
                    updated_at=now,
                )
                .returning(mirrors.c.collection_id)
            )
            added = {str(r[0]) for r in rows.all()}
        return [cid for cid in ids if cid in added]

    @completes
    async def watch_remove(self, collection_ids: Iterable[str]) -> list[str]:
        """Take collections out of the watch set (their points stay); returns those removed."""
        ids = list(dict.fromkeys(collection_ids))
        async with self._writing() as conn:
            rows = await conn.execute(
                update(mirrors)
                .where(mirrors.c.collection_id.in_(ids), mirrors.c.watched == 1)
                .values(watched=0, updated_at=db_now())
                .returning(mirrors.c.collection_id)
            )
            return sorted(str(r[0]) for r in rows.all())

    async def mirrors(self, *, watched_only: bool = False) -> list[Mirror]:
        stmt = select(mirrors).order_by(mirrors.c.collection_id)
        if watched_only:
            stmt = stmt.where(mirrors.c.watched == 1)
        async with self.engine.connect() as conn:
            return [Mirror.from_row(r) for r in (await conn.execute(stmt)).all()]

    async def mirror(self, collection_id: str) -> Mirror | None:
        async with self.engine.connect() as conn:
            row = await _mirror_row(conn, collection_id)
        return None if row is None else Mirror.from_row(row)

    @completes
    async def reconcile_intervals(self, incremental: float, full: float) -> None:
        """Bring due times stored under longer intervals (before a restart with new settings)
        forward to the last pass plus the interval configured now."""
        async with self._writing() as conn:
            await conn.execute(
                update(mirrors)
                .where(
                    mirrors.c.last_full_at.is_not(None),
                    mirrors.c.full_due_at > mirrors.c.last_full_at + full,
                )
                .values(full_due_at=mirrors.c.last_full_at + full)
            )
            # A full pass schedules the next incremental one too: the later pass is the base.
            last: Any = func.max(
                func.coalesce(mirrors.c.last_incremental_at, 0.0),
                func.coalesce(mirrors.c.last_full_at, 0.0),
            )
            if self.dialect == "postgresql":
                last = func.greatest(
                    func.coalesce(mirrors.c.last_incremental_at, 0.0),
                    func.coalesce(mirrors.c.last_full_at, 0.0),
                )
            await conn.execute(
                update(mirrors)
                .where(
                    (mirrors.c.last_incremental_at.is_not(None))
                    | (mirrors.c.last_full_at.is_not(None)),
                    mirrors.c.incremental_due_at > last + incremental,
                )
                .values(incremental_due_at=last + incremental)
            )

    async def next_watch_due_in(self) -> float | None:
        """Seconds until the earliest watched collection's next pass is due, or None."""
        soonest = func.min(
            case(
                (mirrors.c.full_due_at < mirrors.c.incremental_due_at, mirrors.c.full_due_at),
                else_=func.coalesce(mirrors.c.incremental_due_at, mirrors.c.full_due_at),
            )
        )
        stmt = select(soonest - db_now()).where(mirrors.c.watched == 1)
        async with self.engine.connect() as conn:
            value = (await conn.execute(stmt)).scalar_one_or_none()
        return None if value is None else float(value)

    async def due_mirrors(self) -> list[tuple[str, str]]:
        """Watched collections with a pass to run now: (collection id, "full"|"incremental").

        An unfinished full pass counts as due (resumed by whoever takes the collection's lock).
        """
        now = db_now()
        stmt = select(
            mirrors.c.collection_id,
            mirrors.c.pass_step,
            mirrors.c.full_due_at <= now,
            mirrors.c.incremental_due_at <= now,
            mirrors.c.watermark,
        ).where(
            # A pass listed by a process that could not reach Qdrant waits here for its sweep.
            (mirrors.c.watched == 1) | (mirrors.c.pass_step == SWEEPING)
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        due = []
        for cid, _step, full_due, incremental_due, watermark in rows:
            # An unfinished full pass is resumed when its due time comes (at once after a
            # crash; after a pause when it failed: incremental passes go on meanwhile); no
            # watermark yet means a full pass first.
            if full_due or (incremental_due and watermark is None):
                due.append((str(cid), "full"))
            elif incremental_due:
                due.append((str(cid), "incremental"))
        return due

    async def assets_known(self) -> dict[str, int]:
        """Per Mixpeek collection: the assets the ledger holds points of."""
        stmt = (
            select(
                synced_features.c.collection_id,
                func.count(func.distinct(synced_features.c.asset_id)),
            )
            .where(synced_features.c.collection_id.in_(select(mirrors.c.collection_id)))
            .group_by(synced_features.c.collection_id)
        )
        async with self.engine.connect() as conn:
            return {str(c): int(n) for c, n in (await conn.execute(stmt)).all()}

    # -- passes -------------------------------------------------------------------------

    @completes
    async def begin_full_pass(
        self,
        collection_id: str,
        *,
        requeue_all: bool = False,
        force: bool = False,
        no_sweep: bool = False,
    ) -> Mirror:
        """The collection's unfinished full pass (to resume), else a new one from page 1.

        ``requeue_all`` (backfill): every listed asset is queued, changed or not. ``force``:
        the sweep ignores the delete guard. ``no_sweep``: the pass ends without a sweep. A
        resumed pass keeps its own flags, or-ed with these.
        """
        async with self._writing() as conn:
            now = await db_time(conn)
            await conn.execute(
                self._insert(mirrors)
                .values(collection_id=collection_id, added_at=now, updated_at=now)
                .on_conflict_do_nothing()
            )
            row = await _mirror_row(conn, collection_id)
            values: dict[str, Any] = {"updated_at": db_now()}
            if row.pass_step is None:
                values |= {
                    "pass_no": mirrors.c.pass_no + 1,
                    "pass_step": LISTING,
                    "pass_next_page": 1,
                    "pass_resume": None,
                    "pass_total_pages": None,
                    "pass_listed": 0,
                    "pass_started_at": db_now(),
                    "pass_requeue_all": int(requeue_all),
                    "pass_force": int(force),
                    "pass_no_sweep": int(no_sweep),
                    "pass_watermark": None,
                    # Due from now on: a process that dies mid-pass leaves it to be resumed
                    # at once (by a replica or the next start), not at the next interval.
                    "full_due_at": db_now(),
                }
            else:
                values |= {
                    "pass_requeue_all": int(requeue_all or row.pass_requeue_all),
                    "pass_force": int(force or row.pass_force),
                    "pass_no_sweep": int(no_sweep or row.pass_no_sweep),
                }
            await conn.execute(
                update(mirrors).where(mirrors.c.collection_id == collection_id).values(**values)
            )
            row = await _mirror_row(conn, collection_id)
        return Mirror.from_row(row)

    async def start_sweep(self, collection_id: str) -> None:
        await self._set(collection_id, pass_step=SWEEPING)

    async def set_pass_watermark(self, collection_id: str, watermark: float | None) -> None:
        await self._set(collection_id, pass_watermark=watermark)

    async def hold_sweep(
        self, collection_id: str, *, points: int, total: int, assets: Sequence[str]
    ) -> None:
        await self._set(
            collection_id,
            held_points=points,
            held_total=total,
            held_assets=json.dumps(sorted(assets)),
            held_at=db_now(),
        )

    @completes
    async def finish_full_pass(
        self,
        collection_id: str,
        *,
        next_in: float,
        watermark: float | None,
        held: bool | None,
        incremental_in: float = 0.0,
    ) -> None:
        """End the full pass: next one due in ``next_in`` s. A sweep not held (``held``
        False) clears a hold; None (no sweep ran) leaves it as it is."""
        values: dict[str, Any] = {
            "pass_step": None,
            "pass_force": 0,
            "pass_requeue_all": 0,
            "pass_no_sweep": 0,
            "pass_watermark": None,
            "last_full_at": db_now(),
            "full_due_at": db_now() + next_in,
            # A full listing covers what an incremental pass would have found, except a change
            # a webhook announced during it (its page may have been listed already).
            "incremental_due_at": case(
                (
                    requested_since(mirrors.c.collection_id, mirrors.c.pass_started_at),
                    mirrors.c.incremental_due_at,
                ),
                else_=db_now() + incremental_in,
            ),
            "last_error": None,
        }
        if held is False:
            values |= {
                "held_points": None,
                "held_total": None,
                "held_assets": None,
                "held_at": None,
            }
        async with self._writing() as conn:
            await conn.execute(
                update(mirrors).where(mirrors.c.collection_id == collection_id).values(**values)
            )
            if watermark is not None:
                await raise_watermark(conn, collection_id, watermark)

    @completes
    async def finish_incremental(
        self,
        collection_id: str,
        *,
        next_in: float,
        started: float | None = None,
        overlap: float | None = None,
        began: float | None = None,
    ) -> None:
        """End an incremental pass; the next is due ``next_in`` seconds from now, unless it
        was made due after the pass ``began`` (database clock; a webhook's request).

        A pass that ``started`` (database clock) a whole ``overlap`` after the watermark last
        moved, listing from ``overlap`` below it, settles the watermark: later passes list
        from the watermark itself.
        """
        due: Any = db_now() + next_in
        if began is not None:
            # A due time set during the pass (it was due, so earlier, when the pass began).
            due = case(
                (mirrors.c.incremental_due_at > began, mirrors.c.incremental_due_at),
                (requested_since(mirrors.c.collection_id, began), mirrors.c.incremental_due_at),
                else_=due,
            )
        await self._set(
            collection_id,
            last_incremental_at=db_now(),
            incremental_due_at=due,
            last_error=None,
        )
        if started is None or overlap is None:
            return
        async with self._writing() as conn:
            await conn.execute(
                update(mirrors)
                .where(
                    mirrors.c.collection_id == collection_id,
                    mirrors.c.watermark_moved_at <= started - overlap,
                )
                .values(watermark_settled=mirrors.c.watermark)
            )

    async def pass_failed(
        self, collection_id: str, error: str, *, retry_in: float, full: bool
    ) -> None:
        """A pass cut short: the error shows in ``status``, and that kind of pass is tried
        again in ``retry_in`` s (a full pass resumes where it stopped, an incremental pass
        starts again from the watermark); the other kind keeps its own schedule."""
        retry = {"full_due_at" if full else "incremental_due_at": db_now() + retry_in}
        await self._set(collection_id, last_error=error[:1000], **retry)

    async def set_filter_ignored(self, collection_id: str, ignored: bool) -> None:
        await self._set(collection_id, filter_ignored=int(ignored))

    async def due_full_now(self, collection_id: str) -> None:
        await self._set(collection_id, full_due_at=db_now())

    @completes
    async def _set(self, collection_id: str, **values: Any) -> None:
        values.setdefault("updated_at", db_now())
        async with self._writing() as conn:
            await conn.execute(
                update(mirrors).where(mirrors.c.collection_id == collection_id).values(**values)
            )


async def _mirror_row(conn: AsyncConnection, collection_id: str) -> Any:
    stmt = select(mirrors).where(mirrors.c.collection_id == collection_id)
    return (await conn.execute(stmt)).one_or_none()
