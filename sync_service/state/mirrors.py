"""State-store queries for mirroring whole collections: the watch set, pass state, the assets
listings saw, held sweeps, and the shared removal breaker.

Part of the state store: :class:`~sync_service.state.store.Store` inherits these, so every SQL
statement lives in the ``store*.py`` modules. Each page a pass lists is recorded in one
transaction together with the asset jobs it queues and the pass's cursor: a crash either lost
the page and its cursor, or kept both.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, case, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from sync_service.state.ledger import db_time, queue_asset_jobs
from sync_service.state.schema import (
    db_now,
    fetch_outcomes,
    mirror_assets,
    mirrors,
    synced_features,
    tasks,
)

#: Pass steps of a full pass in progress.
LISTING, SWEEPING = "listing", "sweeping"


@dataclass(frozen=True)
class Mirror:
    """One collection's mirroring state (a row of ``mirrors``)."""

    collection_id: str
    watched: bool
    source: str | None
    watermark: float | None
    #: The watermark, once its overlap window was listed after every late write could show.
    watermark_settled: float | None
    incremental_due_at: float | None
    full_due_at: float | None
    last_incremental_at: float | None
    last_full_at: float | None
    pass_no: int
    pass_step: str | None
    pass_next_page: int
    pass_total_pages: int | None
    pass_listed: int
    pass_requeue_all: bool
    pass_force: bool
    pass_no_sweep: bool
    pass_watermark: float | None
    held_points: int | None
    held_total: int | None
    held_assets: list[str]
    held_at: float | None
    filter_ignored: bool
    last_error: str | None

    @classmethod
    def from_row(cls, row: Any) -> Mirror:
        return cls(
            collection_id=row.collection_id,
            watched=bool(row.watched),
            source=row.source,
            watermark=row.watermark,
            watermark_settled=row.watermark_settled,
            incremental_due_at=row.incremental_due_at,
            full_due_at=row.full_due_at,
            last_incremental_at=row.last_incremental_at,
            last_full_at=row.last_full_at,
            pass_no=int(row.pass_no),
            pass_step=row.pass_step,
            pass_next_page=int(row.pass_next_page),
            pass_total_pages=row.pass_total_pages,
            pass_listed=int(row.pass_listed),
            pass_requeue_all=bool(row.pass_requeue_all),
            pass_force=bool(row.pass_force),
            pass_no_sweep=bool(row.pass_no_sweep),
            pass_watermark=row.pass_watermark,
            held_points=row.held_points,
            held_total=row.held_total,
            held_assets=json.loads(row.held_assets) if row.held_assets else [],
            held_at=row.held_at,
            filter_ignored=bool(row.filter_ignored),
            last_error=row.last_error,
        )


@dataclass(frozen=True)
class Listed:
    """One asset as a listing served it."""

    asset_id: str
    updated_at: str | None
    #: Upstream says it FAILED (nothing to sync; reported, not queued).
    failed: bool = False


