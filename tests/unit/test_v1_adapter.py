"""The v1 API behind the upstream port, over httpx.MockTransport (no sockets): the three vector
placements, both 422 forms, task statuses, the asset of a task, cursor paging, submit and the
``auto`` probe."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from sync_service.settings import MixpeekApiVersion, Settings
from sync_service.upstream.auto import AutoUpstream
from sync_service.upstream.connect import open_upstream, probe_version_early
from sync_service.upstream.http import RetryPolicy
from sync_service.upstream.outage import Outage
from sync_service.upstream.port import (
    ListOrder,
    MixpeekBadRequest,
    MixpeekNotFound,
    MixpeekUnsupported,
    Submission,
    TaskOutcome,
)
from sync_service.upstream.transport import AiohttpClient
from sync_service.upstream.v1.adapter import V1Upstream
from sync_service.upstream.v1.client import V1Client
from tests.scripted_http import Answer, ScriptedServer

Handler = Callable[[httpx.Request], httpx.Response]
MM, TR = "mm_embedding", "tr_embedding"
FEATURES = {
    "features": [
        {"vector_index": {"name": TR, "dimensions": 2, "type": "dense"}, "primary": False},
        {"vector_index": {"name": MM, "dimensions": 3, "type": "dense"}, "primary": True},
    ]
}


def upstream(handler: Handler, namespace: str | None = "prod") -> V1Upstream:
    client = V1Client(
        base_url="https://mixpeek.test",
        api_key="sk-test",
        namespace=namespace,
        transport=httpx.MockTransport(handler),
        policy=RetryPolicy(max_attempts=1),
    )
    return V1Upstream(client)


def doc(document_id: str, obj: str = "obj_1", **extra: Any) -> dict[str, Any]:
    return {
        "document_id": document_id,
        "collection_id": "col_a",
        "start_time": 0.0,
        "document_blobs": [{"field": "t", "url": "s3://x", "presigned_url": "https://tmp?sig"}],
        "_internal": {
            "namespace_id": "ns_1",
            "modality": "video",
            "updated_at": "2026-01-12T09:30:00",
            "lineage": {"root_object_id": obj, "root_bucket_id": "bkt_1"},
        },
        **extra,
    }


def serving(docs: list[dict[str, Any]], seen: list[httpx.Request] | None = None) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request)
        assert request.headers["X-Namespace"] == "prod"
        if request.url.path == "/v1/collections/col_a/features":
            return httpx.Response(200, json=FEATURES)
        if request.url.path == "/v1/collections/col_a/documents/list":
            return httpx.Response(200, json={"results": docs, "pagination": {"next_cursor": None}})
        return httpx.Response(404, json={"error": {"message": "nope", "type": "NotFoundError"}})

    return handler


@pytest.mark.parametrize(
    "placement",
    [
        {MM: [1.0, 2.0, 3.0], TR: [4.0, 5.0]},  # root keys named after the indexes
        {"vectors": {MM: [1.0, 2.0, 3.0], TR: [4.0, 5.0]}},  # a vectors dict (Apr 2025)
        {"vector": [1.0, 2.0, 3.0]},  # one list: the primary index's (Dec 2025 SDK)
    ],
)
async def test_the_three_vector_placements_become_named_vectors(placement: dict[str, Any]) -> None:
    seen: list[httpx.Request] = []
    async with upstream(serving([doc("doc_1", **placement)], seen)) as up:
        content = await up.fetch_content("col_a/obj_1")
    (feature,) = content.features
    expected = (
        {MM: [1.0, 2.0, 3.0]} if "vector" in placement else {MM: [1.0, 2.0, 3.0], TR: [4.0, 5.0]}
    )
    assert feature.data["vectors"] == expected
    assert not {MM, TR, "vector"} & set(feature.data)
    name = "mixpeek://v1/ns_1/col_a/doc_1"
    assert (
        feature.feature_id
        == feature.data["feature_id"]
        == str(uuid.uuid5(uuid.NAMESPACE_URL, name))
    )
    assert feature.data["document_blobs"] == [{"field": "t", "url": "s3://x"}]  # presigned: gone
    assert feature.data["root_object_id"] == "obj_1" and feature.data["mixpeek_api"] == "v1"
    assert feature.data["mixpeek_updated_at"] == "2026-01-12T09:30:00Z"
    assert content.collection_id == "col_a" and content.asset.asset_id == "col_a/obj_1"
    assert content.asset.stamp == "2026-01-12T09:30:00Z"
    listed = json.loads(seen[-1].content)
    assert listed["return_vectors"] is True
    assert listed["filters"]["AND"][0]["field"] == "_internal.lineage.root_object_id"


async def test_sparse_vectors_pass_through_and_a_name_outside_the_indexes_stays_a_field() -> None:
    sparse = {"indices": [1, 7], "values": [0.5, 0.25]}
    served = doc("doc_1", **{MM: [1.0, 2.0, 3.0], TR: sparse, "score_like": [0.1, 0.2]})
    async with upstream(serving([served])) as up:
        (feature,) = (await up.fetch_content("col_a/obj_1")).features
    assert feature.data["vectors"][TR] == sparse
    assert feature.data["score_like"] == [0.1, 0.2]  # never guessed to be a vector


async def test_an_asset_with_no_document_is_gone_unless_its_object_is_there() -> None:
    async with upstream(serving([])) as up:
        with pytest.raises(MixpeekNotFound):
            await up.get_asset("col_a/obj_1")
        # Not an empty asset: a re-sync to no points would remove them past the delete
        # guard and the removal breaker.
        with pytest.raises(MixpeekNotFound):
            await up.fetch_content("col_a/obj_1")
        with pytest.raises(MixpeekNotFound):
            await up.get_asset("a-2024-asset-id")


async def test_an_object_that_made_no_document_here_is_an_empty_asset() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/collections/col_a":
            return httpx.Response(200, json={"source": {"bucket_ids": ["bkt_1"]}})
        if request.url.path == "/v1/buckets/bkt_1/objects/obj_1":
            return httpx.Response(200, json={"object_id": "obj_1"})
        return serving([])(request)

    async with upstream(handler) as up:
        content = await up.fetch_content("col_a/obj_1")
    assert content.features == [] and content.upstream_ids == frozenset()


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        ("PENDING", TaskOutcome.PENDING),
        ("IN_PROGRESS", TaskOutcome.PENDING),
        ("QUEUED", TaskOutcome.PENDING),
        ("UNKNOWN", TaskOutcome.PENDING),
        ("COMPLETED", TaskOutcome.SUCCEEDED),
        ("COMPLETED_WITH_ERRORS", TaskOutcome.SUCCEEDED),
        ("FAILED", TaskOutcome.FAILED),
        ("CANCELED", TaskOutcome.FAILED),
        ("CANCELLED", TaskOutcome.FAILED),
    ],
)
async def test_task_statuses_and_the_assets_of_a_finished_batch(
    status: str, outcome: TaskOutcome
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/tasks/t1":
            extra = {"batch_id": "btch_1", "bucket_id": "bkt_1", "collection_ids": ["col_a"]}
            body = {"task_id": "t1", "status": status, "additional_data": extra}
            return httpx.Response(200, json={**body, "error_message": "boom"})
        if request.url.path.endswith("/documents/list"):  # each object made one document
            roots = json.loads(request.content)["filters"]["AND"][0]["value"]
            docs = [doc(f"d_{root}", root) for root in roots]
            return httpx.Response(200, json={"results": docs, "pagination": {}})
        assert request.url.path == "/v1/buckets/bkt_1/batches/btch_1"
        body = {
            "batch_id": "btch_1",
            "object_ids": ["obj_1", "obj_2"],
            "collection_ids": ["col_a", "col_b"],
            "tier_tasks": [{"task_id": "t1", "status": status, "documents_written": 4}],
        }
        return httpx.Response(200, json=body)

    async with upstream(handler) as up:
        task = await up.get_task("t1")
        assert task.outcome is outcome and task.status == status
        if outcome is TaskOutcome.SUCCEEDED:
            assert task.asset_id == "col_a/obj_1"
            assert task.more_assets == ("col_a/obj_2", "col_b/obj_1", "col_b/obj_2")
        else:
            assert task.asset_id is None and task.more_assets == ()
        assert await up.failure_reason(task) == "boom"


@pytest.mark.parametrize(
    "body",
    [
        {"detail": [{"loc": ["body", "limit"], "msg": "too big", "type": "less_than_equal"}]},
        {
            "success": False,
            "status": 422,
            "error": {
                "message": "Request validation failed",
                "type": "ValidationError",
                "details": {"validation_errors": [{"location": ["body"], "message": "bad"}]},
            },
        },
    ],
)
async def test_both_422_forms_are_a_bad_request(body: dict[str, Any]) -> None:
    async with upstream(lambda _: httpx.Response(422, json=body)) as up:
        with pytest.raises(MixpeekBadRequest) as raised:
            await up.get_task("t1")
    assert raised.value.status == 422 and raised.value.message


def paged(docs: list[dict[str, Any]], asked: list[dict[str, Any]], *, sort: bool) -> Handler:
    """A documents list over ``docs`` with offset cursors; ``sort``: honour a sort on the
    root object (else serve the given order, as a server ignoring it)."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/features"):
            return httpx.Response(200, json=FEATURES)
        body = json.loads(request.content)
        asked.append(body)
        ordered = docs
        where = body.get("filters", {}).get("AND", [{}])[0]
        if where.get("field") == "_internal.lineage.root_object_id":  # one asset's documents
            want = where["value"]
            ordered = [d for d in docs if d["_internal"]["lineage"]["root_object_id"] == want]
        if sort and body.get("sort", {}).get("field") == "_internal.lineage.root_object_id":
            ordered = sorted(docs, key=lambda d: d["_internal"]["lineage"]["root_object_id"])
        start = int(body.get("cursor") or 0)
        chunk = ordered[start : start + body["limit"]]
        more = start + body["limit"] < len(ordered)
        page = {"next_cursor": str(start + body["limit"]) if more else None}
        return httpx.Response(200, json={"results": chunk, "pagination": page})

    return handler


