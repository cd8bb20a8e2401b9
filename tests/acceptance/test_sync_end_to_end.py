"""The real ``sync-service`` commands, as subprocesses, against the emulator over real HTTP,
into embedded Qdrant; every point is checked against what the emulator served."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from qdrant_client import QdrantClient

from sync_service.emulator import EmulatorConfig, EmulatorServer
from tests.conftest import API_KEY
from tests.support import compare_points, expected_point, served

COLLECTION = "acceptance"


class Service:
    """Runs ``sync-service`` commands with one state folder and one emulator."""

    def __init__(self, root: Path, emulator: EmulatorServer, **env: str) -> None:
        self.root = root
        self.emulator = emulator
        self.env = {
            **{
                k: v
                for k, v in os.environ.items()
                if not k.startswith(("MIXPEEK_", "QDRANT_", "SYNC_", "DATABASE_URL"))
            },
            "MIXPEEK_API_URL": emulator.url,
            "MIXPEEK_API_KEY": API_KEY,
            "QDRANT_PATH": str(root / "qdrant"),
            "DATABASE_URL": f"sqlite:///{root / 'sync.db'}",
            "SYNC_POLL_INTERVAL": "0.2",
            "SYNC_MAX_POLL_INTERVAL": "0.5",
            "SYNC_RETRY_BASE_DELAY": "0.05",
            "SYNC_RETRY_MAX_DELAY": "0.5",
            "SYNC_HTTP_TIMEOUT": "5",
            "SYNC_API_PORT": "0",  # no control API unless a test asks for one
            **env,
        }

    def cli(
        self, *args: str, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "sync_service", *args],
            env=self.env,
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"{args} exited {result.returncode}:\n{result.stderr[-3000:]}")
        return result

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "sync_service", *args],
            env=self.env,
            cwd=self.root,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def submit(self, *items: str) -> list[str]:
        out = self.cli("submit", "--collection-id", COLLECTION, *items).stdout
        return out.split()

    def status(self) -> dict[str, Any]:
        return json.loads(self.cli("status", "--json").stdout)

    def points(self) -> list[Any]:
        client = QdrantClient(path=str(self.root / "qdrant"))
        try:
            if not client.collection_exists(COLLECTION):
                return []
            records, offset = [], None
            while True:
                page, offset = client.scroll(
                    COLLECTION, limit=256, offset=offset, with_payload=True, with_vectors=True
                )
                records.extend(page)
                if offset is None:
                    return records
        finally:
            client.close()

    def expected(self, task_ids: list[str], skip: set[str] = frozenset()) -> list[dict[str, Any]]:  # type: ignore[assignment]
        points = []
        for task_id in task_ids:
            asset, features = served(self.emulator.url, API_KEY, task_id)
            points += [
                expected_point(task_id, asset, f) for f in features if f["feature_id"] not in skip
            ]
        return points

    def patch(self, **knobs: Any) -> None:
        httpx.patch(f"{self.emulator.url}/_emulator/config", json=knobs).raise_for_status()

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = httpx.get(f"{self.emulator.url}/_emulator/stats").json()
        return result


@pytest.fixture
def emulator() -> Iterator[EmulatorServer]:
    config = EmulatorConfig(api_key=API_KEY, processing_time=0.6, seed=3)
    with EmulatorServer(config) as server:
        yield server


@pytest.fixture
def service(tmp_path: Path, emulator: EmulatorServer) -> Service:
    return Service(tmp_path, emulator)


VIDEOS = [
    "--video",
    "https://example.com/a.mp4?duration=35",
    "--video",
    "https://example.com/b.mp4?duration=21",
]
IMAGES = ["--image", "https://example.com/c.jpg"]
TEXTS = ["--text", "A surfer rides a wave.", "--text", "Pasta in a pot."]


def test_submit_run_drain_lands_every_point_exactly(service: Service) -> None:
    task_ids = service.submit(*VIDEOS, *IMAGES, *TEXTS)
    assert len(task_ids) == 5
    service.cli("run", "--drain")

    status = service.status()
    assert status["counts"] == {"pending": 0, "synced": 5, "failed": 0}
    expected = service.expected(task_ids)
    assert len(expected) == 4 + 3 + 1 + 1 + 1  # 35 s and 21 s videos in 10 s segments
    assert compare_points(expected, service.points()) == {
        "lost": 0,
        "extra": 0,
        "wrong": 0,
        "duplicated": 0,
    }
    by_task = {t["task_id"]: t for t in status["tasks"]}
    assert sum(t["features_synced"] for t in by_task.values()) == len(expected)
    assert set(by_task[task_ids[0]]) >= {
        "task_id",
        "state",
        "asset_id",
        "collection_id",
        "features_synced",
        "error",
    }

    # Running again changes nothing: nothing is pending, nothing is fetched again.
    before = service.stats()["total"]
    service.cli("run", "--drain")
    assert service.stats()["total"] == before
    assert compare_points(expected, service.points())["duplicated"] == 0


def test_failed_unknown_and_timed_out_tasks_end_failed_with_a_reason(
    tmp_path: Path, emulator: EmulatorServer
) -> None:
    service = Service(tmp_path, emulator, SYNC_TASK_TIMEOUT="2")
    (ok,) = service.submit("--text", "fine")
    service.patch(fail_rate=1.0)
    (failed,) = service.submit("--video", "https://example.com/broken.mp4?duration=20")
    service.patch(fail_rate=0.0, stuck_rate=1.0)
    (stuck,) = service.submit("--text", "never finishes")
    service.patch(stuck_rate=0.0)
    unknown = str(uuid.uuid4())
    service.cli("track", unknown)

    service.cli("run", "--drain", timeout=60)
    tasks = {t["task_id"]: t for t in service.status()["tasks"]}
    assert tasks[ok]["state"] == "synced"
    assert tasks[failed]["state"] == "failed"
    assert tasks[failed]["error"].startswith("failed upstream (status FAILED): ")
    assert len(tasks[failed]["error"]) > len("failed upstream (status FAILED): ")
    assert tasks[unknown]["state"] == "failed"
    assert tasks[unknown]["error"] == "task not found upstream (404)"
    assert tasks[stuck]["state"] == "failed"
    assert tasks[stuck]["error"].startswith("timed out: still PROCESSING upstream")
    assert compare_points(service.expected([ok]), service.points())["lost"] == 0


def test_poison_vectors_become_dead_letters_and_the_rest_land(
    tmp_path: Path, emulator: EmulatorServer
) -> None:
    service = Service(tmp_path, emulator)
    service.patch(poison_rate=0.4)
    task_ids = service.submit(
        "--video",
        "https://example.com/long.mp4?duration=100",
        "--video",
        "https://example.com/other.mp4?duration=60",
    )
    service.cli("run", "--drain")
    poisoned = set(service.stats()["poisoned_features"])
    assert poisoned, "the knob should have poisoned some features"

    status = service.status()
    assert status["counts"]["synced"] == 2  # a dead letter does not fail its task
    assert sum(t["dead_letters"] for t in status["tasks"]) == len(poisoned)
    expected = service.expected(task_ids, skip=poisoned)
    assert compare_points(expected, service.points()) == {
        "lost": 0,
        "extra": 0,
        "wrong": 0,
        "duplicated": 0,
    }
    detail = service.cli("status", task_ids[0]).stdout
    assert "dead letter" in detail and ("not finite" in detail or "length" in detail)


def test_429s_and_5xx_from_upstream_are_ridden_out(
    tmp_path: Path, emulator: EmulatorServer
) -> None:
    service = Service(tmp_path, emulator)
    task_ids = service.submit(*VIDEOS, *TEXTS)
    service.patch(error_rate=0.3, rate_limit=1200, rate_burst=5)
    service.cli("run", "--drain", timeout=90)
    service.patch(error_rate=0.0, rate_limit=None)

    stats = service.stats()
    statuses = {code for by_code in stats["requests"].values() for code in by_code}
    assert {"429"} & statuses and {"500", "502", "503"} & statuses
    assert service.status()["counts"] == {"pending": 0, "synced": 4, "failed": 0}
    assert compare_points(service.expected(task_ids), service.points()) == {
        "lost": 0,
        "extra": 0,
        "wrong": 0,
        "duplicated": 0,
    }


def test_sigterm_mid_work_exits_0_and_a_restart_finishes_with_nothing_lost_or_doubled(
    tmp_path: Path, emulator: EmulatorServer
) -> None:
    # About 6 s of upstream work (80 requests at 0.15 s, 2 at a time) against a 1 s grace:
    # SIGTERM lands mid-work, and what is not done within the grace period is abandoned.
    service = Service(tmp_path, emulator, SYNC_SHUTDOWN_GRACE="1", SYNC_MAX_CONCURRENCY="2")
    urls = [f"https://example.com/v{i}.mp4?duration=60" for i in range(10)]
    task_ids = service.submit(*[arg for u in urls for arg in ("--video", u)])
    time.sleep(0.7)  # let the tasks finish upstream, so the daemon is busy fetching
    service.patch(latency=0.15)
    daemon = service.start("run")
    deadline = time.monotonic() + 30
    while service.status()["counts"]["synced"] == 0:
        assert time.monotonic() < deadline and daemon.poll() is None
        time.sleep(0.1)
    started = time.monotonic()
    daemon.send_signal(signal.SIGTERM)
    code = daemon.wait(timeout=15)
    stopped_in = time.monotonic() - started
    stderr = daemon.stderr.read() if daemon.stderr else ""
    assert code == 0, stderr[-2000:]
    assert stopped_in < 1 + 2, f"took {stopped_in:.1f}s to stop with a 1 s grace"
    assert "daemon_stopping" in stderr and "shutdown_abandon" in stderr
    assert service.status()["counts"]["synced"] < len(task_ids)
    with sqlite3.connect(tmp_path / "sync.db") as db:  # no lease of its own left behind
        assert db.execute(
            "SELECT count(*) FROM tasks WHERE lease_owner IS NOT NULL"
        ).fetchone() == (0,)

    service.patch(latency=0.0)
    service.cli("run", "--drain")
    assert service.status()["counts"] == {"pending": 0, "synced": 10, "failed": 0}
    assert compare_points(service.expected(task_ids), service.points()) == {
        "lost": 0,
        "extra": 0,
        "wrong": 0,
        "duplicated": 0,
    }
