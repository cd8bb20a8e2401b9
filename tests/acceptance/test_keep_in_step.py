"""Keeping Qdrant in step, as a user runs it: backfill, re-sync, deletions, ``forget``,
``verify``, ``reindex``, on both API generations (``api``, tests/upstreams.py) unless a test
says why not.

Real ``sync-service`` subprocesses over real HTTP to the emulator; what lands in Qdrant is
compared with an independent oracle (tests/support.py, tests/upstreams.py).
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from qdrant_client import QdrantClient

from sync_service.emulator import EmulatorConfig, EmulatorServer
from tests.conftest import API_KEY
from tests.harness import COLLECTION, Service
from tests.support import IN_STEP, compare_points, expected_point, served
from tests.upstreams import Mixpeek, open_mixpeek

HEADERS = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture
def mixpeek(api: str) -> Iterator[Mixpeek]:
    with open_mixpeek(api, processing_time=0.4, seed=1) as upstream:
        yield upstream


@pytest.fixture
def emulator() -> Iterator[EmulatorServer]:
    """The 2024 emulator alone, for the tests of what only it does."""
    with EmulatorServer(EmulatorConfig(api_key=API_KEY, processing_time=0.4, seed=1)) as server:
        yield server


def service(root: Path, mixpeek: Mixpeek) -> Service:
    return Service(root, mixpeek, QDRANT_COLLECTION=COLLECTION)


def seed(emulator: EmulatorServer, count: int, **extra: Any) -> dict[str, list[str]]:
    body = {"collection_id": COLLECTION, "count": count, "duration": 20, **extra}
    answer = httpx.post(f"{emulator.url}/_emulator/seed", json=body, timeout=30)
    result: dict[str, list[str]] = answer.raise_for_status().json()
    return result


def expected_for(emulator: EmulatorServer, task_ids: list[str]) -> list[dict[str, Any]]:
    """The oracle's points; backfilled points carry the task id the asset names upstream."""
    points = []
    for task_id in task_ids:
        asset, features = served(emulator.url, API_KEY, task_id)
        points += [expected_point(asset["task_id"], asset, f) for f in features]
    return points


def test_backfill_syncs_every_asset_and_a_second_run_writes_nothing(
    tmp_path: Path, mixpeek: Mixpeek
) -> None:
    assets = mixpeek.seed(25)
    svc = service(tmp_path, mixpeek)
    # Ten documents a page in v1: each video's two segments land on one page or straddle two.
    result = svc.cli("backfill", "--collection-id", svc.collection, "--page-size", "10")
    assert "25 asset(s) listed, 25 synced, 0 failed" in result.stderr
    expected = mixpeek.expected(assets)
    assert len(expected) == 25 * 2  # 20-second videos: two segments each
    assert compare_points(expected, svc.points()) == IN_STEP

    # Again: every asset is re-synced (listed, fetched) but nothing changed, so no point is
    # rewritten: the points keep the write version of the first run.
    versions = {str(p.id): p.payload["_sync_version"] for p in svc.points()}
    result = svc.cli("backfill", "--collection-id", svc.collection, "--page-size", "10")
    assert "25 asset(s) listed, 25 synced" in result.stderr
    assert {str(p.id): p.payload["_sync_version"] for p in svc.points()} == versions


def test_backfill_resumes_after_a_crash_at_its_stored_cursor(
    tmp_path: Path, mixpeek: Mixpeek
) -> None:
    assets = mixpeek.seed(30)
    svc = service(tmp_path, mixpeek)
    # Killed (SIGKILL) right after the second page was queued.
    crashed = svc.cli(
        "backfill",
        "--collection-id",
        svc.collection,
        "--page-size",
        "10",
        check=False,
        SYNC_FAILPOINTS="after_listing_page=kill@2",
    )
    assert crashed.returncode == -signal.SIGKILL
    before = mixpeek.listings()
    result = svc.cli("backfill", "--collection-id", svc.collection, "--page-size", "10")
    assert "30 asset(s) listed, 30 synced, 0 failed" in result.stderr
    # The resumed run queued from page 3 on, the first two pages' jobs already queued.
    assert f"resuming the full listing of {svc.collection} at page 3" in result.stderr
    if mixpeek.api == "2024":  # it listed that page alone
        assert mixpeek.listings() - before == 1
    else:  # v1, 60 documents in pages of 10: page 2 again (the pass's resume token starts
        # there, its last object may go on), then pages 3 to 6, not pages 1 and 2 walked
        # again; and one documents/list per asset synced (its content, filtered by object)
        assert mixpeek.listings() - before == 5 + 30
    assert compare_points(mixpeek.expected(assets), svc.points()) == IN_STEP