async def test_full_listings_go_by_object_and_carry_each_whole_document_set() -> None:
    # Created out of object order: o1's second document came later (a re-processing).
    docs = [doc("d1", "o1"), doc("d3", "o2"), doc("d4", "o3"), doc("d5", "o3"), doc("d2", "o1")]
    asked: list[dict[str, Any]] = []
    async with upstream(paged(docs, asked, sort=True)) as up:
        pages = []
        for number in (1, 2, 3):
            page = await up.list_assets("col_a", order=ListOrder.CREATED, page=number, page_size=2)
            pages.append({a.asset_id: a.feature_ids for a in page.assets})
            assert page.has_next == (number < 3)
        # Out of turn (a pass resumed after a restart): walked to from page 1.
        resumed = await up.list_assets("col_a", order=ListOrder.CREATED, page=3, page_size=2)
        content = await up.fetch_content("col_a/o3")

    def ids(*names: str) -> frozenset[str]:
        return frozenset(
            str(uuid.uuid5(uuid.NAMESPACE_URL, f"mixpeek://v1/ns_1/col_a/{n}")) for n in names
        )

    # Page 1 is o1's two documents: held back, as o1 may go on on page 2.
    assert pages == [
        {},
        {"col_a/o1": ids("d1", "d2"), "col_a/o2": ids("d3")},
        {"col_a/o3": ids("d4", "d5")},
    ]
    assert [a.asset_id for a in resumed.assets] == ["col_a/o3"]
    assert asked[0]["sort"] == {"field": "_internal.lineage.root_object_id", "direction": "asc"}
    assert [b.get("cursor") for b in asked[:3]] == [None, "2", "4"]
    # The listing's feature ids are the points a sync writes.
    assert pages[2]["col_a/o3"] == content.upstream_ids


