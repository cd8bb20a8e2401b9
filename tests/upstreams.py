"""One seam over both Mixpeek API generations, for the tests that prove a capability on each.

A test asks for ``api`` (``"2024"`` or ``"v1"``) and gets a :class:`Mixpeek`: the emulator of
that API, the service's settings for it, a collection to work in, upstream changes made as
another client would (seed, change, delete), and the oracle of what Qdrant must then hold.

The oracles restate the contract instead of calling the product's mapping: docs/contract.md §4
for 2024 (``support.py``), README "Mixpeek v1" for v1 (below), so a mapping bug cannot hide.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, cast

import httpx

from sync_service.emulator import EmulatorConfig, EmulatorServer
from sync_service.emulator.v1.config import V1Config
from sync_service.emulator.v1.server import V1EmulatorServer
from tests.conftest import API_KEY
from tests.support import expected_point, served

API_VERSIONS = ("2024", "v1")
COLLECTION = "acceptance"  # the Qdrant collection (and the 2024 collection id) tests read
#: v1 vector sizes: tiny, so tests move little JSON (names as the emulator's extractor makes).
V1_SIZES = {
    "multimodal_extractor_v1_multimodal_embedding": 8,
    "multimodal_extractor_v1_transcription_embedding": 4,
}
AUTH = {"Authorization": f"Bearer {API_KEY}"}


class Mixpeek:
    """What a test needs of one API generation's emulator."""

    api: str
    server: EmulatorServer | V1EmulatorServer
    #: The Mixpeek collection id to submit into, watch and backfill.
    collection: str
    #: The service's settings for this API (points land in ``COLLECTION`` for both).
    env: dict[str, str]
    #: The route key (as in the emulator's stats) of a listing request.
    listing_route: str

    @property
    def url(self) -> str:
        return self.server.url

    def seed(self, count: int) -> list[str]:
        """``count`` new 20-second videos (two points each), processed at once: asset ids."""
        raise NotImplementedError

    def delete(self, asset_ids: list[str]) -> None:
        """Delete these assets upstream, as another client would."""
        raise NotImplementedError

    def change(self, asset_id: str, mode: str) -> None:
        """Change an asset upstream: ``vectors`` (new vectors, same ids), ``payload`` (new
        captions) or ``features`` (its features replaced by new ones, new ids)."""
        raise NotImplementedError

    def expected(self, asset_ids: list[str]) -> list[dict[str, Any]]:
        """The points mirroring these assets (synced as asset jobs) must be."""
        raise NotImplementedError

    def expected_tasks(self, task_ids: list[str]) -> list[dict[str, Any]]:
        """The points tracking these tasks must have made."""
        raise NotImplementedError

    def tasks_of_submit(self, items: int) -> int:
        """How many tasks one ``submit`` of ``items`` items makes."""
        raise NotImplementedError

    def patch(self, **knobs: Any) -> None:
        httpx.patch(f"{self.url}/_emulator/config", json=knobs).raise_for_status()

    def stats(self) -> dict[str, Any]:
        return cast("dict[str, Any]", httpx.get(f"{self.url}/_emulator/stats").json())

    def listings(self) -> int:
        """Listing requests served so far."""
        return sum(self.stats()["requests"].get(self.listing_route, {}).values())


class Mixpeek2024(Mixpeek):
    api = "2024"
    collection = COLLECTION
    listing_route = "POST /assets"

    def __init__(self, server: EmulatorServer) -> None:
        self.server = server
        self.env = {"MIXPEEK_API_VERSION": "2024"}
        self.tasks: dict[str, str] = {}  # asset id -> the task that made it

    def seed(self, count: int) -> list[str]:
        body = {"collection_id": COLLECTION, "count": count, "duration": 20}
        answer = httpx.post(f"{self.url}/_emulator/seed", json=body, timeout=30)
        seeded = answer.raise_for_status().json()
        self.tasks.update(zip(seeded["asset_ids"], seeded["task_ids"], strict=True))
        return list(seeded["asset_ids"])

    def delete(self, asset_ids: list[str]) -> None:
        for asset_id in asset_ids:
            httpx.delete(f"{self.url}/assets/{asset_id}", headers=AUTH).raise_for_status()

    def change(self, asset_id: str, mode: str) -> None:
        route = f"{self.url}/_emulator/assets/{asset_id}/reindex"
        httpx.post(route, json={"mode": mode}).raise_for_status()

    def expected(self, asset_ids: list[str]) -> list[dict[str, Any]]:
        points = []
        for asset_id in asset_ids:
            asset, features = served(self.url, API_KEY, self.tasks[asset_id])
            # Mirrored points carry the task id the asset names upstream.
            points += [expected_point(asset["task_id"], asset, f) for f in features]
        return points

    def tasks_of_submit(self, items: int) -> int:
        return items  # one indexing call, one task, per item

    def expected_tasks(self, task_ids: list[str]) -> list[dict[str, Any]]:
        points = []
        for task_id in task_ids:
            asset, features = served(self.url, API_KEY, task_id)
            points += [expected_point(task_id, asset, f) for f in features]
        return points


