"""The Qdrant sink on qdrant-client's embedded (local) mode."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import httpx
import pytest
from qdrant_client import AsyncQdrantClient

from sync_service.engine.points import PlannedPoint, VectorSpec, plan_points
from sync_service.qdrant.sink import INDEXED_FIELDS, QdrantSink, SinkUnavailable
from tests.qdrant_server import QdrantStandIn

ASSET = {"asset_id": "a1", "collection_id": "c1", "modality": "video", "url": "https://x/a.mp4"}


def features(n: int, dim: int = 4, name: str = "multimodal-v1") -> list[dict[str, object]]:
    return [
        {
            "feature_id": f"00000000-0000-4000-8000-{i:012}",
            "asset_id": "a1",
            "collection_id": "c1",
            "modality": "video",
            "vectors": {name: [float(i + 1)] + [0.5] * (dim - 1)},
        }
        for i in range(n)
    ]


def points(n: int, dim: int = 4) -> list[PlannedPoint]:
    return plan_points(features(n, dim), ASSET, "t1", schema={}).points


@pytest.fixture
async def sink() -> AsyncIterator[QdrantSink]:
    s = QdrantSink(AsyncQdrantClient(":memory:"), batch_points=10)
    yield s
    await s.close()


async def test_collection_is_created_behind_an_alias_with_payload_indexes(sink: QdrantSink) -> None:
    assert await sink.schema("demo") == {}
    await sink.ensure_vectors("demo", {"multimodal-v1": VectorSpec(size=4)})
    aliases = {a.alias_name: a.collection_name for a in (await sink.client.get_aliases()).aliases}
    assert aliases == {"demo": "demo__v1"}
    assert await sink.schema("demo") == {"multimodal-v1": VectorSpec(size=4)}
    info = await sink.client.get_collection("demo__v1")
    assert info.config.params.vectors["multimodal-v1"].distance.value == "Cosine"  # type: ignore[index]


async def test_server_path_on_the_wire() -> None:
    """The REST calls a Qdrant server receives (local mode ignores indexes and ``wait``)."""
    seen: list[tuple[str, str, dict[str, str], object]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        seen.append((request.method, request.url.path, dict(request.url.params), body))
        path = request.url.path
        if path.endswith("/exists"):
            result: object = {"exists": False}
        elif path == "/aliases":
            result = {"aliases": []}
        elif path.endswith("/index") or path.endswith("/points"):
            result = {"operation_id": 1, "status": "completed"}
        else:
            result = True
        return httpx.Response(200, json={"result": result, "status": "ok", "time": 0.001})

    client = AsyncQdrantClient(
        url="http://qdrant.invalid:6333",
        check_compatibility=False,
        transport=httpx.MockTransport(handler),
    )
    sink = QdrantSink(client, batch_points=2)
    await sink.ensure_vectors("demo", {"multimodal-v1": VectorSpec(size=4)})
    await sink.upsert("demo", points(3))
    calls = [(method, path) for method, path, _, _ in seen]
    assert ("PUT", "/collections/demo__v1") in calls
    index_calls = [body for method, path, _, body in seen if path == "/collections/demo__v1/index"]
    assert sorted(b["field_name"] for b in index_calls) == sorted(INDEXED_FIELDS)  # type: ignore[index]
    assert all(b["field_schema"] == "keyword" for b in index_calls)  # type: ignore[index]
    (alias_call,) = [body for _, path, _, body in seen if path == "/collections/aliases"]
    assert alias_call == {
        "actions": [{"create_alias": {"collection_name": "demo__v1", "alias_name": "demo"}}]
    }
    writes = [
        (params, body) for method, path, params, body in seen if path == "/collections/demo/points"
    ]
    assert len(writes) == 2  # 3 points in batches of 2
    assert all(params.get("wait") == "true" for params, _ in writes)
    first = writes[0][1]["points"][0]  # type: ignore[index]
    assert first["id"] == "00000000-0000-4000-8000-000000000000"
    assert set(first["vector"]) == {"multimodal-v1"}
    assert first["payload"]["task_id"] == "t1"
    # The index calls come before the first point is written.
    last_index = max(i for i, (_, path) in enumerate(calls) if path.endswith("/index"))
    first_write = min(i for i, (_, path) in enumerate(calls) if path.endswith("/points"))
    assert last_index < first_write


async def test_a_new_vector_name_is_added_to_an_existing_collection(sink: QdrantSink) -> None:
    await sink.ensure_vectors("demo", {"multimodal-v1": VectorSpec(size=4)})
    assert await sink.ensure_vectors("demo", {"text-v2": VectorSpec(size=3)}) == []
    assert await sink.schema("demo") == {
        "multimodal-v1": VectorSpec(size=4),
        "text-v2": VectorSpec(size=3),
    }


async def test_a_configured_size_shapes_the_collection_not_the_first_vector(
    sink: QdrantSink,
) -> None:
    """SYNC_VECTOR_SIZES: the first asset's only vector is one float short (poisoned)."""
    sizes = {"multimodal-v1": 4}
    poisoned = plan_points(features(1, dim=3), ASSET, "t1", {}, sizes)
    assert not poisoned.points and not poisoned.new_vectors
    assert "length 3 but the collection expects 4" in poisoned.rejected[0].reason
    # The next asset serves both a configured name and one the setting does not list.
    both = {"multimodal-v1": [1.0, 0.5, 0.5, 0.5], "text-v2": [1.0, 0.0]}
    mixed = [{**f, "vectors": both} for f in features(2)]
    plan = plan_points(mixed, ASSET, "t2", await sink.schema("demo"), sizes)
    assert await sink.ensure_vectors("demo", plan.new_vectors) == []
    assert await sink.schema("demo") == {
        "multimodal-v1": VectorSpec(size=4),  # as configured
        "text-v2": VectorSpec(size=2),  # from the data
    }
    assert await sink.upsert("demo", plan.points) == []
    assert await sink.count("demo") == 2
    # Once the collection exists, a wrong-length vector is a dead letter saying why.
    later = plan_points(features(1, dim=5), ASSET, "t3", await sink.schema("demo"), sizes)
    assert not later.points and not later.new_vectors
    assert later.rejected[0].reason == (
        "vector 'multimodal-v1' has length 5 but the collection expects 4 "
        "(SYNC_VECTOR_SIZES multimodal-v1=4)"
    )


