"""(4) The write path alone: the service's sink vs plain qdrant-client batched upserts.

The same planned points (1408-d ``multimodal-v1``, ~1 KB payload, 10 features per asset, made by
the service's own ``plan_points``) go into a fresh collection of the same Qdrant each time:

* plain: ``AsyncQdrantClient.upsert`` in batches of 256 of ready-made ``PointStruct``s (the
  conversion is *not* timed: this is the best a hand-written loader can do);
* sink, one call: ``QdrantSink.upsert`` with every point (its own batching by points and bytes);
* sink, per asset: ``QdrantSink.upsert`` once per asset (10 points), 16 at a time, which is how
  the pipeline calls it.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
from qdrant_client import AsyncQdrantClient, models

from bench.common import Row
from sync_service.engine.points import PlannedPoint, VectorSpec, plan_points
from sync_service.qdrant.sink import QdrantSink

VECTOR = "multimodal-v1"
DIM = 1408
PER_ASSET = 10
PLAIN_BATCH = 256
IN_FLIGHT = 16
_WORDS = [
    "ocean",
    "wave",
    "surfer",
    "board",
    "sunset",
    "beach",
    "crowd",
    "camera",
    "slow",
    "motion",
    "spray",
    "reef",
]


def make_points(count: int, seed: int = 4) -> list[list[PlannedPoint]]:
    """``count`` points grouped by asset; 256 distinct vectors are reused to spare memory."""
    rng = np.random.default_rng(seed)
    pool = rng.standard_normal((256, DIM)).astype(np.float32)
    pool /= np.linalg.norm(pool, axis=1, keepdims=True)
    vectors = [[float(x) for x in row] for row in pool.tolist()]
    schema = {VECTOR: VectorSpec(size=DIM)}
    assets = []
    for a in range(count // PER_ASSET):
        asset_id, task_id = str(uuid.UUID(int=a + 1)), str(uuid.UUID(int=10**9 + a))
        asset = {
            "asset_id": asset_id,
            "collection_id": "bench",
            "modality": "video",
            "url": f"https://bench.example/w/{a}.mp4",
            "status": "DONE",
            "metadata": {"source": "bench", "n": a},
            "created_at": "2024-11-07T10:00:00",
        }
        features = []
        for i in range(PER_ASSET):
            words = " ".join(_WORDS[(a + i + k) % len(_WORDS)] for k in range(60))
            features.append(
                {
                    "feature_id": str(uuid.UUID(int=(a * PER_ASSET + i) * 7919 + 3)),
                    "asset_id": asset_id,
                    "collection_id": "bench",
                    "modality": "video",
                    "metadata": {"source": "bench"},
                    "created_at": "2024-11-07T10:00:05Z",
                    "start_time": float(i * 10),
                    "end_time": float(i * 10 + 10),
                    "description": words[:300],
                    "transcription": words[:200],
                    "text": words[:60],
                    "vectors": {VECTOR: vectors[(a * PER_ASSET + i) % len(vectors)]},
                }
            )
        assets.append(plan_points(features, asset, task_id, schema).points)
    return assets


async def _timed(fn: Callable[[], Awaitable[Any]]) -> float:
    started = time.perf_counter()
    await fn()
    return time.perf_counter() - started


async def _plain(client: AsyncQdrantClient, name: str, assets: list[list[PlannedPoint]]) -> float:
    await client.create_collection(
        name,
        vectors_config={VECTOR: models.VectorParams(size=DIM, distance=models.Distance.COSINE)},
    )
    structs = [
        models.PointStruct(id=p.point_id, vector=dict(p.vectors), payload=p.payload)
        for points in assets
        for p in points
    ]

    async def load() -> None:
        for start in range(0, len(structs), PLAIN_BATCH):
            await client.upsert(name, structs[start : start + PLAIN_BATCH], wait=True)

    return await _timed(load)


async def _sink(
    client: AsyncQdrantClient, name: str, assets: list[list[PlannedPoint]], per_asset: bool
) -> float:
    sink = QdrantSink(client)
    await sink.ensure_vectors(name, {VECTOR: VectorSpec(size=DIM)})
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def one(points: list[PlannedPoint]) -> None:
        async with gate:
            assert not await sink.upsert(name, points)

    async def load() -> None:
        if per_asset:
            await asyncio.gather(*(one(points) for points in assets))
        else:
            assert not await sink.upsert(name, [p for points in assets for p in points])

    return await _timed(load)


async def _measure(
    make_client: Callable[[], AsyncQdrantClient], count: int, assets: list[list[PlannedPoint]]
) -> dict[str, float]:
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    for points in assets:  # the conversion the sink times and the plain loader does not
        for p in points:
            models.PointStruct(id=p.point_id, vector=dict(p.vectors), payload=p.payload)
    seconds["struct_build"] = time.perf_counter() - started
    runs: list[tuple[str, Callable[[AsyncQdrantClient, str], Awaitable[float]]]] = [
        ("plain", lambda c, n: _plain(c, n, assets)),
        ("sink_one_call", lambda c, n: _sink(c, n, assets, per_asset=False)),
        ("sink_per_asset", lambda c, n: _sink(c, n, assets, per_asset=True)),
    ]
    for label, run in runs:
        client = make_client()
        name = f"w_{label}_{uuid.uuid4().hex[:6]}"
        try:
            seconds[label] = await run(client, name)
            assert (await client.count(name, exact=True)).count == count
            for collection in (await client.get_collections()).collections:
                await client.delete_collection(collection.name)
        finally:
            await client.close()
    return {label: count / s for label, s in seconds.items()}


def write_path(
    count: int, qdrant_url: str | None = None, rest_count: int = 0
) -> tuple[list[Row], dict[str, Any]]:
    rows: list[Row] = []
    details: dict[str, Any] = {}
    kinds: list[tuple[str, int, Callable[[], AsyncQdrantClient]]] = [
        ("embedded :memory:", count, lambda: AsyncQdrantClient(location=":memory:")),
    ]
    if qdrant_url and rest_count:
        kinds.append(
            (
                "REST stand-in",
                rest_count,
                lambda: AsyncQdrantClient(url=qdrant_url, check_compatibility=False, timeout=60),
            )
        )
    for kind, size, make_client in kinds:
        assets = make_points(size)
        count = sum(len(a) for a in assets)
        rates = asyncio.run(_measure(make_client, count, assets))
        details[kind] = rates
        for label in ("sink_one_call", "sink_per_asset"):
            ratio = rates[label] / rates["plain"]
            rows.append(
                Row(
                    "4 write path",
                    f"{label.replace('_', ' ')} ({kind})",
                    rates[label],
                    "points/s",
                    rates["plain"],
                    f"plain upserts of {PLAIN_BATCH}",
                    ratio,
                    ">= 0.90",
                    ratio >= 0.9,
                    f"{count} points, 1408-d; PointStruct conversion alone "
                    f"{rates['struct_build']:,.0f} points/s (timed for the sink, not for plain)",
                )
            )
    return rows, details
