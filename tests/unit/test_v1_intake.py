"""v1 work intake over httpx.MockTransport: a finished batch's documents checked against the
count it reports, batch ids tracked, an expired task followed through its batch, several items
in one batch, the vector kinds a collection declares, and the embedding route."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from sync_service.upstream.http import RetryPolicy
from sync_service.upstream.port import (
    MixpeekNotFound,
    Submission,
    TaskOutcome,
    VectorShape,
)
from sync_service.upstream.v1.adapter import V1Upstream
from sync_service.upstream.v1.client import V1Client

Handler = Callable[[httpx.Request], httpx.Response]
NOT_FOUND = {"success": False, "error": {"message": "not found", "type": "NotFoundError"}}


def upstream(handler: Handler, grace: float = 30.0) -> V1Upstream:
    client = V1Client(
        base_url="https://mixpeek.test",
        api_key="sk-test",
        namespace="prod",
        transport=httpx.MockTransport(handler),
        policy=RetryPolicy(max_attempts=1),
    )
    return V1Upstream(client, listing_grace=grace)


def document(document_id: str, root: str) -> dict[str, Any]:
    lineage = {"root_object_id": root}
    return {"document_id": document_id, "_internal": {"namespace_id": "ns_1", "lineage": lineage}}


def batch(status: str, written: int | None, **extra: Any) -> dict[str, Any]:
    tier: dict[str, Any] = {"task_id": "t1", "status": status}
    if written is not None:
        tier["documents_written"] = written
    return {
        "batch_id": "btch_1",
        "bucket_id": "bkt_1",
        "status": status,
        "task_id": "t1",
        "object_ids": ["obj_1", "obj_2"],
        "collection_ids": ["col_a"],
        "tier_tasks": [tier],
        **extra,
    }


class Api:
    """A small v1 server: one bucket (or two), one batch, documents per root object."""

    def __init__(
        self,
        served_batch: dict[str, Any],
        documents: list[dict[str, Any]],
        *,
        task: dict[str, Any] | None = None,
        buckets: tuple[str, ...] = ("bkt_1",),
    ) -> None:
        self.batch, self.documents, self.task, self.buckets = (
            served_batch,
            documents,
            task,
            buckets,
        )
        self.paths: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        self.paths.append(path)
        if path == "/v1/tasks/t1":
            return httpx.Response(200, json=self.task) if self.task else _404()
        if path == "/v1/buckets/list":
            return httpx.Response(200, json={"results": [{"bucket_id": b} for b in self.buckets]})
        if path == "/v1/buckets/bkt_1/batches/list":
            return httpx.Response(200, json={"results": [self.batch], "total_count": 1})
        if path.endswith("/batches/list"):
            return httpx.Response(200, json={"results": [], "total_count": 0})
        if path == "/v1/buckets/bkt_1/batches/btch_1":
            return httpx.Response(200, json=self.batch)
        if path.endswith("/batches/btch_1"):
            return _404()
        if path == "/v1/collections/col_a/documents/list":
            where = json.loads(request.content)["filters"]["AND"][0]
            assert (
                where["field"] == "_internal.lineage.root_object_id" and where["operator"] == "in"
            )
            return httpx.Response(200, json={"results": self.documents, "pagination": {}})
        return _404()


def _404() -> httpx.Response:
    return httpx.Response(404, json=NOT_FOUND)


def running_task(status: str = "COMPLETED") -> dict[str, Any]:
    extra = {"batch_id": "btch_1", "bucket_id": "bkt_1", "collection_ids": ["col_a"]}
    return {"task_id": "t1", "status": status, "additional_data": extra}


async def test_a_shortfall_waits_out_the_grace_then_syncs_and_reports_it() -> None:
    api = Api(batch("COMPLETED", 3), [document("d1", "obj_1"), document("d2", "obj_2")])
    api.task = running_task()
    async with upstream(api) as up:
        waiting = await up.get_task("t1")
        assert waiting.outcome is TaskOutcome.PENDING
        assert waiting.status == "COMPLETED (listed 2 of 3 documents)"
    async with upstream(api, grace=0.0) as up:
        done = await up.get_task("t1")
    assert done.outcome is TaskOutcome.SUCCEEDED
    assert (done.asset_id, done.more_assets) == ("col_a/obj_1", ("col_a/obj_2",))
    (problem,) = done.problems
    assert "reports 3 document(s) written but 2 are listed in col_a" in problem


async def test_completed_with_errors_reports_each_object_that_made_nothing() -> None:
    served = batch("COMPLETED_WITH_ERRORS", 1, error="extraction failed for 1 object")
    api = Api(served, [document("d1", "obj_1"), document("dx", "obj_other")])
    api.task = running_task("COMPLETED_WITH_ERRORS")
    async with upstream(api) as up:
        done = await up.get_task("t1")
    assert done.outcome is TaskOutcome.SUCCEEDED
    assert (done.asset_id, done.more_assets) == ("col_a/obj_1", ())  # obj_other: not this batch's
    assert done.problems == (
        "object obj_2 produced no document (COMPLETED_WITH_ERRORS: extraction failed for 1 object)",
    )


async def test_a_running_later_tier_keeps_the_batch_pending() -> None:
    served = batch("COMPLETED", 2)
    served["tier_tasks"].append({"task_id": "t2", "status": "PROCESSING"})
    api = Api(served, [document("d1", "obj_1")], task=running_task())
    async with upstream(api) as up:
        task = await up.get_task("t1")
    assert task.outcome is TaskOutcome.PENDING and "later tier" in task.status


@pytest.mark.parametrize("tracked", ["btch_1", "bkt_1/btch_1"])
async def test_a_batch_id_is_tracked_as_its_task(tracked: str) -> None:
    docs = [document("d1", "obj_1"), document("d2", "obj_2")]
    api = Api(batch("COMPLETED", 2), docs, buckets=("bkt_0", "bkt_1"))
    async with upstream(api) as up:
        task = await up.get_task(tracked)
        assert task.task_id == tracked and task.outcome is TaskOutcome.SUCCEEDED
        assert (task.asset_id, task.more_assets, task.problems) == (
            "col_a/obj_1",
            ("col_a/obj_2",),
            (),
        )
        looked = [p for p in api.paths if p.startswith("/v1/buckets/")]
        if "/" in tracked:  # the bucket is named: no looking for it
            assert "/v1/buckets/list" not in api.paths
        else:
            assert looked[:3] == [
                "/v1/buckets/list",
                "/v1/buckets/bkt_0/batches/btch_1",
                "/v1/buckets/bkt_1/batches/btch_1",
            ]
        api.paths.clear()
        await up.get_task(tracked)  # the bucket is remembered
        assert "/v1/buckets/list" not in api.paths


async def test_an_expired_task_is_followed_through_its_batch() -> None:
    failed = batch("FAILED", None, error="the video could not be decoded")
    api = Api(failed, [], buckets=("bkt_0", "bkt_1"))  # the task answers 404
    async with upstream(api) as up:
        task = await up.get_task("t1")
        assert task.outcome is TaskOutcome.FAILED and task.status == "FAILED"
        assert await up.failure_reason(task) == "the video could not be decoded"
    api.batch = batch("COMPLETED", 1)
    api.documents = [document("d1", "obj_1")]
    async with upstream(api) as up:
        assert (await up.get_task("t1")).asset_id == "col_a/obj_1"


async def test_a_task_no_batch_knows_is_not_found() -> None:
    api = Api(batch("COMPLETED", 1), [], buckets=("bkt_0",))
    async with upstream(api) as up:
        with pytest.raises(MixpeekNotFound):
            await up.get_task("t1")


async def test_items_submitted_together_go_in_one_batch_per_bucket() -> None:
    calls: list[tuple[str, Any]] = []
    objects = iter(range(1, 10))

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        path = request.url.path
        calls.append((path, body))
        if path.startswith("/v1/collections/"):
            bucket = "bkt_1" if path.endswith("col_a") else "bkt_2"
            return httpx.Response(200, json={"source": {"type": "bucket", "bucket_ids": [bucket]}})
        if path in ("/v1/buckets/bkt_1", "/v1/buckets/bkt_2"):
            schema = {"properties": {"title": {"type": "string"}, "media": {"type": "video"}}}
            return httpx.Response(200, json={"bucket_schema": schema})
        if path.endswith("/objects"):
            return httpx.Response(200, json={"object_id": f"obj_{next(objects)}"})
        if path.endswith("/batches"):
            return httpx.Response(200, json={"batch_id": f"btch_{path.split('/')[3]}"})
        return httpx.Response(
            200, json={"task_id": f"task_{path.split('/')[3]}", "status": "PENDING"}
        )

    items = [
        Submission("video", "https://x/a.mp4", "col_a"),
        Submission("text", "a text", "col_a", metadata={"k": 1}),
        Submission("video", "https://x/b.mp4", "col_b"),
    ]
    async with upstream(handler) as up:
        tasks = [t async for t in up.submit_all(items)]
    assert tasks == ["task_bkt_1", "task_bkt_2"]
    made = {path: body for path, body in calls if path.endswith("/batches")}
    assert made == {
        "/v1/buckets/bkt_1/batches": {"object_ids": ["obj_1", "obj_2"]},
        "/v1/buckets/bkt_2/batches": {"object_ids": ["obj_3"]},
    }
    blobs = [body["blobs"][0] for path, body in calls if path.endswith("/objects")]
    # Each item goes in the property whose type fits (a text in a "string" one).
    assert [b["property"] for b in blobs] == ["media", "title", "media"]
    assert sum(path == "/v1/buckets/bkt_1" for path, _ in calls) == 1  # schema read once


async def test_declared_vector_kinds_and_an_embedding() -> None:
    features = {
        "features": [
            {"vector_index": {"name": "d", "dimensions": 3, "type": "dense", "distance": "dot"}},
            {"vector_index": {"name": "s", "type": "sparse"}},
            {"vector_index": {"name": "m", "dimensions": 2, "type": "multi_dense"}},
        ]
    }
    served = document("d1", "obj_1") | {
        "d": [1.0, 2.0, 3.0],
        "s": {"indices": [4], "values": [0.5]},
        "m": [[1.0, 0.0], [0.0, 1.0]],
    }

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/features"):
            return httpx.Response(200, json=features)
        if request.url.path.endswith("/documents/list"):
            return httpx.Response(200, json={"results": [served], "pagination": {}})
        assert request.url.path == "/v1/features/extractors/embed"
        asked = json.loads(request.content)
        assert asked["vector_index"] == asked["embedding_model"] == "d"
        return httpx.Response(200, json={"embedding": [0.1, 0.2, 0.3]})

    async with upstream(handler) as up:
        content = await up.fetch_content("col_a/obj_1")
        assert await up.embed("a query", "d") == [0.1, 0.2, 0.3]
    assert content.generation == "v1"
    assert content.declared == {
        "d": VectorShape("dense", 3, "dot"),
        "s": VectorShape("sparse", None, None),
        "m": VectorShape("multi_dense", 2, None),
    }
    assert content.features[0].data["vectors"]["m"] == [[1.0, 0.0], [0.0, 1.0]]