def test_resync_writes_changes_first_and_deletes_vanished_features(
    tmp_path: Path, mixpeek: Mixpeek
) -> None:
    assets = mixpeek.seed(3)
    svc = service(tmp_path, mixpeek)
    svc.cli("backfill", "--collection-id", svc.collection)
    [changed, payload_only, untouched] = assets
    old_ids = {str(p.id) for p in svc.points() if p.payload["asset_id"] == changed}

    mixpeek.change(changed, "features")
    mixpeek.change(payload_only, "payload")
    versions = {str(p.id): p.payload["_sync_version"] for p in svc.points()}
    svc.cli("backfill", "--collection-id", svc.collection)

    points = svc.points()
    assert compare_points(mixpeek.expected(assets), points)["lost"] == 0
    now = {str(p.id): p for p in points}
    new_ids = {i for i, p in now.items() if p.payload["asset_id"] == changed}
    assert old_ids - new_ids, "a feature gone upstream must lose its point"
    assert new_ids - old_ids, "a new feature upstream must gain a point"
    assert compare_points(mixpeek.expected(assets), points) == IN_STEP
    # The untouched asset cost no write; the payload-only one was written (its payload).
    for point_id, point in now.items():
        if point.payload["asset_id"] == untouched:
            assert point.payload["_sync_version"] == versions[point_id]
        if point.payload["asset_id"] == payload_only:
            assert point.payload["_sync_version"] != versions[point_id]


def test_an_asset_deleted_upstream_loses_its_points(
    tmp_path: Path, emulator: EmulatorServer
) -> None:
    # 2024 only: re-tracking a v1 task lists its objects' documents, which finds none (not a
    # 404): the points go all the same, by the sync (tests/unit/test_v1_adapter.py).
    seeded = seed(emulator, 4)
    svc = Service(tmp_path, emulator, QDRANT_COLLECTION=COLLECTION)
    svc.cli("backfill", "--collection-id", COLLECTION)
    gone = seeded["asset_ids"][0]
    httpx.delete(f"{emulator.url}/assets/{gone}", headers=HEADERS).raise_for_status()
    # The deleted asset is no longer listed; tracking its old task re-checks it (404).
    svc.cli("track", seeded["task_ids"][0])
    svc.cli("run", "--drain")
    assert not [p for p in svc.points() if p.payload["asset_id"] == gone]
    assert len(svc.points()) == 3 * 2
    task = next(t for t in svc.status()["tasks"] if t["task_id"] == seeded["task_ids"][0])
    assert task["state"] == "failed" and "404" in task["error"]


def test_forget_dry_run_guard_and_force(tmp_path: Path, mixpeek: Mixpeek) -> None:
    assets = mixpeek.seed(5)
    svc = service(tmp_path, mixpeek)
    svc.cli("backfill", "--collection-id", svc.collection)
    one, *rest = assets

    dry = svc.cli("forget", one, "--dry-run")
    assert f"would delete 2 point(s) from {COLLECTION}" in dry.stdout
    assert len(svc.points()) == 10

    # One asset of five is 20 % of the collection: within the default guard.
    svc.cli("forget", one)
    assert len(svc.points()) == 8 and all(p.payload["asset_id"] != one for p in svc.points())

    # Three of the remaining four would be 75 %: refused, nothing deleted.
    refused = svc.cli("forget", *rest[:3], check=False)
    assert refused.returncode == 3  # a guard that held (README "Exit codes")
    assert "refusing to delete 6 of 8 points (75%)" in refused.stderr
    assert len(svc.points()) == 8
    svc.cli("forget", *rest[:3], "--force")
    assert len(svc.points()) == 2
    status = json.loads(svc.cli("status", "--json").stdout)
    assert status["counts"]["synced"] == 5  # forgetting points does not rewrite history