async def test_creating_twice_is_harmless(sink: QdrantSink) -> None:
    await sink.ensure_vectors("demo", {"multimodal-v1": VectorSpec(size=4)})
    other = QdrantSink(sink.client)  # a second replica with an empty schema cache
    await other._create("demo", {"multimodal-v1": VectorSpec(size=4)})
    assert await other.schema("demo") == {"multimodal-v1": VectorSpec(size=4)}


async def test_tasks_reaching_a_new_collection_at_once_create_it_once() -> None:
    """The first seconds of a run: every task in flight finds the collection missing."""
    with QdrantStandIn() as qdrant:
        client = AsyncQdrantClient(url=qdrant.url, check_compatibility=False)
        sink = QdrantSink(client)
        spec = {"multimodal-v1": VectorSpec(size=4)}
        answers = await asyncio.gather(*(sink.ensure_vectors("demo", spec) for _ in range(8)))
        assert answers == [[]] * 8
        assert await sink.schema("demo") == spec
        calls = [(r["method"], r["path"]) for r in qdrant.requests()]
        assert calls.count(("PUT", "/collections/demo__v1")) == 1  # no "already exists" races
        assert calls.count(("PUT", "/collections/demo__v1/index")) == len(INDEXED_FIELDS)
        assert calls.count(("POST", "/collections/aliases")) == 1
        await client.close()


async def test_upsert_writes_every_point_in_bounded_batches(sink: QdrantSink) -> None:
    sizes: list[int] = []
    sink.on_batch = lambda _seconds, n: sizes.append(n)
    batch = points(25)
    await sink.ensure_vectors("demo", {"multimodal-v1": VectorSpec(size=4)})
    assert await sink.upsert("demo", batch) == []
    assert sizes == [10, 10, 5] and await sink.count("demo") == 25
    assert await sink.upsert("demo", batch) == []  # a redo lands on the same points
    assert await sink.count("demo") == 25


async def test_a_refused_point_is_isolated_and_the_rest_land() -> None:
    """One bad point makes Qdrant refuse its batch; bisection finds it, the others land."""
    with QdrantStandIn() as qdrant:
        client = AsyncQdrantClient(url=qdrant.url, check_compatibility=False)
        sink = QdrantSink(client, batch_points=8)
        batch = points(20)
        await sink.ensure_vectors("demo", {"multimodal-v1": VectorSpec(size=4)})
        bad = batch[13].point_id
        qdrant.set_faults("reject_points", reject_ids=[bad])
        refused = await sink.upsert("demo", batch)
        assert [r.point.point_id for r in refused] == [bad]
        assert "Qdrant refused the point" in refused[0].reason
        assert await sink.count("demo") == 19
        writes = [r for r in qdrant.requests() if r["path"] == "/collections/demo/points"]
        assert writes and all(r["query"].get("wait") == "true" for r in writes)
        await client.close()


