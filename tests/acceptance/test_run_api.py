"""``sync-service run`` serves the control API beside the daemon, and refuses unsafe set-ups."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from sync_service.emulator import EmulatorServer
from tests.acceptance.test_cli import clean_env, cli
from tests.conftest import API_KEY
from tests.harness import Service

TOKEN = "ctl-SECRET-token-777"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(base: str) -> None:
    """Until the control API at ``base`` answers its health check (it loads in the
    background)."""
    for _ in range(100):
        try:
            if httpx.get(f"{base}/healthz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)


def test_run_serves_the_control_api_and_logs_json_without_secrets(
    tmp_path: Path, emulator: EmulatorServer
) -> None:
    port = free_port()
    service = Service(
        tmp_path,
        emulator,
        SYNC_API_PORT=str(port),
        SYNC_API_TOKEN=TOKEN,
        SYNC_LOG_FORMAT="json",
        QDRANT_API_KEY="qdrant-SECRET-key",
    )
    service.env.pop("QDRANT_API_KEY")  # embedded Qdrant: the key would make it a server
    daemon = service.start("run")
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base)
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert httpx.get(f"{base}/readyz").json()["ready"] is True
        assert httpx.get(f"{base}/metrics").status_code == 401
        answer = httpx.post(
            f"{base}/submit",
            headers=auth,
            json={"collection_id": "api", "items": [{"kind": "text", "text": "hello"}]},
        )
        (task_id,) = answer.json()["task_ids"]
        for _ in range(100):
            if httpx.get(f"{base}/tasks/{task_id}", headers=auth).json()["state"] == "synced":
                break
            time.sleep(0.1)
        metrics = httpx.get(f"{base}/metrics", headers=auth).text
        assert 'sync_tasks{state="synced"} 1.0' in metrics
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=20) == 0
    stderr = daemon.stderr.read() if daemon.stderr else ""
    events = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    names = [e.get("event") for e in events]
    for expected in (
        "daemon_started",
        "api_started",
        "task_tracked",
        "task_synced",
        "daemon_stopping",
        "daemon_stopped",
    ):
        assert expected in names, (expected, names)
    synced = next(e for e in events if e.get("event") == "task_synced")
    assert synced["task_id"] == task_id and synced["points"] == 1
    for secret in (API_KEY, TOKEN):
        assert secret not in stderr


def test_a_non_loopback_api_without_a_token_refuses_to_start(tmp_path: Path) -> None:
    # With a key: a missing MIXPEEK_API_KEY would stop `run` first (README "Exit codes").
    result = cli(
        tmp_path, "run", SYNC_API_HOST="0.0.0.0", SYNC_API_PORT="8080", MIXPEEK_API_KEY="k"
    )
    assert result.returncode == 2
    assert result.stderr.startswith(
        "configuration error: SYNC_API_TOKEN: required when the "
        "control API listens on a non-loopback address"
    )
    assert not (tmp_path / "data").exists()


def test_a_taken_port_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = cli(tmp_path, "run", SYNC_API_PORT=str(port), MIXPEEK_API_KEY="k")
    assert result.returncode == 1
    assert f"control API cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


#: `run` with the API's module unable to load (as a broken install would be).
BROKEN_API = """
import importlib.abc, sys
class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "fastapi":
            raise ImportError("fastapi is broken here")
        return None
sys.meta_path.insert(0, Refuse())
from sync_service.cli.main import main
sys.argv = ["sync-service", "run"]
main()
"""


def test_the_daemon_starts_while_the_api_loads_and_stops_if_it_cannot(tmp_path: Path) -> None:
    """The API loads in the background (control/server.py): the daemon does not wait for it,
    and an API that cannot load stops the daemon with why, instead of leaving it unserved."""
    env = clean_env(
        MIXPEEK_API_URL="http://127.0.0.1:9",
        MIXPEEK_API_KEY="k",
        SYNC_API_PORT=str(free_port()),
        SYNC_LOG_FORMAT="json",
    )
    result = subprocess.run(
        [sys.executable, "-c", BROKEN_API],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    events = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    names = [e.get("event") for e in events]
    assert "daemon_started" in names and "api_started" not in names
    assert "fastapi is broken here" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_request_waiting_on_mixpeek_does_not_hold_the_stop_past_its_grace(
    tmp_path: Path, emulator: EmulatorServer
) -> None:
    """SYNC_SHUTDOWN_GRACE bounds the whole stop: the control API, which stops after the
    daemon, waits for a request under way (a submission Mixpeek is slow to answer) only for
    what is left of the grace, not 5 s more."""
    port = free_port()
    service = Service(
        tmp_path,
        emulator,
        SYNC_API_PORT=str(port),
        SYNC_SHUTDOWN_GRACE="1",
        SYNC_LOG_FORMAT="json",
    )
    daemon = service.start("run")
    base = f"http://127.0.0.1:{port}"
    outcome: list[tuple[int, str] | Exception] = []
    try:
        wait_healthy(base)
        emulator.update_config(latency=30.0)
        body = {"collection_id": "api", "items": [{"kind": "text", "text": "hello"}]}

        def submit() -> None:
            try:
                answer = httpx.post(f"{base}/submit", json=body, timeout=60)
                outcome.append((answer.status_code, answer.text))
            except httpx.HTTPError as exc:
                outcome.append(exc)

        client = threading.Thread(target=submit)
        client.start()
        time.sleep(1.0)  # the submission is at Mixpeek (the emulator), waiting 30 s
        assert client.is_alive() and not outcome
        stopping = time.monotonic()
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(timeout=20)
        took = time.monotonic() - stopping
    finally:
        if daemon.poll() is None:
            daemon.kill()
    client.join(timeout=10)
    assert code == 0
    assert took < 1 + 1.5, took  # the grace, then at most the API's cut-off (before: 6 s)
    # The caller learns why the request was cut, instead of a hang or a bare 500.
    [(status, text)] = outcome
    assert status == 503 and "stopped before this request finished" in text, outcome
    # uvicorn's own lines are JSON lines like the service's, and the request it cut is a
    # warning that says what happened, not an ERROR about "running task(s)".
    stderr = daemon.stderr.read() if daemon.stderr else ""
    lines = [json.loads(line) for line in stderr.splitlines() if line.strip()]
    [cut] = [e for e in lines if e.get("event") == "api_requests_cut"]
    assert cut["logger"] == "uvicorn.error" and cut["level"] == "WARNING", cut
    assert cut["message"].startswith("control API stopped: 1 request(s) still under way"), cut
    assert not [e for e in lines if e["level"] == "ERROR"], lines
