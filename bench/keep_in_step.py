"""(7) Keeping Qdrant in step on a 1,000-asset collection: backfill, verify, reindex.

The real ``sync-service`` commands run as subprocesses against the in-process emulator
(50 ms latency, 30-second videos: 3 features per asset) and a Qdrant REST stand-in
(``tests/qdrant_server.py``, a separate process) so that this process can query the alias over
HTTP while ``reindex`` rebuilds the collection behind it. A query fails if it errors, answers
non-200, or returns no hit.
"""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import Row, Service, TimedEmulator
from bench.scenarios import CONCURRENCY, LATENCY
from sync_service.emulator import EmulatorConfig

COLLECTION = "keep"
VECTOR = "multimodal-v1"


class Querier:
    """Searches the alias over HTTP in a loop (its own thread) and counts failures."""

    def __init__(self, qdrant_url: str, vector: list[float]) -> None:
        self.url = f"{qdrant_url}/collections/{COLLECTION}/points/query"
        self.body = {"query": vector, "using": VECTOR, "limit": 5}
        self.done = self.failed = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Querier:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        with httpx.Client(timeout=30) as http:
            while not self._stop.is_set():
                try:
                    answer = http.post(self.url, json=self.body)
                    ok = answer.status_code == 200 and answer.json()["result"]["points"]
                    problem = None if ok else f"{answer.status_code}: {answer.text[:120]}"
                except httpx.HTTPError as exc:
                    problem = f"{type(exc).__name__}: {exc}"
                self.done += 1
                if problem is not None:
                    self.failed += 1
                    self.errors = [*self.errors, problem][-5:]
                time.sleep(0.01)


def _timed(svc: Service, *args: str) -> tuple[float, str, int]:
    started = time.monotonic()
    result = subprocess.run(
        svc.command(*args), env=svc.env, cwd=svc.root, capture_output=True, text=True, timeout=1800
    )
    return time.monotonic() - started, result.stdout + result.stderr, result.returncode


def keep_in_step(assets: int, tmp: Path) -> tuple[list[Row], dict[str, Any]]:
    from tests.qdrant_server import QdrantStandIn

    config = EmulatorConfig(latency=LATENCY, seed=7)
    with TimedEmulator(config) as emu, QdrantStandIn() as qdrant:
        httpx.post(
            f"{emu.url}/_emulator/seed",
            json={"collection_id": COLLECTION, "count": assets, "duration": 30},
            timeout=120,
        ).raise_for_status()
        svc = Service(
            tmp / "s7",
            emu.url,
            QDRANT_URL=qdrant.url,
            QDRANT_COLLECTION=COLLECTION,
            SYNC_MAX_CONCURRENCY=str(CONCURRENCY),
        )
        backfill_s, backfill_out, _ = _timed(
            svc, "backfill", "--collection-id", COLLECTION, "--no-progress"
        )
        points = httpx.post(
            f"{qdrant.url}/collections/{COLLECTION}/points/count", json={"exact": True}
        ).json()["result"]["count"]
        verify_s, verify_out, verify_code = _timed(svc, "verify", "--sample", "50")
        probe = httpx.post(
            f"{qdrant.url}/collections/{COLLECTION}/points/scroll",
            json={"limit": 1, "with_vector": True},
        ).json()["result"]["points"][0]["vector"][VECTOR]
        with Querier(qdrant.url, probe) as querier:
            time.sleep(0.5)  # queries are answering before the reindex starts
            reindex_s, reindex_out, _ = _timed(
                svc, "reindex", "--collection", COLLECTION, "--distance", "dot", "--no-progress"
            )
            time.sleep(0.5)
        aliases = httpx.get(f"{qdrant.url}/aliases").json()["result"]["aliases"]
    served_by = {a["alias_name"]: a["collection_name"] for a in aliases}.get(COLLECTION)
    rows = [
        Row("7 keep in step", f"backfill {assets} assets", backfill_s, "s",
            note=f"{points} points; {backfill_out.strip().splitlines()[-1]}"),
        Row("7 keep in step", "verify (every point, 50 sampled assets)", verify_s, "s",
            note=f"exit {verify_code}; " + "; ".join(
                line for line in verify_out.splitlines() if line.startswith(("drift", "timings"))
            )),
        Row("7 keep in step", "reindex to dot behind the alias", reindex_s, "s",
            note=f"alias now on {served_by}; " + " | ".join(reindex_out.strip().splitlines()[:3])),
        Row("7 keep in step", "failed queries during the reindex", querier.failed, "queries",
            reference=None, target="== 0", passed=querier.failed == 0 and querier.done > 0,
            note=f"{querier.done} queries against the alias over HTTP"
            + (f"; last errors: {querier.errors}" if querier.errors else "")),
    ]  # fmt: skip
    details = {
        "assets": assets,
        "points": points,
        "backfill_s": backfill_s,
        "verify_s": verify_s,
        "verify_exit": verify_code,
        "reindex_s": reindex_s,
        "queries": querier.done,
        "failed_queries": querier.failed,
        "alias": served_by,
    }
    return rows, details
