"""Upstream changes after indexing, over real HTTP: re-indexing, bulk seeding, deletion."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from sync_service.emulator import EmulatorConfig, EmulatorServer
from tests.conftest import API_KEY
from tests.support import ok

MODES = ("vectors", "payload", "features", "all")
Snapshot = dict[str, tuple[dict[str, Any], list[float]]]  # feature id -> (doc, vector)


def snapshot(http: httpx.Client, asset_id: str) -> Snapshot:
    """Every feature of the asset as listed, with the vector GET /features returns."""
    grouped = ok(http.get(f"/assets/{asset_id}/features"))["features"]
    result: Snapshot = {}
    for doc in (doc for docs in grouped.values() for doc in docs):
        full = ok(http.get(f"/features/{doc['feature_id']}", params={"include_vectors": "true"}))
        vector = full.pop("vectors")["multimodal-v1"]
        assert full == doc  # the single-feature route agrees with the asset's listing
        result[doc["feature_id"]] = (doc, vector)
    return result


def wait_done(http: httpx.Client, task_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        task: dict[str, Any] = ok(http.get(f"/tasks/{task_id}"))
        if task["status"] == "DONE":
            return task
        time.sleep(0.05)
    raise AssertionError(f"task {task_id} never finished")


def list_page(http: httpx.Client, collection_id: str, page: int, page_size: int = 100) -> Any:
    params = {"page": page, "page_size": page_size}
    return ok(http.post("/assets", params=params, json={"collection_ids": [collection_id]}))


def list_all(http: httpx.Client, collection_id: str) -> list[str]:
    """Every asset id of the collection, walking pages of 100 until ``next_page`` is null."""
    ids: list[str] = []
    page = 1
    while True:
        body = list_page(http, collection_id, page)
        ids += [asset["asset_id"] for asset in body["results"]]
        if body["pagination"]["next_page"] is None:
            return ids
        page += 1


# -- re-indexing ----------------------------------------------------------------------------


@pytest.mark.parametrize("modality", ["video", "image", "text"])
@pytest.mark.parametrize("mode", MODES)
def test_reindex_changes_what_the_mode_says(
    emulator: EmulatorServer, http: httpx.Client, mode: str, modality: str
) -> None:
    (asset_id,) = emulator.seed("col", 1, modality, duration=35)["asset_ids"]
    before = snapshot(http, asset_id)
    assert len(before) == (4 if modality == "video" else 1)
    asset_before = ok(http.get(f"/assets/{asset_id}"))

    answer = emulator.reindex(asset_id, mode)
    assert answer["asset_id"] == asset_id and answer["generation"] == 1
    after = snapshot(http, asset_id)

    removed, added = before.keys() - after.keys(), after.keys() - before.keys()
    if mode in ("features", "all"):
        assert removed and added
        for feature_id in removed:
            assert http.get(f"/features/{feature_id}").status_code == 404
        for feature_id in added:  # born in the new generation
            assert after[feature_id][0]["metadata"] == {"reindex_generation": 1}
    else:
        assert not removed and not added
    for feature_id in before.keys() & after.keys():
        (doc_before, vector_before), (doc_after, vector_after) = (
            before[feature_id],
            after[feature_id],
        )
        assert (vector_before != vector_after) == (mode in ("vectors", "all"))
        assert (doc_before != doc_after) == (mode in ("payload", "all"))
        if mode in ("payload", "all"):
            changed = {key for key in doc_after if doc_after[key] != doc_before.get(key)}
            assert changed == {"metadata", "text" if modality == "text" else "description"}
            assert doc_after["metadata"] == {"reindex_generation": 1}
            assert "generation 1" in doc_after["description" if modality != "text" else "text"]

    asset_after = ok(http.get(f"/assets/{asset_id}"))
    assert asset_after["updated_at"] > asset_before["updated_at"]
    assert asset_after["task_id"] == answer["task_id"] != asset_before["task_id"]
    assert asset_after["created_at"] == asset_before["created_at"]


def test_reindex_task_is_trackable_and_generations_count(
    emulator: EmulatorServer, http: httpx.Client
) -> None:
    task_id = ok(http.post("/index/text", json={"text": "a cat", "collection_id": "c"}))["task_id"]
    asset_id = wait_done(http, task_id)["asset_id"]
    first = snapshot(http, asset_id)

    emulator.update_config(processing_time=1.0)
    answer = emulator.reindex(asset_id, "payload")
    task = ok(http.get(f"/tasks/{answer['task_id']}"))
    assert task["asset_id"] == asset_id and task["status"] != "DONE"
    # The new generation is served at once, before the task is DONE (documented choice).
    assert snapshot(http, asset_id) != first
    assert wait_done(http, answer["task_id"])["asset_id"] == asset_id
    assert ok(http.get(f"/assets/{asset_id}"))["status"] == "DONE"

    emulator.update_config(processing_time=0.0)
    second = emulator.reindex(asset_id, "vectors")
    assert second["generation"] == 2
    assert ok(http.get(f"/tasks/{second['task_id']}"))["status"] == "DONE"


def test_reindex_is_deterministic() -> None:
    def run() -> list[Snapshot]:
        config = EmulatorConfig(api_key=API_KEY, seed=7, processing_time=0.0)
        with (
            EmulatorServer(config) as server,
            httpx.Client(
                base_url=server.url, headers={"Authorization": f"Bearer {API_KEY}"}
            ) as http,
        ):
            ids = server.seed("col", 3, "video", duration=25)["asset_ids"]
            server.reindex(ids[0], "all")
            server.reindex(ids[0], "features")
            server.reindex(ids[1], "vectors")
            return [snapshot(http, asset_id) for asset_id in ids]

    first, second = run(), run()
    assert [sorted(s) for s in first] == [sorted(s) for s in second]
    for a, b in zip(first, second, strict=True):
        for feature_id, (doc, vector) in a.items():
            other_doc, other_vector = b[feature_id]
            assert vector == other_vector
            assert {k: v for k, v in doc.items() if k != "created_at"} == {
                k: v for k, v in other_doc.items() if k != "created_at"
            }


def test_reindex_errors(emulator: EmulatorServer, http: httpx.Client) -> None:
    url = f"{emulator.url}/_emulator/assets/nope/reindex"
    assert httpx.post(url, json={"mode": "all"}).status_code == 404
    task_id = ok(http.post("/index/text", json={"text": "slow", "collection_id": "c"}))["task_id"]
    asset_id = ok(http.get(f"/tasks/{task_id}"))["asset_id"]
    route = f"{emulator.url}/_emulator/assets/{asset_id}/reindex"
    assert httpx.post(route, json={"mode": "all"}).status_code == 409  # no features yet
    wait_done(http, task_id)
    assert httpx.post(route, json={"mode": "everything"}).status_code == 422
    assert httpx.post(route, json={"mode": "all", "typo": 1}).status_code == 422
    assert httpx.post(route).json()["generation"] == 1  # no body: mode "all"


# -- seeding and listing ----------------------------------------------------------------------


def test_seed_1000_assets_then_list_them_all(emulator: EmulatorServer, http: httpx.Client) -> None:
    started = time.monotonic()
    seeded = emulator.seed("big", 1000)
    assert time.monotonic() - started < 3.0
    asset_ids, task_ids = seeded["asset_ids"], seeded["task_ids"]
    assert len(set(asset_ids)) == len(set(task_ids)) == 1000

    first = list_page(http, "big", 1)
    assert first["pagination"]["total"] == 1000 and first["pagination"]["total_pages"] == 10
    assert all(asset["status"] == "DONE" for asset in first["results"])
    listed = list_all(http, "big")
    assert len(listed) == len(set(listed)) == 1000 and set(listed) == set(asset_ids)
    beyond = list_page(http, "big", 11)
    assert beyond["results"] == [] and beyond["pagination"]["total"] == 1000

    for task_id, asset_id in zip(task_ids[::250], asset_ids[::250], strict=True):
        assert ok(http.get(f"/tasks/{task_id}")) == {
            "asset_id": asset_id,
            "task_id": task_id,
            "status": "DONE",
        }
    features = ok(http.post("/features", json={"collection_ids": ["big"]}))
    assert features["pagination"]["total"] == 3000  # 30 s at 10 s a segment


INDEX_PATHS = {"video": "/index/videos/url", "image": "/index/images/url", "text": "/index/text"}
PER_ASSET = {"feature_id", "asset_id", "collection_id", "created_at"}


def content_of(snap: Snapshot) -> list[tuple[dict[str, Any], list[float]]]:
    """The features without what differs between two assets of the same content."""
    return [
        ({k: v for k, v in doc.items() if k not in PER_ASSET}, vector)
        for doc, vector in snap.values()
    ]


@pytest.mark.parametrize("modality", ["video", "image", "text"])
def test_seeded_content_is_what_a_submission_gets(
    emulator: EmulatorServer, http: httpx.Client, modality: str
) -> None:
    (seeded_id,) = emulator.seed("seeded", 1, modality)["asset_ids"]
    seeded = ok(http.get(f"/assets/{seeded_id}/features"))
    body: dict[str, Any] = {"collection_id": "submitted"}
    if modality == "text":
        body["text"] = seeded["features"]["text"][0]["text"]
    else:
        body["url"] = seeded["asset"]["url"]
    task_id = ok(http.post(INDEX_PATHS[modality], json=body))["task_id"]
    submitted_id = wait_done(http, task_id)["asset_id"]
    assert content_of(snapshot(http, seeded_id)) == content_of(snapshot(http, submitted_id))


# -- deletion ---------------------------------------------------------------------------------


def test_deleted_asset_is_gone_from_every_route(
    emulator: EmulatorServer, http: httpx.Client
) -> None:
    keep, doomed, other = emulator.seed("col", 3)["asset_ids"]
    original = set(snapshot(http, doomed))
    emulator.reindex(doomed, "features")  # so a feature added by a re-index goes too
    feature_ids = original | set(snapshot(http, doomed))
    assert len(feature_ids) == 4

    ok(http.delete(f"/assets/{doomed}"))
    assert http.get(f"/assets/{doomed}").status_code == 404
    assert http.get(f"/assets/{doomed}/features").status_code == 404
    assert http.patch(f"/assets/{doomed}", json={"metadata": {"a": 1}}).status_code == 404
    assert http.delete(f"/assets/{doomed}").status_code == 404
    for feature_id in feature_ids:
        assert http.get(f"/features/{feature_id}").status_code == 404
    reindex = httpx.post(f"{emulator.url}/_emulator/assets/{doomed}/reindex", json={})
    assert reindex.status_code == 404

    assert sorted(list_all(http, "col")) == sorted([keep, other])
    search = {"collection_ids": ["col"], "query": {"value": "seed"}}
    found = ok(http.post("/assets/search", json=search))["results"]
    assert {asset["asset_id"] for asset in found} == {keep, other}
    listed = ok(http.post("/features", params={"page_size": 100}, json={"collection_ids": ["col"]}))
    assert {f["asset_id"] for f in listed["results"]} == {keep, other}
    assert not feature_ids & {f["feature_id"] for f in listed["results"]}
    # A cursor on a deleted feature still pages on (clients may hold one).
    cursor = {"offset_feature_id": sorted(original)[0]}
    assert (
        http.post("/features", params=cursor, json={"collection_ids": ["col"]}).status_code == 200
    )
    collections = ok(http.get("/collections"))["results"]
    assert [c["count"] for c in collections if c["collection_id"] == "col"] == [2]
