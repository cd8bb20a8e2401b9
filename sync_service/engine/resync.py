"""What syncing an asset again must write: pure, from the planned points and the ledger.

Re-syncing compares each planned point's content fingerprints with what the ledger says its
point holds: unchanged points cost no Qdrant write, a changed payload with the same vectors is
a payload-only write, and points of features that are gone upstream are deleted, after the
writes (never delete-first: a crash in between leaves extra points for the redo to remove, not
missing ones).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from sync_service.engine.points import PlannedPoint
from sync_service.state.ledger import LedgerRow
from sync_service.state.records import SyncedFeature


@dataclass
class Writes:
    #: New points, or points whose vectors changed: a full upsert.
    upsert: list[PlannedPoint] = field(default_factory=list)
    #: Same vectors, different payload: overwrite the payload only.
    payload_only: list[PlannedPoint] = field(default_factory=list)
    #: Exactly what Qdrant already holds: nothing to write.
    unchanged: list[PlannedPoint] = field(default_factory=list)
    #: Ledger rows of the asset whose features no longer exist upstream: delete their points.
    removed: list[LedgerRow] = field(default_factory=list)


def plan_writes(
    points: Sequence[PlannedPoint],
    known: Sequence[LedgerRow],
    upstream_feature_ids: Collection[str],
) -> Writes:
    """Sort ``points`` by what they need, given the ledger rows ``known`` for the same asset
    and collection, and ``upstream_feature_ids`` (every feature the asset has upstream,
    including ones that could not be mapped: those are dead letters, not deletions)."""
    ledger = {row.feature_id: row for row in known}
    writes = Writes()
    for point in points:
        row = ledger.get(point.feature_id)
        if row is None or row.point_id != point.point_id or row.vectors_fp != point.vectors_fp:
            writes.upsert.append(point)
        elif row.payload_fp != point.payload_fp:
            writes.payload_only.append(point)
        else:
            writes.unchanged.append(point)
    writes.removed = [row for row in known if row.feature_id not in upstream_feature_ids]
    return writes


def ledger_rows(points: Sequence[PlannedPoint]) -> list[SyncedFeature]:
    """What the ledger records of each point written: enough to plan the next re-sync."""
    return [
        SyncedFeature(
            feature_id=p.feature_id,
            point_id=p.point_id,
            asset_id=p.asset_id,
            modality=p.modality,
            vectors=p.vector_sizes(),
            payload_fp=p.payload_fp,
            vectors_fp=p.vectors_fp,
        )
        for p in points
    ]
