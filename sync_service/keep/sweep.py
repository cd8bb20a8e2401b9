"""The deletion sweep of a full pass: confirm each candidate upstream, guard, remove.

The candidates are the assets the ledger (or an earlier listing) holds for the collection that a
complete listing did not return. Each is confirmed with a direct fetch (404 = gone, anything
else keeps it). A sweep that would remove more than ``SYNC_DELETE_GUARD`` of the collection's
points removes nothing and is *held*; otherwise the gone assets are recorded first, then their
points removed, ledger first, so a sweep killed half-way finishes on its next run.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sync_service.control.metrics import Metrics
from sync_service.engine.points import collection_name
from sync_service.keep.forget import Removal, apply_removal, plan_removal
from sync_service.settings import Settings
from sync_service.state.store import Store
from sync_service.upstream.port import MixpeekAuthError, MixpeekError, MixpeekNotFound, Upstream

if TYPE_CHECKING:  # its module loads Qdrant's client: not before there is work
    from sync_service.qdrant.sink import QdrantSink

log = logging.getLogger(__name__)


@dataclass
class HeldSweep:
    """A sweep the delete guard held: nothing was deleted."""

    points: int
    total: int
    assets: list[str]

    @property
    def share(self) -> float:
        return self.points / self.total if self.total else 0.0


@dataclass
class Swept:
    """What a sweep found and did."""

    gone: list[str]
    held: HeldSweep | None = None
    removed_points: int = 0


class Sweeper:
    """Sweeps one collection at a time; stateless between calls."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        upstream: Upstream,
        sink: QdrantSink | None,
        metrics: Metrics,
    ) -> None:
        self.settings = settings
        self.store = store
        self.upstream = upstream
        self.sink = sink
        self.metrics = metrics

    async def sweep(self, cid: str, pass_no: int, *, force: bool) -> Swept:
        """Remove the assets full pass ``pass_no`` did not list that upstream confirms gone."""
        candidates = await self.store.sweep_candidates(cid, pass_no)
        gone = await self.confirm_gone(candidates)
        result = Swept(gone)
        if not gone:
            return result
        # The guard first, on the ledger's counts: planning a removal scans Qdrant per asset,
        # which a held sweep (repeated every full pass) must not pay for.
        held = await self.guard(cid, gone)
        if held is not None and not force:
            result.held = held
            await self.store.hold_sweep(cid, points=held.points, total=held.total, assets=gone)
            self.metrics.watch_held(cid)
            log.warning(
                "sweep of %s held: it would delete %d of %d points (%.0f%%, %d assets gone "
                "upstream), more than SYNC_DELETE_GUARD=%.0f%%; nothing deleted. Check "
                "MIXPEEK_API_URL/MIXPEEK_NAMESPACE, then `sync-service backfill --collection-id "
                "%s --force` removes them (`--dry-run` lists them)",
                cid,
                held.points,
                held.total,
                held.share * 100,
                len(gone),
                self.settings.delete_guard * 100,
                cid,
                extra={"event": "sweep_held", "collection_id": cid},
            )
            return result
        # The intent is durable before anything goes: a sweep killed half-way finishes the
        # removal of these (ledger rows and strays alike) on its next run.
        await self.store.mark_gone(cid, gone)
        removal = await self.plan(cid, gone)
        result.removed_points = await apply_removal(self.store, self.qdrant, removal)
        await self.store.forget_mirror_assets(cid, gone)
        self.metrics.watch_swept(cid, len(gone))
        self.metrics.resynced(0, 0, result.removed_points)
        log.info(
            "swept %d asset(s) deleted upstream from %s (%d point(s))",
            len(gone),
            cid,
            result.removed_points,
            extra={"event": "sweep_removed", "collection_id": cid, "assets": len(gone)},
        )
        return result

    async def confirm_gone(self, candidates: Sequence[str]) -> list[str]:
        """Of these assets, those upstream answers 404 for (any other answer keeps one)."""

        async def gone(asset_id: str) -> bool:
            try:
                await self.upstream.get_asset(asset_id)
            except MixpeekNotFound:
                return True
            except MixpeekAuthError:
                raise
            except MixpeekError as exc:
                log.warning(
                    "kept %s: confirming its deletion failed: %s",
                    asset_id,
                    exc,
                    extra={"event": "sweep_unconfirmed", "asset_id": asset_id},
                )
            return False

        answers = await asyncio.gather(*(gone(a) for a in candidates))
        return [a for a, g in zip(candidates, answers, strict=True) if g]

    @property
    def qdrant(self) -> QdrantSink:
        if self.sink is None:
            raise RuntimeError("this pass needs Qdrant, which another process holds")
        return self.sink

    async def plan(self, collection_id: str, asset_ids: Sequence[str]) -> Removal:
        """What removing these assets deletes: their ledger rows, plus any point their
        collection's Qdrant collection holds with their ``asset_id`` (a killed removal's)."""
        target = collection_name(self.settings.qdrant_collection_for(collection_id))
        return await plan_removal(
            self.store, self.qdrant, asset_ids, every_collection=False, also=[target]
        )

    async def guard(self, collection_id: str, gone: Sequence[str]) -> HeldSweep | None:
        """The delete guard: held when removing ``gone`` would delete more than
        ``SYNC_DELETE_GUARD`` of this Mixpeek collection's points (per Qdrant collection).

        Measured against the collection's own points, not the Qdrant collection's: where
        several Mixpeek collections share one, a wrong listing of each would otherwise pass
        the guard one small share at a time."""
        doomed = await self.store.ledger_counts(collection_id, gone)
        own = await self.store.collection_points(collection_id)
        for qdrant_collection, points in sorted(doomed.items()):
            total = own.get(qdrant_collection, 0)
            if total and points / total > self.settings.delete_guard:
                return HeldSweep(points, total, list(gone))
        return None
