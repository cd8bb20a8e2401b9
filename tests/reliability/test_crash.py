"""Crash safety: SIGKILL at every pipeline step, restart, drain, compare Qdrant with upstream,
on both API generations (v1 on SQLite only: the store's part is the same for both).

Each scenario adds a line to the reliability report, e.g.
``crash:after_upsert sqlite lost=0 dup=0 wrong=0 recovered_in=2.9s``.
"""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sync_service.engine.failpoints import PIPELINE_STEPS
from tests.harness import Service
from tests.support import IN_STEP, compare_points
from tests.upstreams import Mixpeek, open_mixpeek

pytestmark = pytest.mark.reliability
LEASE = "2"
ITEMS = [
    "--video", "https://example.com/c1.mp4?duration=30",
    "--video", "https://example.com/c2.mp4?duration=20",
    "--image", "https://example.com/c3.jpg",
    "--text", "crash me",
]  # fmt: skip


@pytest.fixture
def emulator(api: str) -> Iterator[Mixpeek]:
    with open_mixpeek(api, processing_time=0.3, seed=5) as upstream:
        yield upstream


def dialect(url: str) -> str:
    return "postgresql" if url.startswith("postgresql") else "sqlite"


def outcome(service: Service, task_ids: list[str]) -> dict[str, int]:
    return compare_points(service.expected(task_ids), service.points())


@pytest.mark.parametrize("step", PIPELINE_STEPS)
def test_kill_at_each_step_then_restart_loses_and_doubles_nothing(
    tmp_path: Path,
    emulator: Mixpeek,
    database_url: str,
    step: str,
    report: Callable[[str], None],
) -> None:
    if emulator.api == "v1" and database_url.startswith("postgresql"):
        pytest.skip("v1 runs the matrix on SQLite (the store's part is the same for both)")
    service = Service(tmp_path, emulator, DATABASE_URL=database_url, SYNC_LEASE_SECONDS=LEASE)
    task_ids = service.submit(*ITEMS)
    time.sleep(0.5)  # DONE upstream, so every step is reached

    crashed = service.cli("run", "--drain", check=False, SYNC_FAILPOINTS=f"{step}=kill")
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-2000:]
    before = service.status()["counts"]
    assert before["pending"] >= 1 or step == "after_record"

    started = time.monotonic()
    service.cli("run", "--drain")
    recovered_in = time.monotonic() - started

    result = outcome(service, task_ids)
    report(
        f"crash:{step} {emulator.api} {dialect(database_url)} lost={result['lost']} "
        f"dup={result['duplicated'] + result['extra']} wrong={result['wrong']} "
        f"recovered_in={recovered_in:.1f}s"
    )
    assert result == IN_STEP
    assert service.status()["counts"] == {"pending": 0, "synced": 4, "failed": 0}


def test_kills_at_random_moments_converge(
    tmp_path: Path, emulator: Mixpeek, report: Callable[[str], None]
) -> None:
    rng = random.Random(20261124)
    service = Service(tmp_path, emulator, SYNC_LEASE_SECONDS=LEASE)
    urls = [f"https://example.com/r{i}.mp4?duration={rng.randint(10, 60)}" for i in range(12)]
    task_ids = service.submit(*[arg for url in urls for arg in ("--video", url)])
    emulator.patch(latency=0.03)  # slow enough that kills land mid-work
    kills = 5
    for _ in range(kills):
        daemon = service.start("run")
        time.sleep(rng.uniform(1.5, 3.0))  # start-up takes about 1 s
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(timeout=10)
        if daemon.stdout:
            daemon.stdout.close()
        if daemon.stderr:
            daemon.stderr.close()
    emulator.patch(latency=0.0)
    started = time.monotonic()
    service.cli("run", "--drain")
    recovered_in = time.monotonic() - started

    result = outcome(service, task_ids)
    report(
        f"crash:random_kills x{kills} {emulator.api} sqlite lost={result['lost']} "
        f"dup={result['duplicated'] + result['extra']} wrong={result['wrong']} "
        f"recovered_in={recovered_in:.1f}s"
    )
    assert result == IN_STEP
    assert service.status()["counts"] == {"pending": 0, "synced": 12, "failed": 0}
