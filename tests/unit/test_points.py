"""Feature + asset → point, and the validation that turns bad features into dead letters."""

from __future__ import annotations

import math
import uuid
from typing import Any

import pytest

from sync_service.engine.points import (
    SparseValues,
    VectorSpec,
    build_payload,
    collection_name,
    plan_points,
    point_id_for,
)

ASSET = {
    "asset_id": "60f391eb-b5ea-41cd-ba75-98d1bca25432",
    "collection_id": "example",
    "status": "DONE",
    "url": "https://example.com/a.mp4",
    "metadata": {"author": "user"},
    "modality": "video",
    "created_at": "2024-11-07T14:31:55.473000",
    "updated_at": "2024-11-07T14:32:01.000000",
    "unique_hash": "abc",
}
TASK = "3f0189c2-2f49-4119-851d-56a5701436a9"


def feature(fid: str = "98b693c0-6fc1-4420-97bd-6c4506356230", **extra: Any) -> dict[str, Any]:
    base = {
        "feature_id": fid,
        "asset_id": ASSET["asset_id"],
        "collection_id": "example",
        "modality": "video",
        "metadata": {"author": "user"},
        "created_at": "2024-11-07T14:31:56.053031Z",
        "start_time": 0.0,
        "end_time": 10.0,
        "description": "two people inside a car",
        "vectors": {"multimodal-v1": [0.6, 0.8, 0.0]},
    }
    base.update(extra)
    return base


def test_point_id_is_the_uuid_in_canonical_form() -> None:
    assert point_id_for("98B693C0-6FC1-4420-97BD-6C4506356230") == (
        "98b693c0-6fc1-4420-97bd-6c4506356230"
    )
    assert point_id_for("{98b693c0-6fc1-4420-97bd-6c4506356230}") == (
        "98b693c0-6fc1-4420-97bd-6c4506356230"
    )


def test_point_id_of_a_non_uuid_is_uuid5_of_the_feature_url() -> None:
    expected = str(uuid.uuid5(uuid.NAMESPACE_URL, "mixpeek://feature/ftr_123"))
    assert point_id_for("ftr_123") == expected
    assert point_id_for("ftr_123") == point_id_for("ftr_123")  # never random


@pytest.mark.parametrize(
    ("name", "cleaned"),
    [("demo", "demo"), ("a/b:c", "a_b_c"), ('x<>"|?*\\y', "x_______y"), ("tab\there", "tab_here")],
)
def test_collection_names_lose_characters_qdrant_refuses(name: str, cleaned: str) -> None:
    assert collection_name(name) == cleaned


def test_payload_is_the_feature_without_vectors_plus_task_and_asset() -> None:
    payload = build_payload(feature(json_output={"emotions": ["happy"]}), ASSET, TASK)
    assert "vectors" not in payload
    assert payload["task_id"] == TASK
    assert payload["asset"] == ASSET
    assert payload["json_output"] == {"emotions": ["happy"]}
    # Timestamps are carried exactly as upstream spelled them.
    assert payload["created_at"] == "2024-11-07T14:31:56.053031Z"
    assert payload["asset"]["created_at"] == "2024-11-07T14:31:55.473000"


def test_top_level_ids_come_from_the_asset_when_the_feature_lacks_them() -> None:
    bare = {"feature_id": "f1", "vectors": {"v": [1.0]}}
    payload = build_payload(bare, ASSET, TASK)
    assert payload["asset_id"] == ASSET["asset_id"]
    assert payload["collection_id"] == "example"
    assert payload["modality"] == "video"


def test_plan_keeps_named_vectors_and_plans_new_vector_names() -> None:
    plan = plan_points([feature()], ASSET, TASK, schema={})
    assert not plan.rejected
    (point,) = plan.points
    assert point.vectors == {"multimodal-v1": [0.6, 0.8, 0.0]}
    assert point.point_id == "98b693c0-6fc1-4420-97bd-6c4506356230"
    assert plan.new_vectors == {"multimodal-v1": VectorSpec(size=3)}
    assert point.vector_sizes() == {"multimodal-v1": 3}


