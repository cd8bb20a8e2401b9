"""Mirroring whole collections, as a user runs it: watch mode, the deletion sweep, backfill,
on both API generations (``api``, tests/upstreams.py) unless a test says why not.

Real ``sync-service`` subprocesses over real HTTP to the emulator, whose ``_emulator`` routes
change upstream the way another client would. Points are read from a Qdrant server stand-in
(so they can be read while a daemon runs) and compared with the independent oracle.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sync_service.emulator import EmulatorConfig, EmulatorServer
from tests.conftest import API_KEY
from tests.harness import COLLECTION, Service, stop_daemon
from tests.qdrant_server import QdrantStandIn
from tests.support import IN_STEP, compare_points, expected_point, served
from tests.upstreams import Mixpeek, open_mixpeek

HEADERS = {"Authorization": f"Bearer {API_KEY}"}
WATCH_INTERVAL = 1.0


@pytest.fixture
def qdrant() -> Iterator[QdrantStandIn]:
    with QdrantStandIn() as stand_in:
        yield stand_in


@pytest.fixture
def mixpeek(api: str) -> Iterator[Mixpeek]:
    with open_mixpeek(api, processing_time=0.4, seed=1) as upstream:
        yield upstream


@pytest.fixture
def emulator() -> Iterator[EmulatorServer]:
    """The 2024 emulator alone, for the tests of what only it can do."""
    with EmulatorServer(EmulatorConfig(api_key=API_KEY, processing_time=0.4, seed=1)) as server:
        yield server


def seed(emulator: EmulatorServer, count: int, **extra: Any) -> dict[str, list[str]]:
    body = {"collection_id": COLLECTION, "count": count, "duration": 20, **extra}
    answer = httpx.post(f"{emulator.url}/_emulator/seed", json=body, timeout=30)
    result: dict[str, list[str]] = answer.raise_for_status().json()
    return result


def in_step(svc: Service, mixpeek: Mixpeek, assets: list[str], gone: set[str]) -> bool:
    """Qdrant holds exactly what upstream serves for these assets, less the deleted ones."""
    expected = mixpeek.expected([a for a in assets if a not in gone])
    return compare_points(expected, svc.points()) == IN_STEP


@pytest.fixture
def svc(tmp_path: Path, mixpeek: Mixpeek, qdrant: QdrantStandIn) -> Service:
    """The service's commands, writing to the Qdrant server stand-in."""
    return Service(tmp_path, mixpeek, QDRANT_URL=qdrant.url, QDRANT_COLLECTION=COLLECTION)


def expected_for(emulator: EmulatorServer, task_ids: list[str]) -> list[dict[str, Any]]:
    """The 2024 oracle's points; mirrored points carry the task id the asset names upstream."""
    points = []
    for task_id in task_ids:
        asset, features = served(emulator.url, API_KEY, task_id)
        points += [expected_point(asset["task_id"], asset, f) for f in features]
    return points


def live(seeded: dict[str, list[str]], gone: set[str]) -> list[str]:
    """The task ids of the seeded 2024 assets not deleted."""
    return [
        t for a, t in zip(seeded["asset_ids"], seeded["task_ids"], strict=True) if a not in gone
    ]


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> float:
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < timeout, f"timed out waiting for {what}"
        time.sleep(0.1)
    return time.monotonic() - started


def start_daemon(svc: Service, log: Path, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "sync_service", "run"],
        env={**svc.env, **env},
        cwd=svc.root,
        stdout=subprocess.DEVNULL,
        stderr=log.open("w"),
        text=True,
    )


