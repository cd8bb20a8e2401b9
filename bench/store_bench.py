"""(5) 100,000 tracked pending tasks: tick times and peak memory.

Run by ``bench/run.py`` in two steps:

1. this file as a child process (``python bench/store_bench.py --db PATH --tasks N``) builds the
   SQLite state store with ``Store.track`` in chunks, schedules every task in the future, then
   times ``Store.claim_due`` and the daemon's real ``Daemon.tick`` (with a stub pipeline) when
   nothing is due and when 100 tasks are due; it prints one JSON object, with its own peak RSS;
2. :func:`store_scale` then runs the real ``sync-service run`` on that store against the emulator
   (100 of the tasks due, unknown upstream so they end ``failed``) and reads the daemon's peak
   RSS (VmHWM) and idle CPU from ``/proc``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from statistics import median
from typing import Any

if __name__ == "__main__":  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import text

from bench.common import ROOT, Row, Service, TimedEmulator, proc_cpu_seconds, proc_status
from sync_service.control.metrics import Metrics
from sync_service.emulator import EmulatorConfig
from sync_service.engine.availability import Down, holding_back, qdrant_health
from sync_service.state.records import Claim
from sync_service.state.store import Store
from sync_service.upstream.port import Outage

CHUNK = 5_000
DUE = 100
SAMPLES = 20
_MAKE_DUE = text(
    "UPDATE tasks SET next_poll_at = 0 WHERE task_id IN (SELECT task_id FROM tasks "
    "WHERE state = 'pending' AND lease_owner IS NULL ORDER BY task_id LIMIT :n)"
)


class _StubPipeline:
    """Does nothing with a claim (only the tick itself is timed) but count it; it has the
    parts of a pipeline the daemon reads (an outage that never opens, metrics)."""

    def __init__(self) -> None:
        self.seen = 0
        self.outage = Outage()
        self.qdrant = qdrant_health()
        self.metrics = Metrics()

    async def held_back(self) -> list[Down]:  # as Pipeline's: nothing is down here
        return await holding_back(self.outage, self.qdrant, self._ping)

    async def _ping(self) -> None:
        pass

    async def process(self, claim: Claim) -> None:
        del claim
        self.seen += 1


def _peak_mb() -> float:
    """Peak RSS of this process. VmHWM, not ru_maxrss: the latter survives exec on Linux, so
    a child started by a big parent would report the parent's size."""
    hwm = proc_status(os.getpid()).get("VmHWM")
    return hwm / 1024 if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def _time(fn: Any) -> float:
    started = time.perf_counter()
    await fn()
    return (time.perf_counter() - started) * 1000


async def _measure(db: Path, count: int) -> dict[str, Any]:
    store = Store.open(f"sqlite:///{db}")
    await store.migrate()
    started = time.perf_counter()
    for start in range(0, count, CHUNK):
        await store.track(str(uuid.uuid4()) for _ in range(min(CHUNK, count - start)))
    out: dict[str, Any] = {"build_s": time.perf_counter() - started, "peak_rss_mb_after": {}}
    out["peak_rss_mb_after"]["track"] = _peak_mb()
    async with store.engine.begin() as conn:
        await conn.execute(text("UPDATE tasks SET next_poll_at = next_poll_at + 86400"))
    out["peak_rss_mb_after"]["reschedule_all"] = _peak_mb()
    owner = "bench"

    async def claim() -> None:
        claimed.extend(await store.claim_due(owner, DUE, 60))

    claimed: list[Claim] = []
    await claim()  # warm-up
    out["claim_idle_ms"] = [await _time(claim) for _ in range(SAMPLES)]
    assert not claimed, "tasks were due in the idle tick"
    out["peak_rss_mb_after"]["idle_claims"] = _peak_mb()
    out["claim_due_ms"] = []
    for _ in range(5):
        async with store.engine.begin() as conn:
            await conn.execute(_MAKE_DUE, {"n": DUE})
        claimed.clear()
        out["claim_due_ms"].append(await _time(claim))
        assert len(claimed) == DUE, len(claimed)
    out["peak_rss_mb_after"]["due_claims"] = _peak_mb()
    out["pending_count_ms"] = [await _time(store.pending_count) for _ in range(5)]
    out["peak_rss_mb_after"]["pending_count"] = _peak_mb()
    out.update(await _daemon_ticks(store))
    await store.close()
    out["peak_rss_mb"] = out["peak_rss_mb_after"]["daemon_ticks"] = _peak_mb()
    return out