async def test_a_server_ignoring_the_object_sort_gets_plain_pages_without_feature_sets() -> None:
    docs = [doc("d1", "o2"), doc("d2", "o1"), doc("d3", "o3"), doc("d4", "o3")]
    asked: list[dict[str, Any]] = []
    async with upstream(paged(docs, asked, sort=False)) as up:
        first = await up.list_assets("col_a", order=ListOrder.CREATED, page=1, page_size=2)
        second = await up.list_assets("col_a", order=ListOrder.CREATED, page=2, page_size=2)
        again = await up.list_assets("col_a", order=ListOrder.CREATED, page=1, page_size=2)
    assert [a.asset_id for a in first.assets] == ["col_a/o2", "col_a/o1"]
    assert [a.asset_id for a in second.assets] == ["col_a/o3"]
    assert all(a.feature_ids is None for a in first.assets + second.assets)
    assert "sort" not in asked[-1] and again.assets  # not asked again


async def test_incremental_listings_filter_and_sort_on_the_update_time() -> None:
    asked: list[dict[str, Any]] = []
    async with upstream(paged([doc("d1", "o1")], asked, sort=False)) as up:
        changed = await up.list_assets(
            "col_a", order=ListOrder.CHANGED, page_size=2, changed_since=1768210200.0
        )
    assert asked[-1]["sort"] == {"field": "_internal.updated_at", "direction": "asc"}
    assert asked[-1]["filters"]["AND"][0] == {
        "field": "_internal.updated_at",
        "operator": "gte",
        "value": "2026-01-12T09:30:00Z",
    }
    assert changed.assets[0].changed_at == 1768210200.0
    assert changed.assets[0].feature_ids is None  # a change listing is not the whole asset


