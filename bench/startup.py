"""Scenario 9: start-up. How long a command takes before it does anything, and status's memory.

Each command runs as a fresh ``sync-service`` process, warm (the state store exists, is
migrated and bound to its Qdrant; the package is byte-compiled; the OS caches the files), best
of five: ``--help``, ``status`` and ``run --drain``
with nothing tracked. Peak RSS is that of ``status``, read from a wrapper process's children.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import Row, byte_compile

RUNS = 5
TARGETS = {"--help": 0.3, "status": 0.3, "run --drain": 0.5}
RSS_TARGET_MB = 80.0


def _env(tmp: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MIXPEEK_", "QDRANT_", "SYNC_", "DATABASE_URL"))
    }
    return {
        **env,
        "MIXPEEK_API_URL": "http://127.0.0.1:9",  # never reached: nothing is pending
        "MIXPEEK_API_KEY": "bench",
        "QDRANT_PATH": str(tmp / "qdrant"),
        "DATABASE_URL": f"sqlite:///{tmp / 'sync.db'}",
        "SYNC_API_PORT": "0",
    }


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "sync_service", *args]


def _best(args: list[str], env: dict[str, str], cwd: Path) -> tuple[float, list[float]]:
    times = []
    for _ in range(RUNS):
        started = time.perf_counter()
        subprocess.run(_command(*args), env=env, cwd=cwd, capture_output=True, check=True)
        times.append(time.perf_counter() - started)
    return min(times), times


def _peak_rss_mb(args: list[str], env: dict[str, str], cwd: Path) -> float:
    probe = (
        "import resource, subprocess, sys; "
        f"subprocess.run({_command(*args)!r}, capture_output=True, check=True); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], env=env, cwd=cwd, capture_output=True, text=True, check=True
    )
    return int(out.stdout.strip()) / 1024  # KiB on Linux


def startup(tmp: Path) -> tuple[list[Row], dict[str, Any]]:
    env = _env(tmp)
    byte_compile()
    subprocess.run(_command("migrate"), env=env, cwd=tmp, capture_output=True, check=True)
    # The first drain binds the store to its Qdrant (a one-time write); warm runs find it bound.
    subprocess.run(_command("run", "--drain"), env=env, cwd=tmp, capture_output=True, check=True)
    rows: list[Row] = []
    details: dict[str, Any] = {}
    for label, target in TARGETS.items():
        best, times = _best(label.split(), env, tmp)
        details[label] = times
        rows.append(
            Row(
                "9 startup",
                f"`{label}` (best of {RUNS}, warm)",
                best,
                "s",
                reference=target,
                reference_label="target",
                ratio=best / target,
                target="<= 1.00",
                passed=best <= target,
                note=f"{label}: " + ", ".join(f"{t:.2f}" for t in times) + " s",
            )
        )
    rss = _peak_rss_mb(["status"], env, tmp)
    details["status_peak_rss_mb"] = rss
    rows.append(
        Row(
            "9 startup",
            "`status` peak RSS",
            rss,
            "MB",
            reference=RSS_TARGET_MB,
            reference_label="target",
            ratio=rss / RSS_TARGET_MB,
            target="<= 1.00",
            passed=rss <= RSS_TARGET_MB,
        )
    )
    return rows, details
