"""The Qdrant stand-in (tests/qdrant_server.py), driven by the real remote client over HTTP.

These check the stand-in, not the product: that qdrant-client's REST code path round-trips
through it, that errors come back as the server's codes, and that its test hooks (faults,
request log, persistence) do what they say. One test runs the product's ``QdrantSink`` on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from qdrant_client import AsyncQdrantClient, QdrantClient, models
from qdrant_client.http.exceptions import UnexpectedResponse

from sync_service.engine.points import VectorSpec, plan_points
from sync_service.qdrant.sink import INDEXED_FIELDS, QdrantSink
from tests.qdrant_server import QdrantStandIn, create_app

WRITE_ROUTES = re.compile(
    r"/collections/[^/]+/(points(/delete|/payload|/vectors)?|index|vectors/.+)$"
)


@pytest.fixture(scope="module")
def stand_in() -> Iterator[QdrantStandIn]:
    with QdrantStandIn() as server:
        yield server


@pytest.fixture
def qdrant(stand_in: QdrantStandIn) -> Iterator[QdrantStandIn]:
    """The shared stand-in with no fault set and an empty request log."""
    stand_in.clear_faults()
    stand_in.reset_requests()
    yield stand_in
    stand_in.clear_faults()


@pytest.fixture
async def client(qdrant: QdrantStandIn) -> AsyncIterator[AsyncQdrantClient]:
    c = AsyncQdrantClient(url=qdrant.url, check_compatibility=False)
    yield c
    await c.close()


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def uid(n: int) -> str:
    return str(uuid.UUID(int=n, version=4))


async def status_of(call: Any) -> tuple[int | None, str]:
    with pytest.raises(UnexpectedResponse) as info:
        await call
    return info.value.status_code, info.value.structured()["status"]["error"]


async def make_collection(client: AsyncQdrantClient, name: str) -> None:
    await client.create_collection(
        name,
        vectors_config={
            "text": models.VectorParams(size=4, distance=models.Distance.EUCLID),
            "image": models.VectorParams(size=3, distance=models.Distance.DOT),
        },
        sparse_vectors_config={"words": models.SparseVectorParams()},
    )


# -- service and collections -----------------------------------------------------------------


async def test_service_routes_answer_like_the_server(
    qdrant: QdrantStandIn, client: AsyncQdrantClient
) -> None:
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", qdrant.url)
    info = await client.info()
    assert (info.title, info.version) == ("qdrant - vector search engine", "1.20.0")
    with httpx.Client(base_url=qdrant.url) as http:
        assert http.get("/healthz").text == "healthz check passed"
        assert http.get("/readyz").text == "all shards are ready"
        missing = http.get("/collections/nope")
    assert missing.status_code == 404
    assert missing.json() == {
        "result": None,
        "status": {"error": "Not found: Collection `nope` doesn't exist!"},
        "time": 0.0,
    }
    assert [(r["method"], r["path"], r["status"]) for r in qdrant.requests()] == [
        ("GET", "/", 200),
        ("GET", "/healthz", 200),
        ("GET", "/readyz", 200),
        ("GET", "/collections/nope", 404),
    ]


async def test_collection_with_named_vectors_round_trips(client: AsyncQdrantClient) -> None:
    name = unique("named")
    assert not await client.collection_exists(name)
    await make_collection(client, name)
    assert await client.collection_exists(name)
    assert name in {c.name for c in (await client.get_collections()).collections}

    params = (await client.get_collection(name)).config.params
    assert isinstance(params.vectors, dict)
    assert {n: (p.size, p.distance) for n, p in params.vectors.items()} == {
        "text": (4, models.Distance.EUCLID),
        "image": (3, models.Distance.DOT),
    }
    assert set(params.sparse_vectors or {}) == {"words"}

    code, message = await status_of(make_collection(client, name))
    assert (code, message) == (409, f"Wrong input: Collection `{name}` already exists!")
    code, message = await status_of(client.get_collection(unique("missing")))
    assert code == 404 and "doesn't exist" in message

    assert await client.delete_collection(name) is True
    assert await client.delete_collection(name) is False
    assert not await client.collection_exists(name)


async def test_aliases_create_swap_and_list(client: AsyncQdrantClient) -> None:
    alias, v1, v2 = unique("docs"), unique("docs_v1"), unique("docs_v2")
    await make_collection(client, v1)
    await make_collection(client, v2)
    await client.update_collection_aliases(
        change_aliases_operations=[
            models.CreateAliasOperation(
                create_alias=models.CreateAlias(collection_name=v1, alias_name=alias)
            )
        ]
    )
    listed = {a.alias_name: a.collection_name for a in (await client.get_aliases()).aliases}
    assert listed[alias] == v1
    assert [a.alias_name for a in (await client.get_collection_aliases(v1)).aliases] == [alias]
    # An alias works wherever a collection name does.
    assert await client.collection_exists(alias)
    assert (await client.count(alias)).count == 0

    assert await client.update_collection_aliases(
        change_aliases_operations=[
            models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=alias)),
            models.CreateAliasOperation(
                create_alias=models.CreateAlias(collection_name=v2, alias_name=alias)
            ),
        ]
    )
    assert (await client.get_collection_aliases(v1)).aliases == []
    assert [a.alias_name for a in (await client.get_collection_aliases(v2)).aliases] == [alias]

    code, _ = await status_of(client.get_collection_aliases(unique("missing")))
    assert code == 404
    code, _ = await status_of(
        client.update_collection_aliases(
            change_aliases_operations=[
                models.CreateAliasOperation(
                    create_alias=models.CreateAlias(
                        collection_name=unique("missing"), alias_name=unique("a")
                    )
                )
            ]
        )
    )
    assert code == 404


async def test_payload_index_and_vector_names(
    qdrant: QdrantStandIn, client: AsyncQdrantClient
) -> None:
    name = unique("vectors")
    await make_collection(client, name)
    result = await client.create_payload_index(
        name, "asset_id", field_schema=models.PayloadSchemaType.KEYWORD, wait=True
    )
    assert result.status == models.UpdateStatus.COMPLETED
    index_calls = [
        (r["method"], r["query"], r["status"])
        for r in qdrant.requests()
        if r["path"] == f"/collections/{name}/index"
    ]
    assert index_calls == [("PUT", {"wait": "true"}, 200)]

    dense = models.DenseVectorNameConfig(
        dense=models.DenseVectorConfig(size=2, distance=models.Distance.COSINE)
    )
    await client.create_vector_name(name, "audio", dense, wait=True)
    await client.create_vector_name(
        name, "tags", models.SparseVectorNameConfig(sparse=models.SparseVectorConfig()), wait=True
    )
    await client.create_vector_name(name, "audio", dense, wait=True)  # same config: a no-op
    params = (await client.get_collection(name)).config.params
    assert isinstance(params.vectors, dict)
    assert params.vectors["audio"].size == 2
    assert set(params.sparse_vectors or {}) == {"words", "tags"}

    other = models.DenseVectorNameConfig(
        dense=models.DenseVectorConfig(size=5, distance=models.Distance.COSINE)
    )
    code, message = await status_of(client.create_vector_name(name, "audio", other, wait=True))
    assert code == 400 and "already exists" in message

    await client.upsert(name, [models.PointStruct(id=uid(1), vector={"audio": [0.0, 2.0]})])
    record = (await client.retrieve(name, [uid(1)], with_vectors=True))[0]
    assert record.vector == {"audio": [0.0, 1.0]}


# -- points ----------------------------------------------------------------------------------


def payload_for(i: int) -> dict[str, Any]:
    return {
        "i": i,
        "asset": {"id": f"a{i % 2}", "tags": ["x", "y"], "meta": {"f": 0.5, "none": None}},
    }


def vectors_for(i: int) -> dict[str, Any]:
    vectors: dict[str, Any] = {"text": [float(i), 1.0, 2.0, 3.0]}
    if i != 4:  # a point may omit some of its collection's vectors
        vectors["image"] = [1.0, float(i), -1.0]
    if i == 0:
        vectors["words"] = models.SparseVector(indices=[3, 7], values=[0.5, 1.5])
    return vectors


async def test_points_round_trip(qdrant: QdrantStandIn, client: AsyncQdrantClient) -> None:
    name = unique("points")
    await make_collection(client, name)
    points = [
        models.PointStruct(id=uid(i), vector=vectors_for(i), payload=payload_for(i))
        for i in range(5)
    ]
    await client.upsert(name, points, wait=True)

    records = await client.retrieve(name, [uid(i) for i in range(5)], with_vectors=True)
    by_id = {r.id: r for r in records}
    assert set(by_id) == {uid(i) for i in range(5)}
    for i in range(5):
        record = by_id[uid(i)]
        assert record.payload == payload_for(i)
        assert isinstance(record.vector, dict)
        expected = {
            k: models.SparseVector(**v.model_dump()) if isinstance(v, models.SparseVector) else v
            for k, v in vectors_for(i).items()
        }
        assert record.vector == expected

    # Another spelling of a UUID is the same point.
    simple = uuid.UUID(uid(2)).hex.upper()
    assert [r.id for r in await client.retrieve(name, [simple])] == [uid(2)]

    seen: list[str] = []
    offset: Any = None
    while True:
        page, offset = await client.scroll(name, limit=2, offset=offset, with_payload=False)
        assert len(page) <= 2 and all(r.payload is None for r in page)
        seen += [str(r.id) for r in page]
        if offset is None:
            break
    assert sorted(seen) == sorted(uid(i) for i in range(5))

    assert (await client.count(name, exact=True)).count == 5
    nested = models.Filter(
        must=[models.FieldCondition(key="asset.id", match=models.MatchValue(value="a1"))]
    )
    assert (await client.count(name, count_filter=nested)).count == 2

    hits = (
        await client.query_points(
            name, query=[3.0, 1.0, 2.0, 3.0], using="text", limit=2, with_payload=True
        )
    ).points
    assert [h.id for h in hits] == [uid(3), uid(2)]
    assert hits[0].payload == payload_for(3)
    filtered = await client.query_points(
        name, query=[3.0, 1.0, 2.0, 3.0], using="text", query_filter=nested, limit=1
    )
    assert [h.id for h in filtered.points] == [uid(3)]

    await client.set_payload(name, {"flag": True}, points=[uid(0)])
    await client.overwrite_payload(name, {"only": 1}, points=[uid(1)])
    await client.update_vectors(
        name, [models.PointVectors(id=uid(0), vector={"image": [9.0, 9.0, 9.0]})]
    )
    zero, one = await client.retrieve(name, [uid(0), uid(1)], with_vectors=["image"])
    assert zero.payload == {**payload_for(0), "flag": True}
    assert zero.vector == {"image": [9.0, 9.0, 9.0]}
    assert one.payload == {"only": 1}

    # The batch form, and a conditional update passed through: the stale write is not applied.
    await client.upsert(
        name,
        models.Batch(
            ids=[uid(10), uid(11)],
            vectors={"text": [[1.0] * 4, [2.0] * 4]},
            payloads=[{"version": 3}, {"version": 3}],
        ),
    )
    stale = models.Filter(must=[models.FieldCondition(key="version", range=models.Range(lt=2))])
    await client.upsert(
        name,
        [models.PointStruct(id=uid(10), vector={"text": [0.0] * 4}, payload={"version": 2})],
        update_filter=stale,
    )
    assert (await client.retrieve(name, [uid(10)]))[0].payload == {"version": 3}
    assert (await client.count(name)).count == 7

    await client.delete(name, points_selector=models.PointIdsList(points=[uid(0)]))
    await client.delete(
        name,
        points_selector=models.FilterSelector(
            filter=models.Filter(must=[models.FieldCondition(key="i", range=models.Range(gte=3))])
        ),
    )
    remaining = {str(r.id) for r in (await client.scroll(name, limit=100))[0]}
    assert remaining == {uid(1), uid(2), uid(10), uid(11)}

    writes = [
        r for r in qdrant.requests() if r["method"] != "GET" and WRITE_ROUTES.search(r["path"])
    ]
    reads = {"/points", "/points/scroll", "/points/count", "/points/query"}
    writes = [r for r in writes if not (r["method"] == "POST" and r["path"].endswith(tuple(reads)))]
    assert len(writes) == 8
    assert all(r["query"].get("wait") == "true" and r["status"] == 200 for r in writes), writes


async def test_errors_come_back_with_the_servers_codes(
    qdrant: QdrantStandIn, client: AsyncQdrantClient
) -> None:
    name = unique("errors")
    await make_collection(client, name)

    def point(vector: dict[str, Any], point_id: Any = None) -> list[models.PointStruct]:
        return [models.PointStruct(id=uid(1) if point_id is None else point_id, vector=vector)]

    code, message = await status_of(client.upsert(name, point({"text": [1.0, 2.0, 3.0]})))
    assert code == 400
    assert message.startswith("Wrong input: Vector dimension error: expected dim: 4, got 3")
    code, message = await status_of(client.upsert(name, point({"nope": [1.0]})))
    assert (code, message) == (400, "Wrong input: Not existing vector name error: nope")
    code, message = await status_of(client.upsert(name, point({"text": [1.0] * 4}, -1)))
    assert (code, message) == (400, "Format error in JSON body: value -1 is not a valid point ID")
    code, _ = await status_of(client.upsert(unique("missing"), point({"text": [1.0] * 4})))
    assert code == 404
    code, message = await status_of(client.scroll(name, limit=0))
    assert code == 422 and message.startswith("Validation error in JSON body")
    assert (await client.count(name)).count == 0  # nothing of the refused writes landed

    with httpx.Client(base_url=qdrant.url) as http:
        url = f"/collections/{name}/points"
        bad = [
            http.put(url, content=b'{"points": [', headers={"Content-Type": "application/json"}),
            http.put(
                url,
                content=b'{"points": [{"id": 1, "vector": {"text": [NaN, 1, 1, 1]}}]}',
                headers={"Content-Type": "application/json"},
            ),
            http.put(url, json={"points": [{"id": 1, "vector": {}, "colour": "red"}]}),
        ]
    for response in bad:
        assert response.status_code == 400, response.text
        assert response.json()["status"]["error"].startswith("Format error in JSON body: ")


# -- the product's sink on it ----------------------------------------------------------------

ASSET = {"asset_id": "a1", "collection_id": "c1", "modality": "video", "url": "https://x/a.mp4"}


def features(n: int, name: str = "multimodal-v1", dim: int = 4) -> list[dict[str, Any]]:
    return [
        {
            "feature_id": f"00000000-0000-4000-8000-{i:012}",
            "asset_id": "a1",
            "collection_id": "c1",
            "modality": "video",
            "extra": {"nested": {"list": [1, 2, i]}},
            "vectors": {name: [float(i + 1), *([0.5] * (dim - 1))]},
        }
        for i in range(n)
    ]


def unit(values: list[float]) -> list[float]:
    norm = math.sqrt(sum(v * v for v in values))
    return [v / norm for v in values]


async def test_product_sink_end_to_end(qdrant: QdrantStandIn) -> None:
    name = unique("demo")

    def new_sink() -> QdrantSink:
        client = AsyncQdrantClient(url=qdrant.url, timeout=30, check_compatibility=False)
        return QdrantSink(client, batch_points=4)

    sink, rival = new_sink(), new_sink()
    try:
        plan = plan_points(features(10), ASSET, "t1", schema=await sink.schema(name))
        assert plan.new_vectors == {"multimodal-v1": VectorSpec(size=4)}
        # Two replicas creating the same collection at once: both succeed, one alias results.
        refused = await asyncio.gather(
            sink.ensure_vectors(name, plan.new_vectors),
            rival.ensure_vectors(name, plan.new_vectors),
        )
        assert list(refused) == [[], []]
        aliases = {
            a.alias_name: a.collection_name for a in (await sink.client.get_aliases()).aliases
        }
        assert aliases[name] == f"{name}__v1"
        assert await sink.schema(name) == {"multimodal-v1": VectorSpec(size=4)}

        assert await sink.upsert(name, plan.points) == []  # nothing refused
        assert await sink.count(name) == 10
        records = {str(r.id): r for r in await sink.scroll_all(name)}
        assert set(records) == {p.point_id for p in plan.points}
        for planned in plan.points:
            record = records[planned.point_id]
            assert record.payload == planned.payload
            assert isinstance(record.vector, dict)
            stored = record.vector["multimodal-v1"]
            assert isinstance(stored, list)
            assert stored == pytest.approx(unit(planned.vectors["multimodal-v1"]))  # type: ignore[arg-type]
        hits = await sink.search(name, "multimodal-v1", [3.0, 0.5, 0.5, 0.5], limit=1)
        assert hits[0].id == plan.points[2].point_id

        # A vector name the collection lacks is added in place (create_vector_name).
        more = plan_points(
            features(3, name="text-v2", dim=3), ASSET, "t2", schema=await sink.schema(name)
        )
        assert await sink.ensure_vectors(name, more.new_vectors) == []
        assert await rival.ensure_vectors(name, more.new_vectors) == []
        assert (await sink.schema(name))["text-v2"] == VectorSpec(size=3)
        await sink.upsert(name, more.points)
        assert await sink.count(name) == 10  # same feature ids: the same points, replaced
        replaced = (await sink.retrieve(name, [more.points[0].point_id]))[0]
        assert set(replaced.vector or {}) == {"text-v2"}
        assert replaced.payload == more.points[0].payload
        assert await sink.count(unique("missing")) == 0

        # A re-sync's payload-only write (one batch request) and its deletions, over REST.
        captioned = more.points[1]
        captioned.payload["description"] = "a new caption"
        await sink.set_payloads(name, [captioned], version=7.0)
        changed = (await sink.retrieve(name, [captioned.point_id]))[0]
        assert changed.payload == {**captioned.payload, "_sync_version": 7.0}
        assert set(changed.vector or {}) == {"text-v2"}  # vectors untouched
        await sink.delete_points(name, [more.points[2].point_id])
        assert await sink.count(name) == 9
        assert len(await sink.point_ids(name)) == 9
        await sink.ping()
    finally:
        await sink.close()
        await rival.close()

    physical = f"/collections/{name}__v1"
    indexes = [r for r in qdrant.requests() if r["path"] == f"{physical}/index"]
    assert len(indexes) == 2 * len(INDEXED_FIELDS)
    writes = [
        r
        for r in qdrant.requests()
        if r["method"] == "PUT"
        and r["path"].startswith(f"/collections/{name}")
        and WRITE_ROUTES.search(r["path"])
    ]
    assert writes and all(r["query"].get("wait") == "true" for r in writes), writes


# -- several processes sharing it ------------------------------------------------------------

WORKER = """
import asyncio, sys, uuid
from qdrant_client import AsyncQdrantClient, models

