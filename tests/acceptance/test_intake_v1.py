"""Work intake on v1 with the real ``sync-service`` over real HTTP to the v1 emulator.

``submit`` of several items makes one batch (one task); the emulator's ``hybrid_extractor_v1``
declares a dense, a sparse and a multi-dense vector index, which must land as a dense vector, a
Qdrant sparse vector and a multivector (MAX_SIM). ``track`` takes a batch id as well as a task
id, a task that expired upstream is followed through its batch, and a COMPLETED_WITH_ERRORS
batch syncs what it made and reports the object that made nothing (README "Mixpeek v1").
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from qdrant_client import QdrantClient, models

from sync_service.emulator import library
from sync_service.emulator.library import video_url
from sync_service.emulator.v1.config import V1Config
from sync_service.emulator.v1.server import V1EmulatorServer
from tests.conftest import API_KEY
from tests.harness import Service

DENSE = "hybrid_extractor_v1_dense_embedding"
SPARSE = "hybrid_extractor_v1_sparse_embedding"
MULTI = "hybrid_extractor_v1_late_interaction_embedding"
MM = "multimodal_extractor_v1_multimodal_embedding"
SMALL = {DENSE: 8, MULTI: 4, MM: 8}


@pytest.fixture
def emulator() -> Iterator[V1EmulatorServer]:
    config = V1Config(api_key=API_KEY, processing_time=0.5, seed=5, vector_dimensions=SMALL)
    with V1EmulatorServer(config) as server:
        yield server


class World:
    def __init__(self, server: V1EmulatorServer, extractor: str) -> None:
        headers = {"Authorization": f"Bearer {API_KEY}", "X-Namespace": "default"}
        self.server = server
        self.http = httpx.Client(base_url=server.url, headers=headers, timeout=30)
        # The bucket declares its properties: submit puts each item in the one of its type.
        schema = {"properties": {"clip": {"type": "video"}, "body": {"type": "text"}}}
        body = {"bucket_name": "media", "bucket_schema": schema}
        self.bucket = self.ok(self.http.post("/v1/buckets", json=body))["bucket_id"]
        body = {
            "collection_name": "clips",
            "source": {"type": "bucket", "bucket_ids": [self.bucket]},
            "feature_extractor": {"feature_extractor_name": extractor, "version": "v1"},
        }
        self.collection = str(
            self.ok(self.http.post("/v1/collections", json=body))["collection_id"]
        )

    @staticmethod
    def ok(response: httpx.Response) -> dict[str, Any]:
        assert response.status_code == 200, response.text
        return cast("dict[str, Any]", response.json())

    def batch(self, *texts: str) -> tuple[str, str]:
        """A submitted batch of one text object per text: (task id, batch id)."""
        ids = [
            self.ok(
                self.http.post(
                    f"/v1/buckets/{self.bucket}/objects",
                    json={"blobs": [{"property": "body", "type": "text", "data": t}]},
                )
            )["object_id"]
            for t in texts
        ]
        base = f"/v1/buckets/{self.bucket}/batches"
        batch = self.ok(self.http.post(base, json={"object_ids": ids}))["batch_id"]
        return str(self.ok(self.http.post(f"{base}/{batch}/submit"))["task_id"]), str(batch)

    def documents(self) -> list[dict[str, Any]]:
        path = f"/v1/collections/{self.collection}/documents/list"
        body = {"limit": 1000, "return_vectors": True}
        return cast("list[dict[str, Any]]", self.ok(self.http.post(path, json=body))["results"])


def records(root: Path, collection: str) -> tuple[Any, dict[str, Any]]:
    client = QdrantClient(path=str(root / "qdrant"))
    try:
        info = client.get_collection(collection)
        found, _ = client.scroll(collection, limit=1000, with_payload=True, with_vectors=True)
        return info, {str(r.payload["document_id"]): r for r in found if r.payload}
    finally:
        client.close()


def service(root: Path, emulator: V1EmulatorServer) -> Service:
    return Service(
        root, cast("Any", emulator), MIXPEEK_API_VERSION="v1", MIXPEEK_NAMESPACE="default"
    )


def test_submit_several_items_is_one_batch_and_every_vector_kind_lands(
    tmp_path: Path, emulator: V1EmulatorServer
) -> None:
    world = World(emulator, "hybrid_extractor")
    sync = service(tmp_path, emulator)
    submitted = sync.cli(
        "submit",
        "--collection-id",
        "clips",  # a collection's name works as its id does
        "--video",
        video_url("sourdough-bread.mp4"),
        "--text",
        "Honeybees make honey in the hive.",
    )
    (task_id,) = submitted.stdout.split()  # two items, one batch, one task
    batches = world.ok(world.http.post(f"/v1/buckets/{world.bucket}/batches/list"))["results"]
    assert [len(b["object_ids"]) for b in batches] == [2]
    objects = [
        world.ok(world.http.get(f"/v1/buckets/{world.bucket}/objects/{o}"))
        for o in batches[0]["object_ids"]
    ]
    assert [o["blobs"][0]["property"] for o in objects] == ["clip", "body"]

    sync.cli("run", "--drain", timeout=120)
    status = sync.status()
    # The task syncs its first object; the second is an asset job of its own.
    assert status["counts"] == {"pending": 0, "synced": 2, "failed": 0}, status
    assert {t["task_id"] for t in status["tasks"]} == {
        task_id,
        f"asset:{world.collection}/{objects[1]['object_id']}",
    }

    info, landed = records(tmp_path, world.collection)
    vectors = info.config.params.vectors
    assert vectors[DENSE].size == 8 and vectors[DENSE].multivector_config is None
    assert vectors[MULTI].size == 4
    assert vectors[MULTI].multivector_config == models.MultiVectorConfig(
        comparator=models.MultiVectorComparator.MAX_SIM
    )
    assert set(info.config.params.sparse_vectors or {}) == {SPARSE}
    docs = world.documents()
    assert docs and len(landed) == len(docs)  # video segments and the text: none set aside
    for doc in docs:
        point = landed[doc["document_id"]]
        assert point.vector[DENSE] == pytest.approx(doc[DENSE], rel=1e-5)
        assert point.vector[SPARSE].indices == doc[SPARSE]["indices"]
        assert point.vector[SPARSE].values == pytest.approx(doc[SPARSE]["values"])
        assert len(point.vector[MULTI]) == len(doc[MULTI]) > 0
        for stored, served in zip(point.vector[MULTI], doc[MULTI], strict=True):
            # Qdrant normalises cosine vectors; the emulator's are unit length already.
            assert stored == pytest.approx(served, rel=1e-4, abs=1e-6)


def test_a_multi_dense_search_finds_a_text_by_its_words(tmp_path: Path) -> None:
    # 64 dimensions per word: enough room for words to keep their meaning (4 are not).
    dims = {DENSE: 8, MULTI: 64, MM: 8}
    config = V1Config(api_key=API_KEY, processing_time=0.2, seed=6, vector_dimensions=dims)
    texts = ("Honeybees make honey in the hive.", "A volcano pours lava into the sea.")
    with V1EmulatorServer(config) as emulator:
        world = World(emulator, "hybrid_extractor")
        task_id, _ = world.batch(*texts)
        sync = service(tmp_path, emulator)
        sync.cli("track", task_id)
        sync.cli("run", "--drain", timeout=120)
        _, landed = records(tmp_path, world.collection)
        assert len(landed) == 2
        point_of = {str(p.payload["text"]): str(p.id) for p in landed.values() if p.payload}
        honey, lava = point_of[texts[0]], point_of[texts[1]]
        # Mixpeek embeds the query one vector per word; Qdrant ranks by MAX_SIM.
        for words, best in (("honey from the hive", honey), ("lava and a volcano", lava)):
            answer = json.loads(sync.cli("query", words, "--vector", MULTI, "--json").stdout)
            assert answer["vector"] == MULTI and answer["hits"][0]["point_id"] == best, answer
        like = json.loads(sync.cli("query", "--like", honey, "--vector", MULTI, "--json").stdout)
        assert [h["point_id"] for h in like["hits"]] == [lava]  # the point itself is left out


def test_track_a_batch_id_and_an_expired_task(tmp_path: Path, emulator: V1EmulatorServer) -> None:
    world = World(emulator, "text_extractor")
    emulator.update_config(task_expiry=1.0)
    expired, _ = world.batch("The volcano erupted at night.")
    _, batch_id = world.batch("Penguins huddle on the ice.", "Lava flows into the sea.")
    deadline = time.monotonic() + 30
    while world.http.get(f"/v1/tasks/{expired}").status_code != 404:
        assert time.monotonic() < deadline, "the emulator never expired the task"
        time.sleep(0.1)
    sync = service(tmp_path, emulator)
    sync.cli("track", expired, batch_id, f"{world.bucket}/{batch_id}")
    sync.cli("run", "--drain", timeout=120)
    status = sync.status()
    assert status["counts"]["failed"] == 0 and status["counts"]["pending"] == 0, status
    by_id = {t["task_id"]: t for t in status["tasks"]}
    for tracked in (expired, batch_id, f"{world.bucket}/{batch_id}"):
        assert by_id[tracked]["state"] == "synced"
    _, landed = records(tmp_path, world.collection)
    assert len(landed) == 3  # one document per text, each landed once


def test_completed_with_errors_syncs_what_exists_and_reports_the_rest(
    tmp_path: Path, emulator: V1EmulatorServer
) -> None:
    world = World(emulator, "text_extractor")
    emulator.update_config(partial_rate=1.0)  # the batch's last object yields nothing
    task_id, batch_id = world.batch("Bread rises in a warm kitchen.", "Nothing comes of this.")
    batch = world.ok(world.http.get(f"/v1/buckets/{world.bucket}/batches/{batch_id}"))
    lost = batch["object_ids"][-1]
    sync = service(tmp_path, emulator)
    sync.cli("track", task_id)
    sync.cli("run", "--drain", timeout=120)
    (task,) = [t for t in sync.status()["tasks"] if t["task_id"] == task_id]
    assert task["state"] == "synced" and task["features_synced"] == 1, task
    letters = json.loads(sync.cli("dlq", "list", "--task-id", task_id, "--json").stdout)
    assert [d["feature_id"] for d in letters] == [None]
    assert lost in letters[0]["reason"] and "COMPLETED_WITH_ERRORS" in letters[0]["reason"]
    _, landed = records(tmp_path, world.collection)
    assert len(landed) == 1
    # Retrying the whole-task letter redoes the task: still nothing upstream for the lost
    # object, so the same one letter (replaced, not doubled) and the same one point.
    retried = sync.cli("dlq", "retry", str(letters[0]["id"]))
    assert "1 task(s) pending again" in retried.stderr
    assert [t["state"] for t in sync.status()["tasks"] if t["task_id"] == task_id] == ["pending"]
    sync.cli("run", "--drain", timeout=120)
    (task,) = [t for t in sync.status()["tasks"] if t["task_id"] == task_id]
    assert task["state"] == "synced" and task["features_synced"] == 1, task
    again = json.loads(sync.cli("dlq", "list", "--task-id", task_id, "--json").stdout)
    assert [(d["feature_id"], d["reason"]) for d in again] == [(None, letters[0]["reason"])]
    _, landed_again = records(tmp_path, world.collection)
    assert landed_again.keys() == landed.keys()


def test_the_demo_on_the_v1_api_runs_the_whole_loop(tmp_path: Path) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MIXPEEK_", "QDRANT_", "SYNC_", "DATABASE_URL"))
    }
    result = subprocess.run(
        [sys.executable, "-m", "sync_service", "demo", "--api", "v1", "--data-dir", "d"],
        cwd=tmp_path,
        env={**env, "COLUMNS": "240"},  # one line per table row, so rows can be read
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    assert "Mixpeek emulator (v1 API) listening on" in out
    assert "(1 task(s))" in out and "14/14" in out  # one batch; 14 objects synced
    assert "Qdrant collection demo: 24 points (image 3, text 3, video 18)" in out
    assert f"{MM} (dense[1408])" in out
    for text, video, segment in library.QUERIES:
        title = f"query {text!r} in demo ({MM})"
        table = out[out.index(title) :]
        top = next(line for line in table.splitlines() if line.startswith("│ 1 "))
        # The right segment first: its video's URL and its start and end times.
        start = segment * library.INTERVAL
        assert library.video_url(video) in top
        assert f"{start}-{start + library.INTERVAL} s" in top


def test_v1_points_are_refused_by_a_collection_of_2024_points(
    tmp_path: Path, emulator: V1EmulatorServer
) -> None:
    world = World(emulator, "text_extractor")
    # A collection an earlier 2024 sync made under the one name QDRANT_COLLECTION gives all.
    client = QdrantClient(path=str(tmp_path / "qdrant"))
    params = models.VectorParams(size=4, distance=models.Distance.COSINE)
    client.create_collection("shared", {"multimodal-v1": params}, metadata={"mixpeek_api": "2024"})
    client.close()
    task_id, _ = world.batch("A text for the shared collection.")
    sync = service(tmp_path, emulator)
    sync.cli("track", task_id)
    sync.cli("run", "--drain", timeout=120, QDRANT_COLLECTION="shared")
    (task,) = sync.status()["tasks"]
    assert task["state"] == "failed"
    assert (
        "Qdrant collection 'shared' holds Mixpeek 2024 points and these are Mixpeek v1 ones"
        in task["error"]
    )
    client = QdrantClient(path=str(tmp_path / "qdrant"))
    try:
        assert client.count("shared").count == 0
        assert set(client.get_collection("shared").config.params.vectors) == {"multimodal-v1"}
    finally:
        client.close()
