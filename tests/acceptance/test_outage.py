"""Mixpeek down for longer than the whole retry budget, then back: every task ends synced.

Real processes and real HTTP: the daemon (``run`` with its control API) talks to the emulator,
either through a TCP proxy that refuses every connection (Mixpeek unreachable) or with the
emulator answering 5xx to everything. The retry budget is made tiny (2 HTTP attempts per call,
one attempt per task), so a single attempt spent on the outage fails a task for good; the
outage lasts several times the whole budget.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, closing, nullcontext
from pathlib import Path
from typing import Any

import httpx
import pytest

from sync_service.emulator import EmulatorConfig, EmulatorServer
from tests.conftest import API_KEY
from tests.fault_proxy import FaultProxy
from tests.harness import Service
from tests.support import IN_STEP, compare_points

ITEMS = [
    "--video", "https://example.com/o1.mp4?duration=30",
    "--image", "https://example.com/o2.jpg",
    "--text", "outages heal themselves",
]  # fmt: skip
OUTAGE_SECONDS = 6.0


@pytest.fixture
def emulator() -> Iterator[EmulatorServer]:
    with EmulatorServer(EmulatorConfig(api_key=API_KEY, processing_time=0.2, seed=21)) as e:
        yield e


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], Any], timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.1)
    return value


def readyz(base: str) -> dict[str, Any] | None:
    try:
        body: dict[str, Any] = httpx.get(f"{base}/readyz", timeout=2).json()
        return body
    except (httpx.TransportError, ValueError):
        return None


@pytest.mark.parametrize(
    ("kind", "version"),
    [
        ("connections refused", "auto"),  # down from the start: before the version is known
        ("every answer 5xx", "auto"),
        ("connections refused", "2024"),  # the adapter's own probe
    ],
)
def test_mixpeek_down_longer_than_the_retry_budget_then_back(
    tmp_path: Path, emulator: EmulatorServer, kind: str, version: str
) -> None:
    with FaultProxy("127.0.0.1", int(emulator.url.rsplit(":", 1)[1])) as proxy:
        port = free_port()
        service = Service(
            tmp_path,
            emulator,
            MIXPEEK_API_URL=f"http://127.0.0.1:{proxy.port}",
            SYNC_API_PORT=str(port),
            SYNC_MAX_ATTEMPTS="1",
            SYNC_HTTP_MAX_ATTEMPTS="2",
            SYNC_HTTP_TIMEOUT="1",
            MIXPEEK_API_VERSION=version,
        )
        task_ids = service.submit(*ITEMS)
        base = f"http://127.0.0.1:{port}"
        outage: AbstractContextManager[None] = nullcontext()
        if kind == "connections refused":
            outage = proxy.outage()
        else:
            service.patch(error_rate=1.0)
        with outage:
            daemon = service.start("run", "--drain")
            try:
                # /readyz, the metric and `status` all say so, with since when.
                ready = wait_for(lambda: (r := readyz(base)) and r["mixpeek"] != "ok" and r)
                assert ready["mixpeek"].startswith("Mixpeek unavailable since"), ready
                assert ready["ready"] is True  # the API itself still works (it tracks work)
                metrics = httpx.get(f"{base}/metrics", timeout=2).text
                assert "sync_upstream_up 0.0" in metrics
                shown = wait_for(lambda: service.status()["outages"])
                assert shown[0]["what"] == "Mixpeek" and shown[0]["since"], shown
                assert "unavailable since" in service.cli("status").stdout
                time.sleep(OUTAGE_SECONDS)
                during = service.status()
                assert during["counts"]["failed"] == 0, during
                assert daemon.poll() is None  # the drain waits for Mixpeek
            finally:
                if kind == "every answer 5xx":
                    service.patch(error_rate=0.0)
        try:
            assert daemon.wait(timeout=60) == 0
        finally:
            if daemon.poll() is None:
                daemon.kill()
        stderr = daemon.stderr.read() if daemon.stderr else ""
        after = service.status()
        assert after["counts"] == {"pending": 0, "synced": len(task_ids), "failed": 0}, after
        assert after["outages"] == []
        for task_id in task_ids:
            detail = json.loads(service.cli("status", task_id, "--json").stdout)["tasks"][0]
            assert detail["state"] == "synced" and not detail["retries"], detail
        with closing(sqlite3.connect(tmp_path / "sync.db")) as db:
            attempts = dict(db.execute("SELECT task_id, attempts FROM tasks").fetchall())
        assert attempts == dict.fromkeys(task_ids, 0)  # no attempt was spent on the outage
        result = compare_points(service.expected(task_ids), service.points())
        assert result == IN_STEP
        assert "Mixpeek unavailable" in stderr and "Mixpeek available again" in stderr
        assert "Traceback" not in stderr


def test_the_state_store_down_for_a_while(
    tmp_path: Path, emulator: EmulatorServer, postgres_url: str
) -> None:
    with FaultProxy("127.0.0.1", 5432) as proxy:
        port = free_port()
        service = Service(
            tmp_path,
            emulator,
            DATABASE_URL=postgres_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}"),
            SYNC_API_PORT=str(port),
            SYNC_MAX_ATTEMPTS="1",
            SYNC_MAX_CONCURRENCY="1",
        )
        task_ids = service.submit(*ITEMS)
        time.sleep(0.5)  # processed upstream; from now on each request takes 0.3 s
        emulator.update_config(latency=0.3)  # so the work spans the outage
        base = f"http://127.0.0.1:{port}"
        daemon = service.start("run", "--drain")
        try:
            wait_for(lambda: readyz(base))
            with proxy.outage():
                ready = wait_for(lambda: (r := readyz(base)) and r["ready"] is False and r)
                assert "unavailable since" in ready["state_store"], ready
                metrics = httpx.get(f"{base}/metrics", timeout=5)
                assert metrics.status_code == 200 and "sync_state_store_up 0.0" in metrics.text
                time.sleep(3)
                assert daemon.poll() is None
            assert daemon.wait(timeout=60) == 0
        finally:
            if daemon.poll() is None:
                daemon.kill()
        stderr = daemon.stderr.read() if daemon.stderr else ""
        after = service.status()
    errors = [t["error"] for t in after["tasks"]]
    assert after["counts"] == {"pending": 0, "synced": len(task_ids), "failed": 0}, errors
    assert compare_points(service.expected(task_ids), service.points()) == IN_STEP
    assert "state store unavailable" in stderr and "state store available again" in stderr
    # The outage came mid-work: tasks were synced after it, none failed because of it.
    assert stderr.index("state store available again") < stderr.rindex("task synced")
    assert "Traceback" not in stderr