@pytest.mark.parametrize(
    ("sizes", "expected"),
    [
        ({MM: 1408, TR: 1024}, 87),  # a multimodal segment: ~45 KB, a page under 4 MB
        ({MM: 8, TR: 4}, 1000),  # tiny vectors: the API's bound
    ],
)
async def test_the_page_size_with_vectors_follows_the_vector_sizes(
    sizes: dict[str, int], expected: int
) -> None:
    features = {
        "features": [
            {"vector_index": {"name": n, "dimensions": d, "type": "dense"}}
            for n, d in sizes.items()
        ]
    }
    asked: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/features"):
            return httpx.Response(200, json=features)
        asked.append(json.loads(request.content))
        return httpx.Response(200, json={"results": [doc("d1")], "pagination": {}})

    async with upstream(handler) as up:
        await up.fetch_content("col_a/obj_1")
    assert asked[0]["limit"] == expected and asked[0]["return_vectors"] is True


async def test_a_refused_updated_at_filter_falls_back_to_plain_listings() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if "filters" in json.loads(request.content):
            return httpx.Response(
                400, json={"error": {"message": "bad filter", "type": "BadRequestError"}}
            )
        return httpx.Response(200, json={"results": [doc("d1")], "pagination": {}})

    async with upstream(handler) as up:
        page = await up.list_assets("col_a", order=ListOrder.CHANGED, changed_since=1.0)
    assert [a.asset_id for a in page.assets] == ["col_a/obj_1"] and not page.has_next


