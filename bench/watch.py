"""(8) Watch mode on a 10,000-asset collection: pass costs and change -> Qdrant freshness.

``sync-service run`` watches one collection (``SYNC_WATCH_COLLECTIONS``, incremental passes
every ``SYNC_WATCH_INTERVAL`` = 5 s, the next full pass an hour after the first) against the
in-process emulator, in four phases:

1. the first full pass and the initial sync of every asset;
2. with nothing changing upstream, a few incremental passes: their ``POST /assets`` requests
   and seconds;
3. changes spread over time (metadata PATCHes, payload re-indexes, new assets), each timed from
   the ``updated_at`` the emulator gave it to the asset job's ``synced_at`` moving past it;
4. another full pass of the whole collection with nothing changed, made due by taking the
   collection out of the watch set and adding it back (``sync-service watch remove/add``).

The collection is seeded with a history: batches of 50 assets, one batch every 10 minutes,
ending an hour before the run (the emulator's clock is set back while it seeds), as a
collection filled over a day or so. Seeded all at one instant, every asset would fall inside
the incremental window (``SYNC_WATCH_OVERLAP`` before the newest change seen) and each
"nothing changed" pass would list the whole collection.
"""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

from bench.common import CpuSampler, Hit, Row, Service, TimedEmulator, percentile
from bench.scenarios import CONCURRENCY, LATENCY, Size
from sync_service.emulator import EmulatorConfig

WATCHED = "watched"
WATCH_INTERVAL = 5.0
FULL_INTERVAL = 3600.0
#: The seeded history: batches this big, this many seconds apart, the newest this old.
HISTORY_BATCH = 50
HISTORY_STEP = 600.0
HISTORY_AGE = 3600.0
CHANGE_EVERY = 0.7  # seconds between two upstream changes in phase 3
NEW_EVERY = 5  # every 5th change is a new asset, the others alternate PATCH / re-index
LIST_PATH = "/assets"  # POST /assets: the only API route with exactly this path


@dataclass(frozen=True)
class PassEvent:
    """One ``watch_pass`` log event of the daemon."""

    at: float  # epoch seconds the daemon logged it (the pass's end)
    kind: str
    listed: int
    queued: int


class ShiftedClock:
    """The emulator's clock: wall time plus ``shift`` (negative while seeding the history)."""

    def __init__(self) -> None:
        self.shift = 0.0

    def __call__(self) -> float:
        return time.time() + self.shift


class LogTail:
    """Reads the ``watch_pass`` events the daemon has appended to its JSON log so far."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.passes: list[PassEvent] = []

    def read(self) -> list[PassEvent]:
        if not self.path.exists():
            return self.passes
        with self.path.open("rb") as log:
            log.seek(self.offset)
            chunk = log.read()
        end = chunk.rfind(b"\n") + 1  # whole lines only: the daemon may be mid-line
        self.offset += end
        for line in chunk[:end].splitlines():
            if not line.startswith(b"{"):
                continue
            entry = json.loads(line)
            if entry.get("event") == "watch_pass" and entry.get("collection_id") == WATCHED:
                at = _epoch(entry["time"])
                self.passes.append(
                    PassEvent(at, entry["kind"], int(entry["listed"]), int(entry["queued"]))
                )
        return self.passes

    def wait(self, count: int, after: float, proc: Any, svc: Service, timeout: float) -> None:
        """Until ``count`` passes have ended after ``after``."""
        deadline = time.monotonic() + timeout
        while sum(p.at > after for p in self.read()) < count:
            if proc.poll() is not None:
                raise RuntimeError(f"sync-service run exited:\n{svc.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"fewer than {count} watch passes in {timeout:.0f}s")
            time.sleep(0.1)


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso).timestamp()


def _updated_at(emu: TimedEmulator, asset_id: str) -> float:
    """The asset's ``updated_at`` as upstream serves it, in epoch seconds."""
    state = emu.state
    return int(state.updated_at(state.assets[asset_id])) / 1_000_000


def _jobs(svc: Service, asset_ids: list[str]) -> dict[str, tuple[str, float | None, float]]:
    """The asset jobs' (state, synced_at, updated_at) as the service recorded them."""
    with sqlite3.connect(f"file:{svc.db}?mode=ro", uri=True, timeout=30) as conn:
        rows = conn.execute(
            "SELECT asset_id, state, synced_at, updated_at FROM tasks WHERE task_id IN"
            f" ({','.join('?' * len(asset_ids))})",
            [f"asset:{a}" for a in asset_ids],
        ).fetchall()
    return {str(a): (str(s), None if t is None else float(t), float(u)) for a, s, t, u in rows}