def test_watch_mirrors_creations_changes_and_deletions_by_other_clients(
    tmp_path: Path, mixpeek: Mixpeek, svc: Service, report: Callable[[str], None]
) -> None:
    # Seven assets by the deletion: one is 14 %, under the delete guard (20 %).
    assets = mixpeek.seed(6)
    log = tmp_path / "daemon.log"
    daemon = start_daemon(
        svc,
        log,
        SYNC_WATCH_COLLECTIONS=mixpeek.collection,
        SYNC_WATCH_INTERVAL=str(WATCH_INTERVAL),
        SYNC_WATCH_FULL_INTERVAL="6",
    )
    gone: set[str] = set()

    def mirrored() -> bool:
        return in_step(svc, mixpeek, assets, gone)

    try:
        wait_until(mirrored, 30, "the first full pass to sync the collection")

        # Created by someone else: lands within an incremental interval (plus its sync).
        (new_asset,) = mixpeek.seed(1)
        assets.append(new_asset)
        took = wait_until(
            lambda: any(p.payload["asset_id"] == new_asset for p in svc.points()),
            15,
            "a new asset to land",
        )
        report(
            f"watch ({mixpeek.api}): an asset created upstream landed in {took:.2f}s "
            f"(incremental interval {WATCH_INTERVAL:g}s)"
        )
        assert took <= WATCH_INTERVAL + 5
        wait_until(mirrored, 15, "the new asset's points to match upstream")

        # Changed upstream (new vectors, then a new caption): re-synced.
        mixpeek.change(assets[0], "vectors")
        mixpeek.change(new_asset, "payload")
        wait_until(mirrored, 20, "the changed assets to be re-synced")

        # Deleted upstream: removed after the next full pass.
        doomed = assets[1]
        mixpeek.delete([doomed])
        gone.add(doomed)
        took = wait_until(
            lambda: all(p.payload["asset_id"] != doomed for p in svc.points()),
            20,
            "the deleted asset's points to go",
        )
        report(
            f"watch ({mixpeek.api}): an asset deleted upstream lost its points in {took:.2f}s "
            "(full 6s)"
        )
        assert mirrored()
        status = json.loads(svc.cli("status", "--json").stdout)
        (watched,) = status["watch"]
        assert watched["collection_id"] == mixpeek.collection
        assert watched["last_full_ago"] is not None
        assert watched["assets_known"] == 6 and watched["held_sweep"] is None
    finally:
        stop_daemon(daemon, log)


def test_a_listing_that_fails_on_page_3_deletes_nothing(mixpeek: Mixpeek, svc: Service) -> None:
    assets = mixpeek.seed(30)
    backfill = ("backfill", "--collection-id", mixpeek.collection, "--page-size", "10")
    svc.cli(*backfill, "--no-progress")
    doomed = assets[0]
    mixpeek.delete([doomed])
    mixpeek.patch(list_fail_page=3)  # v1: its documents' third page (five assets a page)
    failed = svc.cli(*backfill, "--no-progress", check=False)
    assert failed.returncode == 1, failed.stderr
    assert "page 3" in failed.stderr
    assert any(p.payload["asset_id"] == doomed for p in svc.points()), "nothing is deleted"

    # Upstream heals: the next run resumes at page 3, completes, and sweeps.
    mixpeek.patch(list_fail_page=None)
    result = svc.cli(*backfill, "--no-progress")
    assert "removed 1 asset(s) deleted upstream" in result.stderr
    assert in_step(svc, mixpeek, assets, {doomed})


def test_a_mass_deletion_is_held_until_forced(mixpeek: Mixpeek, svc: Service) -> None:
    assets = mixpeek.seed(10)
    collection = mixpeek.collection
    svc.cli("backfill", "--collection-id", collection, "--no-progress")
    doomed = assets[:4]  # 40 %, over the default guard of 20 %
    mixpeek.delete(doomed)

    held = svc.cli("backfill", "--collection-id", collection, "--no-progress", check=False)
    assert held.returncode == 3, held.stderr
    assert "sweep held by the delete guard" in held.stderr
    assert len(svc.points()) == 10 * 2, "a held sweep deletes nothing"
    (watched,) = json.loads(svc.cli("status", "--json").stdout)["watch"]
    assert watched["held_sweep"]["points"] == 8 and watched["held_sweep"]["total"] == 20
    assert sorted(watched["held_sweep"]["assets"]) == sorted(doomed)

    dry = svc.cli("backfill", "--collection-id", collection, "--dry-run", check=False)
    assert dry.returncode == 3
    assert sorted(line.split()[1] for line in dry.stdout.splitlines() if "  delete " in line) == (
        sorted(doomed)
    )
    assert "would delete 4 asset(s)" in dry.stdout
    assert len(svc.points()) == 10 * 2, "a dry run deletes nothing"

    forced = svc.cli("backfill", "--collection-id", collection, "--force", "--no-progress")
    assert "removed 4 asset(s) deleted upstream" in forced.stderr
    assert in_step(svc, mixpeek, assets, set(doomed))
    assert json.loads(svc.cli("status", "--json").stdout)["watch"] == []


@pytest.mark.parametrize("api", ["2024"])  # the removal order is the same for both
def test_a_sweep_killed_half_way_leaves_no_stale_point_after_the_restart(
    mixpeek: Mixpeek, svc: Service
) -> None:
    assets = mixpeek.seed(6)
    collection = mixpeek.collection
    svc.cli("backfill", "--collection-id", collection, "--no-progress")
    doomed = assets[0]
    mixpeek.delete([doomed])
    # SIGKILL between forgetting the ledger rows and deleting the points.
    killed = svc.cli(
        "backfill",
        "--collection-id",
        collection,
        "--no-progress",
        check=False,
        SYNC_FAILPOINTS="after_forget_ledger=kill",
    )
    assert killed.returncode == -signal.SIGKILL
    assert any(p.payload["asset_id"] == doomed for p in svc.points()), "killed mid-sweep"

    svc.cli("backfill", "--collection-id", collection, "--no-progress")
    assert in_step(svc, mixpeek, assets, {doomed})


