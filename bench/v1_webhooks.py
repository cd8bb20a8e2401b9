"""(11, part B) Mixpeek v1: a change's way to Qdrant, pushed by a webhook or found by watch.

One ``sync-service run`` watches a v1 text collection (50 ms upstream latency) and has the
webhook receiver on its control API, registered at the v1 emulator with ``sync-service webhook
register``; its incremental passes are an hour apart, so only a webhook explains a change
landing in seconds. Another client then adds one object at a time (``_emulator/seed``, which
writes its document and emits ``collection.documents.written``); each change is timed from the
moment the seed call returned to the asset job's ``synced_at`` (written right after Qdrant
acknowledged its points); the next change comes at a random moment 0.1-5 s after a landing. The
same changes are then timed with no webhook registered and watch alone (``SYNC_WATCH_INTERVAL=5``,
as scenario 8).

Target: p95 with webhooks <= 1 s + one list round trip (the incremental pass's one request).
"""

from __future__ import annotations

import random
import socket
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import API_KEY, Row, Service, percentile
from bench.scenarios import LATENCY
from bench.v1_batches import TimedV1Emulator
from sync_service.emulator.v1.config import V1Config

CHANGES = 12
WATCH_INTERVAL = 5.0
SECRET = "bench-webhook-secret-0123456789"
TARGET = 1.0 + LATENCY


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _collection(url: str) -> str:
    headers = {"Authorization": f"Bearer {API_KEY}", "X-Namespace": "default"}
    with httpx.Client(base_url=url, headers=headers, timeout=30) as http:
        body = {"bucket_name": "notes", "bucket_schema": {"properties": {}}}
        bucket = http.post("/v1/buckets", json=body).raise_for_status().json()["bucket_id"]
        body = {
            "collection_name": "notes",
            "source": {"type": "bucket", "bucket_ids": [bucket]},
            "feature_extractor": {"feature_extractor_name": "text_extractor", "version": "v1"},
        }
        return str(
            http.post("/v1/collections", json=body).raise_for_status().json()["collection_id"]
        )


def _synced_at(svc: Service, task_id: str) -> float | None:
    try:
        with sqlite3.connect(f"file:{svc.db}?mode=ro", uri=True, timeout=30) as conn:
            row = conn.execute(
                "SELECT synced_at FROM tasks WHERE task_id = ?", (task_id,)
            ).fetchone()
    except sqlite3.OperationalError:
        return None  # the daemon has not made its tables yet
    return None if row is None or row[0] is None else float(row[0])


def _mode(root: Path, *, webhooks: bool) -> list[float]:
    """Seconds from each change to its points in Qdrant."""
    config = V1Config(api_key=API_KEY, latency=LATENCY, processing_time=0.2, seed=12)
    with TimedV1Emulator(config) as emu:
        collection = _collection(emu.url)
        first = emu.control("/seed", {"collection": collection, "count": 5, "modality": "text"})
        port = _free_port()
        env = {
            "MIXPEEK_API_VERSION": "v1",
            "MIXPEEK_NAMESPACE": "default",
            "QDRANT_COLLECTION": "{collection_id}",
            "SYNC_API_PORT": str(port),
            "SYNC_WATCH_COLLECTIONS": collection,
            "SYNC_WATCH_INTERVAL": "3600" if webhooks else str(WATCH_INTERVAL),
            "SYNC_WATCH_FULL_INTERVAL": "3600",
            "SYNC_WEBHOOK_SECRET": SECRET,
        }
        svc = Service(root, emu.url, **env)
        proc = svc.start("run")
        try:
            if webhooks:
                hook = f"http://127.0.0.1:{port}/webhooks/mixpeek"
                svc.cli("webhook", "register", "--url", hook)
            firsts = [f"asset:{collection}/{o}" for o in first["object_ids"]]
            _wait(lambda: all(_synced_at(svc, t) for t in firsts), proc, svc, "the first pass")
            delays = []
            rng = random.Random(11)  # the same schedule for both modes
            for _ in range(CHANGES):
                seeded = emu.control(
                    "/seed", {"collection": collection, "count": 1, "modality": "text"}
                )
                changed = time.time()
                task = f"asset:{collection}/{seeded['object_ids'][0]}"
                _wait(lambda t=task: _synced_at(svc, t) is not None, proc, svc, "a change")
                landed = _synced_at(svc, task)
                assert landed is not None
                delays.append(landed - changed)
                # The next change at a random moment of the watch interval, so watch alone is
                # timed over the whole of its cycle (made right after a landing, a change would
                # always wait a whole interval).
                time.sleep(rng.uniform(0.1, WATCH_INTERVAL))
            return delays
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def _wait(check: Any, proc: subprocess.Popen[bytes], svc: Service, what: str) -> None:
    deadline = time.monotonic() + 60
    while not check():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"waiting for {what}:\n{svc.log_tail()}")
        time.sleep(0.02)


def v1_webhooks(tmp: Path) -> tuple[list[Row], dict[str, Any]]:
    pushed = _mode(tmp / "s11-webhooks", webhooks=True)
    watched = _mode(tmp / "s11-watch", webhooks=False)

    def spread(values: list[float]) -> str:
        return (
            f"p50 {percentile(values, 0.5):.2f} s, p95 {percentile(values, 0.95):.2f} s, "
            f"max {max(values):.2f} s over {len(values)} changes"
        )

    p95 = percentile(pushed, 0.95)
    rows = [
        Row(
            "11 Mixpeek v1",
            "a change to Qdrant via webhook, p95",
            p95,
            "s",
            TARGET,
            "1 s + one list round trip",
            TARGET / p95 if p95 else None,
            f"<= {TARGET:.2f} s",
            p95 <= TARGET,
            spread(pushed),
        ),
        Row(
            "11 Mixpeek v1",
            f"the same change found by watch alone (SYNC_WATCH_INTERVAL={WATCH_INTERVAL:.0f})",
            percentile(watched, 0.95),
            "s",
            note=spread(watched),
        ),
    ]
    return rows, {"webhook_s": pushed, "watch_s": watched}