@pytest.mark.parametrize(
    ("vectors", "reason"),
    [
        ({"multimodal-v1": [0.1, math.nan, 0.3]}, "not finite"),
        ({"multimodal-v1": [0.1, math.inf, 0.3]}, "not finite"),
        ({"multimodal-v1": [0.1, 1e39, 0.3]}, "not finite in float32"),
        ({"multimodal-v1": [0.1, 10**400, 0.3]}, "not finite in float32"),  # past any float
        ({"multimodal-v1": [0.1, 0.2]}, "length 2 but the collection expects 3"),
        ({"multimodal-v1": [0.1, "x", 0.3]}, "not a number"),
        ({"multimodal-v1": [0.1, True, 0.3]}, "not a number"),
        ({"multimodal-v1": []}, "non-empty list"),
        ({}, "no vectors"),
        (None, "no vectors"),
    ],
)
def test_bad_vectors_become_dead_letters_and_the_rest_still_land(vectors: Any, reason: str) -> None:
    good = feature("11111111-1111-4111-8111-111111111111")
    bad = feature("22222222-2222-4222-8222-222222222222", vectors=vectors)
    plan = plan_points([good, bad], ASSET, TASK, schema={"multimodal-v1": VectorSpec(size=3)})
    assert [p.feature_id for p in plan.points] == [good["feature_id"]]
    (rejected,) = plan.rejected
    assert rejected.feature_id == bad["feature_id"]
    assert reason in rejected.reason
    assert bad["feature_id"] in rejected.payload_excerpt
    if vectors:  # the excerpt names the vectors but never carries their values
        assert '"multimodal-v1": "…"' in rejected.payload_excerpt


def test_a_new_name_is_sized_by_its_vectors_and_the_odd_ones_are_rejected() -> None:
    first = feature("11111111-1111-4111-8111-111111111111", vectors={"new": [1.0, 0.0]})
    other = feature("22222222-2222-4222-8222-222222222222", vectors={"new": [1.0, 0.0, 0.0]})
    plan = plan_points([first, other], ASSET, TASK, schema={})
    assert plan.new_vectors == {"new": VectorSpec(size=2)}  # a tie: the first seen wins
    assert [r.feature_id for r in plan.rejected] == [other["feature_id"]]


def test_a_malformed_first_vector_does_not_size_a_new_name() -> None:
    """A short (poisoned) vector seen first must not make every good vector "wrong length"."""
    short = feature("00000000-0000-4000-8000-000000000000", vectors={"v": [1.0, 0.0]})
    good = [
        feature(f"00000000-0000-4000-8000-00000000000{i}", vectors={"v": [1.0, 0.0, 0.0]})
        for i in range(1, 4)
    ]
    plan = plan_points([short, *good], ASSET, TASK, schema={})
    assert plan.new_vectors == {"v": VectorSpec(size=3)}
    assert [p.feature_id for p in plan.points] == [g["feature_id"] for g in good]
    assert [r.feature_id for r in plan.rejected] == [short["feature_id"]]


def test_a_configured_size_wins_over_the_data() -> None:
    """SYNC_VECTOR_SIZES: a poisoned first vector (here the asset's only one) sizes nothing."""
    short = feature("00000000-0000-4000-8000-000000000000", vectors={"v": [1.0, 0.0]})
    plan = plan_points([short], ASSET, TASK, schema={}, sizes={"v": 3})
    assert not plan.points and not plan.new_vectors  # nothing to create for it
    (rejected,) = plan.rejected
    assert rejected.reason == (
        "vector 'v' has length 2 but the collection expects 3 (SYNC_VECTOR_SIZES v=3)"
    )
    # Even where most vectors of the plan have another length.
    good = feature("00000000-0000-4000-8000-000000000001", vectors={"v": [1.0, 0.0, 0.0]})
    plan = plan_points([short, short | {"feature_id": "x"}, good], ASSET, TASK, {}, {"v": 3})
    assert plan.new_vectors == {"v": VectorSpec(size=3)}
    assert [p.feature_id for p in plan.points] == [good["feature_id"]]
    assert [r.feature_id for r in plan.rejected] == [short["feature_id"], "x"]


def test_names_not_configured_are_still_sized_from_the_data() -> None:
    both = {"v": [1.0, 0.0, 0.0], "other": [1.0, 0.0], "kw": {"indices": [1], "values": [1.0]}}
    plan = plan_points([feature(vectors=both)], ASSET, TASK, schema={}, sizes={"v": 3, "x": 9})
    assert plan.new_vectors == {
        "v": VectorSpec(size=3),
        "other": VectorSpec(size=2),
        "kw": VectorSpec(size=None, sparse=True),
    }
    assert not plan.rejected


