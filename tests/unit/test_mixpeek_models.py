"""Models for Mixpeek answers: tolerant parsing, exact ``.raw``, status classification."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sync_service.upstream.gen_b.models import (
    Asset,
    AssetFeatures,
    CursorPage,
    Feature,
    IndexResult,
    Page,
    Task,
    TaskOutcome,
    classify_status,
    parse_timestamp,
)

ASSET: dict[str, Any] = {
    "asset_id": "60f391eb-b5ea-41cd-ba75-98d1bca25432",
    "collection_id": "example",
    "status": "DONE",
    "url": None,
    "metadata": {"asset": {}, "author": "user", "preview_url": None},
    "error": None,
    "modality": "text",
    "task_id": "3f0189c2-2f49-4119-851d-56a5701436a9",
    "unique_hash": None,
    "created_at": "2024-11-07T14:31:55.473000",
    "updated_at": "2024-11-07T14:31:56.000000",
    "score": None,
}
FEATURE: dict[str, Any] = {
    "feature_id": "98b693c0-6fc1-4420-97bd-6c4506356230",
    "modality": "text",
    "asset_id": "60f391eb-b5ea-41cd-ba75-98d1bca25432",
    "collection_id": "example",
    "metadata": {"author": "user"},
    "text": "two people inside a car",
    "created_at": "2024-11-07T14:31:56.053031Z",
}


def test_asset_naive_timestamp_is_utc() -> None:
    asset = Asset.from_json(ASSET)
    assert asset.created_at == datetime(2024, 11, 7, 14, 31, 55, 473000, tzinfo=UTC)
    assert asset.created_at is not None and asset.created_at.tzinfo is not None


def test_feature_z_timestamp_is_utc() -> None:
    feature = Feature.from_json(FEATURE)
    assert feature.created_at == datetime(2024, 11, 7, 14, 31, 56, 53031, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-11-07T14:31:55.473000", datetime(2024, 11, 7, 14, 31, 55, 473000, tzinfo=UTC)),
        ("2024-11-07T14:31:56.053031Z", datetime(2024, 11, 7, 14, 31, 56, 53031, tzinfo=UTC)),
        ("2024-11-07T16:31:56+02:00", datetime(2024, 11, 7, 14, 31, 56, tzinfo=UTC)),
        ({"$date": "2024-11-07T14:31:56Z"}, datetime(2024, 11, 7, 14, 31, 56, tzinfo=UTC)),
        (1730989916, datetime(2024, 11, 7, 14, 31, 56, tzinfo=UTC)),
        (1730989916000, datetime(2024, 11, 7, 14, 31, 56, tzinfo=UTC)),
        (None, None),
        ("", None),
        ("yesterday-ish", None),
        ([1, 2], None),
        (True, None),
        (float("nan"), None),
    ],
)
def test_parse_timestamp(value: object, expected: datetime | None) -> None:
    assert parse_timestamp(value) == expected


def test_garbage_timestamps_do_not_fail_the_model() -> None:
    asset = Asset.from_json({"asset_id": "a", "created_at": "not a date", "updated_at": None})
    assert asset.created_at is None and asset.updated_at is None
    assert Feature.from_json({"feature_id": "f", "created_at": 42.5e99}).created_at is None


def test_unknown_fields_are_kept_and_raw_is_the_source_dict() -> None:
    data = {**FEATURE, "interval_sec": 10, "new_field": {"nested": [1, 2]}}
    feature = Feature.from_json(data)
    assert feature.raw is data
    assert feature.model_extra == {"interval_sec": 10, "new_field": {"nested": [1, 2]}}
    # timestamps in .raw are untouched strings, never re-serialised
    assert feature.raw["created_at"] == "2024-11-07T14:31:56.053031Z"


def test_vectors_are_kept_as_they_came() -> None:
    sparse = {"indices": [1, 5], "values": [0.5, 0.25]}
    data = {"feature_id": "f", "vectors": {"multimodal-v1": [-0.02, 0.02], "splade-v3": sparse}}
    feature = Feature.from_json(data)
    assert feature.vectors == {"multimodal-v1": [-0.02, 0.02], "splade-v3": sparse}
    assert Feature.from_json({"feature_id": "f", "vectors": None}).vectors is None
    assert Feature.from_json({"feature_id": "f"}).vectors is None


def test_feature_tolerates_odd_values() -> None:
    feature = Feature.from_json(
        {"feature_id": 123, "metadata": None, "start_time": "10.0", "end_time": "x", "text": 5}
    )
    assert feature.feature_id == "123"
    assert feature.metadata == {}
    assert feature.start_time == 10.0 and feature.end_time is None
    assert feature.text == "5"


def test_feature_without_id_is_rejected() -> None:
    with pytest.raises(ValueError, match="feature_id"):
        Feature.from_json({"text": "no id"})


STATUSES = [
    ("DONE", TaskOutcome.SUCCEEDED),
    ("COMPLETED", TaskOutcome.SUCCEEDED),
    ("COMPLETED_WITH_ERRORS", TaskOutcome.SUCCEEDED),
    (" done ", TaskOutcome.SUCCEEDED),
    ("Completed", TaskOutcome.SUCCEEDED),
    ("FAILED", TaskOutcome.FAILED),
    ("CANCELLED", TaskOutcome.FAILED),
    ("CANCELED", TaskOutcome.FAILED),
    ("SKIPPED", TaskOutcome.FAILED),
    ("failed", TaskOutcome.FAILED),
    ("INITIALIZING", TaskOutcome.PENDING),
    ("DOWNLOADING", TaskOutcome.PENDING),
    ("UPLOADING", TaskOutcome.PENDING),
    ("PROCESSING", TaskOutcome.PENDING),
    ("QUEUED", TaskOutcome.PENDING),
    ("PENDING", TaskOutcome.PENDING),
    ("CONVERTING", TaskOutcome.PENDING),
    ("IN_PROGRESS", TaskOutcome.PENDING),
    ("UNKNOWN", TaskOutcome.PENDING),
    ("DRAFT", TaskOutcome.PENDING),
    ("EXPIRED_MAYBE", TaskOutcome.PENDING),
    ("", TaskOutcome.PENDING),
    (None, TaskOutcome.PENDING),
]


@pytest.mark.parametrize(("status", "outcome"), STATUSES)
def test_classify_status(status: str | None, outcome: TaskOutcome) -> None:
    assert classify_status(status) is outcome
    task = Task.from_json({"task_id": "t", "status": status})
    assert task.outcome is outcome


@given(st.text())
def test_unknown_statuses_are_never_terminal(status: str) -> None:
    known = {"DONE", "COMPLETED", "COMPLETED_WITH_ERRORS"}
    known |= {"FAILED", "CANCELLED", "CANCELED", "SKIPPED"}
    if status.strip().upper() not in known:
        assert classify_status(status) is TaskOutcome.PENDING


def test_gen_b_task() -> None:
    data = {"asset_id": "a1", "task_id": "t1", "status": "DONE"}
    task = Task.from_json(data)
    assert (task.task_id, task.asset_id, task.status) == ("t1", "a1", "DONE")
    assert task.raw is data


def test_gen_c_task_without_asset_id_keeps_outputs() -> None:
    data = {
        "task_id": "task_123",
        "status": "COMPLETED",
        "inputs": [{"type": "url"}],
        "outputs": [{"asset_id": "ast_1"}],
    }
    task = Task.from_json(data)
    assert task.asset_id is None
    assert task.outcome is TaskOutcome.SUCCEEDED
    assert task.model_extra is not None and task.model_extra["outputs"] == [{"asset_id": "ast_1"}]


def test_task_without_status_is_pending() -> None:
    assert Task.from_json({"task_id": "t"}).outcome is TaskOutcome.PENDING


def test_asset_features_fill_missing_modalities_and_keep_extra() -> None:
    data = {"asset": ASSET, "features": {"text": [FEATURE], "audio": None, "document": []}}
    grouped = AssetFeatures.from_json(data)
    assert set(grouped.features) == {"video", "image", "text", "audio", "document"}
    assert grouped.features["video"] == [] and grouped.features["audio"] == []
    assert [f.feature_id for f in grouped.all_features()] == [FEATURE["feature_id"]]
    assert grouped.raw is data and grouped.raw["features"] == {
        "text": [FEATURE],
        "audio": None,
        "document": [],
    }
    assert grouped.asset.raw is ASSET
    assert grouped.features["text"][0].raw is FEATURE


def test_asset_features_without_features_key() -> None:
    grouped = AssetFeatures.from_json({"asset": {"asset_id": "a"}})
    assert grouped.features == {"video": [], "image": [], "text": [], "audio": []}
    assert grouped.all_features() == []


def test_all_features_order() -> None:
    features = {
        "document": [{"feature_id": "d"}],
        "text": [{"feature_id": "t"}],
        "video": [{"feature_id": "v1"}, {"feature_id": "v2"}],
    }
    grouped = AssetFeatures.from_json({"asset": {"asset_id": "a"}, "features": features})
    assert [f.feature_id for f in grouped.all_features()] == ["v1", "v2", "t", "d"]


def test_index_result_queued() -> None:
    data = {"message": "Video URL processing queued", "task_id": "857056f8"}
    result = IndexResult.from_json(data)
    assert result.task_id == "857056f8" and result.message == data["message"]
    assert result.asset is None and not result.duplicate
    assert result.raw is data


def test_index_result_duplicate_asset() -> None:
    result = IndexResult.from_json(ASSET)
    assert result.duplicate
    assert result.asset is not None and result.asset.asset_id == ASSET["asset_id"]
    assert result.task_id == ASSET["task_id"]
    assert result.raw is ASSET and result.asset.raw is ASSET


def test_page_with_pagination() -> None:
    data = {
        "results": [ASSET, {"asset_id": "b"}],
        "pagination": {
            "total": 3,
            "page": 1,
            "page_size": 2,
            "total_pages": 2,
            "next_page": "https://api.mixpeek.com/assets?page=2&page_size=2",
            "previous_page": None,
        },
    }
    page = Page[Asset].model_validate(data)
    assert [a.asset_id for a in page.results] == [ASSET["asset_id"], "b"]
    assert (page.total, page.page, page.page_size, page.total_pages) == (3, 1, 2, 2)
    assert page.has_next
    assert page.raw is data


def test_page_last_page_by_next_page_null() -> None:
    data = {
        "results": [{"asset_id": "c"}],
        "pagination": {"page": 2, "page_size": 2, "total_pages": 2, "next_page": None},
    }
    assert not Page[Asset].model_validate(data).has_next


def test_page_without_pagination_uses_length() -> None:
    full = {"results": [{"asset_id": "a"}, {"asset_id": "b"}]}
    context = {"page": 1, "page_size": 2}
    assert Page[Asset].model_validate(full, context=context).has_next
    short = {"results": [{"asset_id": "a"}]}
    assert not Page[Asset].model_validate(short, context=context).has_next
    assert not Page[Asset].model_validate({}, context=context).has_next


def test_page_by_totals_when_next_page_absent() -> None:
    data = {"results": [{"asset_id": "a"}], "pagination": {"page": 1, "total_pages": 3}}
    assert Page[Asset].model_validate(data).has_next


def test_page_sets_aside_invalid_items() -> None:
    data = {"results": [{"asset_id": "a"}, {"no_id": True}, "junk"]}
    page = Page[Asset].model_validate(data)
    assert [a.asset_id for a in page.results] == ["a"]
    assert page.invalid_results == [{"no_id": True}, "junk"]


def test_cursor_page_next_cursor() -> None:
    data = {
        "results": [{"feature_id": "f1"}, {"feature_id": "f2"}],
        "pagination": {"total": 5, "page_size": 2, "total_pages": 3, "current_page": 1},
    }
    page = CursorPage.model_validate(data)
    assert page.has_next and page.next_cursor == "f2"
    last = {"results": [{"feature_id": "f5"}], "pagination": {"current_page": 3, "total_pages": 3}}
    assert CursorPage.model_validate(last).next_cursor is None
    assert CursorPage.model_validate({"results": []}).next_cursor is None


def test_asset_features_set_aside_invalid_features() -> None:
    features = {"text": [{"feature_id": "ok"}, {"text": "no id"}], "image": {"weird": True}}
    grouped = AssetFeatures.from_json({"asset": {"asset_id": "a"}, "features": features})
    assert [f.feature_id for f in grouped.all_features()] == ["ok"]
    assert grouped.invalid_features == [{"text": "no id"}, {"weird": True}]
    assert grouped.features["image"] == []