def test_verify_reports_drift_and_repair_fixes_it(tmp_path: Path, mixpeek: Mixpeek) -> None:
    assets = mixpeek.seed(4)
    svc = service(tmp_path, mixpeek)
    svc.cli("backfill", "--collection-id", svc.collection)
    clean = svc.cli("verify")
    assert "drift: no" in clean.stdout

    # Drift: a point lost in Qdrant (e.g. restored from an old snapshot) and an asset
    # re-indexed upstream while nothing was tracking it.
    victim = str(svc.points()[0].id)
    client = QdrantClient(path=str(tmp_path / "qdrant"))
    try:
        client.delete(COLLECTION, [victim], wait=True)
    finally:
        client.close()
    mixpeek.change(assets[1], "vectors")
    drift = svc.cli("verify", "--sample", "4", check=False)
    assert drift.returncode == 1, drift.stdout + drift.stderr
    assert "missing: 1" in drift.stdout and "drift: yes" in drift.stdout

    repaired = svc.cli("verify", "--sample", "4", "--repair")
    assert "drift: no" in repaired.stdout
    assert compare_points(mixpeek.expected(assets), svc.points()) == IN_STEP
    assert svc.cli("verify", "--collection", "nope", check=False).returncode == 2


def test_a_repair_the_delete_guard_holds_exits_3(tmp_path: Path, mixpeek: Mixpeek) -> None:
    """Three of four assets gone upstream: their removal is over SYNC_DELETE_GUARD, so the
    repair is refused with exit code 3 (a guard that held) and nothing is deleted."""
    assets = mixpeek.seed(4)
    svc = service(tmp_path, mixpeek)
    svc.cli("backfill", "--collection-id", svc.collection)
    before = len(svc.points())
    mixpeek.delete(assets[:3])
    held = svc.cli("verify", "--sample", "4", "--repair", check=False)
    assert held.returncode == 3, held.stdout + held.stderr
    assert "SYNC_DELETE_GUARD" in held.stderr.strip().splitlines()[-1]
    assert len(svc.points()) == before


def test_reindex_survives_a_kill_and_swaps_then_rolls_back(
    tmp_path: Path, mixpeek: Mixpeek
) -> None:
    assets = mixpeek.seed(12)
    svc = service(tmp_path, mixpeek)
    svc.cli("backfill", "--collection-id", svc.collection)
    before = {str(p.id) for p in svc.points()}

    # SIGKILL half-way through the fill: the alias still serves the old build, whole.
    crashed = svc.cli(
        "reindex",
        "--collection",
        COLLECTION,
        "--distance",
        "dot",
        check=False,
        SYNC_FAILPOINTS="after_reindex_asset=kill@5",
    )
    assert crashed.returncode == -signal.SIGKILL
    assert {str(p.id) for p in svc.points()} == before
    assert aliases(tmp_path) == {COLLECTION: f"{COLLECTION}__v1"}

    done = svc.cli("reindex", "--collection", COLLECTION, "--distance", "dot")
    assert f"{COLLECTION}__v1 -> {COLLECTION}__v2, distance dot (resumed)" in done.stdout
    assert aliases(tmp_path) == {COLLECTION: f"{COLLECTION}__v2"}
    # The new build is marked with the same API generation (which also gives a v1 build its
    # payload indexes: embedded Qdrant lists none, tests/integration/test_generations.py
    # checks the calls that make them).
    assert generation_mark(tmp_path, f"{COLLECTION}__v2") == mixpeek.api
    expected = mixpeek.expected(assets)
    # The emulator's vectors are unit length, so the oracle's cosine normalisation is a no-op
    # and the dot build must hold them exactly as sent.
    assert compare_points(expected, svc.points()) == IN_STEP

    back = svc.cli("reindex", "--collection", COLLECTION, "--rollback")
    assert f"{COLLECTION} -> {COLLECTION}__v1 (rolled back)" in back.stdout
    assert aliases(tmp_path) == {COLLECTION: f"{COLLECTION}__v1"}
    assert compare_points(expected, svc.points()) == IN_STEP