url, name, writer = sys.argv[1], sys.argv[2], int(sys.argv[3])

async def main():
    client = AsyncQdrantClient(url=url, check_compatibility=False)
    await client.get_collections()  # connected; now wait for the starting signal
    print("ready", flush=True)
    sys.stdin.readline()
    own = uuid.UUID(int=writer + 1)
    for start in range(0, 150, 10):
        points = [
            models.PointStruct(
                id=str(uuid.uuid5(own, str(i))),
                vector={"v": [float(writer), float(i), 1.0]},
                payload={"writer": writer, "i": i},
            )
            for i in range(start, start + 10)
        ] + [
            models.PointStruct(
                id=str(uuid.UUID(int=1000 + start + k)),
                vector={"v": [float(writer), -1.0, 1.0]},
                payload={"writer": writer, "i": -1},
            )
            for k in range(2)
        ]
        await client.upsert(name, points, wait=True)
        if start == 0:
            # Go on only once the other writer has written too: the writes interleave.
            match = models.MatchValue(value=3 - writer)
            other = models.Filter(must=[models.FieldCondition(key="writer", match=match)])
            while (await client.count(name, count_filter=other)).count == 0:
                await asyncio.sleep(0.005)
    await client.close()

asyncio.run(main())
"""


def test_two_processes_writing_concurrently(qdrant: QdrantStandIn) -> None:
    name = unique("shared")
    with contextlib.closing(QdrantClient(url=qdrant.url, check_compatibility=False)) as client:
        client.create_collection(
            name, vectors_config={"v": models.VectorParams(size=3, distance=models.Distance.EUCLID)}
        )
        workers = [
            subprocess.Popen(
                [sys.executable, "-c", WORKER, qdrant.url, name, str(w)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for w in (1, 2)
        ]
        for worker in workers:  # both connected before either writes
            assert worker.stdout is not None and worker.stdout.readline() == "ready\n"
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.write("go\n")
            worker.stdin.close()
        assert [w.wait(timeout=60) for w in workers] == [0, 0]
        records, offset = client.scroll(name, limit=1000, with_vectors=True)
        assert offset is None
    assert len(records) == 2 * 150 + 30
    for record in records:
        # Vector and payload come from one and the same write, never half of each.
        assert isinstance(record.vector, dict) and record.payload is not None
        vector = record.vector["v"]
        assert isinstance(vector, list)
        assert vector[0] == record.payload["writer"]
        assert vector[1] == (record.payload["i"] if record.payload["i"] >= 0 else -1.0)
    assert sum(1 for r in records if r.payload and r.payload["i"] == -1) == 30
    assert len([r for r in qdrant.requests() if r["method"] == "PUT"]) == 1 + 2 * 15


# -- faults ------------------------------------------------------------------------------------


async def test_fault_down_answers_503_until_cleared(
    qdrant: QdrantStandIn, client: AsyncQdrantClient
) -> None:
    assert qdrant.set_faults("down")["mode"] == "down"
    for call in (client.get_collections(), client.collection_exists("x"), client.info()):
        code, message = await status_of(call)
        assert code == 503 and "down" in message
    with httpx.Client(base_url=qdrant.url) as http:
        assert http.get("/healthz").status_code == 503
    qdrant.clear_faults()
    await client.get_collections()

    qdrant.set_faults("down", count=2)
    assert (await status_of(client.get_collections()))[0] == 503
    assert (await status_of(client.get_collections()))[0] == 503
    await client.get_collections()
    assert [r["status"] for r in qdrant.requests()] == [503, 503, 503, 503, 200, 503, 503, 200]


async def test_fault_reject_points_refuses_the_whole_batch(
    qdrant: QdrantStandIn, client: AsyncQdrantClient
) -> None:
    name = unique("reject")
    await make_collection(client, name)

    def batch(*ns: int) -> list[models.PointStruct]:
        return [models.PointStruct(id=uid(n), vector={"text": [float(n)] * 4}) for n in ns]

    # Any spelling of a UUID matches.
    qdrant.set_faults("reject_points", reject_ids=[uuid.UUID(uid(2)).hex.upper()])
    code, message = await status_of(client.upsert(name, batch(1, 2, 3)))
    assert code == 400 and message.startswith("Wrong input:") and uid(2) in message
    assert (await client.count(name)).count == 0
    await client.upsert(name, batch(1, 3))
    assert (await status_of(client.upsert(name, batch(2))))[0] == 400  # until cleared
    assert (await client.count(name)).count == 2
    qdrant.clear_faults()
    await client.upsert(name, batch(2))
    assert (await client.count(name)).count == 3

    qdrant.set_faults("reject_points", reject_ids=[uid(4)], count=1)
    assert (await status_of(client.upsert(name, batch(4))))[0] == 400
    await client.upsert(name, batch(4))
    assert (await client.count(name)).count == 4


async def test_fault_ambiguous_applies_then_answers_500(
    qdrant: QdrantStandIn, client: AsyncQdrantClient
) -> None:
    name = unique("ambiguous")
    await make_collection(client, name)
    assert qdrant.set_faults("ambiguous")["count"] == 1  # once unless told otherwise
    qdrant.set_faults("ambiguous", count=2)
    for n in (1, 2):
        point = models.PointStruct(id=uid(n), vector={"text": [1.0] * 4}, payload={"n": n})
        code, message = await status_of(client.upsert(name, [point]))
        assert code == 500 and "applied" in message
        assert (await client.retrieve(name, [uid(n)]))[0].payload == {"n": n}
    await client.upsert(name, [models.PointStruct(id=uid(3), vector={"text": [1.0] * 4})])
    assert (await client.count(name)).count == 3
    with httpx.Client(base_url=qdrant.url) as http:
        assert http.get("/_test/faults").json()["mode"] == "none"
    upserts = [
        r["status"]
        for r in qdrant.requests()
        if r["method"] == "PUT" and r["path"].endswith("/points")
    ]
    assert upserts == [500, 500, 200]
    qdrant.reset_requests()
    assert qdrant.requests() == []


# -- persistence and process handling ----------------------------------------------------------


def test_path_persists_across_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "qdrant"
    first = QdrantStandIn(path).start()
    try:
        with contextlib.closing(QdrantClient(url=first.url, check_compatibility=False)) as client:
            client.create_collection(
                "kept__v1",
                vectors_config={"v": models.VectorParams(size=2, distance=models.Distance.DOT)},
            )
            client.update_collection_aliases(
                change_aliases_operations=[
                    models.CreateAliasOperation(
                        create_alias=models.CreateAlias(
                            collection_name="kept__v1", alias_name="kept"
                        )
                    )
                ]
            )
            client.upsert(
                "kept",
                [
                    models.PointStruct(id=uid(i), vector={"v": [1.0, float(i)]}, payload={"i": i})
                    for i in range(3)
                ],
            )
    finally:
        assert first.process is not None
        first.process.send_signal(signal.SIGINT)
        assert first.process.wait(timeout=10) == 0

    with (
        QdrantStandIn(path) as second,
        contextlib.closing(QdrantClient(url=second.url, check_compatibility=False)) as client,
    ):
        assert second.url != "" and second.process is not None
        assert {a.alias_name: a.collection_name for a in client.get_aliases().aliases} == {
            "kept": "kept__v1"
        }
        assert client.count("kept").count == 3
        records = client.retrieve("kept", [uid(2)], with_vectors=True)
        assert records[0].payload == {"i": 2} and records[0].vector == {"v": [1.0, 2.0]}
    assert second.process.returncode == 0


def test_create_app_serves_in_process() -> None:
    transport = httpx.ASGITransport(app=create_app())

    async def call() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=transport, base_url="http://stand-in") as http:
            return [
                await http.get("/"),
                await http.put("/collections/c", json={"vectors": {"size": 2, "distance": "Dot"}}),
                await http.get("/collections/c/exists"),
            ]

    root, created, exists = asyncio.run(call())
    assert root.json() == {"title": "qdrant - vector search engine", "version": "1.20.0"}
    assert created.json()["result"] is True and created.json()["status"] == "ok"
    assert exists.json()["result"] == {"exists": True}
