"""Runs the real ``sync-service`` commands as subprocesses against an emulator (test harness)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
from qdrant_client import QdrantClient

from sync_service.emulator import EmulatorServer
from sync_service.emulator.v1.server import V1EmulatorServer
from tests.conftest import API_KEY
from tests.support import expected_point, served
from tests.upstreams import COLLECTION, Mixpeek

__all__ = ["COLLECTION", "Service", "stop_daemon"]

#: What ``Service.start`` started: conftest.py kills what is still running when the test ends.
STARTED: list[subprocess.Popen[str]] = []


class Service:
    """Runs ``sync-service`` commands with one state folder and one emulator."""

    def __init__(
        self,
        root: Path,
        emulator: EmulatorServer | V1EmulatorServer | Mixpeek,
        **env: str,
    ) -> None:
        """``emulator``: a 2024 emulator, or the seam of either API (its settings and its
        collection then apply, and ``expected`` is its oracle)."""
        self.root = root
        self.mixpeek = emulator if isinstance(emulator, Mixpeek) else None
        if isinstance(emulator, Mixpeek):
            env = {**emulator.env, **env}
            emulator = emulator.server
        self.emulator = emulator
        self.collection = self.mixpeek.collection if self.mixpeek else COLLECTION
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
        self, *args: str, check: bool = True, timeout: float = 60, **env: str
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "sync_service", *args],
            env={**self.env, **env},
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"{args} exited {result.returncode}:\n{result.stderr[-3000:]}")
        return result

    def start(self, *args: str, **env: str) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [sys.executable, "-m", "sync_service", *args],
            env={**self.env, **env},
            cwd=self.root,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        STARTED.append(process)  # killed at the test's end if still running (conftest.py)
        return process

    def submit(self, *items: str) -> list[str]:
        out = self.cli("submit", "--collection-id", self.collection, *items).stdout
        return out.split()

    def status(self) -> dict[str, Any]:
        return json.loads(self.cli("status", "--json").stdout)

    def points(self) -> list[Any]:
        url = self.env.get("QDRANT_URL")
        client = (
            QdrantClient(url=url, check_compatibility=False)
            if url
            else QdrantClient(path=str(self.root / "qdrant"))
        )
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
        if self.mixpeek is not None:
            return [p for p in self.mixpeek.expected_tasks(task_ids) if p["id"] not in skip]
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


def stop_daemon(proc: subprocess.Popen[str], log: Path, timeout: float = 60) -> None:
    """SIGTERM, then exit 0 within ``timeout``; a daemon still running then is killed and its
    log's end (its stall report among it: engine/stall.py) is the failure's message."""
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        message = f"no exit {timeout:.0f} s after SIGTERM:\n{log.read_text()[-6000:]}"
        raise AssertionError(message) from None
    assert code == 0, log.read_text()[-3000:]
