"""The Mixpeek emulator over real HTTP: EmulatorServer on a free port, driven with httpx."""

from __future__ import annotations

import math
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest
import typer
from typer.testing import CliRunner

from sync_service.emulator import EmulatorConfig, EmulatorServer
from sync_service.emulator.command import emulator

AUTH = {"Authorization": "Bearer test-key"}
VIDEO = "https://example.com/clip.mp4?duration=35"


class FakeClock:
    """Injectable clock: tests move time instead of sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


Factory = Callable[..., EmulatorServer]


@pytest.fixture
def start() -> Iterator[Factory]:
    servers: list[EmulatorServer] = []

    def factory(clock: Callable[[], float] = time.monotonic, **knobs: Any) -> EmulatorServer:
        server = EmulatorServer(EmulatorConfig(**knobs), clock=clock)
        server.start()
        servers.append(server)
        return server

    yield factory
    for server in servers:
        server.stop()


def client(server: EmulatorServer, headers: dict[str, str] | None = None) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers=AUTH if headers is None else headers)


def index(http: httpx.Client, url: str = VIDEO, collection: str = "col", **extra: Any) -> str:
    response = http.post(
        "/index/videos/url", json={"url": url, "collection_id": collection, **extra}
    )
    assert response.status_code == 200, response.text
    return str(response.json()["task_id"])


def done_asset(http: httpx.Client, task_id: str, clock: FakeClock) -> str:
    clock.now += 3600  # every task is past its processing time
    task = http.get(f"/tasks/{task_id}").json()
    assert task["status"] == "DONE"
    return str(task["asset_id"])


def assert_envelope(response: httpx.Response, status: int, kind: str) -> dict[str, Any]:
    assert response.status_code == status
    body: dict[str, Any] = response.json()
    assert body["success"] is False and body["status"] == status
    assert body["error"]["type"] == kind and isinstance(body["error"]["message"], str)
    assert "details" in body["error"]
    return body


# -- auth ----------------------------------------------------------------------------------


def test_auth_required_and_healthcheck_open(start: Factory) -> None:
    server = start(api_key="s3cret")
    assert httpx.get(f"{server.url}/healthcheck").json() == {"status": "ok"}
    for headers in ({}, {"Authorization": "Token s3cret"}, {"Authorization": "Bearer"}):
        body = assert_envelope(
            httpx.get(f"{server.url}/collections", headers=headers), 401, "UnauthorizedError"
        )
        assert "API key" in body["error"]["message"]
    wrong = httpx.get(f"{server.url}/collections", headers={"Authorization": "Bearer guess-me"})
    assert "guess-me" not in assert_envelope(wrong, 401, "UnauthorizedError")["error"]["message"]
    ok = httpx.get(
        f"{server.url}/collections",
        headers={"Authorization": "Bearer s3cret", "index-id": "ix", "X-Namespace": "ns"},
    )
    assert ok.status_code == 200


def test_any_bearer_accepted_without_api_key_and_404_envelope(start: Factory) -> None:
    http = client(start())
    assert http.get("/collections").status_code == 200
    assert_envelope(http.get("/tasks/nope"), 404, "NotFoundError")
    assert_envelope(http.get("/assets/nope"), 404, "NotFoundError")
    assert_envelope(http.get("/features/nope"), 404, "NotFoundError")
    assert_envelope(http.get("/no/such/path"), 404, "NotFoundError")


# -- task progression ----------------------------------------------------------------------


def test_progression_in_real_time(start: Factory) -> None:
    http = client(start(processing_time=0.4))
    task_id = index(http)
    seen: list[str] = []
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        status = http.get(f"/tasks/{task_id}").json()["status"]
        if not seen or seen[-1] != status:
            seen.append(status)
        if status == "DONE":
            break
        time.sleep(0.01)
    # Windows are 40/80/280 ms wide: a loaded machine may miss the first one, never most.
    assert seen[0] in ("INITIALIZING", "DOWNLOADING") and seen[-1] == "DONE"
    assert "PROCESSING" in seen and len(seen) >= 3
    order = ["INITIALIZING", "DOWNLOADING", "PROCESSING", "DONE"]
    assert seen == sorted(seen, key=order.index)


def test_progression_with_fake_clock_and_asset_mirrors_task(start: Factory) -> None:
    clock = FakeClock()
    http = client(start(clock=clock, processing_time=10))
    task_id = index(http)
    asset_id = http.get(f"/tasks/{task_id}").json()["asset_id"]
    for offset, status in [(0.5, "INITIALIZING"), (1, "DOWNLOADING"), (3, "PROCESSING")]:
        clock.now = 1000.0 + offset
        assert http.get(f"/tasks/{task_id}").json()["status"] == status
        assert http.get(f"/assets/{asset_id}").json()["status"] == status
        features = http.get(f"/assets/{asset_id}/features").json()["features"]
        assert features == {"video": [], "image": [], "text": [], "audio": []}
    clock.now = 1010.0
    assert http.get(f"/tasks/{task_id}").json()["status"] == "DONE"
    asset = http.get(f"/assets/{asset_id}").json()
    assert asset["status"] == "DONE" and asset["error"] is None
    assert len(http.get(f"/assets/{asset_id}/features").json()["features"]["video"]) == 4


def test_fail_rate_sets_asset_error(start: Factory) -> None:
    clock = FakeClock()
    http = client(start(clock=clock, fail_rate=1.0))
    for path, body in [
        ("/index/videos/url", {"url": VIDEO}),
        ("/index/images/url", {"url": "https://example.com/p.png"}),
        ("/index/text", {"text": "hello"}),
    ]:
        task_id = http.post(path, json={**body, "collection_id": "c"}).json()["task_id"]
        clock.now += 100
        task = http.get(f"/tasks/{task_id}").json()
        assert task["status"] == "FAILED"
        grouped = http.get(f"/assets/{task['asset_id']}/features").json()
        assert grouped["asset"]["status"] == "FAILED"
        assert "failed" in grouped["asset"]["error"]
        assert all(v == [] for v in grouped["features"].values())


def test_stuck_tasks_stay_processing(start: Factory) -> None:
    clock = FakeClock()
    http = client(start(clock=clock, stuck_rate=1.0))
    task_id = index(http)
    clock.now += 1e6
    assert http.get(f"/tasks/{task_id}").json()["status"] == "PROCESSING"


def test_cancel_task(start: Factory) -> None:
    clock = FakeClock()
    http = client(start(clock=clock))
    task_id = index(http)
    response = http.delete(f"/tasks/{task_id}")
    assert response.json() == {"message": f"Task {task_id} has been successfully canceled"}
    clock.now += 100
    task = http.get(f"/tasks/{task_id}").json()
    assert task["status"] == "CANCELLED"
    assert http.get(f"/assets/{task['asset_id']}/features").json()["features"]["video"] == []


# -- content, determinism, shapes ---------------------------------------------------------


def snapshot(server: EmulatorServer, clock: FakeClock) -> dict[str, Any]:
    http = client(server)
    task_ids = [index(http), index(http, "https://example.com/other.mp4?duration=12")]
    clock.now += 100
    asset_ids = [http.get(f"/tasks/{t}").json()["asset_id"] for t in task_ids]
    features = http.post("/features", json={"collection_ids": ["col"]}).json()["results"]
    vectors = [
        http.get(f"/features/{f['feature_id']}", params={"include_vectors": True}).json()
        for f in features
    ]
    return {
        "ids": task_ids + asset_ids + [f["feature_id"] for f in features],
        "content": [
            {k: v for k, v in f.items() if k not in ("feature_id", "asset_id")} for f in features
        ],
        "vectors": [v["vectors"]["multimodal-v1"] for v in vectors],
    }


def test_same_seed_same_everything_other_seed_same_content(start: Factory) -> None:
    runs = []
    for seed in (7, 7, 8):
        clock = FakeClock()
        runs.append(snapshot(start(clock=clock, seed=seed), clock))
    first, same, other = runs
    assert first["ids"] == same["ids"] and first["vectors"] == same["vectors"]
    assert set(first["ids"]).isdisjoint(other["ids"])
    assert first["vectors"] == other["vectors"]  # content is a function of the URL only
    strip = [{k: v for k, v in c.items() if k != "created_at"} for c in first["content"]]
    assert strip == [{k: v for k, v in c.items() if k != "created_at"} for c in other["content"]]
    assert len(first["ids"]) == len(set(first["ids"]))


def test_modalities_and_feature_shapes(start: Factory) -> None:
    clock = FakeClock()
    http = client(start(clock=clock))
    meta = {"author": "user"}
    video = index(http, metadata=meta)
    image = http.post(
        "/index/images/url", json={"url": "https://example.com/p.png", "collection_id": "col"}
    ).json()
    assert image["message"] == "Image URL processing queued"
    text = http.post(
        "/index/text", json={"text": "two people inside a car", "collection_id": "col"}
    )
    assert text.json()["message"] == "Text processing queued"
    clock.now += 100

    grouped = http.get(f"/assets/{done_asset(http, video, clock)}/features").json()
    assert set(grouped["features"]) == {"video", "image", "text", "audio"}
    segments = grouped["features"]["video"]
    assert [(s["start_time"], s["end_time"]) for s in segments] == [
        (0.0, 10.0), (10.0, 20.0), (20.0, 30.0), (30.0, 35.0),
    ]  # fmt: skip
    for segment in segments:
        assert segment["metadata"] == meta and segment["interval_sec"] == 10
        assert segment["modality"] == "video" and segment["collection_id"] == "col"
        assert {"description", "transcription", "text"} <= set(segment)
        assert "vectors" not in segment

    image_asset = done_asset(http, image["task_id"], clock)
    image_features = http.get(f"/assets/{image_asset}/features").json()["features"]
    assert len(image_features["image"]) == 1 and image_features["image"][0]["description"]
    text_grouped = http.get(f"/assets/{done_asset(http, text.json()['task_id'], clock)}/features")
    body = text_grouped.json()
    assert body["asset"]["url"] is None and body["asset"]["modality"] == "text"
    assert [f["text"] for f in body["features"]["text"]] == ["two people inside a car"]
    assert body["features"]["video"] == body["features"]["audio"] == []


def test_asset_shape_and_timestamps(start: Factory) -> None:
    clock = FakeClock()
    http = client(start(clock=clock))
    asset_id = done_asset(http, index(http), clock)
    asset = http.get(f"/assets/{asset_id}").json()
    assert set(asset) == {
        "asset_id", "collection_id", "status", "url", "metadata", "error", "modality",
        "task_id", "unique_hash", "created_at", "updated_at", "score",
    }  # fmt: skip
    assert asset["score"] is None and asset["url"] == VIDEO and len(asset["unique_hash"]) == 64
    for key in ("created_at", "updated_at"):
        assert not asset[key].endswith("Z")
        assert datetime.fromisoformat(asset[key]).tzinfo is None
    assert asset["updated_at"] > asset["created_at"]
    feature = http.get(f"/assets/{asset_id}/features").json()["features"]["video"][0]
    assert feature["created_at"].endswith("Z")
    datetime.fromisoformat(feature["created_at"])


# -- vectors -------------------------------------------------------------------------------


def first_feature(http: httpx.Client, clock: FakeClock) -> str:
    asset_id = done_asset(http, index(http), clock)
    return str(
        http.get(f"/assets/{asset_id}/features").json()["features"]["video"][0]["feature_id"]
    )


def test_vectors_only_on_request(start: Factory) -> None:
    clock = FakeClock()
    server = start(clock=clock, vector_size=32)
    http = client(server)
    fid = first_feature(http, clock)
    assert "vectors" not in http.get(f"/features/{fid}").json()
    assert "vectors" not in http.get(f"/features/{fid}", params={"include_vectors": False}).json()
    for flag in ("include_vectors", "return_vectors"):
        vectors = http.get(f"/features/{fid}", params={flag: "true"}).json()["vectors"]
        assert list(vectors) == ["multimodal-v1"] and len(vectors["multimodal-v1"]) == 32
        assert math.isclose(
            math.sqrt(sum(x * x for x in vectors["multimodal-v1"])), 1, rel_tol=1e-5
        )
    stats = httpx.get(f"{server.url}/_emulator/stats").json()
    assert stats["vector_fetches"] == {fid: 2}


@pytest.mark.parametrize(
    ("mode", "include", "returned"),
    [("both", True, True), ("include_vectors", True, False), ("return_vectors", False, True)],
)
def test_vectors_param_variants(start: Factory, mode: str, include: bool, returned: bool) -> None:
    clock = FakeClock()
    http = client(start(clock=clock, vectors_param=mode, vector_size=4))
    fid = first_feature(http, clock)
    by_include = http.get(f"/features/{fid}", params={"include_vectors": "true"}).json()
    by_return = http.get(f"/features/{fid}", params={"return_vectors": "true"}).json()
    assert ("vectors" in by_include) is include
    assert ("vectors" in by_return) is returned


def test_extra_named_vectors_carry_the_same_meaning(start: Factory) -> None:
    clock = FakeClock()
    server = start(clock=clock, vector_size=64, extra_vectors={"clip-v1": 48})
    http = client(server)
    fid = first_feature(http, clock)
    feature = http.get(f"/features/{fid}", params={"include_vectors": "true"}).json()
    vectors = feature["vectors"]
    assert {k: len(v) for k, v in vectors.items()} == {"multimodal-v1": 64, "clip-v1": 48}
    words = "\n".join(feature[k] for k in ("description", "transcription", "text"))
    for name, vector in vectors.items():
        query = http.post(
            "/features/extractors/embed",
            json={"type": "text", "value": words, "embedding_model": name},
        ).json()["embedding"]
        # The feature's vector is its text's, plus a little noise.
        assert sum(a * b for a, b in zip(query, vector, strict=True)) > 0.95


def test_embed_endpoint(start: Factory) -> None:
    http = client(start(vector_size=16))
    answer = http.post("/features/extractors/embed", json={"value": "a red panda"})
    assert answer.status_code == 200
    body = answer.json()
    assert len(body["embedding"]) == 16 and body["elapsed_time"] >= 0
    # B' named the vector vector_index; the later SDKs embedding_model: both are read.
    same = http.post(
        "/features/extractors/embed", json={"value": "a red panda", "vector_index": "multimodal-v1"}
    ).json()
    assert same["embedding"] == body["embedding"]
    unknown = http.post(
        "/features/extractors/embed", json={"value": "x", "embedding_model": "clip-v1"}
    )
    assert_envelope(unknown, 400, "BadRequestError")
    assert "unknown embedding model 'clip-v1'" in unknown.text
    assert http.post("/features/extractors/embed", json={"value": ""}).status_code == 422


def test_random_vector_kind_cannot_embed(start: Factory) -> None:
    http = client(start(vector_kind="random"))
    answer = http.post("/features/extractors/embed", json={"value": "a red panda"})
    assert_envelope(answer, 400, "BadRequestError")


def test_poisoned_features_are_listed_and_served(start: Factory) -> None:
    clock = FakeClock()
    server = start(clock=clock, poison_rate=1.0, vector_size=16)
    http = client(server)
    asset_id = done_asset(http, index(http), clock)
    stats = httpx.get(f"{server.url}/_emulator/stats").json()
    features = http.get(f"/assets/{asset_id}/features").json()["features"]["video"]
    assert stats["poisoned_features"] == [f["feature_id"] for f in features]
    kinds = []
    for fid in stats["poisoned_features"][:3]:
        vector = http.get(f"/features/{fid}", params={"include_vectors": 1}).json()["vectors"]
        values = vector["multimodal-v1"]
        if len(values) != 16:
            kinds.append("wrong_length")
        elif any(math.isnan(x) for x in values):
            kinds.append("nan")
        elif any(math.isinf(x) for x in values):
            kinds.append("inf")
    assert kinds == ["nan", "inf", "wrong_length"]


# -- writes, duplicates, deletes ----------------------------------------------------------


def test_prevent_duplicate_returns_the_existing_asset(start: Factory) -> None:
    http = client(start())
    first = index(http)
    asset_id = http.get(f"/tasks/{first}").json()["asset_id"]
    duplicate = http.post(
        "/index/videos/url", json={"url": VIDEO, "collection_id": "col", "prevent_duplicate": True}
    ).json()
    assert (
        "task_id" in duplicate and duplicate["asset_id"] == asset_id and "message" not in duplicate
    )
    assert index(http) != first  # without the flag it indexes again
    other = {"url": VIDEO, "collection_id": "col", "prevent_duplicate": True,
             "video_settings": [{"interval_sec": 5}]}  # fmt: skip
    assert "message" in http.post("/index/videos/url", json=other).json()


def test_update_asset_and_feature_metadata(start: Factory) -> None:
    clock = FakeClock()
    http = client(start(clock=clock))
    asset_id = done_asset(http, index(http, metadata={"a": 1}), clock)
    patched = http.patch(f"/assets/{asset_id}", json={"metadata": {"b": 2}}).json()
    assert patched["metadata"] == {"a": 1, "b": 2}
    features = http.get(f"/assets/{asset_id}/features").json()["features"]["video"]
    assert features[0]["metadata"] == {"a": 1}
    body = {"metadata": {"c": 3}, "propagate_features": True}
    assert http.put(f"/assets/{asset_id}", json=body).json()["metadata"] == {"c": 3}
    features = http.get(f"/assets/{asset_id}/features").json()["features"]["video"]
    assert all(f["metadata"] == {"c": 3} for f in features)
    fid = features[0]["feature_id"]
    assert http.put(f"/features/{fid}", json={"metadata": {"d": 4}}).json()["metadata"] == {"d": 4}
    assert http.put(f"/features/{fid}", json={}).status_code == 422


def test_deletes_then_404(start: Factory) -> None:
    clock = FakeClock()
    http = client(start(clock=clock))
    asset_id = done_asset(http, index(http), clock)
    fids = [
        f["feature_id"]
        for f in http.get(f"/assets/{asset_id}/features").json()["features"]["video"]
    ]
    assert http.delete(f"/features/{fids[0]}").json() == {"message": f"Feature {fids[0]} deleted"}
    assert_envelope(http.get(f"/features/{fids[0]}"), 404, "NotFoundError")
    assert len(http.get(f"/assets/{asset_id}/features").json()["features"]["video"]) == 3
    assert http.delete(f"/assets/{asset_id}").json() == {"message": f"Asset {asset_id} deleted"}
    assert_envelope(http.get(f"/assets/{asset_id}"), 404, "NotFoundError")
    assert_envelope(http.get(f"/features/{fids[1]}"), 404, "NotFoundError")

    other = done_asset(http, index(http, collection="gone"), clock)
    assert http.delete("/collections/gone").status_code == 200
    assert_envelope(http.get(f"/assets/{other}"), 404, "NotFoundError")
    assert [c["collection_id"] for c in http.get("/collections").json()["results"]] == ["col"]
    assert_envelope(http.delete("/collections/gone"), 404, "NotFoundError")


# -- listing and pagination ----------------------------------------------------------------


def test_page_pagination_filters_and_search(start: Factory) -> None:
    http = client(start())
    for i in range(25):
        body = {"text": f"note {i}", "collection_id": "notes", "metadata": {"i": i, "odd": i % 2}}
        assert http.post("/index/text", json=body).status_code == 200
    first = http.post("/assets", params={"page_size": 10}, json={"collection_ids": ["notes"]})
    page = first.json()["pagination"]
    assert page["total"] == 25 and page["total_pages"] == 3 and page["page"] == 1
    assert page["previous_page"] is None and page["next_page"].startswith(str(http.base_url))
    seen = [a["metadata"]["i"] for a in first.json()["results"]]
    url = page["next_page"]
    while url:
        body = http.post(url, json={"collection_ids": ["notes"]}).json()
        assert body["pagination"]["previous_page"] is not None
        seen += [a["metadata"]["i"] for a in body["results"]]
        url = body["pagination"]["next_page"]
    assert seen == list(range(25))

    odd = {"collection_ids": ["notes"], "filters": {"AND": [
        {"key": "metadata.odd", "operator": "eq", "value": 1},
        {"key": "status", "operator": "what", "value": "x"}]}}  # fmt: skip
    assert (
        http.post("/assets", json=odd, params={"page_size": 100}).json()["pagination"]["total"]
        == 12
    )
    search = {"collection_ids": ["notes"], "query": {"key": "*", "value": "NOTE 1"}}
    hits = http.post("/assets/search", json=search).json()
    assert hits["pagination"]["total"] == 11  # note 1 and note 10..19
    assert (
        http.post(
            "/assets", json={"collection_ids": ["notes"]}, params={"page_size": 101}
        ).status_code
        == 422
    )
    collections = http.get("/collections").json()
    assert collections["results"][0]["collection_id"] == "notes"
    assert collections["results"][0]["count"] == 25
    assert set(collections["pagination"]) == {
        "total",
        "page",
        "page_size",
        "total_pages",
        "next_page",
        "previous_page",
    }


def test_cursor_pagination_over_25_features(start: Factory) -> None:
    clock = FakeClock()
    http = client(start(clock=clock))
    asset_id = done_asset(http, index(http, "https://example.com/long.mp4?duration=250"), clock)
    expected = [
        f["feature_id"]
        for f in http.get(f"/assets/{asset_id}/features").json()["features"]["video"]
    ]
    assert len(expected) == 25
    body = http.post("/features", params={"page_size": 10}, json={"collection_ids": ["col"]}).json()
    pages = [body["pagination"]]
    seen = [f["feature_id"] for f in body["results"]]
    while body["pagination"]["next_page"]:
        body = http.post(body["pagination"]["next_page"], json={"collection_ids": ["col"]}).json()
        pages.append(body["pagination"])
        seen += [f["feature_id"] for f in body["results"]]
    assert seen == expected
    assert [p["current_page"] for p in pages] == [1, 2, 3]
    assert all(
        p["total"] == 25 and p["total_pages"] == 3 and p["previous_page"] is None for p in pages
    )
    assert "page" not in pages[0]
    assert f"offset_feature_id={expected[9]}" in pages[0]["next_page"]


# -- faults and controls -------------------------------------------------------------------


def test_error_rate_answers_5xx_envelope(start: Factory) -> None:
    server = start(error_rate=1.0)
    http = client(server)
    statuses = set()
    for _ in range(20):
        response = http.get("/collections")
        assert response.status_code in (500, 502, 503)
        body = response.json()
        assert body["success"] is False and body["status"] == response.status_code
        assert body["error"]["type"] in ("InternalServerError", "ServiceUnavailableError")
        statuses.add(response.status_code)
    assert len(statuses) > 1
    assert httpx.get(f"{server.url}/healthcheck").status_code == 200
    assert httpx.get(f"{server.url}/_emulator/stats").status_code == 200


def test_rate_limit_429_with_both_retry_after_styles(start: Factory) -> None:
    server = start(rate_limit=60)  # burst 1, one token per second
    http = client(server)
    limited = [r for r in (http.get("/collections") for _ in range(30)) if r.status_code == 429]
    assert len(limited) >= 25
    with_header = [r for r in limited if "retry-after" in r.headers]
    assert with_header and len(with_header) < len(limited)
    for response in limited:
        body = assert_envelope(response, 429, "TooManyRequestsError")
        retry_after = body["error"]["details"]["retry_after"]
        assert 0 < retry_after <= 1.0
        if "retry-after" in response.headers:
            assert int(response.headers["retry-after"]) == max(1, math.ceil(retry_after))
    stats = httpx.get(f"{server.url}/_emulator/stats").json()
    assert stats["rate_limited"] == len(limited)
    assert stats["requests"]["GET /collections"]["429"] == len(limited)
    assert httpx.get(f"{server.url}/healthcheck").status_code == 200


def test_latency_knob(start: Factory) -> None:
    # 1 s: the health check (no latency) must answer well inside it even on a loaded machine
    # (with 0.2 s, a fresh connection there once took 0.21 s in CI).
    server = start(latency=1.0)
    http = client(server)
    began = time.monotonic()
    assert http.get("/collections").status_code == 200
    assert time.monotonic() - began >= 1.0
    began = time.monotonic()
    assert httpx.get(f"{server.url}/healthcheck").status_code == 200
    assert time.monotonic() - began < 1.0


def test_stats_by_route_template_and_reset(start: Factory) -> None:
    server = start()
    http = client(server)
    http.get("/tasks/a")
    http.get("/tasks/b")
    http.get("/tasks/c", headers={"Authorization": ""})
    index(http)
    http.post("/index/videos/url", json={"url": "ftp://nope", "collection_id": "c"})
    stats = httpx.get(f"{server.url}/_emulator/stats").json()
    assert stats["requests"] == {
        "GET /tasks/{task_id}": {"404": 2, "401": 1},
        "POST /index/videos/url": {"200": 1, "422": 1},
    }
    assert stats["total"] == 5 and stats["rate_limited"] == 0
    assert server.state.stats.snapshot()["total"] == 5
    assert httpx.post(f"{server.url}/_emulator/stats/reset").status_code == 200
    stats = httpx.get(f"{server.url}/_emulator/stats").json()
    assert stats["requests"] == {} and stats["total"] == 0 and stats["vector_fetches"] == {}


def test_patch_config_at_runtime(start: Factory) -> None:
    server = start()
    http = client(server)
    assert http.get("/collections").status_code == 200
    patched = httpx.patch(f"{server.url}/_emulator/config", json={"error_rate": 1.0})
    assert patched.status_code == 200
    assert patched.json()["error_rate"] == 1.0 and patched.json()["vector_size"] == 1408
    assert http.get("/collections").status_code >= 500
    httpx.patch(f"{server.url}/_emulator/config", json={"error_rate": 0})
    assert http.get("/collections").status_code == 200
    for bad in ({"error_rate": 2}, {"no_such_knob": 1}, {"vectors_param": "x"}):
        assert httpx.patch(f"{server.url}/_emulator/config", json=bad).status_code == 422
    assert server.update_config(api_key="k").api_key == "k"
    assert http.get("/collections").status_code == 401


def test_validation_errors_are_fastapi_422(start: Factory) -> None:
    http = client(start())
    for body in (
        {"url": "ftp://example.com/a.mp4", "collection_id": "c"},
        {"url": "not a url", "collection_id": "c"},
        {"url": VIDEO},
        {"url": VIDEO, "collection_id": "c", "video_settings": [{"interval_sec": 4}]},
        {"url": VIDEO, "collection_id": "c", "video_settings": [{"interval_sec": 120}]},
    ):
        response = http.post("/index/videos/url", json=body)
        assert response.status_code == 422, body
        assert {"loc", "msg", "type"} <= set(response.json()["detail"][0])
    assert (
        http.post("/index/images/url", json={"url": "file:///x", "collection_id": "c"}).status_code
        == 422
    )


# -- command line --------------------------------------------------------------------------


def test_command_rejects_bad_knobs() -> None:
    app = typer.Typer()
    app.command()(emulator)
    result = CliRunner().invoke(app, ["--port", "0", "--fail-rate", "2"])
    assert result.exit_code == 2


def test_command_prints_url_and_serves() -> None:
    code = (
        "import typer; from sync_service.emulator.command import emulator; "
        "app = typer.Typer(); app.command()(emulator); app()"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code, "--port", "0", "--processing-time", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        assert line.startswith("Mixpeek emulator listening on http://127.0.0.1:")
        url = line.rsplit(" ", 1)[1]
        assert not url.endswith(":0")
        assert httpx.get(f"{url}/healthcheck").json() == {"status": "ok"}
        assert httpx.get(f"{url}/collections", headers=AUTH).status_code == 200
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert process.returncode == 0
    assert process.stdout.read() == ""
