"""Removing points from Qdrant: assets gone upstream, ``forget``, and the delete guard.

Every removal forgets the ledger rows first, then deletes the points: a crash in between
leaves points the ledger does not know, which the next removal finds by ``asset_id`` and
``verify --repair`` reports as extras to delete. The other order would leave ledger rows for
points already gone, which ``verify --repair`` would take for lost points and re-sync back.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sync_service.engine.failpoints import failpoint
from sync_service.state.store import Store

if TYPE_CHECKING:  # loads Qdrant's client: the sink handed in has done so
    from sync_service.qdrant.sink import QdrantSink


class DeleteGuardError(Exception):
    """A run would delete more of a collection than the guard allows (and was not forced)."""


@dataclass
class Removal:
    """Points to delete, per Qdrant collection: feature id → point id."""

    points: dict[str, dict[str, str]] = field(default_factory=lambda: defaultdict(dict))
    #: Points Qdrant holds for these assets that the ledger does not know (strays).
    strays: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))

    def count(self, collection: str) -> int:
        return len(self.points.get(collection, {})) + len(self.strays.get(collection, set()))

    @property
    def collections(self) -> list[str]:
        return sorted(set(self.points) | set(self.strays))

    @property
    def total(self) -> int:
        return sum(self.count(c) for c in self.collections)


async def plan_removal(
    store: Store,
    sink: QdrantSink,
    asset_ids: Iterable[str],
    *,
    every_collection: bool = True,
    also: Iterable[str] = (),
) -> Removal:
    """What removing these assets deletes: their ledger rows, plus any point Qdrant holds
    with their ``asset_id`` in a collection the ledger names (``every_collection``), or only
    in the collections their own ledger rows name (the daemon's cheap path), and in ``also``."""
    removal = Removal()
    wanted = list(dict.fromkeys(asset_ids))
    for asset_id in wanted:
        for row in await store.ledger(asset_id=asset_id):
            removal.points[row.qdrant_collection][row.feature_id] = row.point_id
    collections = set(removal.points) | set(also)
    if every_collection:
        collections |= set(await store.ledger_collections())
    for collection in sorted(collections):
        if not await sink.exists(collection):
            continue
        known = set(removal.points.get(collection, {}).values())
        for asset_id in wanted:
            extra = set(await sink.asset_point_ids(collection, asset_id)) - known
            if extra:
                removal.strays[collection] |= extra
    return removal


async def check_guard(
    sink: QdrantSink, deletions: Mapping[str, int], share: float, *, force: bool
) -> None:
    """Refuse (DeleteGuardError) when a collection would lose more than ``share`` of its
    points, unless ``force``."""
    if force:
        return
    for collection, doomed in sorted(deletions.items()):
        if doomed == 0:
            continue
        total = await sink.count(collection)
        if total and doomed / total > share:
            raise DeleteGuardError(
                f"refusing to delete {doomed} of {total} points ({doomed / total:.0%}) from "
                f"{collection}: more than SYNC_DELETE_GUARD={share:.0%}. Check the ids, then "
                "run again with --force (or --dry-run to list what would go)"
            )


async def apply_removal(store: Store, sink: QdrantSink, removal: Removal) -> int:
    """Delete the points (Qdrant, ``wait=True``), then their ledger rows. Returns points."""
    deleted = 0
    for collection in removal.collections:
        by_feature = removal.points.get(collection, {})
        ids: Sequence[str] = [*by_feature.values(), *sorted(removal.strays.get(collection, ()))]
        await store.forget_features(collection, by_feature)
        await failpoint("after_forget_ledger")
        await sink.delete_points(collection, ids)
        deleted += len(ids)
    return deleted


async def remove_assets(
    store: Store, sink: QdrantSink, asset_ids: Iterable[str], *, every_collection: bool = True
) -> int:
    """Remove assets gone upstream, unguarded (one asset at a time, from the daemon)."""
    removal = await plan_removal(store, sink, asset_ids, every_collection=every_collection)
    return await apply_removal(store, sink, removal)
