"""(6) Freshness: time from a task turning DONE upstream to its points being in Qdrant.

``sync-service run`` (not drain) runs with ``SYNC_POLL_INTERVAL=1`` while tasks finish upstream
at staggered times; each task's DONE time comes from the emulator (creation + processing time,
on wall-clock time) and its "in Qdrant" time is the ``synced_at`` the service records right after
Qdrant acknowledged the points (``wait=True``), so the figure is an upper bound.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

from bench.common import Row, Service, TimedEmulator, percentile, submit_videos
from bench.scenarios import CONCURRENCY, LATENCY, Size
from sync_service.emulator import EmulatorConfig

FRESH_POLL_INTERVAL = 1.0


def freshness(size: Size, tmp: Path) -> tuple[list[Row], dict[str, Any]]:
    """(6) time from DONE upstream to points recorded (after Qdrant acknowledged them)."""
    rows: list[Row] = []
    details: dict[str, Any] = {}
    variants = {
        "as shipped (backoff to SYNC_MAX_POLL_INTERVAL=30)": {},
        "SYNC_MAX_POLL_INTERVAL=1 (no backoff)": {"SYNC_MAX_POLL_INTERVAL": "1"},
    }
    for index, (label, extra) in enumerate(list(variants.items())[: size.fresh_variants]):
        lags = _freshness_run(size, tmp / f"s6-{index}", extra)
        p50, p95 = percentile(lags, 0.5), percentile(lags, 0.95)
        limit = FRESH_POLL_INTERVAL + 1
        rows.append(
            Row(
                "6 freshness",
                f"p95 DONE->in Qdrant, {label}",
                p95,
                "s",
                limit,
                "SYNC_POLL_INTERVAL + 1s",
                p95 / limit,
                "<= 1.00",
                p95 <= limit,
                f"p50 {p50:.2f}s, max {max(lags):.2f}s, {len(lags)} tasks DONE "
                f"{size.fresh_spread[0]:g}-{size.fresh_spread[1]:g}s after submission",
            )
        )
        details[label] = {"p50": p50, "p95": p95, "lags": lags}
    return rows, details


def _freshness_run(size: Size, root: Path, extra: dict[str, str]) -> list[float]:
    lo, hi = size.fresh_spread
    count = size.fresh_tasks
    config = EmulatorConfig(latency=LATENCY, seed=6)
    with TimedEmulator(config) as emu:
        ids = submit_videos(
            emu, count, root.name, processing_time=lambda i: lo + (hi - lo) * i / max(count - 1, 1)
        )
        svc = Service(
            root,
            emu.url,
            SYNC_MAX_CONCURRENCY=str(CONCURRENCY),
            SYNC_POLL_INTERVAL=str(FRESH_POLL_INTERVAL),
            **extra,
        )
        svc.track(ids)
        proc = svc.start("run")
        deadline = time.monotonic() + hi + 90
        try:
            while time.monotonic() < deadline:
                tasks = svc.tasks()
                if sum(t["state"] != "pending" for t in tasks) == count:
                    break
                if proc.poll() is not None:
                    raise RuntimeError(f"sync-service run exited:\n{svc.log_tail()}")
                time.sleep(0.5)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
        tasks = svc.tasks()
        done_at = {t: emu.done_at(t) for t in ids}
    return [float(t["synced_at"]) - done_at[t["task_id"]] for t in tasks if t["synced_at"]]
