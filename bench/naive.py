"""The upstream guide followed literally: the baseline the service is compared with.

For each task, one after another: poll ``GET /tasks/{id}`` every 2 s until DONE, list
``GET /assets/{id}/features``, then for each feature ``GET /features/{id}?include_vectors=true``
and upsert that one point (``wait=True``). No concurrency, no batching.

    python bench/naive.py --url http://127.0.0.1:8800 --api-key K TASK_ID...

Prints one JSON object: ``{"features": n, "assets": n, "started": t0, "finished": t1}``
(wall-clock seconds; the Qdrant collection is created before ``started``).
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from typing import Any

import httpx
from qdrant_client import QdrantClient, models

POLL_SECONDS = 2.0


def point_id(feature_id: str) -> str:
    try:
        return str(uuid.UUID(feature_id))
    except ValueError:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"mixpeek://feature/{feature_id}"))


def sync_one(http: httpx.Client, qdrant: QdrantClient, collection: str, task_id: str) -> int:
    while True:
        task = http.get(f"/tasks/{task_id}").raise_for_status().json()
        if task["status"] in ("DONE", "COMPLETED"):
            break
        if task["status"] in ("FAILED", "CANCELLED"):
            return 0
        time.sleep(POLL_SECONDS)
    grouped = http.get(f"/assets/{task['asset_id']}/features").raise_for_status().json()
    asset: dict[str, Any] = grouped["asset"]
    count = 0
    for listed in (f for group in grouped["features"].values() for f in group):
        feature = (
            http.get(f"/features/{listed['feature_id']}", params={"include_vectors": "true"})
            .raise_for_status()
            .json()
        )
        vectors = feature.pop("vectors")
        payload = {**listed, **feature, "task_id": task_id, "asset": asset}
        qdrant.upsert(
            collection,
            [
                models.PointStruct(
                    id=point_id(feature["feature_id"]), vector=vectors, payload=payload
                )
            ],
            wait=True,
        )
        count += 1
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--vector-size", type=int, default=1408)
    parser.add_argument("--qdrant-url", default=None, help="default: embedded, in memory")
    parser.add_argument("task_ids", nargs="+")
    args = parser.parse_args()

    qdrant = (
        QdrantClient(url=args.qdrant_url, check_compatibility=False)
        if args.qdrant_url
        else QdrantClient(location=":memory:")
    )
    collection = "naive"
    qdrant.create_collection(
        collection,
        vectors_config={
            "multimodal-v1": models.VectorParams(
                size=args.vector_size, distance=models.Distance.COSINE
            )
        },
    )
    headers = {"Authorization": f"Bearer {args.api_key}"}
    features = 0
    with httpx.Client(base_url=args.url, headers=headers, timeout=30) as http:
        started = time.time()
        for task_id in args.task_ids:
            features += sync_one(http, qdrant, collection, task_id)
        finished = time.time()
    print(
        json.dumps(
            {
                "features": features,
                "assets": len(args.task_ids),
                "started": started,
                "finished": finished,
            }
        )
    )


if __name__ == "__main__":
    main()
