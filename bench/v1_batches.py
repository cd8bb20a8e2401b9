"""(11) Mixpeek v1: documents synced through batches, and a change's way to Qdrant.

Part A, throughput: 100 video objects (10 segments each, so 1,000 documents with a 1408-float
vector) go into a bucket read by one collection of the v1 emulator (50 ms latency), in 10
batches of 10; the batches' tasks are tracked with ``sync-service track`` once they are
COMPLETED, then one ``sync-service run --drain`` (start-up included) syncs them. Documents/s is
documents landed / wall time. (Scenario 10's ideal, requests x latency / C, says little here:
v1 serves an object's documents with their vectors in one listing page, so a run makes about
one request per ten documents and is bound by the CPU that parses and writes the vectors.)

Part B, a change's way to Qdrant pushed by a webhook or found by watch: ``bench/v1_webhooks.py``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, cast

import httpx

from bench.common import API_KEY, Recorder, Row, Service, byte_compile
from bench.scenarios import CONCURRENCY, LATENCY, Size
from sync_service.emulator.v1.config import V1Config
from sync_service.emulator.v1.server import V1EmulatorServer

OBJECTS = 100
PER_BATCH = 10
VIDEO_SECONDS = 100  # 10 segments at the emulator's 10 s interval
DOCUMENTS = OBJECTS * VIDEO_SECONDS // 10


class TimedV1Emulator(V1EmulatorServer):
    """The v1 emulator on wall-clock time with every API request timestamped."""

    def __init__(self, config: V1Config) -> None:
        super().__init__(config, clock=time.time)
        self.recorder = Recorder(self.app)
        self.app = self.recorder  # start() serves self.app


class V1World:
    """A bucket and one multimodal collection over it, in the default namespace."""

    def __init__(self, url: str) -> None:
        headers = {"Authorization": f"Bearer {API_KEY}", "X-Namespace": "default"}
        self.http = httpx.Client(base_url=url, headers=headers, timeout=60)
        body = {"bucket_name": "bench", "bucket_schema": {"properties": {}}}
        self.bucket = self._ok(self.http.post("/v1/buckets", json=body))["bucket_id"]
        body = {
            "collection_name": "bench-v1",
            "source": {"type": "bucket", "bucket_ids": [self.bucket]},
            "feature_extractor": {
                "feature_extractor_name": "multimodal_extractor",
                "version": "v1",
            },
        }
        self.collection = str(
            self._ok(self.http.post("/v1/collections", json=body))["collection_id"]
        )

    @staticmethod
    def _ok(response: httpx.Response) -> dict[str, Any]:
        response.raise_for_status()
        return cast("dict[str, Any]", response.json())

    def batch(self, urls: list[str]) -> str:
        """The objects in one batch, submitted: the batch's task id."""
        ids = []
        for url in urls:
            body = {"blobs": [{"property": "video", "type": "video", "data": url}]}
            obj = self._ok(self.http.post(f"/v1/buckets/{self.bucket}/objects", json=body))
            ids.append(obj["object_id"])
        base = f"/v1/buckets/{self.bucket}/batches"
        batch = self._ok(self.http.post(base, json={"object_ids": ids}))
        return str(self._ok(self.http.post(f"{base}/{batch['batch_id']}/submit"))["task_id"])

    def task_status(self, task_id: str) -> str:
        return str(self._ok(self.http.get(f"/v1/tasks/{task_id}"))["status"])

    def close(self) -> None:
        self.http.close()


def v1_batches(size: Size, tmp: Path) -> tuple[list[Row], dict[str, Any]]:
    byte_compile()
    runs = [_throughput(tmp / f"s11-{i}", i) for i in range(max(1, size.whole_runs))]
    best = max(runs, key=lambda r: r["documents"] / r["wall_s"])
    rates = ", ".join(f"{r['documents'] / r['wall_s']:.0f}" for r in runs)
    rows = [
        Row(
            "11 Mixpeek v1",
            f"documents/s through batches, one `run --drain` (best of {len(runs)})",
            best["documents"] / best["wall_s"],
            "docs/s",
            note=f"{best['documents']} documents ({OBJECTS} objects in {OBJECTS // PER_BATCH} "
            f"batches) in {best['wall_s']:.2f} s, start-up included; {best['requests']} "
            f"requests ({best['requests'] / best['documents']:.2f} per document); process CPU "
            f"{best['cpu_s']:.2f} s",
        ),
        Row(
            "11 Mixpeek v1",
            "process CPU per document synced (best run)",
            1000 * best["cpu_s"] / best["documents"],
            "ms",
            note=f"runs' documents/s {rates}; requests x latency / C would be only "
            f"{best['ideal_s']:.2f} s: v1 lists an object's documents with their vectors in "
            "one page, so the run is bound by parsing and writing vectors, not by round trips",
        ),
    ]
    from bench.v1_webhooks import v1_webhooks

    more, freshness = v1_webhooks(tmp)
    return rows + more, {"runs": runs, "freshness": freshness}


def _throughput(root: Path, index: int) -> dict[str, Any]:
    config = V1Config(api_key=API_KEY, latency=0.0, processing_time=0.2, seed=11 + index)
    with TimedV1Emulator(config) as emu:
        world = V1World(emu.url)
        try:
            urls = [
                f"https://bench.example/v1-{index}/{i}.mp4?duration={VIDEO_SECONDS}"
                for i in range(OBJECTS)
            ]
            tasks = [world.batch(urls[i : i + PER_BATCH]) for i in range(0, OBJECTS, PER_BATCH)]
            deadline = time.monotonic() + 60
            while not all(world.task_status(t) == "COMPLETED" for t in tasks):
                if time.monotonic() > deadline:
                    raise RuntimeError("v1 emulator batches did not complete in 60 s")
                time.sleep(0.1)
        finally:
            world.close()
        svc = Service(
            root,
            emu.url,
            MIXPEEK_API_VERSION="v1",
            MIXPEEK_NAMESPACE="default",
            QDRANT_COLLECTION="{collection_id}",
            SYNC_MAX_CONCURRENCY=str(CONCURRENCY),
        )
        svc.track(tasks)
        emu.update_config(latency=LATENCY)
        emu.recorder.reset()
        drained = svc.drain(timeout=300)
        code, wall = drained.code, drained.wall
        requests = len(emu.recorder.hits)
    rows = svc.tasks()
    documents = sum(int(r["features_synced"] or 0) for r in rows)
    if code != 0 or documents != DOCUMENTS:
        raise RuntimeError(f"exit {code}, {documents} of {DOCUMENTS} documents:\n{svc.log_tail()}")
    ideal = requests * LATENCY / CONCURRENCY
    cpu = drained.cpu
    return {
        "wall_s": wall,
        "ideal_s": ideal,
        "ratio": ideal / wall,
        "requests": requests,
        "documents": documents,
        "cpu_s": cpu,
    }