class MixpeekV1(Mixpeek):
    """A bucket read by one multimodal collection in the default namespace; document ids are
    deterministic unless a test asks otherwise (``document_ids`` knob)."""

    api = "v1"

    def __init__(self, server: V1EmulatorServer) -> None:
        self.server = server
        self.http = httpx.Client(
            base_url=server.url, headers={**AUTH, "X-Namespace": "default"}, timeout=30
        )
        body = {"bucket_name": "media", "bucket_schema": {"properties": {}}}
        self.bucket = self._ok(self.http.post("/v1/buckets", json=body))["bucket_id"]
        body = {
            "collection_name": COLLECTION,
            "source": {"type": "bucket", "bucket_ids": [self.bucket]},
            "feature_extractor": {
                "feature_extractor_name": "multimodal_extractor",
                "version": "v1",
            },
        }
        self.collection = self._ok(self.http.post("/v1/collections", json=body))["collection_id"]
        # The v1 emulator's stats key its routes by the path served.
        self.listing_route = f"POST /v1/collections/{self.collection}/documents/list"
        self.env = {
            "MIXPEEK_API_VERSION": "v1",
            "MIXPEEK_NAMESPACE": "default",
            "QDRANT_COLLECTION": COLLECTION,
        }
        server.state.stats.reset()  # the set-up is not the service's traffic

    @staticmethod
    def _ok(response: httpx.Response) -> dict[str, Any]:
        assert response.is_success, response.text
        return cast("dict[str, Any]", response.json())

    def seed(self, count: int) -> list[str]:
        body = {"collection": self.collection, "count": count, "duration": 20}
        answer = httpx.post(f"{self.url}/_emulator/seed", json=body, timeout=30)
        return [f"{self.collection}/{o}" for o in answer.raise_for_status().json()["object_ids"]]

    def delete(self, asset_ids: list[str]) -> None:
        for asset_id in asset_ids:
            obj = asset_id.partition("/")[2]
            route = f"/v1/buckets/{self.bucket}/objects/{obj}"
            answer = self.http.delete(route, params={"cascade": "true"})
            assert answer.is_success, answer.text

    def change(self, asset_id: str, mode: str) -> None:
        obj = asset_id.partition("/")[2]
        if mode == "payload":
            for doc in self.documents(obj):
                route = f"{self.url}/_emulator/documents/{doc['document_id']}"
                body = {"fields": {"description": f"{doc['description']} (edited)"}}
                httpx.patch(route, json=body).raise_for_status()
            return
        old = [d["document_id"] for d in self.documents(obj)]
        if mode == "features":  # re-processed without stable ids, the old documents removed
            self.patch(document_ids="random")
        httpx.post(f"{self.url}/_emulator/objects/{obj}/reprocess").raise_for_status()
        if mode == "features":
            self.patch(document_ids="deterministic")
            gone = {"document_ids": old}
            httpx.post(f"{self.url}/_emulator/documents/delete", json=gone).raise_for_status()

    def documents(self, object_id: str | None = None) -> list[dict[str, Any]]:
        """The collection's documents with vectors (of one root object), in creation order."""
        route = f"/v1/collections/{self.collection}/documents/list"
        docs: list[dict[str, Any]] = []
        cursor = None
        while True:
            body = {"limit": 1000, "return_vectors": True, "cursor": cursor}
            page = self._ok(self.http.post(route, json=body))
            docs += page["results"]
            cursor = page["pagination"]["next_cursor"]
            if cursor is None:
                break
        lineage = [d["_internal"]["lineage"]["root_object_id"] for d in docs]
        return [d for d, o in zip(docs, lineage, strict=True) if object_id in (None, o)]

    def expected(self, asset_ids: list[str]) -> list[dict[str, Any]]:
        return self._points({a: f"asset:{a}" for a in asset_ids})

    def tasks_of_submit(self, items: int) -> int:
        return 1  # the items of one command in one batch (one bucket here): one task

    def expected_tasks(self, task_ids: list[str]) -> list[dict[str, Any]]:
        # A task's first asset syncs under the task, the rest as asset jobs (README).
        carried: dict[str, str] = {}
        for task_id in task_ids:
            extra = self._ok(self.http.get(f"/v1/tasks/{task_id}"))["additional_data"]
            route = f"/v1/buckets/{extra['bucket_id']}/batches/{extra['batch_id']}"
            batch = self._ok(self.http.get(route))
            assets = [f"{c}/{o}" for c in batch["collection_ids"] for o in batch["object_ids"]]
            for n, asset_id in enumerate(assets):
                carried[asset_id] = task_id if n == 0 else f"asset:{asset_id}"
        return self._points({a: t for a, t in carried.items() if a.startswith(self.collection)})

    def _points(self, task_of: dict[str, str]) -> list[dict[str, Any]]:
        points = []
        for doc in self.documents():
            lineage = doc["_internal"]["lineage"]
            asset_id = f"{self.collection}/{lineage['root_object_id']}"
            if asset_id in task_of:
                points.append(v1_expected_point(doc, asset_id, task_of[asset_id]))
        return points


