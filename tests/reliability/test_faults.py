"""Qdrant faults, state-store faults, dead-letter repair and shutdown, with real processes.

Every scenario ends with the oracle's comparison of Qdrant against upstream and adds a line to
the reliability report.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from qdrant_client import QdrantClient, models

from sync_service.emulator import EmulatorConfig, EmulatorServer
from tests.conftest import API_KEY
from tests.fault_proxy import FaultProxy
from tests.harness import COLLECTION, Service
from tests.qdrant_server import QdrantStandIn
from tests.support import IN_STEP, compare_points, point_id, served

pytestmark = pytest.mark.reliability
CLEAN = IN_STEP
VIDEOS = [
    "--video", "https://example.com/f1.mp4?duration=40",
    "--video", "https://example.com/f2.mp4?duration=30",
    "--text", "fault tolerant",
]  # fmt: skip
TASKS = 3


@pytest.fixture
def emulator() -> Iterator[EmulatorServer]:
    with EmulatorServer(EmulatorConfig(api_key=API_KEY, processing_time=0.3, seed=9)) as e:
        yield e


@pytest.fixture
def qdrant() -> Iterator[QdrantStandIn]:
    with QdrantStandIn() as stand_in:
        yield stand_in


def line(name: str, result: dict[str, int], **extra: object) -> str:
    more = " ".join(f"{k}={v}" for k, v in extra.items())
    return (
        f"{name} lost={result['lost']} dup={result['duplicated'] + result['extra']} "
        f"wrong={result['wrong']} {more}"
    ).strip()


def wait_for(predicate: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.1)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_qdrant_down_for_a_while(
    tmp_path: Path, emulator: EmulatorServer, qdrant: QdrantStandIn, report: Callable[[str], None]
) -> None:
    port = free_port()
    service = Service(tmp_path, emulator, QDRANT_URL=qdrant.url, SYNC_API_PORT=str(port))
    task_ids = service.submit(*VIDEOS)
    qdrant.set_faults("down")
    daemon = service.start("run", "--drain", SYNC_LOG_FORMAT="json")
    ready = f"http://127.0.0.1:{port}/readyz"
    wait_for(lambda: _status(ready) == 503)
    time.sleep(2)  # several rounds of retries against a Qdrant that answers 503
    during = service.status()
    assert during["counts"] == {"pending": TASKS, "synced": 0, "failed": 0}
    assert [o["what"] for o in during["outages"]] == ["Qdrant"], during["outages"]
    metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    assert "sync_qdrant_up 0.0" in metrics
    qdrant.clear_faults()
    started = time.monotonic()
    assert daemon.wait(timeout=60) == 0
    recovered_in = time.monotonic() - started
    after = service.status()
    assert after["counts"] == {"pending": 0, "synced": TASKS, "failed": 0}
    assert after["outages"] == []
    result = compare_points(service.expected(task_ids), service.points())
    writes = [
        r for r in qdrant.requests() if r["path"].endswith("/points") and r["method"] == "PUT"
    ]
    report(line("qdrant:down server", result, recovered_in=f"{recovered_in:.1f}s"))
    assert result == CLEAN
    assert writes and all(r["query"].get("wait") == "true" for r in writes)
    # A person reads the outage once, and its end: not a warning per task per retry.
    logged = [json.loads(x) for x in (daemon.stderr.read() if daemon.stderr else "").splitlines()]
    events = [e.get("event") for e in logged if e["level"] == "WARNING"]
    assert events.count("qdrant_unavailable") == 1 and events.count("qdrant_available") == 1
    assert "task_retry" not in events, events


def test_qdrant_answering_reads_but_failing_writes_is_one_outage(
    tmp_path: Path, emulator: EmulatorServer, qdrant: QdrantStandIn, report: Callable[[str], None]
) -> None:
    """A full disk: Qdrant answers the daemon's probe (a read) but refuses every write. The
    outage is one outage (one warning, the gauge at 0 throughout, `status` listing it), not
    "available again" after each probe; when writes land again, everything syncs."""
    port = free_port()
    service = Service(tmp_path, emulator, QDRANT_URL=qdrant.url, SYNC_API_PORT=str(port))
    task_ids = service.submit(*VIDEOS)
    qdrant.set_faults("disk_full")
    daemon = service.start("run", SYNC_LOG_FORMAT="json", SYNC_MAX_POLL_INTERVAL="2")
    metrics = f"http://127.0.0.1:{port}/metrics"
    wait_for(lambda: "sync_qdrant_up 0.0" in _get(metrics))
    seen = []
    for _ in range(8):  # through several probes (1, 2, 4 s apart) and trials
        time.sleep(1)
        seen.append("sync_qdrant_up 0.0" in _get(metrics))
        assert [o["what"] for o in service.status()["outages"]] == ["Qdrant"]
    assert all(seen), seen
    assert service.status()["counts"] == {"pending": TASKS, "synced": 0, "failed": 0}
    qdrant.clear_faults()
    wait_for(lambda: service.status()["counts"]["synced"] == TASKS, timeout=60)
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=30) == 0
    result = compare_points(service.expected(task_ids), service.points())
    report(line("qdrant:disk_full server", result))
    assert result == CLEAN
    logged = [json.loads(x) for x in (daemon.stderr.read() if daemon.stderr else "").splitlines()]
    events = [e.get("event") for e in logged if e["level"] == "WARNING"]
    assert events.count("qdrant_unavailable") == 1 and events.count("qdrant_available") == 1
    assert service.status()["outages"] == []


def _get(url: str) -> str:
    try:
        return httpx.get(url, timeout=2).text
    except httpx.TransportError:
        return ""


def _status(url: str) -> int:
    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.TransportError:
        return 0


def test_a_batch_refused_for_one_bad_point_lands_the_others(
    tmp_path: Path, emulator: EmulatorServer, qdrant: QdrantStandIn, report: Callable[[str], None]
) -> None:
    service = Service(tmp_path, emulator, QDRANT_URL=qdrant.url)
    task_ids = service.submit(*VIDEOS)
    time.sleep(0.5)
    _, features = served(emulator.url, API_KEY, task_ids[0])
    bad = features[2]["feature_id"]
    qdrant.set_faults("reject_points", reject_ids=[point_id(bad)])
    service.cli("run", "--drain")

    (first,) = service.status()["tasks"][0:1]
    assert first["dead_letters"] == 1 and first["state"] == "synced"
    (letter,) = json.loads(service.cli("dlq", "list", "--json").stdout)
    assert letter["feature_id"] == bad and "Qdrant refused the point" in letter["reason"]
    result = compare_points(service.expected(task_ids, skip={bad}), service.points())
    report(line("qdrant:reject_one_point server", result, dead_letters=1))
    assert result == CLEAN


def test_an_ambiguous_write_is_redone_onto_the_same_points(
    tmp_path: Path, emulator: EmulatorServer, qdrant: QdrantStandIn, report: Callable[[str], None]
) -> None:
    service = Service(tmp_path, emulator, QDRANT_URL=qdrant.url)
    task_ids = service.submit(*VIDEOS)
    qdrant.set_faults("ambiguous", count=2)  # written, then answered 500, twice
    service.cli("run", "--drain")
    result = compare_points(service.expected(task_ids), service.points())
    report(line("qdrant:ambiguous_write server", result))
    assert result == CLEAN
    assert service.status()["counts"] == {"pending": 0, "synced": TASKS, "failed": 0}


def test_postgresql_dropping_every_connection_mid_run(
    tmp_path: Path, emulator: EmulatorServer, postgres_url: str, report: Callable[[str], None]
) -> None:
    with FaultProxy("127.0.0.1", 5432) as proxy:
        url = postgres_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
        # About 8 s of work (80 requests at 0.2 s, 2 in flight), so the outage lands mid-run
        # even when a loaded machine makes the `status` calls below slow (at 0.1 s the whole
        # run once ended before the outage began).
        service = Service(
            tmp_path,
            emulator,
            DATABASE_URL=url,
            SYNC_DB_STATEMENT_TIMEOUT="5",
            SYNC_MAX_CONCURRENCY="2",
        )
        urls = [f"https://example.com/p{i}.mp4?duration=60" for i in range(10)]
        task_ids = service.submit(*[a for u in urls for a in ("--video", u)])
        time.sleep(0.5)
        emulator.update_config(latency=0.2)
        daemon = service.start("run", "--drain")
        wait_for(lambda: service.status()["counts"]["synced"] >= 1)
        with proxy.outage():  # PostgreSQL "restarts": connections dropped, 3 s unreachable
            time.sleep(3)
        emulator.update_config(latency=0.0)
        started = time.monotonic()
        code = daemon.wait(timeout=90)
        recovered_in = time.monotonic() - started
        stderr = daemon.stderr.read() if daemon.stderr else ""
        assert code == 0, stderr[-3000:]
        assert "store_unavailable" in stderr or "state store unavailable" in stderr
        assert service.status()["counts"] == {"pending": 0, "synced": 10, "failed": 0}
    result = compare_points(service.expected(task_ids), service.points())
    report(line("store:postgresql_restart postgresql", result, recovered_in=f"{recovered_in:.1f}s"))
    assert result == CLEAN


def test_sqlite_locked_by_another_process(
    tmp_path: Path, emulator: EmulatorServer, report: Callable[[str], None]
) -> None:
    service = Service(tmp_path, emulator)
    task_ids = service.submit(*VIDEOS)
    daemon = service.start("run", "--drain")
    locker = sqlite3.connect(
        tmp_path / "sync.db", timeout=30, isolation_level=None, check_same_thread=False
    )
    locker.execute("BEGIN EXCLUSIVE")  # nobody else may read or write for 3 s
    held = threading.Timer(3, lambda: locker.execute("COMMIT"))
    held.start()
    code = daemon.wait(timeout=60)
    held.join()
    locker.close()
    assert code == 0
    result = compare_points(service.expected(task_ids), service.points())
    report(line("store:sqlite_locked_3s sqlite", result))
    assert result == CLEAN
    assert service.status()["counts"] == {"pending": 0, "synced": TASKS, "failed": 0}


def test_a_dead_letter_lands_on_retry_once_its_cause_is_fixed(
    tmp_path: Path, emulator: EmulatorServer, report: Callable[[str], None]
) -> None:
    # An existing collection whose multimodal-v1 is the wrong size (1024, not 1408).
    qdrant = QdrantClient(path=str(tmp_path / "qdrant"))
    qdrant.create_collection(
        COLLECTION,
        vectors_config={
            "multimodal-v1": models.VectorParams(size=1024, distance=models.Distance.COSINE)
        },
    )
    qdrant.close()
    service = Service(tmp_path, emulator)
    task_ids = service.submit(*VIDEOS)
    service.cli("run", "--drain")
    listed = service.cli("dlq", "list", "--json").stdout
    letters = json.loads(listed)
    assert len(letters) == 4 + 3 + 1
    assert all("length 1408 but the collection expects 1024" in d["reason"] for d in letters)
    assert service.points() == []

    # The operator recreates the collection (here: removes it; the service creates it right).
    qdrant = QdrantClient(path=str(tmp_path / "qdrant"))
    qdrant.delete_collection(COLLECTION)
    qdrant.close()
    service.cli("dlq", "retry", "--all")
    service.cli("run", "--drain")
    assert json.loads(service.cli("dlq", "list", "--json").stdout) == []
    result = compare_points(service.expected(task_ids), service.points())
    report(line("dlq:retry_after_fix sqlite", result, retried=len(letters)))
    assert result == CLEAN


def test_a_second_sigterm_exits_at_once_and_leaves_no_lease(
    tmp_path: Path, emulator: EmulatorServer, report: Callable[[str], None]
) -> None:
    # About 16 s of work (66 requests at 0.5 s, 2 in flight) against a 60 s grace: the second
    # signal always lands while the first one is still waiting for the work.
    service = Service(tmp_path, emulator, SYNC_SHUTDOWN_GRACE="60", SYNC_MAX_CONCURRENCY="2")
    urls = [f"https://example.com/s{i}.mp4?duration=90" for i in range(6)]
    task_ids = service.submit(*[a for u in urls for a in ("--video", u)])
    time.sleep(0.5)
    emulator.update_config(latency=0.5)  # minutes of work: the grace period would not end soon
    daemon = service.start("run")
    wait_for(lambda: _leased(tmp_path) > 0)
    daemon.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    started = time.monotonic()
    daemon.send_signal(signal.SIGTERM)
    code = daemon.wait(timeout=10)
    stopped_in = time.monotonic() - started
    assert code == 1  # abandoned, not drained
    # At once = without waiting for the 60 s grace or the minutes of work left (0.9 s measured
    # on an idle machine; the bound leaves room for a loaded CI machine).
    assert stopped_in < 10, f"second SIGTERM took {stopped_in:.1f}s"
    assert _leased(tmp_path) == 0
    emulator.update_config(latency=0.0)
    service.cli("run", "--drain")
    result = compare_points(service.expected(task_ids), service.points())
    report(line("shutdown:second_sigterm sqlite", result, stopped_in=f"{stopped_in:.1f}s"))
    assert result == CLEAN


def _leased(root: Path) -> int:
    with sqlite3.connect(root / "sync.db", timeout=10) as db:
        return int(
            db.execute("SELECT count(*) FROM tasks WHERE lease_owner IS NOT NULL").fetchone()[0]
        )