def test_a_configured_name_is_dense() -> None:
    sparse = feature(vectors={"v": {"indices": [1], "values": [1.0]}})
    (rejected,) = plan_points([sparse], ASSET, TASK, schema={}, sizes={"v": 3}).rejected
    assert rejected.reason == "vector 'v' is sparse but the collection holds it as dense[3]"


def test_an_existing_collection_keeps_its_size_and_the_reason_says_so() -> None:
    """The collection's own spec wins (Qdrant cannot resize a vector name); ``reindex`` can."""
    fitting = feature(vectors={"v": [1.0, 0.0, 0.0]})
    plan = plan_points([fitting], ASSET, TASK, schema={"v": VectorSpec(size=4)}, sizes={"v": 3})
    assert not plan.points and not plan.new_vectors
    assert plan.rejected[0].reason == (
        "vector 'v' has length 3 but the collection expects 4 (SYNC_VECTOR_SIZES says v=3; "
        "`sync-service reindex` rebuilds the collection with it)"
    )


def test_sparse_vectors_are_kept_and_checked() -> None:
    sparse = {"indices": [3, 7], "values": [0.5, 0.25]}
    plan = plan_points([feature(vectors={"keyword": sparse})], ASSET, TASK, schema={})
    (point,) = plan.points
    assert point.vectors["keyword"] == SparseValues(indices=[3, 7], values=[0.5, 0.25])
    assert plan.new_vectors == {"keyword": VectorSpec(size=None, sparse=True)}
    bad = feature(vectors={"keyword": {"indices": [1, 1], "values": [0.5, 0.2]}})
    assert "repeats an index" in plan_points([bad], ASSET, TASK, {}).rejected[0].reason


def test_duplicate_feature_ids_in_one_asset_keep_the_first() -> None:
    plan = plan_points([feature(), feature(description="later")], ASSET, TASK, schema={})
    assert len(plan.points) == 1
    assert plan.points[0].payload["description"] == "two people inside a car"
    assert plan.rejected[0].reason == "duplicate feature_id in one asset"


def test_payload_that_is_not_json_is_rejected() -> None:
    plan = plan_points([feature(metadata={"score": math.nan})], ASSET, TASK, schema={})
    assert not plan.points
    assert "not valid JSON" in plan.rejected[0].reason


def test_fingerprints_split_payload_from_vectors() -> None:
    (a,) = plan_points([feature()], ASSET, TASK, {}).points
    (b,) = plan_points([feature(description="changed")], ASSET, TASK, {}).points
    (c,) = plan_points(
        [feature(vectors={"multimodal-v1": [0.6, 0.8, 0.1]})], ASSET, TASK, {}
    ).points
    assert a.vectors_fp == b.vectors_fp and a.payload_fp != b.payload_fp
    assert a.payload_fp == c.payload_fp and a.vectors_fp != c.vectors_fp


def test_vector_fingerprints_are_the_float32_bytes_numpy_gives() -> None:
    """Fingerprints stored by releases that computed them with numpy stay valid: the same
    bytes (float32 values, int64 sparse indices, in order), from the standard library."""
    import hashlib
    import random

    import numpy as np

    rng = random.Random(7)
    for _ in range(50):
        vectors: dict[str, Any] = {
            "dense": [rng.gauss(0, 1) * 10 ** rng.randint(-40, 38) for _ in range(33)],
            "ints": [rng.randint(-5, 5) for _ in range(4)],
            "multi": [[rng.random() for _ in range(4)] for _ in range(3)],
            "sparse": {"indices": rng.sample(range(10**6), 5), "values": [0.5, -1.0, 2, 0, 1e-3]},
        }
        (point,) = plan_points([feature(vectors=vectors)], ASSET, TASK, {}).points
        digest = hashlib.sha256()
        for name in sorted(vectors):
            digest.update(name.encode() + b"\0")
            value = vectors[name]
            if name == "sparse":
                digest.update(np.asarray(value["indices"], dtype=np.int64).tobytes())
                digest.update(np.asarray(value["values"], dtype=np.float32).tobytes())
            else:
                digest.update(np.asarray(value, dtype=np.float32).tobytes())
        assert point.vectors_fp == digest.hexdigest()


def test_feature_without_id_is_rejected() -> None:
    plan = plan_points([{"vectors": {"v": [1.0]}}], ASSET, TASK, schema={})
    assert plan.rejected[0].reason == "feature has no feature_id"
