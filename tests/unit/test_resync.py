"""What a re-sync writes, from the planned points and the ledger (pure)."""

from __future__ import annotations

from typing import Any

from sync_service.engine.points import plan_points
from sync_service.engine.resync import plan_writes
from sync_service.state.ledger import LedgerRow

ASSET = {"asset_id": "a1", "collection_id": "c", "modality": "video", "status": "DONE"}


def feature(fid: str, vector: float = 0.5, text: str = "x") -> dict[str, Any]:
    return {
        "feature_id": fid,
        "asset_id": "a1",
        "collection_id": "c",
        "modality": "video",
        "text": text,
        "vectors": {"v": [vector, 0.25, 0.125]},
    }


def ledger_of(features: list[dict[str, Any]]) -> list[LedgerRow]:
    points = plan_points(features, ASSET, "t1", {}).points
    return [
        LedgerRow(
            p.feature_id, "c", p.point_id, "t1", "a1", {"v": 3}, p.payload_fp, p.vectors_fp, 0.0
        )
        for p in points
    ]


def test_each_feature_gets_only_the_write_it_needs() -> None:
    before = [feature("same"), feature("caption"), feature("moved"), feature("gone")]
    after = [
        feature("same"),
        feature("caption", text="a new caption"),
        feature("moved", vector=0.75),
        feature("new"),
    ]
    points = plan_points(after, ASSET, "t1", {}).points
    writes = plan_writes(points, ledger_of(before), {f["feature_id"] for f in after})
    assert [p.feature_id for p in writes.unchanged] == ["same"]
    assert [p.feature_id for p in writes.payload_only] == ["caption"]
    assert sorted(p.feature_id for p in writes.upsert) == ["moved", "new"]
    assert [r.feature_id for r in writes.removed] == ["gone"]


def test_a_feature_still_upstream_but_unusable_is_not_deleted() -> None:
    before = [feature("kept"), feature("poisoned")]
    after = [feature("kept"), feature("poisoned", vector=float("nan"))]
    plan = plan_points(after, ASSET, "t1", {})
    assert [r.feature_id for r in plan.rejected] == ["poisoned"]
    writes = plan_writes(plan.points, ledger_of(before), {"kept", "poisoned"})
    assert writes.removed == []
    assert [p.feature_id for p in writes.unchanged] == ["kept"]


def test_with_no_ledger_everything_is_an_upsert() -> None:
    points = plan_points([feature("a"), feature("b")], ASSET, "t1", {}).points
    writes = plan_writes(points, [], {"a", "b"})
    assert len(writes.upsert) == 2 and not writes.payload_only and not writes.removed
