"""Multi-dense vectors and the vector kinds upstream declares, as the point mapper plans them."""

from __future__ import annotations

from typing import Any

from sync_service.engine.points import VectorSpec, plan_points
from sync_service.upstream.port import VectorShape

ASSET = {"asset_id": "col_a/obj_1", "collection_id": "col_a"}


def feature(feature_id: str, **vectors: Any) -> dict[str, Any]:
    return {"feature_id": feature_id, "vectors": vectors}


def test_a_list_of_lists_is_planned_as_a_multivector_of_its_rows_width() -> None:
    plan = plan_points([feature("f1", m=[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])], ASSET, "t", {})
    assert plan.new_vectors == {"m": VectorSpec(size=3, multi=True)}
    (point,) = plan.points
    assert point.vectors["m"] == [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
    assert point.vector_sizes() == {"m": 3}


def test_declared_shapes_beat_what_the_data_suggests() -> None:
    declared = {
        "d": VectorShape("dense", 2, "dot"),
        "s": VectorShape("sparse", None),
        "m": VectorShape("multi_dense", 2),
    }
    features = [
        feature("f1", d=[1.0, 2.0], s={"indices": [3], "values": [1.0]}, m=[[1.0, 2.0]]),
        feature("f2", d=[1.0, 2.0, 3.0]),  # the wrong length: a dead letter, not the shape
    ]
    plan = plan_points(features, ASSET, "t", {}, {"d": 3}, declared)
    assert plan.new_vectors == {
        "d": VectorSpec(size=2),
        "s": VectorSpec(size=None, sparse=True),
        "m": VectorSpec(size=2, multi=True),
    }
    assert plan.new_vectors["d"].distance == "dot"
    assert [p.feature_id for p in plan.points] == ["f1"]
    (rejected,) = plan.rejected
    assert "has length 3 but the collection expects 2" in rejected.reason


def test_bad_multivectors_are_dead_letters_with_a_reason() -> None:
    schema = {"m": VectorSpec(size=2, multi=True), "d": VectorSpec(size=2)}
    features = [
        feature("ragged", m=[[1.0, 2.0], [1.0]]),
        feature("nan", m=[[1.0, float("nan")]]),
        feature("flat", m=[1.0, 2.0]),
        feature("nested", d=[[1.0, 2.0]]),
        feature("wide", m=[[1.0, 2.0, 3.0]]),
        feature("good", m=[[0.5, 0.5]], d=[1.0, 0.0]),
    ]
    plan = plan_points(features, ASSET, "t", schema)
    assert [p.feature_id for p in plan.points] == ["good"]
    reasons = {r.feature_id: r.reason for r in plan.rejected}
    assert reasons == {
        "ragged": "multi-dense vector 'm' mixes vectors of different lengths",
        "nan": "multi-dense vector 'm' holds a value that is not finite in float32 "
        "(NaN, inf or too large)",
        "flat": "vector 'm' is dense but the collection holds it as multi_dense[2]",
        "nested": "vector 'd' is multi-dense but the collection holds it as dense[2]",
        "wide": "vector 'm' has length 3 but the collection expects 2",
    }


def test_values_at_float32s_edge_are_kept_even_when_their_magnitudes_sum_past_it() -> None:
    # The quick check (magnitudes summed within float32's range) fails for these; the exact
    # check that follows finds every value finite and in range.
    edge = 3.4e38
    plan = plan_points([feature("big", d=[edge, -edge, edge])], ASSET, "t", schema={})
    assert [p.feature_id for p in plan.points] == ["big"] and not plan.rejected
    plan = plan_points([feature("over", d=[edge, -edge, 3.5e38])], ASSET, "t", schema={})
    assert not plan.points and "not finite in float32" in plan.rejected[0].reason