def _synced(svc: Service) -> tuple[int, float | None]:
    """How many asset jobs are synced, and the last ``synced_at`` among them."""
    try:
        with sqlite3.connect(f"file:{svc.db}?mode=ro", uri=True, timeout=30) as conn:
            count, last = conn.execute(
                "SELECT count(*), max(synced_at) FROM tasks"
                " WHERE task_id LIKE 'asset:%' AND state = 'synced'"
            ).fetchone()
    except sqlite3.OperationalError:  # the daemon has not made the store yet
        return 0, None
    return int(count), None if last is None else float(last)


def _lists(hits: list[Hit], after: float, until: float) -> list[Hit]:
    return [h for h in hits if h.path == LIST_PATH and after < h.started <= until]


def _pass_costs(
    hits: list[Hit], passes: list[PassEvent], since: float
) -> list[dict[str, float | int | str]]:
    """Requests and seconds of each pass that ended after ``since``: the listing requests
    started after the previous pass ended (passes of one collection never overlap)."""
    out: list[dict[str, float | int | str]] = []
    for previous, current in zip([None, *passes], passes, strict=False):
        if current.at <= since:
            continue
        mine = _lists(hits, previous.at if previous else 0.0, current.at)
        started = min((h.started for h in mine), default=current.at)
        out.append(
            {
                "kind": current.kind,
                "started": started,
                "ended": current.at,
                "requests": len(mine),
                "seconds": current.at - started,
                "listed": current.listed,
                "queued": current.queued,
                "answer_ms": 1000 * sum(h.ended - h.started for h in mine) / max(len(mine), 1),
            }
        )
    return out