def generation_mark(root: Path, collection: str) -> str | None:
    """The Mixpeek API generation a collection's metadata records."""
    client = QdrantClient(path=str(root / "qdrant"))
    try:
        return (client.get_collection(collection).config.metadata or {}).get("mixpeek_api")
    finally:
        client.close()


def aliases(root: Path) -> dict[str, str]:
    client = QdrantClient(path=str(root / "qdrant"))
    try:
        return {a.alias_name: a.collection_name for a in client.get_aliases().aliases}
    finally:
        client.close()


@pytest.mark.parametrize("api", ["2024"])  # the queue is shared by both APIs
def test_backfill_beside_a_running_daemon_queues_the_assets_for_it(
    tmp_path: Path, mixpeek: Mixpeek
) -> None:
    assets = mixpeek.seed(6)
    svc = service(tmp_path, mixpeek)
    daemon = svc.start("run")
    try:
        assert daemon.stderr is not None
        for line in daemon.stderr:  # the daemon holds the embedded Qdrant from here on
            if "daemon started" in line:
                break
        result = svc.cli("backfill", "--collection-id", svc.collection)
        assert "queued 6 asset(s) from 1 collection(s)" in result.stderr
        deadline = time.monotonic() + 60
        while svc.status()["counts"]["synced"] < 6:
            assert time.monotonic() < deadline, svc.status()
            time.sleep(0.2)
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0
    assert compare_points(mixpeek.expected(assets), svc.points()) == IN_STEP


@pytest.mark.parametrize("api", ["2024"])  # the engine's, whatever the API
def test_a_caption_change_on_a_point_lost_in_qdrant_rewrites_the_whole_point(
    tmp_path: Path, mixpeek: Mixpeek
) -> None:
    assets = mixpeek.seed(2)
    svc = service(tmp_path, mixpeek)
    svc.cli("backfill", "--collection-id", svc.collection)
    asset_id = assets[0]
    lost = next(str(p.id) for p in svc.points() if p.payload["asset_id"] == asset_id)
    client = QdrantClient(path=str(tmp_path / "qdrant"))
    try:
        client.delete(COLLECTION, [lost], wait=True)  # the ledger still lists it
    finally:
        client.close()
    mixpeek.change(asset_id, "payload")
    result = svc.cli("backfill", "--collection-id", svc.collection)
    assert "2 synced, 0 failed" in result.stderr
    assert compare_points(mixpeek.expected(assets), svc.points()) == IN_STEP


def test_when_most_assets_answer_404_their_points_are_kept(
    tmp_path: Path, emulator: EmulatorServer
) -> None:
    """A wrong namespace or URL looks like every asset deleted: removals stop after a few.

    The breaker's evidence is shared through the state store per upstream configuration (URL
    and namespace): the syncs made under the right one do not dilute the wrong one's 404s.
    2024 only: a v1 object gone is no 404 (its documents are listed, and none is found).
    """
    seeded = seed(emulator, 8)
    svc = Service(tmp_path, emulator, QDRANT_COLLECTION=COLLECTION)
    svc.cli("backfill", "--collection-id", COLLECTION)
    gone = seeded["asset_ids"][:6]
    for asset_id in gone:
        httpx.delete(f"{emulator.url}/assets/{asset_id}", headers=HEADERS).raise_for_status()
    svc.cli("track", *seeded["task_ids"][:6])  # their tasks, polled again: 404 on the asset
    svc.cli(
        "run",
        "--drain",
        SYNC_MAX_CONCURRENCY="1",
        SYNC_CLAIM_BATCH="1",
        MIXPEEK_NAMESPACE="a-changed-namespace",
    )
    tasks = {t["task_id"]: t for t in svc.status()["tasks"]}
    errors = [tasks[t]["error"] for t in seeded["task_ids"][:6]]
    removed = [e for e in errors if "were removed" in e]
    kept = [e for e in errors if "its points were kept" in e]
    assert (len(removed), len(kept)) == (4, 2), errors
    assert len(svc.points()) == 2 * (8 - 4)
    # Removing them on purpose still works.
    svc.cli("forget", *gone, "--force")
    assert {p.payload["asset_id"] for p in svc.points()} == set(seeded["asset_ids"][6:])
