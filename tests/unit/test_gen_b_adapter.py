"""The 2024 API behind the upstream port: its answers become the port's models, and the port's
calls become its requests (httpx.MockTransport: no sockets)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from sync_service.upstream.gen_b.adapter import GenBUpstream, asset_from
from sync_service.upstream.gen_b.client import MixpeekClient, RetryPolicy
from sync_service.upstream.gen_b.models import Asset as WireAsset
from sync_service.upstream.port import (
    ListOrder,
    MixpeekBadResponse,
    MixpeekNotFound,
    MixpeekUnsupported,
    Submission,
    TaskOutcome,
)

Handler = Callable[[httpx.Request], httpx.Response]


def upstream(handler: Handler) -> GenBUpstream:
    client = MixpeekClient(
        base_url="https://mixpeek.test",
        api_key="sk-test",
        transport=httpx.MockTransport(handler),
        policy=RetryPolicy(max_attempts=1),
    )
    return GenBUpstream(client)


def test_an_asset_keeps_its_stamp_as_served_and_reads_it_as_utc() -> None:
    raw = {"asset_id": 7, "updated_at": "2024-11-20T10:00:00.123456", "task_id": "t"}
    asset = asset_from(WireAsset.from_json(raw))
    assert asset.asset_id == "7"
    assert asset.stamp == "2024-11-20T10:00:00.123456"
    assert asset.changed_at == datetime(2024, 11, 20, 10, 0, 0, 123456, UTC).timestamp()
    assert asset.outcome is TaskOutcome.SUCCEEDED  # no status stated: finished
    assert asset.task_id == "t" and asset.data is raw


@pytest.mark.parametrize(
    ("status", "outcome"),
    [("FAILED", TaskOutcome.FAILED), ("PROCESSING", TaskOutcome.PENDING), ("DONE", "succeeded")],
)
def test_an_assets_status_is_classified(status: str, outcome: TaskOutcome) -> None:
    asset = asset_from(WireAsset.from_json({"asset_id": "a", "status": status, "error": "boom"}))
    assert asset.outcome == outcome and asset.status == status and asset.error == "boom"


async def test_content_merges_listing_and_feature_and_sets_vanished_ones_aside() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/assets/a1/features":
            listed = [
                {"feature_id": "f1", "modality": "video", "start_time": 0},
                {"feature_id": "f2", "modality": "video"},
            ]
            return httpx.Response(
                200, json={"asset": {"asset_id": "a1"}, "features": {"video": listed}}
            )
        if request.url.path == "/features/f1":
            vectors = {"multimodal-v1": [0.1, 0.2]}
            feature = {"feature_id": "f1", "collection_id": "c", "vectors": vectors}
            return httpx.Response(200, json=feature)
        return httpx.Response(404, json={"detail": "gone"})

    async with upstream(handler) as adapter:
        content = await adapter.fetch_content("a1")
    (feature,) = content.features
    assert feature.data == {
        "feature_id": "f1",
        "modality": "video",
        "start_time": 0,
        "collection_id": "c",
        "vectors": {"multimodal-v1": [0.1, 0.2]},
    }
    assert [f.feature_id for f in content.vanished] == ["f2"]
    assert content.upstream_ids == {"f1"}
    assert content.collection_id == "c"  # the asset names none: the features' collection


async def test_content_of_an_unfinished_asset_skips_the_features_when_asked() -> None:
    paths: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        asset = {"asset_id": "a1", "status": "PROCESSING"}
        return httpx.Response(
            200, json={"asset": asset, "features": {"video": [{"feature_id": "f1"}]}}
        )

    async with upstream(handler) as adapter:
        content = await adapter.fetch_content("a1", only_if_done=True)
    assert content.features == [] and paths == ["/assets/a1/features"]
    assert content.collection_id == "default"


async def test_a_listing_sends_the_filter_and_order_in_the_apis_form() -> None:
    bodies: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        page = {"results": [{"asset_id": "a"}], "pagination": {"total_pages": 1, "page": 1}}
        return httpx.Response(200, json=page)

    async with upstream(handler) as adapter:
        since = datetime(2024, 11, 20, 10, 0, tzinfo=UTC).timestamp()
        page = await adapter.list_assets("c", order=ListOrder.CHANGED, changed_since=since)
        await adapter.list_assets("c", order=ListOrder.CREATED)
    assert [a.asset_id for a in page.assets] == ["a"] and not page.has_next
    assert bodies[0]["filters"] == {
        "AND": [{"key": "updated_at", "operator": "gte", "value": "2024-11-20T10:00:00.000000"}]
    }
    assert bodies[0]["sort"] == {"field": "updated_at", "direction": "asc"}
    assert "filters" not in bodies[1]
    assert bodies[1]["sort"] == {"field": "created_at", "direction": "asc"}


async def test_submissions_go_to_their_kinds_route() -> None:
    seen: list[tuple[str, dict[str, Any]]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.url.path, json.loads(request.content)))
        return httpx.Response(200, json={"task_id": f"t{len(seen)}"})

    async with upstream(handler) as adapter:
        ids = [
            await adapter.submit(Submission("video", "https://x/v.mp4", "c", {"k": 1}, True)),
            await adapter.submit(Submission("image", "https://x/i.png", "c")),
            await adapter.submit(Submission("text", "hello", "c")),
        ]
    assert ids == ["t1", "t2", "t3"]
    assert [path for path, _ in seen] == ["/index/videos/url", "/index/images/url", "/index/text"]
    assert seen[0][1]["prevent_duplicate"] is True and seen[0][1]["metadata"] == {"k": 1}
    assert seen[2][1]["text"] == "hello"


async def test_a_failed_tasks_reason_is_read_from_its_asset() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/tasks/t1":
            return httpx.Response(200, json={"task_id": "t1", "asset_id": "a1", "status": "FAILED"})
        return httpx.Response(200, json={"asset_id": "a1", "error": "codec not supported"})

    async with upstream(handler) as adapter:
        task = await adapter.get_task("t1")
        assert task.outcome is TaskOutcome.FAILED and task.asset_id == "a1"
        assert await adapter.failure_reason(task) == "codec not supported"


async def test_a_missing_asset_is_not_found() -> None:
    async with upstream(lambda r: httpx.Response(404, json={"detail": "no"})) as adapter:
        with pytest.raises(MixpeekNotFound):
            await adapter.get_asset("a1")


async def test_embed_posts_the_text_and_reads_the_vector() -> None:
    seen: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/features/extractors/embed"
        seen.append(json.loads(request.content))
        return httpx.Response(200, json={"embedding": [1, 0.5], "elapsed_time": 0.01})

    async with upstream(handler) as adapter:
        assert await adapter.embed("red panda", "clip-v1") == [1.0, 0.5]
    assert seen == [{"type": "text", "value": "red panda", "embedding_model": "clip-v1"}]


async def test_embed_on_an_api_without_the_route_is_unsupported() -> None:
    async with upstream(lambda r: httpx.Response(404, json={"detail": "Not Found"})) as adapter:
        with pytest.raises(MixpeekUnsupported, match="has no embedding route"):
            await adapter.embed("red panda", "multimodal-v1")


async def test_embed_answer_without_a_vector_is_a_bad_response() -> None:
    async with upstream(lambda r: httpx.Response(200, json={"embedding": "nope"})) as adapter:
        with pytest.raises(MixpeekBadResponse, match="holds no vector"):
            await adapter.embed("red panda", "multimodal-v1")


async def test_a_multi_dense_embedding_is_read_and_a_ragged_one_refused() -> None:
    rows = [[1, 0], [0, 1.5], [0.5, 0.5]]  # one vector per token
    async with upstream(lambda r: httpx.Response(200, json={"embedding": rows})) as adapter:
        assert await adapter.embed("red panda", "late") == [[1.0, 0.0], [0.0, 1.5], [0.5, 0.5]]
    ragged = {"embedding": [[1, 0], [0]]}
    async with upstream(lambda r: httpx.Response(200, json=ragged)) as adapter:
        with pytest.raises(MixpeekBadResponse, match="rows of different lengths"):
            await adapter.embed("red panda", "late")


async def test_a_feature_replaced_while_the_asset_is_read_is_read_again_not_set_aside() -> None:
    """Re-processing replaced f2 by f3 between the listing and f2's fetch: the asset is read
    again and f3 lands; no dead letter for f2, which the asset no longer lists."""
    listings = [["f1", "f2"], ["f1", "f3"]]
    paths: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        if request.url.path == "/assets/a1/features":
            listed = [{"feature_id": f} for f in listings.pop(0)]
            return httpx.Response(
                200, json={"asset": {"asset_id": "a1"}, "features": {"video": listed}}
            )
        feature_id = request.url.path.rsplit("/", 1)[1]
        if feature_id == "f2":
            return httpx.Response(404, json={"detail": "gone"})
        return httpx.Response(200, json={"feature_id": feature_id, "vectors": {"v": [1.0]}})

    async with upstream(handler) as adapter:
        content = await adapter.fetch_content("a1")
    assert [f.feature_id for f in content.features] == ["f1", "f3"]
    assert content.vanished == [] and content.upstream_ids == {"f1", "f3"}
    assert paths.count("/assets/a1/features") == 2
    # The read again asks only for what it has not fetched: f1 is not fetched twice.
    assert sorted(p for p in paths if p.startswith("/features/")) == [
        "/features/f1",
        "/features/f2",
        "/features/f3",
    ]


async def test_a_feature_listed_but_never_found_is_set_aside_after_three_reads() -> None:
    reads = 0
    paths: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal reads
        paths.append(request.url.path)
        if request.url.path == "/assets/a1/features":
            reads += 1
            listed = [{"feature_id": "f1"}, {"feature_id": "f2"}]
            return httpx.Response(
                200, json={"asset": {"asset_id": "a1"}, "features": {"video": listed}}
            )
        if request.url.path == "/features/f2":
            return httpx.Response(404, json={"detail": "gone"})
        return httpx.Response(200, json={"feature_id": "f1", "vectors": {"v": [1.0]}})

    async with upstream(handler) as adapter:
        content = await adapter.fetch_content("a1")
    assert reads == 3
    assert [f.feature_id for f in content.vanished] == ["f2"]
    assert [f.feature_id for f in content.features] == ["f1"]
    assert paths.count("/features/f1") == 1 and paths.count("/features/f2") == 3
