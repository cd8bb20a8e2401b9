"""Deterministic content of the Mixpeek emulator: pure functions, no server."""

from __future__ import annotations

import itertools
import json
import math
import uuid
from typing import Any

import numpy as np
import pytest

from sync_service.emulator import content
from sync_service.emulator.config import EmulatorConfig
from sync_service.emulator.faults import TokenBucket
from sync_service.emulator.query import matches, search_hit, sort_docs
from sync_service.emulator.records import Task

URL = "https://example.com/videos/a.mp4"


def test_unique_hash_is_sha256_hex() -> None:
    assert content.unique_hash("abc") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )


def test_video_duration_is_stable_and_in_range() -> None:
    durations = {content.video_duration(f"https://example.com/{i}.mp4") for i in range(200)}
    assert all(20.0 <= d <= 120.0 for d in durations)
    assert len(durations) > 100  # spread out, not a constant
    assert content.video_duration(URL) == content.video_duration(URL)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://example.com/a.mp4?duration=35", 35.0),
        ("https://example.com/a.mp4?x=1&duration=7.5", 7.5),
    ],
)
def test_duration_query_parameter_wins(url: str, expected: float) -> None:
    assert content.video_duration(url) == expected


@pytest.mark.parametrize("bad", ["abc", "-3", "0", "nan", "inf"])
def test_bad_duration_parameter_falls_back_to_hash(bad: str) -> None:
    assert 20.0 <= content.video_duration(f"https://example.com/a.mp4?duration={bad}") <= 120.0


def test_segments_cover_the_video_and_cut_the_last_one() -> None:
    assert content.segments(35.0, 10) == [(0.0, 10.0), (10.0, 20.0), (20.0, 30.0), (30.0, 35.0)]
    assert content.segments(30.0, 10) == [(0.0, 10.0), (10.0, 20.0), (20.0, 30.0)]
    assert content.segments(4.0, 10) == [(0.0, 4.0)]
    spans = content.segments(content.video_duration(URL), 7)
    assert spans[0][0] == 0.0 and spans[-1][1] == content.video_duration(URL)
    assert all(prev[1] == nxt[0] for prev, nxt in itertools.pairwise(spans))
    with pytest.raises(ValueError):
        content.segments(10.0, 0)


def test_feature_count_matches_segments() -> None:
    assert content.feature_count("video", "https://example.com/a.mp4?duration=250", 10) == 25
    assert content.feature_count("image", URL, 10) == 1
    assert content.feature_count("text", None, 10) == 1


def test_segment_texts_are_deterministic_and_vary() -> None:
    first = content.video_segment_texts(URL, 0)
    assert first == content.video_segment_texts(URL, 0)
    assert set(first) == {"description", "transcription", "text"}
    assert all(isinstance(v, str) and v for v in first.values())
    variants = {content.video_segment_texts(URL, i)["description"] for i in range(20)}
    assert len(variants) > 1
    image = content.image_texts(URL)
    assert image == content.image_texts(URL) and set(image) == {"description", "text"}


def test_vectors_are_deterministic_unit_float32() -> None:
    vector = content.feature_vector(URL, 3, 1408)
    assert len(vector) == 1408
    assert vector == content.feature_vector(URL, 3, 1408)
    assert vector != content.feature_vector(URL, 4, 1408)
    assert vector != content.feature_vector(URL + "?v=2", 3, 1408)
    assert all(isinstance(x, float) for x in vector)
    assert all(float(np.float32(x)) == x for x in vector)  # exactly representable as float32
    assert math.isclose(
        float(np.linalg.norm(np.array(vector, dtype=np.float64))), 1.0, abs_tol=1e-5
    )
    assert json.loads(json.dumps(vector)) == vector  # JSON round-trips exactly


def test_vector_size_knob() -> None:
    assert len(content.feature_vector("hello", 0, 8)) == 8
    assert EmulatorConfig(vector_size=8).vector_size == 8


@pytest.mark.parametrize(
    ("kind", "check"),
    [
        ("nan", lambda v: len(v) == 16 and sum(math.isnan(x) for x in v) == 1),
        ("inf", lambda v: len(v) == 16 and sum(math.isinf(x) for x in v) == 1),
        ("wrong_length", lambda v: len(v) == 15 and all(math.isfinite(x) for x in v)),
    ],
)
def test_poison_kinds(kind: content.PoisonKind, check: object) -> None:
    good = content.feature_vector("poison", 0, 16)
    assert callable(check) and check(content.poison_vector(good, kind))
    assert all(math.isfinite(x) for x in good)  # the original is left alone


def test_feature_ids_are_stable_uuids() -> None:
    fid = content.feature_id("asset-1", "video", 0)
    assert uuid.UUID(fid).version == 5
    assert fid == content.feature_id("asset-1", "video", 0)
    assert fid != content.feature_id("asset-1", "video", 1)
    assert fid != content.feature_id("asset-2", "video", 0)


def test_task_progression_boundaries() -> None:
    task = Task("t", "a", created=100.0, processing_time=10.0, outcome="done")
    assert [task.status_at(100.0 + dt)[0] for dt in (0, 0.99, 1, 2.99, 3, 9.99, 10, 1e6)] == [
        "INITIALIZING", "INITIALIZING", "DOWNLOADING", "DOWNLOADING",
        "PROCESSING", "PROCESSING", "DONE", "DONE",
    ]  # fmt: skip
    assert Task("t", "a", 0.0, 1.0, "failed").status_at(1.0)[0] == "FAILED"
    assert Task("t", "a", 0.0, 1.0, "stuck").status_at(1e9)[0] == "PROCESSING"


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        EmulatorConfig(fail_rate=1.5)
    with pytest.raises(ValueError):
        EmulatorConfig(vector_size=0)
    with pytest.raises(ValueError):
        EmulatorConfig(fail_rate=0.7, stuck_rate=0.7)
    with pytest.raises(ValueError):
        EmulatorConfig.model_validate({"vectors_param": "sometimes"})
    assert EmulatorConfig(rate_limit=600).effective_burst == 10
    assert EmulatorConfig(rate_limit=30).effective_burst == 1


def test_token_bucket_refills_with_the_clock() -> None:
    now = [0.0]
    bucket = TokenBucket(per_minute=60, burst=2, clock=lambda: now[0])
    assert bucket.take() == 0.0 and bucket.take() == 0.0
    assert bucket.take() == pytest.approx(1.0)
    now[0] = 0.5
    assert bucket.take() == pytest.approx(0.5)
    now[0] = 1.0
    assert bucket.take() == 0.0


def test_filters_search_and_sort() -> None:
    docs: list[dict[str, Any]] = [
        {"status": "DONE", "metadata": {"n": 1, "tag": "cat"}},
        {"status": "FAILED", "metadata": {"n": 2, "tag": "dog"}},
        {"status": "DONE", "metadata": {"n": 3}},
    ]
    done = {"AND": [{"key": "status", "operator": "eq", "value": "DONE"}]}
    assert [d["metadata"]["n"] for d in docs if matches(d, done)] == [1, 3]
    either = {"OR": [{"key": "metadata.tag", "operator": "in", "value": ["dog", "cow"]}]}
    assert [d["metadata"]["n"] for d in docs if matches(d, either)] == [2]
    unknown = {"AND": [{"key": "status", "operator": "regex", "value": "^D"}]}
    assert all(matches(d, unknown) for d in docs)  # ignored, not a crash
    assert search_hit(docs[0], None, "CAT") and not search_hit(docs[0], ["status"], "cat")
    assert [d["metadata"]["n"] for d in sort_docs(docs, "metadata.n", True)] == [3, 2, 1]
