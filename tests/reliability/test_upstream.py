"""Upstream faults over real HTTP: every task still ends synced (or failed with a reason), the
waits honour Retry-After (measured at the emulator), attempts stay bounded, nothing is lost."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sync_service.emulator import EmulatorConfig, EmulatorServer
from tests.conftest import API_KEY
from tests.harness import Service
from tests.support import IN_STEP, compare_points

pytestmark = pytest.mark.reliability
MAX_ATTEMPTS = 6
ITEMS = [
    "--video", "https://example.com/u1.mp4?duration=40",
    "--video", "https://example.com/u2.mp4?duration=25",
    "--image", "https://example.com/u3.jpg",
    "--text", "upstream faults",
]  # fmt: skip

SCENARIOS: dict[str, dict[str, Any]] = {
    "5xx_30pct": {"error_rate": 0.3},
    "429_storm_with_retry_after": {
        "storm_rate": 0.3,
        "retry_after": 1,
        "retry_after_header": "always",
    },
    "429_storm_json_retry_after_only": {
        "storm_rate": 0.3,
        "retry_after": 1,
        "retry_after_header": "never",
    },
    "slow_drip_bodies": {"slow_drip_rate": 0.2, "slow_drip_delay": 0.3},
    "connection_resets": {"reset_rate": 0.25},
    "truncated_and_non_json_bodies": {"truncate_rate": 0.15, "garbage_rate": 0.15},
    "timeouts": {"hang_rate": 0.2, "hang_seconds": 5},
}


@pytest.fixture
def emulator() -> Iterator[EmulatorServer]:
    with EmulatorServer(EmulatorConfig(api_key=API_KEY, processing_time=0.3, seed=13)) as e:
        yield e


@pytest.mark.parametrize("name", SCENARIOS)
def test_upstream_fault(
    tmp_path: Path, emulator: EmulatorServer, name: str, report: Callable[[str], None]
) -> None:
    service = Service(
        tmp_path, emulator,
        SYNC_HTTP_TIMEOUT="1",  # the overall deadline per request: drips and hangs hit it
        SYNC_HTTP_MAX_ATTEMPTS="6",
        SYNC_MAX_ATTEMPTS=str(MAX_ATTEMPTS),
    )  # fmt: skip
    task_ids = service.submit(*ITEMS)
    httpx.post(f"{emulator.url}/_emulator/stats/reset")
    service.patch(**SCENARIOS[name])
    service.cli("run", "--drain", timeout=180)
    stats = service.stats()
    service.patch(**{knob: 0.0 for knob in SCENARIOS[name] if knob.endswith("_rate")})

    tasks = service.status()["tasks"]
    assert all(t["state"] == "synced" or (t["state"] == "failed" and t["error"]) for t in tasks)
    with sqlite3.connect(tmp_path / "sync.db") as db:
        (attempts,) = db.execute("SELECT max(attempts) FROM tasks").fetchone()
    assert attempts <= MAX_ATTEMPTS
    synced = [t["task_id"] for t in tasks if t["state"] == "synced"]
    result = compare_points(service.expected(synced), service.points())
    faults = sum(stats["faults"].values()) + stats["rate_limited"] + sum(
        n for counts in stats["requests"].values() for code, n in counts.items()
        if code.startswith("5")
    )  # fmt: skip
    waits = stats["retry_after_waits"]
    honoured = (
        f" min_wait={min(w['waited'] for w in waits):.2f}s/announced="
        f"{min(w['announced'] for w in waits):g}s"
        if waits
        else ""
    )
    report(
        f"upstream:{name} sqlite lost={result['lost']} "
        f"dup={result['duplicated'] + result['extra']} wrong={result['wrong']} "
        f"synced={len(synced)}/{len(task_ids)} faults={faults} requests={stats['total']} "
        f"retry_after_violations={stats['retry_after_violations']}{honoured}"
    )
    assert faults > 0, "the fault never happened"
    assert stats["retry_after_violations"] == 0
    assert result == IN_STEP
    assert len(synced) == len(task_ids)  # these fault rates are all recoverable
