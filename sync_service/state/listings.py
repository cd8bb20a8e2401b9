"""State-store queries of what listings saw: each page recorded with the asset jobs it queues,
the assets each full pass listed, and what a sweep compares with the ledger.

Part of the state store: :class:`~sync_service.state.store.Store` inherits these. A page is
recorded in one transaction with the jobs it queues and the pass's cursor: a crash either lost
the page and its cursor, or kept both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from sync_service.state.base import Queries, completes
from sync_service.state.ledger import queue_asset_jobs
from sync_service.state.schema import db_now, mirror_assets, mirrors, synced_features, tasks


@dataclass(frozen=True)
class Listed:
    """One asset as a listing served it."""

    asset_id: str
    updated_at: str | None
    #: Upstream says it FAILED (nothing to sync; reported, not queued).
    failed: bool = False
    #: Every feature id upstream has for it, when the listing served them all (None: unknown).
    features: frozenset[str] | None = None


class ListingQueries(Queries):
    """Mixed into :class:`~sync_service.state.store.Store`, which provides the plumbing."""

    @completes
    async def record_page(
        self,
        collection_id: str,
        assets: Sequence[Listed],
        *,
        pass_no: int | None,
        next_page: int | None = None,
        resume: str | None = None,
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
        page, with the upstream's ``resume`` token for it. ``watermark``: the incremental
        watermark moves with the page (never backwards). Returns the asset ids queued.
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
            # An asset whose points include a feature upstream no longer has was changed by a
            # deletion (no new stamp): its re-sync removes the stale points.
            sets = {a.asset_id: a.features for a in wanted if a.features is not None}
            queue += await _with_stale_points(conn, collection_id, sets, skip=set(queue))
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
                    "pass_resume": resume,
                    "pass_total_pages": total_pages,
                    "pass_listed": mirrors.c.pass_listed + len(assets),
                }
            if values:
                values["updated_at"] = db_now()
                await conn.execute(
                    update(mirrors).where(mirrors.c.collection_id == collection_id).values(**values)
                )
            if watermark is not None:
                await raise_watermark(conn, collection_id, watermark)
        return queued

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

    @completes
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

    @completes
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


async def _with_stale_points(
    conn: AsyncConnection,
    collection_id: str,
    listed: dict[str, frozenset[str]],
    *,
    skip: set[str],
) -> list[str]:
    """Of these assets (with every feature id upstream lists for each), those the ledger holds
    a point of for a feature not listed."""
    ids = [a for a in listed if a not in skip]
    stale: set[str] = set()
    for start in range(0, len(ids), 500):
        rows = await conn.execute(
            select(synced_features.c.asset_id, synced_features.c.feature_id).where(
                synced_features.c.collection_id == collection_id,
                synced_features.c.asset_id.in_(ids[start : start + 500]),
            )
        )
        stale |= {str(a) for a, f in rows.all() if f not in listed[str(a)]}
    return sorted(stale)


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


async def raise_watermark(conn: AsyncConnection, collection_id: str, watermark: float) -> None:
    """Move the collection's watermark up to ``watermark`` (never down), noting when."""
    await conn.execute(
        update(mirrors)
        .where(
            mirrors.c.collection_id == collection_id,
            or_(mirrors.c.watermark.is_(None), mirrors.c.watermark < watermark),
        )
        .values(watermark=watermark, watermark_moved_at=db_now())
    )