def _utc(value: str) -> str:
    when = datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)
    return when.isoformat().replace("+00:00", "Z")


def v1_expected_point(doc: dict[str, Any], asset_id: str, task_id: str) -> dict[str, Any]:
    """README "Mixpeek v1": the point of one document (vectors at the root, by index name)."""
    internal = doc["_internal"]
    lineage = internal["lineage"]
    namespace_id, collection_id = internal["namespace_id"], doc["collection_id"]
    name = f"mixpeek://v1/{namespace_id}/{collection_id}/{doc['document_id']}"
    point_id = str(uuid.uuid5(uuid.NAMESPACE_URL, name))
    vectors = {k: v for k, v in doc.items() if k in V1_SIZES}
    payload = {k: v for k, v in doc.items() if k not in V1_SIZES}
    payload.update(
        feature_id=point_id,
        asset_id=asset_id,
        document_id=doc["document_id"],
        collection_id=collection_id,
        namespace_id=namespace_id,
        root_object_id=lineage["root_object_id"],
        root_bucket_id=lineage["root_bucket_id"],
        source_object_id=lineage.get("source_object_id"),
        source_document_id=lineage.get("source_document_id"),
        modality=internal["modality"],
        mixpeek_created_at=_utc(internal["created_at"]),
        mixpeek_updated_at=_utc(internal["updated_at"]),
        mixpeek_api="v1",
        task_id=task_id,
        asset={
            "asset_id": asset_id,
            "collection_id": collection_id,
            "object_id": lineage["root_object_id"],
            "root_bucket_id": lineage["root_bucket_id"],
            "namespace_id": namespace_id,
            # README "Mixpeek v1": a search shows the source URL the document was made from.
            "url": internal.get("processing", {}).get("source_url"),
            "mixpeek_api": "v1",
        },
    )
    return {"id": point_id, "vectors": vectors, "payload": payload}


@contextmanager
def open_mixpeek(api: str, *, processing_time: float, seed: int) -> Iterator[Mixpeek]:
    """The emulator of ``api`` on a free port, with a collection to work in."""
    if api == "2024":
        config = EmulatorConfig(api_key=API_KEY, processing_time=processing_time, seed=seed)
        with EmulatorServer(config) as server:
            yield Mixpeek2024(server)
        return
    v1 = V1Config(
        api_key=API_KEY,
        processing_time=processing_time,
        seed=seed,
        vector_dimensions=V1_SIZES,
        document_ids="deterministic",
    )
    with V1EmulatorServer(v1) as v1_server:
        world = MixpeekV1(v1_server)
        try:
            yield world
        finally:
            world.http.close()
