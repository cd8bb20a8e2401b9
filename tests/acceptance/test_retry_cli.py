"""`sync-service retry` as an operator uses it: a task that failed for good is re-queued with
fresh attempts, and `status TASK_ID` keeps the failure it had."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from sync_service.emulator import EmulatorServer
from tests.acceptance.test_cli import cli
from tests.conftest import API_KEY


def test_retry_requeues_and_status_keeps_the_failure(
    tmp_path: Path, emulator: EmulatorServer, http: httpx.Client
) -> None:
    env = {
        "MIXPEEK_API_URL": emulator.url,
        "MIXPEEK_API_KEY": API_KEY,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'sync.db'}",
        "QDRANT_PATH": str(tmp_path / "qdrant"),
        "SYNC_POLL_INTERVAL": "0.1",
    }
    body = {"url": "https://example.com/v.mp4", "collection_id": "c" * 300}
    task_id = http.post("/index/videos/url", json=body).json()["task_id"]
    assert cli(tmp_path, "track", task_id, **env).returncode == 0
    assert cli(tmp_path, "run", "--drain", **env).returncode == 0
    (task,) = json.loads(cli(tmp_path, "status", task_id, "--json", **env).stdout)["tasks"]
    assert task["state"] == "failed" and "(not retried)" in task["error"]

    dry = cli(tmp_path, "retry", "--failed", "--since", "1h", "--dry-run", **env)
    assert dry.returncode == 0 and dry.stdout.split() == [task_id]
    assert "would re-queue 1 failed task(s)" in dry.stderr
    missing = cli(tmp_path, "retry", "nope", **env)
    assert missing.returncode == 1 and "skipped nope: not tracked" in missing.stderr
    bad = cli(tmp_path, "retry", "--since", "yesterday-ish", "--failed", **env)
    assert bad.returncode == 2 and "--since 'yesterday-ish': expected an ISO 8601" in bad.stderr

    done = cli(tmp_path, "retry", task_id, **env)
    assert done.returncode == 0 and "re-queued 1 failed task(s)" in done.stderr
    (task,) = json.loads(cli(tmp_path, "status", task_id, "--json", **env).stdout)["tasks"]
    assert task["state"] == "pending" and task["error"] is None
    (cleared,) = task["retries"]
    assert "(not retried)" in cleared["failed_error"] and cleared["failed_attempts"] == 0
    shown = cli(tmp_path, "status", task_id, **env).stdout
    assert "retried after it failed (0 attempts)" in " ".join(shown.split())