async def test_an_unreachable_qdrant_is_unavailable_not_bad_input() -> None:
    client = AsyncQdrantClient(url="http://127.0.0.1:9", timeout=2, check_compatibility=False)
    sink = QdrantSink(client)
    with pytest.raises(SinkUnavailable):
        await sink.upsert("demo", points(2))
    await client.close()


async def test_a_5xx_from_qdrant_is_unavailable() -> None:
    with QdrantStandIn() as qdrant:
        client = AsyncQdrantClient(url=qdrant.url, check_compatibility=False)
        sink = QdrantSink(client)
        await sink.ensure_vectors("demo", {"multimodal-v1": VectorSpec(size=4)})
        qdrant.set_faults("down")
        with pytest.raises(SinkUnavailable, match="503"):
            await sink.upsert("demo", points(2))
        qdrant.clear_faults()
        assert await sink.upsert("demo", points(2)) == []
        await client.close()


def test_batches_are_bounded_by_bytes_too() -> None:
    sink = QdrantSink(AsyncQdrantClient(":memory:"), batch_points=1000, batch_bytes=64 * 1024)
    big = points(40, dim=1408)  # about 20 kB each
    sizes = [len(b) for b in sink.batches(big)]
    assert sum(sizes) == 40 and max(sizes) < 40
    for b in sink.batches(big):
        assert sum(p.approx_bytes for p in b) <= 64 * 1024 or len(b) == 1


def test_no_point_id_twice_in_one_batch() -> None:
    sink = QdrantSink(AsyncQdrantClient(":memory:"), batch_points=100)
    one = points(3)
    batches = list(sink.batches([*one, one[0], *points(2)]))
    for b in batches:
        ids = [p.point_id for p in b]
        assert len(ids) == len(set(ids))
    assert sum(len(b) for b in batches) == 6


async def test_a_sparse_vector_name_is_added_to_an_existing_collection(sink: QdrantSink) -> None:
    await sink.ensure_vectors("demo", {"multimodal-v1": VectorSpec(size=4)})
    sparse = VectorSpec(size=None, sparse=True)
    assert await sink.ensure_vectors("demo", {"keyword": sparse}) == []
    assert (await sink.schema("demo"))["keyword"] == sparse


async def test_an_older_version_never_overwrites_a_newer_point(sink: QdrantSink) -> None:
    """A worker that stalled past its lease writes with an older version: it is ignored."""
    await sink.ensure_vectors("demo", {"multimodal-v1": VectorSpec(size=4)})
    newer = plan_points(features(2), {**ASSET, "url": "https://x/new.mp4"}, "t2", {}).points
    older = plan_points(features(3), {**ASSET, "url": "https://x/old.mp4"}, "t1", {}).points
    await sink.upsert("demo", newer, version=200.0)
    await sink.upsert("demo", older, version=100.0)  # the zombie wakes up
    records = {str(r.id): r.payload for r in await sink.scroll_all("demo")}
    assert len(records) == 3  # a point only the stale write had is still inserted
    for point in newer:
        assert records[point.point_id]["asset"]["url"] == "https://x/new.mp4"  # type: ignore[index]
        assert records[point.point_id]["_sync_version"] == 200.0  # type: ignore[index]
    await sink.upsert("demo", older, version=300.0)  # a genuinely newer write does replace
    records = {str(r.id): r.payload for r in await sink.scroll_all("demo")}
    assert all(p["asset"]["url"] == "https://x/old.mp4" for p in records.values())  # type: ignore[index]


async def test_payload_only_writes_are_guarded_and_never_create_points(sink: QdrantSink) -> None:
    await sink.ensure_vectors("demo", {"multimodal-v1": VectorSpec(size=4)})
    [current] = plan_points(features(1), {**ASSET, "url": "https://x/new.mp4"}, "t2", {}).points
    [stale] = plan_points(features(1), {**ASSET, "url": "https://x/old.mp4"}, "t1", {}).points
    await sink.upsert("demo", [current], version=200.0)
    await sink.set_payloads("demo", [stale], version=100.0)  # a stalled worker's caption edit
    [record] = await sink.retrieve("demo", [current.point_id])
    assert record.payload == {**current.payload, "_sync_version": 200.0}
    await sink.set_payloads("demo", [stale], version=300.0)  # a newer one does apply
    [record] = await sink.retrieve("demo", [current.point_id])
    assert record.payload == {**stale.payload, "_sync_version": 300.0}
    assert record.vector == (await sink.retrieve("demo", [current.point_id]))[0].vector
    # A payload-only write to a point Qdrant lost is a no-op, not an error (the pipeline
    # checks existence first and sends such points whole).
    [lost] = plan_points(features(2), ASSET, "t1", {}).points[1:]
    await sink.set_payloads("demo", [lost], version=400.0)
    assert await sink.existing("demo", [current.point_id, lost.point_id]) == {current.point_id}
