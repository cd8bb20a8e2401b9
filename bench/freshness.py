"""(6) Freshness: time from a task turning DONE upstream to its points being in Qdrant.

``sync-service run`` (not drain) runs with ``SYNC_POLL_INTERVAL=1`` while tasks finish upstream
at staggered times; each task's DONE time comes from the emulator (creation + processing time,
on wall-clock time) and its "in Qdrant" time is the ``synced_at`` the service records right after
Qdrant acknowledged the points (``wait=True``), so the figure is an upper bound.

As shipped, the service learns how long tasks take (``SYNC_POLL_SCHEDULE=learned``), so one run
measures two cohorts of the same workload: the first tasks a fresh daemon sees (cold: nothing
learned yet, the growing interval alone) and the next ones, submitted once the first are synced
(warm: the daemon that runs for days). Two more runs show the ends of the trade-off: the growing
interval alone, and no growth at all.
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import Row, Service, TimedEmulator, percentile, submit_videos
from bench.scenarios import CONCURRENCY, LATENCY, Size
from sync_service.emulator import EmulatorConfig

FRESH_POLL_INTERVAL = 1.0


@dataclass(frozen=True)
class Variant:
    label: str
    env: dict[str, str]
    cohorts: tuple[str, ...]  # one label per cohort, submitted one after the other


VARIANTS = (
    Variant(
        "as shipped (learned schedule)",
        {},
        ("first cohort, cold: nothing learned yet", "second cohort, warm: learned from the first"),
    ),
    Variant("SYNC_POLL_SCHEDULE=backoff (x1.5 to 30 s)", {"SYNC_POLL_SCHEDULE": "backoff"}, ("",)),
    Variant("SYNC_MAX_POLL_INTERVAL=1 (no backoff)", {"SYNC_MAX_POLL_INTERVAL": "1"}, ("",)),
)


def freshness(size: Size, tmp: Path) -> tuple[list[Row], dict[str, Any]]:
    """(6) time from DONE upstream to points recorded (after Qdrant acknowledged them)."""
    rows: list[Row] = []
    details: dict[str, Any] = {}
    for index, variant in enumerate(VARIANTS[: size.fresh_variants]):
        cohorts = _freshness_run(size, tmp / f"s6-{index}", variant)
        for cohort_label, (lags, polls) in zip(variant.cohorts, cohorts, strict=True):
            label = f"{variant.label}, {cohort_label}" if cohort_label else variant.label
            p50, p95 = percentile(lags, 0.5), percentile(lags, 0.95)
            limit = FRESH_POLL_INTERVAL + 1
            per_task = sum(polls) / len(polls)
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
                    f"p50 {p50:.2f}s, max {max(lags):.2f}s, {per_task:.1f} polls/task, "
                    f"{len(lags)} tasks DONE {size.fresh_spread[0]:g}-{size.fresh_spread[1]:g}s "
                    "after submission",
                )
            )
            details[label] = {"p50": p50, "p95": p95, "lags": lags, "polls_per_task": per_task}
    return rows, details


def _freshness_run(size: Size, root: Path, variant: Variant) -> list[tuple[list[float], list[int]]]:
    """Each cohort's lags (seconds) and status polls per task (the one that saw DONE too)."""
    lo, hi = size.fresh_spread
    count = size.fresh_tasks
    config = EmulatorConfig(latency=LATENCY, seed=6)
    results: list[tuple[list[float], list[int]]] = []
    with TimedEmulator(config) as emu:
        svc = Service(
            root,
            emu.url,
            SYNC_MAX_CONCURRENCY=str(CONCURRENCY),
            SYNC_POLL_INTERVAL=str(FRESH_POLL_INTERVAL),
            **variant.env,
        )
        proc = None
        try:
            for cohort in range(len(variant.cohorts)):
                ids = submit_videos(
                    emu,
                    count,
                    f"{root.name}-{cohort}",
                    processing_time=lambda i: lo + (hi - lo) * i / max(count - 1, 1),
                )
                svc.track(ids)
                if proc is None:
                    proc = svc.start("run")
                _wait_finished(svc, proc, set(ids), deadline=time.monotonic() + hi + 90)
                done_at = {t: emu.done_at(t) for t in ids}
                rows = [t for t in svc.tasks() if t["task_id"] in done_at and t["synced_at"]]
                results.append(
                    (
                        [float(t["synced_at"]) - done_at[t["task_id"]] for t in rows],
                        [int(t["polls"]) + 1 for t in rows],
                    )
                )
        finally:
            if proc is not None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=60)
    return results


def _wait_finished(svc: Service, proc: Any, ids: set[str], deadline: float) -> None:
    while time.monotonic() < deadline:
        if sum(t["state"] != "pending" for t in svc.tasks() if t["task_id"] in ids) == len(ids):
            return
        if proc.poll() is not None:
            raise RuntimeError(f"sync-service run exited:\n{svc.log_tail()}")
        time.sleep(0.5)