def test_an_upstream_ignoring_the_filter_gets_full_listings_said_once(
    tmp_path: Path, mixpeek: Mixpeek, svc: Service
) -> None:
    assets = mixpeek.seed(3)
    mixpeek.patch(ignore_filters=True)
    log = tmp_path / "daemon.log"
    # A zero overlap window: every asset listed before the watermark betrays the filter.
    daemon = start_daemon(
        svc,
        log,
        SYNC_WATCH_COLLECTIONS=mixpeek.collection,
        SYNC_WATCH_INTERVAL=str(WATCH_INTERVAL),
        SYNC_WATCH_OVERLAP="0",
    )
    try:
        wait_until(lambda: len(svc.points()) == 3 * 2, 30, "the first full pass")
        time.sleep(0.5)  # the asset seeded next must be newer than the watermark
        (created,) = mixpeek.seed(1)
        wait_until(
            lambda: any(p.payload["asset_id"] == created for p in svc.points()),
            15,
            "the new asset, found by a full listing",
        )
        time.sleep(3 * WATCH_INTERVAL)  # a few more passes: still said once
    finally:
        stop_daemon(daemon, log)
    text = log.read_text()
    assert text.count("ignored the updated_at filter") == 1, text[-3000:]
    assert compare_points(mixpeek.expected(assets), svc.points())["lost"] == 0


def test_backfill_exits_0_when_assets_failed_upstream(
    tmp_path: Path, emulator: EmulatorServer, qdrant: QdrantStandIn
) -> None:
    # 2024 only: a 2024 listing shows FAILED assets; a failed v1 object makes no document,
    # so no v1 listing can show it.
    svc = Service(tmp_path, emulator, QDRANT_URL=qdrant.url, QDRANT_COLLECTION=COLLECTION)
    seed(emulator, 3)
    svc.patch(fail_rate=1.0)
    (task_id,) = svc.submit("--video", "https://example.com/dead-link.mp4")
    svc.patch(fail_rate=0.0)
    wait_until(
        lambda: (
            httpx.get(f"{emulator.url}/tasks/{task_id}", headers=HEADERS).json()["status"]
            == "FAILED"
        ),
        10,
        "the task to fail upstream",
    )
    result = svc.cli("backfill", "--collection-id", COLLECTION, "--no-progress", check=False)
    assert result.returncode == 0, result.stderr
    assert "failed upstream: 1" in result.stderr
    assert "Exit codes" in svc.cli("backfill", "--help").stdout


@pytest.mark.parametrize("api", ["2024"])  # the one-lister lock is the same for both
def test_three_replicas_watching_one_collection_queue_each_asset_once(
    tmp_path: Path, mixpeek: Mixpeek, qdrant: QdrantStandIn, postgres_url: str
) -> None:
    assets = mixpeek.seed(60)
    svc = Service(
        tmp_path,
        mixpeek,
        QDRANT_URL=qdrant.url,
        QDRANT_COLLECTION=COLLECTION,
        DATABASE_URL=postgres_url,
        SYNC_LOG_FORMAT="json",
    )
    env = {
        "SYNC_WATCH_COLLECTIONS": mixpeek.collection,
        "SYNC_WATCH_INTERVAL": str(WATCH_INTERVAL),
    }
    logs = [tmp_path / f"replica-{i}.log" for i in range(3)]
    svc.cli("migrate")  # as the compose file's one-shot does, before the replicas start
    procs = [start_daemon(svc, log, **env) for log in logs]
    try:
        wait_until(lambda: len(svc.points()) == 60 * 2, 60, "the collection")
        time.sleep(3 * WATCH_INTERVAL)  # incremental passes follow: they queue nothing
    finally:
        for proc, log in zip(procs, logs, strict=True):
            stop_daemon(proc, log)
    if mixpeek.api == "2024":  # the service's own feature reads (the oracle's come after)
        fetched = mixpeek.stats()["requests"]
        assert sum(fetched["GET /assets/{asset_id}/features"].values()) == 60
    events = [
        json.loads(line)
        for log in logs
        for line in log.read_text().splitlines()
        if line.startswith("{")
    ]
    synced = Counter(e["task_id"] for e in events if e.get("event") == "task_synced")
    assert sorted(synced) == sorted(f"asset:{a}" for a in assets)
    assert set(synced.values()) == {1}, "each asset job ran once"
    queued = sum(e.get("queued", 0) for e in events if e.get("event") == "watch_pass")
    assert queued == 60, "each asset queued once, by one replica's pass"
    assert compare_points(mixpeek.expected(assets), svc.points()) == IN_STEP
