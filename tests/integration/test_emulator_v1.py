"""The v1 emulator over real HTTP: V1EmulatorServer on a free port, driven with httpx.

Vectors are shrunk with ``vector_dimensions`` and time is a fake clock wherever the dispatcher
is not involved, so the file stays fast on a loaded machine.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from sync_service.emulator.library import image_url, video_url
from sync_service.emulator.v1.config import V1Config
from sync_service.emulator.v1.server import V1EmulatorServer

MM = "multimodal_extractor_v1_multimodal_embedding"
TR = "multimodal_extractor_v1_transcription_embedding"
TX = "text_extractor_v1_embedding"
SMALL = {MM: 8, TR: 4, TX: 6}
AUTH = {"Authorization": "Bearer test-key"}
NS = {**AUTH, "X-Namespace": "default"}
SOURDOUGH = video_url("sourdough-bread.mp4")  # three scripted segments


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


Factory = Callable[..., V1EmulatorServer]


@pytest.fixture
def start() -> Iterator[Factory]:
    servers: list[V1EmulatorServer] = []

    def factory(clock: Callable[[], float] = time.monotonic, **knobs: Any) -> V1EmulatorServer:
        server = V1EmulatorServer(V1Config(**{"vector_dimensions": SMALL, **knobs}), clock=clock)
        server.start()
        servers.append(server)
        return server

    yield factory
    for server in servers:
        server.stop()


class World:
    """A bucket and a multimodal collection over it, in the default namespace."""

    def __init__(self, server: V1EmulatorServer, unique_key: bool = False) -> None:
        self.server = server
        self.http = httpx.Client(base_url=server.url, headers=NS, timeout=30)
        body: dict[str, Any] = {"bucket_name": "media", "bucket_schema": {"properties": {}}}
        if unique_key:
            body["unique_key"] = {"fields": ["ref"], "default_policy": "upsert"}
        self.bucket = self.ok(self.http.post("/v1/buckets", json=body))["bucket_id"]
        self.collection = self.collection_for("multimodal_extractor")

    @staticmethod
    def ok(response: httpx.Response) -> dict[str, Any]:
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def collection_for(self, extractor: str, name: str | None = None) -> str:
        body = {
            "collection_name": name or extractor,
            "source": {"type": "bucket", "bucket_ids": [self.bucket]},
            "feature_extractor": {"feature_extractor_name": extractor, "version": "v1"},
        }
        return str(self.ok(self.http.post("/v1/collections", json=body))["collection_id"])

    def object(self, kind: str = "video", data: str = SOURDOUGH, **metadata: Any) -> str:
        body = {"blobs": [{"property": kind, "type": kind, "data": data}], "metadata": metadata}
        return str(
            self.ok(self.http.post(f"/v1/buckets/{self.bucket}/objects", json=body))["object_id"]
        )

    def submit(self, *object_ids: str) -> dict[str, Any]:
        base = f"/v1/buckets/{self.bucket}/batches"
        batch = self.ok(self.http.post(base, json={"object_ids": list(object_ids)}))
        assert batch["status"] == "DRAFT"
        task = self.ok(self.http.post(f"{base}/{batch['batch_id']}/submit"))
        return task

    def documents(self, collection: str | None = None, **body: Any) -> dict[str, Any]:
        path = f"/v1/collections/{collection or self.collection}/documents/list"
        return self.ok(self.http.post(path, json=body))


def test_ingestion_flow_and_the_three_vector_placements(start: Factory) -> None:
    clock = FakeClock()
    world = World(start(clock=clock, processing_time=10))
    obj = world.object(category="baking")
    task = world.submit(obj)
    assert task["status"] == "PENDING" and task["task_type"] == "api_buckets_batches_process"
    seen = []
    for step in (2, 3, 4, 1):  # IN_PROGRESS at 1 s, PROCESSING at 4 s, done at 10 s
        clock.now += step
        seen.append(world.ok(world.http.get(f"/v1/tasks/{task['task_id']}"))["status"])
    assert seen == ["IN_PROGRESS", "PROCESSING", "PROCESSING", "COMPLETED"]
    batch_id = task["additional_data"]["batch_id"]
    batch = world.ok(world.http.get(f"/v1/buckets/{world.bucket}/batches/{batch_id}"))
    assert batch["status"] == "COMPLETED" and batch["tier_tasks"][0]["documents_written"] == 3

    features = world.ok(world.http.get(f"/v1/collections/{world.collection}/features"))
    sizes = {
        f["vector_index"]["name"]: f["vector_index"]["dimensions"] for f in features["features"]
    }
    assert sizes == {MM: 8, TR: 4}
    where = {"field": "_internal.lineage.root_object_id", "operator": "eq", "value": obj}
    docs = world.documents(filters=where, return_vectors=True)["results"]
    assert [d["start_time"] for d in docs] == [0.0, 10.0, 20.0]  # a video: one per segment
    first = docs[0]
    assert first["category"] == "baking" and "sourdough" in first["description"]
    lineage = first["_internal"]["lineage"]
    assert lineage["root_object_id"] == lineage["source_object_id"] == obj
    assert first["_internal"]["collection_id"] == world.collection
    assert first["_internal"]["updated_at"].endswith("Z")
    assert len(first[MM]) == 8 and len(first[TR]) == 4
    world.server.update_config(vector_placement="vectors")
    docs = world.documents(filters={"root_object_id": obj}, return_vectors=True)["results"]
    assert MM not in docs[0] and len(docs[0]["vectors"][MM]) == 8
    world.server.update_config(vector_placement="vector")
    docs = world.documents(filters={"root_object_id": obj}, return_vectors=True)["results"]
    assert len(docs[0]["vector"]) == 8 and "vectors" not in docs[0]
    assert "vector" not in world.documents()["results"][0]  # no vectors unless asked


def test_images_and_texts_make_one_document_each(start: Factory) -> None:
    clock = FakeClock()
    world = World(start(clock=clock, processing_time=1))
    texts = world.collection_for("text_extractor")
    image = world.object("image", image_url("red-panda.jpg"))
    text = world.object("text", "Honeybees make honey in the hive.")
    world.submit(image, text)
    clock.now += 5
    by_object = world.ok(world.http.get(f"/v1/objects/{image}/documents"))["results"]
    assert len(by_object) == 1 and "red panda" in by_object[0]["description"]
    assert by_object[0]["_internal"]["modality"] == "image"
    text_docs = world.documents(texts, return_vectors=True)["results"]
    assert len(text_docs) == 1 and text_docs[0]["text"].startswith("Honeybees")
    assert len(text_docs[0][TX]) == 6  # the text collection has its own index
    assert world.ok(world.http.get(f"/v1/objects/{text}/documents"))["total_count"] == 2


def test_cursor_paging_and_the_limit_bound(start: Factory) -> None:
    world = World(start())
    seeded = world.server.control("/seed", {"collection": world.collection, "count": 9})
    assert len(seeded["object_ids"]) == 9
    expected = set(seeded["document_ids"])
    assert len(expected) > 20  # the library's videos: 2-3 segments each
    seen: list[str] = []
    body: dict[str, Any] = {"limit": 10}
    pages = 0
    while True:
        page = world.documents(**body)
        pages += 1
        seen += [d["document_id"] for d in page["results"]]
        cursor = page["pagination"]["next_cursor"]
        assert page["has_more"] is (cursor is not None)
        if cursor is None:
            break
        body = {"limit": 10, "cursor": cursor}
    assert pages == 3 and len(seen) == len(set(seen)) and set(seen) == expected
    total = world.documents(include_total=True, limit=1)
    assert total["total_documents"] == len(expected)
    path = f"/v1/collections/{world.collection}/documents/list"
    assert world.http.post(path, params={"limit": 1001}, json={}).status_code == 422
    assert world.http.post(path, json={"limit": 1001}).status_code == 422
    bad = world.http.post(path, json={"cursor": "!!not-a-cursor"})
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "BadRequestError"


def test_filters_sort_and_the_ignore_filters_knob(start: Factory) -> None:
    clock = FakeClock()
    world = World(start(clock=clock))
    first = world.server.control("/seed", {"collection": world.collection, "count": 1})
    clock.now += 60
    later = world.server.control(
        "/seed", {"collection": world.collection, "count": 1, "metadata": {"genre": "sport"}}
    )
    cut = world.documents(filters={"field": "root_object_id", "value": later["object_ids"][0]})
    mark = cut["results"][0]["_internal"]["updated_at"]
    newer = {"AND": [{"field": "_internal.updated_at", "operator": "gte", "value": mark}]}
    got = {d["document_id"] for d in world.documents(filters=newer, limit=100)["results"]}
    assert got == set(later["document_ids"])
    assert {
        d["document_id"] for d in world.documents(filters={"updated_at": mark})["results"]
    } == got
    nope = {"NOT": [{"field": "genre", "operator": "eq", "value": "sport"}]}
    assert {d["document_id"] for d in world.documents(filters=nope)["results"]} == set(
        first["document_ids"]
    )
    root = first["object_ids"][0]
    either = {
        "OR": [
            {"field": "genre", "value": "sport"},
            {"field": "root_object_id", "operator": "starts_with", "value": root.upper()},
        ]
    }
    found = world.documents(filters=either, limit=100)["results"]
    assert len(found) == len(first["document_ids"]) + len(got)  # case-insensitive by default
    desc = world.documents(sort={"field": "_internal.updated_at", "direction": "desc"}, limit=100)
    assert desc["results"][0]["document_id"] in got
    world.server.update_config(ignore_filters=True)
    assert len(world.documents(filters=newer, limit=100)["results"]) > len(got)


def test_deleting_objects_keeps_documents_unless_cascade(start: Factory) -> None:
    world = World(start())
    seeded = world.server.control("/seed", {"collection": world.collection, "count": 3})
    kept, cascaded, knob = seeded["object_ids"]
    objects = f"/v1/buckets/{world.bucket}/objects"
    assert world.http.delete(f"{objects}/{kept}").status_code == 204
    assert world.http.get(f"{objects}/{kept}").status_code == 404
    assert world.documents(filters={"root_object_id": kept})["results"]  # outlived the object
    assert world.ok(world.http.get(f"/v1/objects/{kept}/documents"))["total_count"] > 0
    assert world.http.delete(f"{objects}/{cascaded}", params={"cascade": "true"}).status_code == 204
    assert world.documents(filters={"root_object_id": cascaded})["results"] == []
    assert world.http.get(f"/v1/objects/{cascaded}/documents").status_code == 404
    world.server.update_config(object_delete_cascades=True)
    assert world.http.delete(f"{objects}/{knob}").status_code == 204
    assert world.documents(filters={"root_object_id": knob})["results"] == []
    doc_id = world.documents()["results"][0]["document_id"]
    one = f"/v1/collections/{world.collection}/documents/{doc_id}"
    assert world.ok(world.http.get(one, params={"return_vectors": "true"}))[MM]
    assert world.ok(world.http.delete(one))["success"] is True
    gone = world.http.get(one)
    assert gone.status_code == 404
    assert gone.json()["error"] == {
        "message": f"Document {doc_id} not found",
        "type": "NotFoundError",
    }


def test_task_expiry_is_a_404_and_the_batch_still_answers(start: Factory) -> None:
    clock = FakeClock()
    world = World(start(clock=clock, processing_time=1, task_expiry=3600))
    task = world.submit(world.object())
    clock.now += 10
    assert world.ok(world.http.get(f"/v1/tasks/{task['task_id']}"))["status"] == "COMPLETED"
    listed = world.ok(world.http.post("/v1/tasks/list", json={"status": "COMPLETED"}))
    assert [t["task_id"] for t in listed["results"]] == [task["task_id"]]
    clock.now += 3600
    expired = world.http.get(f"/v1/tasks/{task['task_id']}")
    assert expired.status_code == 404 and expired.json()["error"]["type"] == "NotFoundError"
    batch_id = task["additional_data"]["batch_id"]
    batch = world.ok(world.http.get(f"/v1/buckets/{world.bucket}/batches/{batch_id}"))
    assert batch["status"] == "COMPLETED" and batch["task_id"] == task["task_id"]


def test_task_outcomes_partial_failed_and_canceled(start: Factory) -> None:
    clock = FakeClock()
    world = World(start(clock=clock, processing_time=1, partial_rate=1.0))
    kept, lost = world.object("text", "first"), world.object("text", "second")
    partial = world.submit(kept, lost)
    clock.now += 2
    assert world.ok(world.http.get(f"/v1/tasks/{partial['task_id']}"))["status"] == (
        "COMPLETED_WITH_ERRORS"
    )
    roots = {d["_internal"]["lineage"]["root_object_id"] for d in world.documents()["results"]}
    assert roots == {kept}  # the failed object yields nothing
    world.server.update_config(partial_rate=0.0, fail_rate=1.0)
    failed = world.ok(world.http.get(f"/v1/tasks/{world.submit(lost)['task_id']}"))
    clock.now += 2
    failed = world.ok(world.http.get(f"/v1/tasks/{failed['task_id']}"))
    assert failed["status"] == "FAILED" and failed["error"]
    world.server.update_config(fail_rate=0.0, stuck_rate=1.0)
    stuck = world.submit(lost)["task_id"]
    clock.now += 100
    assert world.ok(world.http.get(f"/v1/tasks/{stuck}"))["status"] == "PROCESSING"
    assert world.ok(world.http.delete(f"/v1/tasks/{stuck}"))["success"] is True
    assert world.ok(world.http.get(f"/v1/tasks/{stuck}"))["status"] == "CANCELED"
    assert len(world.documents()["results"]) == 1


def test_namespace_header(start: Factory) -> None:
    server = start()
    world = World(server)
    bare = httpx.Client(base_url=server.url, headers=AUTH)
    missing = bare.post(f"/v1/collections/{world.collection}/documents/list", json={})
    assert missing.status_code == 400 and missing.json()["error"]["type"] == "BadRequestError"
    unknown = bare.get("/v1/buckets/media", headers={"X-Namespace": "nope"})
    assert unknown.status_code == 404
    assert bare.get("/v1/buckets/media", params={"namespace": "default"}).status_code == 200
    ns = world.ok(bare.post("/v1/namespaces", json={"namespace_name": "other"}))
    by_id = bare.get("/v1/buckets/media", headers={"X-Namespace": ns["namespace_id"]})
    assert by_id.status_code == 404  # buckets belong to their namespace
    assert world.ok(bare.get("/v1/namespaces/default"))["collection_count"] == 1
    assert world.ok(bare.post("/v1/namespaces/list"))["total_count"] == 2
    assert world.ok(bare.get("/v1/organizations"))["rate_limits"]["data"] > 0
    assert httpx.get(f"{server.url}/v1/health").json()["status"] == "healthy"  # no auth needed


def test_422_in_both_forms(start: Factory) -> None:
    server = start()
    http = httpx.Client(base_url=server.url, headers=NS)
    envelope = http.post("/v1/buckets", json={"description": "no name"})
    assert envelope.status_code == 422
    error = envelope.json()["error"]
    assert error["type"] == "ValidationError"
    assert error["details"]["validation_errors"][0]["location"] == ["body", "bucket_name"]
    server.update_config(validation_form="fastapi")
    plain = http.post("/v1/buckets", json={"description": "no name"})
    assert plain.status_code == 422
    assert plain.json()["detail"][0]["loc"] == ["body", "bucket_name"]


def test_rate_limit_headers_and_429(start: Factory) -> None:
    clock = FakeClock()
    server = start(clock=clock, rate_limit=60, rate_burst=2)
    http = httpx.Client(base_url=server.url, headers=NS)
    first = http.get("/v1/namespaces/default")
    assert first.headers["X-RateLimit-Limit"] == "60"
    assert first.headers["X-RateLimit-Remaining"] == "1"
    assert first.headers["X-RateLimit-Window"] == "60"
    assert int(first.headers["X-RateLimit-Reset"]) >= int(time.time())
    http.get("/v1/namespaces/default")
    limited = http.get("/v1/namespaces/default")
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "1"
    assert limited.headers["X-RateLimit-Remaining"] == "0"
    error = limited.json()["error"]
    assert error["type"] == "TooManyRequestsError"
    assert error["details"] == {"limit": 60, "window": "1m", "retry_after": 1.0}
    clock.now += 1
    assert http.get("/v1/namespaces/default").status_code == 200


class Receiver:
    """A webhook endpoint on a free port recording what it gets; ``fail_first`` answers 500."""

    def __init__(self, fail_first: int = 0) -> None:
        self.got: list[tuple[dict[str, str], dict[str, Any]]] = []
        self.fail_left = fail_first
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                failing = outer.fail_left > 0
                outer.fail_left -= 1
                if not failing:
                    outer.got.append((dict(self.headers), body))
                self.send_response(500 if failing else 204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hooks"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def wait(self, count: int, timeout: float = 10) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(self.got) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return [body for _, body in self.got]


def subscribe(http: httpx.Client, url: str, *events: str) -> dict[str, Any]:
    body = {
        "webhook_name": "mirror",
        "event_types": list(events),
        "channels": [
            {
                "channel": "webhook",
                "configs": {"url": url, "headers": {"X-Mixpeek-Secret": "s3cret"}},
            }
        ],
    }
    response = http.post("/v1/organizations/webhooks/", json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def test_webhooks_delivered_with_the_secret_and_retried(start: Factory) -> None:
    world = World(start(processing_time=0.1, webhook_retry_base=0.05))
    receiver = Receiver(fail_first=2)
    hook = subscribe(world.http, receiver.url, "collection.documents.written", "object.deleted")
    assert hook["webhook_id"].startswith("wh_") and len(hook["webhook_id"]) == 19
    assert world.ok(world.http.get(f"/v1/organizations/webhooks/{hook['webhook_id']}"))["is_active"]
    obj = world.object()
    world.submit(obj)
    [written] = receiver.wait(1)
    headers = receiver.got[0][0]
    assert headers["X-Mixpeek-Secret"] == "s3cret"
    assert written["event_type"] == "collection.documents.written"
    assert (
        written["namespace_id"].startswith("ns_")
        and written["cache_scope"]["scope"] == "collection"
    )
    assert written["subject"] == {"type": "collection", "id": world.collection}
    assert written["metadata"]["document_count"] == 3
    log = world.server.control("/webhooks/deliveries", method="GET")["deliveries"]
    assert [e["outcome"] for e in log] == ["retrying", "retrying", "delivered"]
    world.server.update_config(webhook_envelope="legacy")
    world.http.delete(f"/v1/buckets/{world.bucket}/objects/{obj}")
    deleted = receiver.wait(2)[1]
    assert deleted["event_type"] == "object.deleted" and deleted["actor"] == "system"
    assert deleted["namespace"] == "default" and deleted["metadata"]["object_id"] == obj
    assert world.http.delete(f"/v1/organizations/webhooks/{hook['webhook_id']}").status_code == 204
    assert world.http.get(f"/v1/organizations/webhooks/{hook['webhook_id']}").status_code == 404


def test_webhook_duplicates_delay_and_reordering(start: Factory) -> None:
    knobs = {"webhook_duplicate_rate": 1.0, "webhook_reorder": True, "webhook_delay": 0.2}
    world = World(start(processing_time=0.05, **knobs))
    order = [world.collection] + [world.collection_for("text_extractor", f"t{i}") for i in range(5)]
    receiver = Receiver()
    subscribe(world.http, receiver.url, "collection.documents.written")
    sent = time.monotonic()
    # One text object feeds six collections: six events at once, in collection order.
    world.submit(world.object("text", "A lemon tart with a crisp pastry."))
    bodies = receiver.wait(12)
    assert time.monotonic() - sent >= 0.2
    ids = [b["event_id"] for b in bodies]
    assert len(ids) == 12 and len(set(ids)) == 6  # every event twice, same event_id
    firsts = list(dict.fromkeys(ids))
    subjects = [next(b["subject"]["id"] for b in bodies if b["event_id"] == i) for i in firsts]
    assert sorted(subjects) == sorted(order) and subjects != order  # seeded shuffle


def test_same_seed_same_data_and_id_stability(start: Factory) -> None:
    def run(server: V1EmulatorServer) -> list[dict[str, Any]]:
        world = World(server)
        world.server.control("/seed", {"collection": world.collection, "count": 2})
        return world.documents(return_vectors=True, limit=100)["results"]

    one, two = run(start(seed=7)), run(start(seed=7))
    strip = [{k: v for k, v in d.items() if k != "_internal"} for d in one]
    assert strip == [{k: v for k, v in d.items() if k != "_internal"} for d in two]
    other = run(start(seed=8))
    assert [d["document_id"] for d in other] != [d["document_id"] for d in one]

    # Without a unique_key, re-processing adds documents beside the old ones (random ids).
    clock = FakeClock()
    loose = World(start(clock=clock))
    obj = loose.server.control("/seed", {"collection": loose.collection, "count": 1})["object_ids"][
        0
    ]
    before = {d["document_id"] for d in loose.documents()["results"]}
    clock.now += 1
    loose.server.control(f"/objects/{obj}/reprocess")
    after = {d["document_id"] for d in loose.documents(limit=100)["results"]}
    assert before < after and len(after) == 2 * len(before)

    # With one, the same ids come back with a later updated_at.
    stable = World(start(clock=clock), unique_key=True)
    obj = stable.object(ref="a-1")
    blobs = [{"property": "video", "type": "video", "url": SOURDOUGH}]  # the docs' "url"
    body = {"blobs": blobs, "metadata": {"ref": "a-1"}}
    again = stable.http.post(f"/v1/buckets/{stable.bucket}/objects", json=body)
    assert again.json()["object_id"] == obj  # upsert on the unique key
    stable.submit(obj)
    clock.now += 10
    first = {d["document_id"]: d["_internal"]["updated_at"] for d in stable.documents()["results"]}
    stable.server.control(f"/objects/{obj}/reprocess")
    second = {d["document_id"]: d["_internal"]["updated_at"] for d in stable.documents()["results"]}
    assert second.keys() == first.keys() and all(second[k] > first[k] for k in first)
    doc_id = next(iter(first))
    changed = stable.server.control(f"/documents/{doc_id}", {"fields": {"label": "x"}}, "PATCH")
    assert changed["updated_at"] > second[doc_id]
    assert stable.server.control("/documents/delete", {"document_ids": [doc_id, "doc_x"]}) == {
        "deleted": 1
    }


def test_command_serves_v1() -> None:
    code = (
        "import typer; from sync_service.emulator.command import emulator; "
        "app = typer.Typer(); app.command()(emulator); app()"
    )
    args = ["--api", "v1", "--port", "0", "--set", "vector_placement=vectors"]
    process = subprocess.Popen(
        [sys.executable, "-c", code, *args], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip().rsplit(" ", 1)[1]
        assert httpx.get(f"{url}/v1/health").status_code == 200
        assert httpx.get(f"{url}/_emulator/config").json()["vector_placement"] == "vectors"
        assert httpx.get(f"{url}/v1/namespaces/default", headers=AUTH).status_code == 200
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert process.returncode == 0