async def test_submit_makes_an_object_a_batch_and_submits_it() -> None:
    calls: list[tuple[str, str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        calls.append((request.method, request.url.path, body))
        path = request.url.path
        if path == "/v1/collections/col_a":
            return httpx.Response(
                200, json={"collection_id": "col_a", "source": {"bucket_ids": ["bkt_1"]}}
            )
        if path == "/v1/buckets/bkt_1":
            return httpx.Response(200, json={"bucket_id": "bkt_1", "bucket_schema": {}})
        if path == "/v1/features/extractors/embed":
            return httpx.Response(404, json={"detail": "Not Found"})
        if path.endswith("/objects"):
            return httpx.Response(200, json={"object_id": "obj_9"})
        if path.endswith("/batches"):
            return httpx.Response(200, json={"batch_id": "btch_9", "status": "DRAFT"})
        return httpx.Response(200, json={"task_id": "task_9", "status": "PENDING"})

    async with upstream(handler) as up:
        item = Submission("video", "https://x/v.mp4", "col_a", metadata={"k": 1})
        assert await up.submit(item) == "task_9"
        with pytest.raises(MixpeekUnsupported):
            await up.embed("a text", MM)
    assert [c[1] for c in calls][:5] == [
        "/v1/collections/col_a",
        "/v1/buckets/bkt_1",
        "/v1/buckets/bkt_1/objects",
        "/v1/buckets/bkt_1/batches",
        "/v1/buckets/bkt_1/batches/btch_9/submit",
    ]
    assert calls[2][2] == {
        "blobs": [{"property": "video", "type": "video", "data": "https://x/v.mp4"}],
        "metadata": {"k": 1},
    }
    assert calls[3][2] == {"object_ids": ["obj_9"]}


@pytest.mark.parametrize(("health", "version"), [(200, "v1"), (404, "2024")])
async def test_auto_probes_once_on_the_first_call(
    monkeypatch: pytest.MonkeyPatch, health: int, version: str
) -> None:
    probes: list[str] = []

    async def send(self: httpx.AsyncClient, request: httpx.Request, **kw: Any) -> httpx.Response:
        if request.url.path == "/v1/health":
            probes.append(request.url.path)
            return httpx.Response(health, json={}, request=request)
        return httpx.Response(404, json={"detail": "Task not found"}, request=request)

    monkeypatch.setattr(AiohttpClient, "send", send)  # the Mixpeek clients' HTTP client
    settings = Settings(MIXPEEK_API_URL="https://mixpeek.test", SYNC_HTTP_MAX_ATTEMPTS=1)
    assert settings.mixpeek_api_version is MixpeekApiVersion.auto
    up = open_upstream(settings)
    assert isinstance(up, AutoUpstream) and probes == []  # made without I/O
    async with up:
        for _ in range(2):
            with pytest.raises(MixpeekNotFound):
                await up.get_task("t1")
    assert probes == ["/v1/health"] and up.version == version
    explicit = Settings(MIXPEEK_API_URL="https://mixpeek.test", MIXPEEK_API_VERSION="v1")
    chosen = open_upstream(explicit)
    assert isinstance(chosen, V1Upstream)  # set explicitly: no probe
    await chosen.aclose()
    assert probes == ["/v1/health"]


async def test_an_early_probe_starts_on_entry_and_a_failed_one_is_asked_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The early probe speaks HTTP with the standard library (upstream/version_probe.py): a
    # real server answers it; the first call's probe goes through the client, intercepted.
    client_probes: list[int] = []

    async def send(self: httpx.AsyncClient, request: httpx.Request, **kw: Any) -> httpx.Response:
        if request.url.path == "/v1/health":
            client_probes.append(200)
            return httpx.Response(200, json={}, request=request)
        return httpx.Response(404, json={"detail": "Task not found"}, request=request)

    monkeypatch.setattr(AiohttpClient, "send", send)  # the Mixpeek clients' HTTP client
    with ScriptedServer(lambda _: Answer(503)) as down:  # the early probe finds Mixpeek down
        # Three attempts per call: the early probe makes one only, and feeds no breaker.
        settings = Settings(MIXPEEK_API_URL=down.url, SYNC_HTTP_MAX_ATTEMPTS=3)
        outage = Outage(recent=0.0)
        failed: list[int] = []
        monkeypatch.setattr(outage, "failed", lambda: failed.append(1))
        up = open_upstream(settings, outage=outage, probe_early=True)
        assert isinstance(up, AutoUpstream) and down.asked == []  # made without I/O
        async with up:
            for _ in range(200):  # the probe runs in the background, before any call
                if up._early_probe is not None and up._early_probe.done():
                    break
                await asyncio.sleep(0.01)
            assert len(down.asked) == 1 and up.version is None  # no answer decides nothing
            assert failed == []  # and tells the breaker nothing
            with pytest.raises(MixpeekNotFound):
                await up.get_task("t1")
            assert client_probes == [200] and up.version == "v1"
    assert len(down.asked) == 1


async def test_a_probe_sent_before_the_upstream_was_made_decides_on_entry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent: list[str] = []

    async def send(self: httpx.AsyncClient, request: httpx.Request, **kw: Any) -> httpx.Response:
        sent.append(request.url.path)
        return httpx.Response(404, json={"detail": "Task not found"}, request=request)

    monkeypatch.setattr(AiohttpClient, "send", send)
    with ScriptedServer(lambda _: Answer(404)) as gen_b:  # no /v1/ routes: the 2024 API
        settings = Settings(MIXPEEK_API_URL=gen_b.url)
        probe = probe_version_early(settings)
        assert probe is not None
        async with open_upstream(settings, probe_early=True, probe=probe) as up:
            with pytest.raises(MixpeekNotFound):
                await up.get_task("t1")
        assert up.version == "2024" and len(gen_b.asked) == 1  # that probe, and no other
    assert sent == ["/tasks/t1"]  # the client asked no probe of its own
    named = Settings(MIXPEEK_API_URL="https://mixpeek.test", MIXPEEK_API_VERSION="2024")
    assert probe_version_early(named) is None  # a named version is not probed


async def test_closing_the_upstream_cancels_an_early_probe_still_waiting() -> None:
    with ScriptedServer(lambda _: Answer(200), hang=True) as silent:  # Mixpeek never answers
        settings = Settings(MIXPEEK_API_URL=silent.url, SYNC_HTTP_TIMEOUT=30)
        up = open_upstream(settings, probe_early=True)
        started = time.monotonic()
        async with up:
            for _ in range(200):
                if silent.asked:
                    break
                await asyncio.sleep(0.01)
            assert silent.asked
        # aclose returned at once, the wait cancelled: nothing of it is left on the loop
        assert time.monotonic() - started < 5
        assert not [t for t in asyncio.all_tasks() if t.get_name() == "api-probe"]


async def test_a_rate_limited_early_probe_makes_the_next_probe_wait_as_asked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client_probes: list[float] = []

    async def send(self: httpx.AsyncClient, request: httpx.Request, **kw: Any) -> httpx.Response:
        if request.url.path == "/v1/health":
            client_probes.append(time.monotonic())
            return httpx.Response(200, json={}, request=request)
        return httpx.Response(404, json={"detail": "Task not found"}, request=request)

    monkeypatch.setattr(AiohttpClient, "send", send)  # the Mixpeek clients' HTTP client
    busy = Answer(429, b"{}", (("Retry-After", "0.3"),))  # the early probe: wait 0.3 s
    with ScriptedServer(lambda _: busy) as server:
        settings = Settings(MIXPEEK_API_URL=server.url, SYNC_HTTP_MAX_ATTEMPTS=3)
        async with open_upstream(settings, probe_early=True) as up:
            with pytest.raises(MixpeekNotFound):
                await up.get_task("t1")  # waits for the early probe, then for the server's pause
    assert len(server.asked) == 1 and len(client_probes) == 1
    assert client_probes[0] - server.asked[0].at >= 0.29
    assert up.version == "v1"