def _seed_history(emu: TimedEmulator, clock: ShiftedClock, count: int) -> list[str]:
    """``count`` text assets, DONE, in batches spread over the past (see the module doc)."""
    batches = -(-count // HISTORY_BATCH)
    ids: list[str] = []
    try:
        for batch in range(batches):
            clock.shift = -(HISTORY_AGE + (batches - 1 - batch) * HISTORY_STEP)
            n = min(HISTORY_BATCH, count - len(ids))
            ids += emu.seed(WATCHED, n, modality="text")["asset_ids"]
    finally:
        clock.shift = 0.0
    return ids


def watch(size: Size, tmp: Path) -> tuple[list[Row], dict[str, Any]]:
    n = size.watch_assets
    clock = ShiftedClock()
    # Processing time 0: a re-index is DONE at once (the change is its new content).
    config = EmulatorConfig(latency=LATENCY, processing_time=0.0, seed=8)
    with TimedEmulator(config) as emu:
        emu.state.clock = clock  # wall time (shift 0) whenever the daemon runs
        ids = _seed_history(emu, clock, n)
        emu.reset_counts()
        svc = Service(
            tmp / "s8",
            emu.url,
            QDRANT_COLLECTION=WATCHED,
            SYNC_MAX_CONCURRENCY=str(CONCURRENCY),
            SYNC_WATCH_COLLECTIONS=WATCHED,
            SYNC_WATCH_INTERVAL=f"{WATCH_INTERVAL:g}",
            SYNC_WATCH_FULL_INTERVAL=f"{FULL_INTERVAL:g}",
            SYNC_LOG_FORMAT="json",
            SYNC_LOG_LEVEL="DEBUG",  # a pass that queued nothing logs at DEBUG
        )
        tail = LogTail(svc.log)
        started = time.time()
        proc = svc.start("run")
        sampler = CpuSampler(proc.pid)
        try:
            initial = _initial(emu, svc, proc, tail, n, started)
            initial["service_cores"] = sampler.cores_between(
                initial["first_request"], initial["first_request"] + initial["all_synced_s"]
            )
            quiet = _quiet(emu, svc, proc, tail, size.watch_quiet_passes)
            fresh = _freshness(emu, svc, proc, tail, ids, size.watch_changes)
            full = _full_again(emu, svc, proc, tail)
        finally:
            sampler.stop()
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
        stats = emu.state.stats.snapshot()
    return _rows(n, initial, quiet, fresh, full), {
        "assets": n,
        "initial": initial,
        "quiet": quiet,
        "freshness": fresh,
        "full_again": full,
        "emulator_stats_total": stats.get("total"),
    }


def _initial(
    emu: TimedEmulator, svc: Service, proc: Any, tail: LogTail, n: int, started: float
) -> dict[str, Any]:
    """(1) The first full pass, and every asset synced."""
    deadline = time.monotonic() + 600
    while True:
        synced, last = _synced(svc)
        if synced >= n:
            break
        if proc.poll() is not None:
            raise RuntimeError(f"sync-service run exited:\n{svc.log_tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {synced} of {n} assets synced after 600s")
        time.sleep(0.25)
    hits = list(emu.recorder.hits)
    passes = tail.read()
    first_full = next(p for p in passes if p.kind == "full")
    cost = _pass_costs(hits, passes, 0.0)[passes.index(first_full)]
    first_request = min(h.started for h in hits)
    assert last is not None
    during = [c for c in _pass_costs(hits, passes, first_full.at) if c["kind"] == "incremental"]
    return {
        "daemon_start_to_first_request_s": first_request - started,
        "first_request": first_request,
        "first_full_pass": cost,
        "synced": synced,
        "all_synced_s": last - first_request,
        "requests": len(hits),
        "incremental_during_sync": during,
    }


def _quiet(
    emu: TimedEmulator, svc: Service, proc: Any, tail: LogTail, count: int
) -> dict[str, Any]:
    """(2) Incremental passes with nothing changing upstream (and nothing left to sync)."""
    since = time.time()
    tail.wait(count, since, proc, svc, timeout=count * (WATCH_INTERVAL + 10) + 30)
    costs = _pass_costs(list(emu.recorder.hits), tail.read(), since)[:count]
    return {"passes": costs}


def _freshness(
    emu: TimedEmulator, svc: Service, proc: Any, tail: LogTail, ids: list[str], count: int
) -> dict[str, Any]:
    """(3) Changes upstream, one every CHANGE_EVERY s: updated_at -> asset job synced."""
    rng = random.Random(8)
    targets = rng.sample(ids, count)
    changes: list[dict[str, Any]] = []  # asset_id, kind, at (upstream updated_at)
    since = time.time()
    next_change = time.monotonic()
    deadline = time.monotonic() + count * CHANGE_EVERY + WATCH_INTERVAL + 60
    pending: dict[str, dict[str, Any]] = {}
    while len(changes) < count or pending:
        if time.monotonic() > deadline:
            break
        if len(changes) < count and time.monotonic() >= next_change:
            next_change += CHANGE_EVERY
            i = len(changes)
            if i % NEW_EVERY == NEW_EVERY - 1:
                asset_id, kind = emu.seed(WATCHED, 1, modality="text")["asset_ids"][0], "new asset"
            elif i % 2 == 0:
                asset_id, kind = targets[i], "metadata PATCH"
                emu.change_asset(asset_id, {"bench_change": i})
            else:
                asset_id, kind = targets[i], "re-index payload"
                emu.reindex(asset_id, "payload")
            change = {"asset_id": asset_id, "kind": kind, "at": _updated_at(emu, asset_id)}
            changes.append(change)
            pending[asset_id] = change
        if pending:
            for asset_id, (state, synced_at, updated) in _jobs(svc, list(pending)).items():
                change = pending[asset_id]
                if state == "synced" and synced_at is not None and synced_at >= change["at"]:
                    change["lag"] = synced_at - change["at"]
                    del pending[asset_id]
                elif state == "failed" and updated >= change["at"]:
                    change["failed"] = True
                    del pending[asset_id]
        if proc.poll() is not None:
            raise RuntimeError(f"sync-service run exited:\n{svc.log_tail()}")
        time.sleep(0.05)
    passes = _pass_costs(list(emu.recorder.hits), tail.read(), since)
    return {"changes": changes, "passes": passes, "not_synced": sorted(pending)}


def _full_again(emu: TimedEmulator, svc: Service, proc: Any, tail: LogTail) -> dict[str, Any]:
    """(4) A full pass with nothing changed: re-adding the collection makes one due at once."""
    since = time.time()
    svc.cli("watch", "remove", WATCHED)
    svc.cli("watch", "add", WATCHED)
    added = time.time()
    deadline = time.monotonic() + 300
    while True:
        passes = tail.read()
        full = [p for p in passes if p.kind == "full" and p.at > added]
        if full:
            break
        if proc.poll() is not None:
            raise RuntimeError(f"sync-service run exited:\n{svc.log_tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError("no full pass within 300s of re-adding the collection")
        time.sleep(0.1)
    costs = _pass_costs(list(emu.recorder.hits), passes, since)
    cost = next(c for c in costs if c["kind"] == "full")
    return {"readd_cli_s": added - since, "pass": cost, "passes_since": costs}


def _rows(
    n: int,
    initial: dict[str, Any],
    quiet: dict[str, Any],
    fresh: dict[str, Any],
    full: dict[str, Any],
) -> list[Row]:
    scenario = "8 watch"
    first = initial["first_full_pass"]
    during = initial["incremental_during_sync"]
    # Nothing changed upstream for these: the ones during the initial sync and after it.
    still = [*during, *quiet["passes"]]
    requests = [int(p["requests"]) for p in still]
    mean_requests = sum(requests) / len(requests)
    seconds = [float(p["seconds"]) for p in quiet["passes"]]
    fresh_passes = [p for p in fresh["passes"] if p["kind"] == "incremental"]
    # One pass's start to the next's (SYNC_WATCH_INTERVAL after its end, at the next tick);
    # the phases follow each other, so these passes are consecutive.
    timed = [*quiet["passes"], *fresh_passes]
    periods = [float(b["started"]) - float(a["started"]) for a, b in pairwise(timed)]
    lags = [float(c["lag"]) for c in fresh["changes"] if "lag" in c]
    missing = len(fresh["changes"]) - len(lags)
    limit = WATCH_INTERVAL + 2
    p50, p95 = percentile(lags, 0.5), percentile(lags, 0.95)
    by_kind = {
        kind: [float(c["lag"]) for c in fresh["changes"] if c["kind"] == kind and "lag" in c]
        for kind in dict.fromkeys(c["kind"] for c in fresh["changes"])
    }
    again = full["pass"]

    def spread(values: Sequence[float], unit: str = "s", digits: int = 2) -> str:
        if not values:
            return "-"
        low, high = f"{min(values):.{digits}f}", f"{max(values):.{digits}f}"
        return f"{low}{unit}" if low == high else f"{low}-{high}{unit}"

    return [
        Row(scenario, f"first full pass of {n:,}: requests", first["requests"], "requests",
            note=f"POST /assets (100 per page) from the daemon's start to its watch_pass event; "
            f"listed {first['listed']}, queued {first['queued']}; upstream answered in "
            f"{first['answer_ms']:.0f} ms on average"),
        Row(scenario, f"first full pass of {n:,}: seconds", first["seconds"], "s",
            note="first POST /assets -> the pass's watch_pass event; the pages wait in the "
            "upstream pool behind the syncs of the asset jobs the pass has queued"),
        Row(scenario, f"all {n:,} assets synced", initial["all_synced_s"], "s",
            note=f"first upstream request -> last asset job synced_at; {initial['requests']:,} "
            f"upstream requests ({initial['requests'] / initial['all_synced_s']:.0f}/s), "
            f"service {initial['service_cores']:.2f} cores"),
        Row(scenario, "incremental pass, nothing changed: requests", mean_requests, "requests",
            1.0, "one page", mean_requests, "1-2", all(1 <= r <= 2 for r in requests),
            f"{len(requests)} passes ({len(during)} during the initial sync, "
            f"{len(quiet['passes'])} after it): {spread(requests, '', 0)} requests each; "
            f"each listed {sorted({int(p['listed']) for p in still})} assets (the newest seeded "
            f"batch is inside SYNC_WATCH_OVERLAP) and queued "
            f"{sorted({int(p['queued']) for p in still})}"),
        Row(scenario, "incremental pass: seconds", sum(seconds) / len(seconds), "s",
            note=f"first POST /assets -> watch_pass event, idle daemon: {spread(seconds)}; "
            f"during the initial sync {spread([float(p['seconds']) for p in during])}; "
            f"during phase 3 {spread([float(p['seconds']) for p in fresh_passes])} "
            f"({spread([p['requests'] for p in fresh_passes], ' requests', 0)}, listing "
            f"{spread([p['listed'] for p in fresh_passes], '', 0)} assets); one pass's "
            f"start to the next's {spread(periods)} (SYNC_WATCH_INTERVAL={WATCH_INTERVAL:g})"),
        Row(scenario, f"full pass of {n:,} (nothing changed): requests", again["requests"],
            "requests",
            note=f"the daemon's full pass after `sync-service watch remove` + `add` made one "
            f"due; listed {again['listed']}, queued {again['queued']}"),
        Row(scenario, f"full pass of {n:,} (nothing changed): seconds", again["seconds"], "s",
            note=f"first POST /assets -> watch_pass event, sweep included; upstream answered "
            f"in {again['answer_ms']:.0f} ms on average"),
        Row(scenario, "change -> Qdrant p95", p95, "s", limit, "SYNC_WATCH_INTERVAL + 2 s",
            p95 / limit, "<= 1.00", p95 <= limit and not missing,
            f"p50 {p50:.2f}s, max {max(lags, default=float('nan')):.2f}s over {len(lags)} "
            f"changes one every {CHANGE_EVERY:g}s ("
            + ", ".join(f"{k}: {len(v)}, max {max(v, default=float('nan')):.2f}s"
                        for k, v in by_kind.items())
            + f"); {missing} not synced ({sum(1 for c in fresh['changes'] if c.get('failed'))} "
            "of them failed); updated_at upstream -> asset job synced_at"),
    ]  # fmt: skip
