"""The real ``sync-service`` against the v1 emulator over real HTTP, into embedded Qdrant.

Objects go into a bucket read by two collections (multimodal and text), one batch is submitted,
the service tracks its task and drains; every document of every collection must then be one
point, with the id, named vectors and payload keys the v1 mapping promises (README "Mixpeek v1").
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from qdrant_client import QdrantClient

from sync_service.emulator.library import video_url
from sync_service.emulator.v1.config import V1Config
from sync_service.emulator.v1.server import V1EmulatorServer
from tests.conftest import API_KEY
from tests.harness import Service

MM = "multimodal_extractor_v1_multimodal_embedding"
TR = "multimodal_extractor_v1_transcription_embedding"
TX = "text_extractor_v1_embedding"
SMALL = {MM: 8, TR: 4, TX: 6}


@pytest.fixture
def emulator() -> Iterator[V1EmulatorServer]:
    config = V1Config(api_key=API_KEY, processing_time=0.5, seed=3, vector_dimensions=SMALL)
    with V1EmulatorServer(config) as server:
        yield server


class World:
    """A bucket, a multimodal and a text collection over it, in the default namespace."""

    def __init__(self, server: V1EmulatorServer) -> None:
        headers = {"Authorization": f"Bearer {API_KEY}", "X-Namespace": "default"}
        self.http = httpx.Client(base_url=server.url, headers=headers, timeout=30)
        body = {"bucket_name": "media", "bucket_schema": {"properties": {}}}
        self.bucket = self.ok(self.http.post("/v1/buckets", json=body))["bucket_id"]
        self.collections = [
            self.collection("multimodal_extractor"),
            self.collection("text_extractor"),
        ]

    @staticmethod
    def ok(response: httpx.Response) -> dict[str, Any]:
        assert response.status_code == 200, response.text
        return cast("dict[str, Any]", response.json())

    def collection(self, extractor: str) -> str:
        body = {
            "collection_name": extractor,
            "source": {"type": "bucket", "bucket_ids": [self.bucket]},
            "feature_extractor": {"feature_extractor_name": extractor, "version": "v1"},
        }
        return str(self.ok(self.http.post("/v1/collections", json=body))["collection_id"])

    def batch(self, *blobs: tuple[str, str]) -> str:
        ids = []
        for kind, data in blobs:
            body = {
                "blobs": [{"property": kind, "type": kind, "data": data}],
                "metadata": {"k": kind},
            }
            ids.append(self.ok(self.http.post(f"/v1/buckets/{self.bucket}/objects", json=body)))
        base = f"/v1/buckets/{self.bucket}/batches"
        batch = self.ok(self.http.post(base, json={"object_ids": [o["object_id"] for o in ids]}))
        return str(self.ok(self.http.post(f"{base}/{batch['batch_id']}/submit"))["task_id"])

    def documents(self, collection: str) -> list[dict[str, Any]]:
        path = f"/v1/collections/{collection}/documents/list"
        body = {"limit": 1000, "return_vectors": True}
        return cast("list[dict[str, Any]]", self.ok(self.http.post(path, json=body))["results"])


def points(root: Path, collection: str) -> dict[str, Any]:
    client = QdrantClient(path=str(root / "qdrant"))
    try:
        if not client.collection_exists(collection):
            return {}
        records, _ = client.scroll(collection, limit=1000, with_payload=True, with_vectors=True)
        return {str(r.id): r for r in records}
    finally:
        client.close()


@pytest.mark.parametrize("version", ["v1", "auto"])
def test_track_a_v1_batch_and_drain_lands_every_document(
    tmp_path: Path, emulator: V1EmulatorServer, version: str
) -> None:
    world = World(emulator)
    task_id = world.batch(
        ("video", video_url("sourdough-bread.mp4")), ("text", "Honeybees make honey in the hive.")
    )
    service = Service(
        tmp_path,
        cast("Any", emulator),
        MIXPEEK_API_VERSION=version,
        MIXPEEK_NAMESPACE="default",
    )
    service.cli("track", task_id)
    run = service.cli("run", "--drain", timeout=120)
    if version == "auto":
        assert "Mixpeek API version v1 detected" in run.stderr

    status = service.status()
    assert status["counts"]["failed"] == 0 and status["counts"]["pending"] == 0, status
    total = 0
    for collection, names in zip(world.collections, ({MM, TR}, {TX}), strict=True):
        docs = world.documents(collection)
        landed = points(tmp_path, collection)
        assert docs and len(landed) == len(docs)
        total += len(docs)
        for doc in docs:
            namespace_id = doc["_internal"]["namespace_id"]
            name = f"mixpeek://v1/{namespace_id}/{collection}/{doc['document_id']}"
            point = landed[str(uuid.uuid5(uuid.NAMESPACE_URL, name))]
            assert set(point.vector) == names
            for vector in names:
                assert point.vector[vector] == pytest.approx(doc[vector], rel=1e-6)
            payload = point.payload
            assert payload["document_id"] == doc["document_id"]
            assert payload["collection_id"] == collection
            assert payload["root_object_id"] == doc["_internal"]["lineage"]["root_object_id"]
            assert payload["asset_id"] == f"{collection}/{payload['root_object_id']}"
            assert payload["mixpeek_api"] == "v1"
            # The task's first asset syncs under the task; its others as asset jobs of their
            # own, whose points carry the job's id (no v1 document names its task).
            assert payload["task_id"] in (task_id, f"asset:{payload['asset_id']}")
            assert payload["_internal"] == doc["_internal"]  # served verbatim
            assert not set(names) & set(payload) and "vectors" not in payload
    assert total == 3 + 1 + 1  # three video segments, the text in both collections

    # Running again writes nothing new.
    service.cli("run", "--drain")
    assert sum(len(points(tmp_path, c)) for c in world.collections) == total