class WatchQueries:
    """Mixed into :class:`~sync_service.state.store.Store`, which provides the plumbing."""

    engine: AsyncEngine
    dialect: str

    def _writing(self) -> AbstractAsyncContextManager[AsyncConnection]:
        raise NotImplementedError

    def _insert(self, table: Any) -> Any:
        raise NotImplementedError

    # -- the watch set ------------------------------------------------------------------

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
            await conn.execute(
                update(mirrors)
                .where(
                    mirrors.c.last_incremental_at.is_not(None),
                    mirrors.c.incremental_due_at > mirrors.c.last_incremental_at + incremental,
                )
                .values(incremental_due_at=mirrors.c.last_incremental_at + incremental)
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

    async def record_page(
        self,
        collection_id: str,
        assets: Sequence[Listed],
        *,
        pass_no: int | None,
        next_page: int | None = None,
        total_pages: int | None = None,
        requeue_all: bool = False,
        heal: bool = False,
        watermark: float | None = None,
        source: str = "watch",
    ) -> list[str]:
        """Record one listed page; queue asset jobs for the new and changed assets.

        ``pass_no``: the full pass this page belongs to (marks the assets seen by it; None for
        an incremental pass). ``heal``: also queue listed assets the ledger has no point of
        (work lost or given up earlier). ``next_page``: the full pass's cursor moves with the
        page. ``watermark``: the incremental watermark moves with the page (never backwards).
        Returns the asset ids queued.
        """
        async with self._writing() as conn:
            # FAILED upstream is queued all the same when new or changed: its job fails at once
            # with upstream's reason, so the asset and why it has no point show in ``status``.
            wanted = list(assets)
            ids = [a.asset_id for a in assets]
            known = {
                r.asset_id: r.updated_at
                for r in (
                    await conn.execute(
                        select(mirror_assets.c.asset_id, mirror_assets.c.updated_at).where(
                            mirror_assets.c.collection_id == collection_id,
                            mirror_assets.c.asset_id.in_(ids),
                        )
                    )
                ).all()
            }
            queue = [
                a.asset_id
                for a in wanted
                if requeue_all or a.asset_id not in known or known[a.asset_id] != a.updated_at
            ]
            if heal:
                rest = [a.asset_id for a in wanted if a.asset_id not in set(queue)]
                queue += await _without_points_or_jobs(conn, rest)
            queued = await queue_asset_jobs(
                conn, self._insert, queue, collection_id=collection_id, source=source
            )
            # A change whose asset's job is already pending or in flight was not queued: that
            # job may have fetched the older version, so the version seen here is not recorded
            # as handled (the job's own sync records what it fetched; the next pass compares).
            waiting = set(queue) - set(queued)
            if assets:
                stmt = self._insert(mirror_assets)
                set_: dict[str, Any] = {"updated_at": stmt.excluded.updated_at, "gone": 0}
                if pass_no is not None:
                    set_["seen_pass"] = stmt.excluded.seen_pass
                await conn.execute(
                    stmt.on_conflict_do_update(
                        index_elements=[mirror_assets.c.collection_id, mirror_assets.c.asset_id],
                        set_=set_,
                    ),
                    [
                        {
                            "collection_id": collection_id,
                            "asset_id": a.asset_id,
                            "updated_at": None if a.asset_id in waiting else a.updated_at,
                            "seen_pass": pass_no or 0,
                            "gone": 0,
                        }
                        for a in {a.asset_id: a for a in assets}.values()
                    ],
                )
            values: dict[str, Any] = {}
            if next_page is not None:
                values |= {
                    "pass_next_page": next_page,
                    "pass_total_pages": total_pages,
                    "pass_listed": mirrors.c.pass_listed + len(assets),
                }
            if values:
                values["updated_at"] = db_now()
                await conn.execute(
                    update(mirrors).where(mirrors.c.collection_id == collection_id).values(**values)
                )
            if watermark is not None:
                await self._raise_watermark(conn, collection_id, watermark)
        return queued

    async def start_sweep(self, collection_id: str) -> None:
        await self._set(collection_id, pass_step=SWEEPING)

    async def set_pass_watermark(self, collection_id: str, watermark: float | None) -> None:
        await self._set(collection_id, pass_watermark=watermark)

    async def ledger_counts(self, collection_id: str, asset_ids: Sequence[str]) -> dict[str, int]:
        """Per Qdrant collection: the ledger's points of these assets of the collection."""
        counts: dict[str, int] = {}
        async with self.engine.connect() as conn:
            for start in range(0, len(asset_ids), 500):
                chunk = list(asset_ids[start : start + 500])
                stmt = (
                    select(synced_features.c.qdrant_collection, func.count())
                    .where(
                        synced_features.c.collection_id == collection_id,
                        synced_features.c.asset_id.in_(chunk),
                    )
                    .group_by(synced_features.c.qdrant_collection)
                )
                for name, n in (await conn.execute(stmt)).all():
                    counts[str(name)] = counts.get(str(name), 0) + int(n)
        return counts

    async def collection_points(self, collection_id: str) -> dict[str, int]:
        """Per Qdrant collection: the ledger's points of this Mixpeek collection."""
        stmt = (
            select(synced_features.c.qdrant_collection, func.count())
            .where(synced_features.c.collection_id == collection_id)
            .group_by(synced_features.c.qdrant_collection)
        )
        async with self.engine.connect() as conn:
            return {str(q): int(n) for q, n in (await conn.execute(stmt)).all()}

    async def known_assets(self, collection_id: str) -> set[str]:
        """Assets the ledger or an earlier listing holds for the collection."""
        in_ledger = select(synced_features.c.asset_id).where(
            synced_features.c.collection_id == collection_id,
            synced_features.c.asset_id.is_not(None),
        )
        listed_before = select(mirror_assets.c.asset_id).where(
            mirror_assets.c.collection_id == collection_id
        )
        async with self.engine.connect() as conn:
            return {str(r[0]) for r in (await conn.execute(in_ledger.union(listed_before))).all()}

    async def sweep_candidates(self, collection_id: str, pass_no: int) -> list[str]:
        """Assets the ledger (or an earlier listing) holds for the collection that full pass
        ``pass_no`` did not list, including those confirmed gone whose removal is unfinished."""
        seen = select(mirror_assets.c.asset_id).where(
            mirror_assets.c.collection_id == collection_id,
            mirror_assets.c.seen_pass == pass_no,
            mirror_assets.c.gone == 0,
        )
        async with self.engine.connect() as conn:
            listed = {str(r[0]) for r in (await conn.execute(seen)).all()}
        return sorted(await self.known_assets(collection_id) - listed)

    async def mark_gone(self, collection_id: str, asset_ids: Sequence[str]) -> None:
        """Record that a sweep confirmed these assets deleted upstream, before any removal."""
        if not asset_ids:
            return
        stmt = self._insert(mirror_assets)
        async with self._writing() as conn:
            await conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=[mirror_assets.c.collection_id, mirror_assets.c.asset_id],
                    set_={"gone": 1},
                ),
                [{"collection_id": collection_id, "asset_id": a, "gone": 1} for a in asset_ids],
            )

    async def gone_assets(self, collection_id: str) -> list[str]:
        stmt = select(mirror_assets.c.asset_id).where(
            mirror_assets.c.collection_id == collection_id, mirror_assets.c.gone == 1
        )
        async with self.engine.connect() as conn:
            return sorted(str(r[0]) for r in (await conn.execute(stmt)).all())

    async def forget_mirror_assets(self, collection_id: str, asset_ids: Sequence[str]) -> None:
        """Drop the listing rows of assets whose removal finished."""
        if not asset_ids:
            return
        async with self._writing() as conn:
            await conn.execute(
                delete(mirror_assets).where(
                    mirror_assets.c.collection_id == collection_id,
                    mirror_assets.c.asset_id.in_(list(asset_ids)),
                )
            )

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
            # A full listing covers what an incremental pass would have found.
            "incremental_due_at": db_now() + incremental_in,
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
                await self._raise_watermark(conn, collection_id, watermark)

    async def finish_incremental(
        self,
        collection_id: str,
        *,
        next_in: float,
        started: float | None = None,
        overlap: float | None = None,
    ) -> None:
        """End an incremental pass; the next is due ``next_in`` seconds from now.

        A pass that ``started`` (database clock) a whole ``overlap`` after the watermark last
        moved, listing from ``overlap`` below it, settles the watermark: later passes list
        from the watermark itself.
        """
        await self._set(
            collection_id,
            last_incremental_at=db_now(),
            incremental_due_at=db_now() + next_in,
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

    async def _set(self, collection_id: str, **values: Any) -> None:
        values.setdefault("updated_at", db_now())
        async with self._writing() as conn:
            await conn.execute(
                update(mirrors).where(mirrors.c.collection_id == collection_id).values(**values)
            )

    async def _raise_watermark(
        self, conn: AsyncConnection, collection_id: str, watermark: float
    ) -> None:
        await conn.execute(
            update(mirrors)
            .where(
                mirrors.c.collection_id == collection_id,
                or_(mirrors.c.watermark.is_(None), mirrors.c.watermark < watermark),
            )
            .values(watermark=watermark, watermark_moved_at=db_now())
        )

    # -- the shared removal breaker ------------------------------------------------------

    async def record_fetch(self, upstream: str, asset_id: str, *, gone: bool) -> None:
        """Note an asset fetch's outcome (a 404 or not) for the removal breaker."""
        async with self._writing() as conn:
            await conn.execute(
                fetch_outcomes.insert().values(
                    upstream=upstream, asset_id=asset_id, gone=int(gone), at=db_now()
                )
            )
            if gone or random.random() < PRUNE_CHANCE:
                await prune_outcomes(conn)

    async def recent_fetch_outcomes(self, upstream: str, window: int) -> list[bool]:
        """The last ``window`` asset fetches under this upstream configuration, by every
        replica, newest first: True where it answered 404."""
        stmt = (
            select(fetch_outcomes.c.gone)
            .where(fetch_outcomes.c.upstream == upstream)
            .order_by(fetch_outcomes.c.id.desc())
            .limit(window)
        )
        async with self.engine.connect() as conn:
            return [bool(r[0]) for r in (await conn.execute(stmt)).all()]


#: How often a successful fetch also prunes the breaker's table (a 404 always does).
PRUNE_CHANCE = 0.02
#: Outcomes kept per upstream configuration (the breaker reads far fewer).
OUTCOMES_KEPT = 500


async def prune_outcomes(conn: AsyncConnection) -> None:
    """Keep the newest outcomes only (inside the caller's transaction)."""
    newest = select(fetch_outcomes.c.id).order_by(fetch_outcomes.c.id.desc()).limit(OUTCOMES_KEPT)
    await conn.execute(delete(fetch_outcomes).where(fetch_outcomes.c.id.not_in(newest)))


async def _mirror_row(conn: AsyncConnection, collection_id: str) -> Any:
    stmt = select(mirrors).where(mirrors.c.collection_id == collection_id)
    return (await conn.execute(stmt)).one_or_none()


async def _without_points_or_jobs(conn: AsyncConnection, asset_ids: list[str]) -> list[str]:
    """Of these assets, those to heal: no point in the ledger, and either never handled by a
    job or task, or last given up after transient errors. An asset synced with no point (no
    feature, all set aside), pending, FAILED upstream or timed out is left alone: queueing it
    every full pass would only fetch it again for nothing."""
    if not asset_ids:
        return []
    with_points = select(synced_features.c.asset_id).where(
        synced_features.c.asset_id.in_(asset_ids)
    )
    handled = select(tasks.c.asset_id).where(
        tasks.c.asset_id.in_(asset_ids),
        or_(
            tasks.c.state != "failed",
            and_(tasks.c.state == "failed", tasks.c.error.not_like("gave up after%")),
        ),
    )
    busy = {str(r[0]) for r in (await conn.execute(with_points.union(handled))).all()}
    return [a for a in asset_ids if a not in busy]