async def _daemon_ticks(store: Store) -> dict[str, Any]:
    """The daemon's own tick (claim + start work), if its constructor still fits."""
    try:
        from sync_service.engine.scheduler import Daemon

        stub = _StubPipeline()
        daemon = Daemon(
            store,
            stub,  # type: ignore[arg-type]
            poll_interval=1,
            claim_batch=DUE,
            lease_seconds=60,
            shutdown_grace=1,
        )
        await daemon.tick()
        idle = [await _time(daemon.tick) for _ in range(SAMPLES)]
        await asyncio.gather(*daemon._kicks)
        due = []
        for _ in range(5):
            async with store.engine.begin() as conn:
                await conn.execute(_MAKE_DUE, {"n": DUE})
            before = stub.seen
            due.append(await _time(daemon.tick))
            await asyncio.gather(*daemon.in_flight)
            await asyncio.gather(*daemon._kicks)  # each finished task asks for a claim
            assert stub.seen - before == DUE, stub.seen - before
    except Exception as exc:  # a FAIL row saying why; the other rows are still measured
        return {"daemon_tick_error": f"{type(exc).__name__}: {exc}"}
    return {"tick_idle_ms": idle, "tick_due_ms": due}


def store_scale(count: int, tmp: Path) -> tuple[list[Row], dict[str, Any]]:
    root = tmp / "s5"
    root.mkdir(parents=True, exist_ok=True)
    db = root / "sync.db"
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "store_bench.py"),
            "--db",
            str(db),
            "--tasks",
            str(count),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=root,
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    r: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    r["daemon"] = _real_daemon(root, db)
    rows = []
    n = f"{count:,} pending"
    scenario = f"5 {count // 1000}k pending"
    if "tick_idle_ms" in r:
        rows.append(
            _ms_row(scenario, "idle tick: Daemon.tick, nothing due", r["tick_idle_ms"], 50, n)
        )
        rows.append(
            _ms_row(scenario, f"tick with {DUE} due: Daemon.tick", r["tick_due_ms"], None, n)
        )
    else:
        error = r["daemon_tick_error"]
        rows.append(Row(scenario, "Daemon.tick", None, target="runs", passed=False, note=error))
    rows.append(_ms_row(scenario, "idle tick: Store.claim_due", r["claim_idle_ms"], 50, n))
    rows.append(
        _ms_row(scenario, f"tick with {DUE} due: Store.claim_due", r["claim_due_ms"], None, n)
    )
    rows.append(
        _ms_row(scenario, "drain check: Store.pending_count", r["pending_count_ms"], None, n)
    )
    d = r["daemon"]
    rows.append(
        Row(
            scenario,
            "peak RSS of `sync-service run`",
            d["peak_rss_mb"],
            "MB",
            300,
            "limit",
            d["peak_rss_mb"] / 300,
            "<= 300 MB",
            d["peak_rss_mb"] <= 300,
            f"{d['due_handled']} due handled {d['due_handled_after_s']:.1f}s after start, then "
            f"idle CPU {d['idle_cpu_share'] * 100:.1f}% of a core; store-bench process "
            f"peak {r['peak_rss_mb']:.0f} MB; built in {r['build_s']:.1f}s",
        )
    )
    return rows, r


def _ms_row(
    scenario: str, metric: str, samples: list[float], limit: float | None, note: str
) -> Row:
    value = median(samples)
    return Row(
        scenario,
        metric,
        value,
        "ms",
        limit,
        "limit" if limit else "",
        value / limit if limit else None,
        f"<= {limit:g} ms" if limit else "",
        value <= limit if limit else None,
        f"median of {len(samples)}, max {max(samples):.1f} ms; {note}",
    )


def _real_daemon(root: Path, db: Path, idle_seconds: float = 3.0) -> dict[str, Any]:
    """The real daemon on the big store: peak RSS, and CPU once the 100 due tasks are handled."""
    import sqlite3

    with sqlite3.connect(db) as conn:  # 100 due tasks (unknown upstream: they end failed)
        conn.execute(
            "UPDATE tasks SET lease_owner = NULL, lease_expires_at = NULL, "
            "next_poll_at = (julianday('now') - 2440587.5) * 86400.0 + 86400"
        )
        conn.execute(_MAKE_DUE.text.replace(":n", str(DUE)))
    with TimedEmulator(EmulatorConfig()) as emu:
        svc = Service(root, emu.url, SYNC_POLL_INTERVAL="1")
        started = time.monotonic()
        proc = svc.start("run")
        try:
            failed = 0
            while failed < DUE and time.monotonic() - started < 60:
                time.sleep(0.25)
                failed = sum(1 for t in svc.tasks() if t["state"] == "failed")
                if proc.poll() is not None:
                    raise RuntimeError(f"sync-service run exited:\n{svc.log_tail()}")
            handled = time.monotonic() - started
            cpu0, t0 = proc_cpu_seconds(proc.pid), time.monotonic()
            time.sleep(idle_seconds)
            idle = (proc_cpu_seconds(proc.pid) - cpu0) / (time.monotonic() - t0)
            status = proc_status(proc.pid)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
    return {
        "peak_rss_mb": status.get("VmHWM", 0) / 1024,
        "idle_cpu_share": idle,
        "due_handled": failed,
        "due_handled_after_s": handled,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", type=Path, required=True)
    parser.add_argument("--tasks", type=int, default=100_000)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(_measure(args.db, args.tasks))))


if __name__ == "__main__":
    main()
