"""Shared pieces of the benchmark: result rows, a timed emulator, and the service as a subprocess.

Everything here talks to the product through its public contract only: the ``sync-service``
CLI, its environment variables, and the emulator's HTTP API (plus the in-process emulator state
for reading when a task turned DONE).
"""

from __future__ import annotations

import compileall
import os
import resource
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sync_service.emulator import EmulatorConfig, EmulatorServer

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "bench-key"
COLLECTION = "bench"
VIDEO_SECONDS = 100  # with the emulator's default 10 s interval: 10 features per asset


def byte_compile() -> None:
    """Byte-compile ``sync_service`` as an installed (or Docker-built) service is: with
    ``PYTHONDONTWRITEBYTECODE=1`` (set on this machine) an editable checkout never writes
    its ``__pycache__``, and every process would compile the package from source (~0.1 G
    instructions, ~30 ms, for ``status``; more for ``run``)."""
    compileall.compile_dir(ROOT / "sync_service", quiet=1)


@dataclass
class Row:
    """One line of the result table."""

    scenario: str
    metric: str
    measured: float | None
    unit: str = ""
    reference: float | None = None
    reference_label: str = ""
    ratio: float | None = None
    target: str = ""
    passed: bool | None = None  # None: informational, no target
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Hit:
    """One upstream request as the emulator saw it (wall-clock seconds)."""

    started: float
    ended: float
    status: int
    path: str


@dataclass
class Recorder:
    """ASGI wrapper that timestamps every API request (control routes excluded)."""

    app: ASGIApp
    hits: list[Hit] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not path or path.startswith("/_emulator") or path == "/healthcheck":
            await self.app(scope, receive, send)
            return
        started = time.time()
        status = [0]

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            self.hits.append(Hit(started, time.time(), status[0], path))

    def reset(self) -> None:
        self.hits = []


class TimedEmulator(EmulatorServer):
    """The in-process emulator on wall-clock time, with every API request timestamped.

    ``clock=time.time`` makes task creation and DONE times epoch seconds, directly comparable
    with the state store's ``synced_at`` (the database clock).
    """

    def __init__(self, config: EmulatorConfig) -> None:
        super().__init__(config, clock=time.time)
        self.recorder = Recorder(self.app)
        self.app = self.recorder  # start() serves self.app

    def __enter__(self) -> TimedEmulator:
        self.start()
        return self

    def reset_counts(self) -> None:
        self.state.stats.reset()
        self.recorder.reset()

    def done_at(self, task_id: str) -> float:
        """Wall time at which the task turned DONE upstream."""
        task = self.state.tasks[task_id]
        return float(task.created + task.processing_time)

    def all_done(self, task_ids: Iterable[str]) -> bool:
        return all(self.state.task_status(self.state.tasks[t]) == "DONE" for t in task_ids)


def submit_videos(
    emulator: TimedEmulator,
    count: int,
    tag: str,
    *,
    processing_time: Callable[[int], float] | None = None,
) -> list[str]:
    """Index ``count`` 100-second videos (10 features each); returns their task ids.

    Latency is switched off while submitting (submission is not what is measured).
    """
    latency = emulator.config.latency
    emulator.update_config(latency=0.0)
    ids = []
    headers = {"Authorization": f"Bearer {API_KEY}"}
    try:
        with httpx.Client(base_url=emulator.url, headers=headers, timeout=30) as http:
            for i in range(count):
                if processing_time is not None:
                    emulator.update_config(processing_time=processing_time(i))
                body = {
                    "url": f"https://bench.example/{tag}/{i}.mp4?duration={VIDEO_SECONDS}",
                    "collection_id": COLLECTION,
                }
                answer = http.post("/index/videos/url", json=body).raise_for_status().json()
                ids.append(str(answer["task_id"]))
    finally:
        emulator.update_config(latency=latency)
    return ids


def wait_done(emulator: TimedEmulator, task_ids: list[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not emulator.all_done(task_ids):
        if time.monotonic() > deadline:
            raise RuntimeError("emulator tasks did not finish in time")
        time.sleep(0.05)


@dataclass(frozen=True)
class Drained:
    """How one ``run --drain`` went: exit code, spawn time (epoch), wall and CPU seconds."""

    code: int
    spawned: float
    wall: float
    cpu: float


class Service:
    """Runs ``sync-service`` commands in one state folder against one emulator."""

    def __init__(self, root: Path, emulator_url: str, **env: str) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.db = root / "sync.db"
        self.env = {
            **{
                k: v
                for k, v in os.environ.items()
                if not k.startswith(("MIXPEEK_", "QDRANT_", "SYNC_", "DATABASE_URL"))
            },
            "MIXPEEK_API_URL": emulator_url,
            "MIXPEEK_API_KEY": API_KEY,
            # Embedded Qdrant in memory: local mode on disk fsyncs every point (~600/s) and
            # would make Qdrant, not upstream, the limit.
            "QDRANT_PATH": ":memory:",
            "QDRANT_COLLECTION": COLLECTION,
            "DATABASE_URL": f"sqlite:///{self.db}",
            "SYNC_API_PORT": "0",
            "SYNC_LOG_LEVEL": "WARNING",
            **env,
        }
        self.log = root / "service.log"

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "sync_service", *args]

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        command = self.command(*args)
        # BENCH_PROFILE=out.txt records the daemon under py-spy (collapsed stacks).
        if args and args[0] == "run" and os.environ.get("BENCH_PROFILE"):
            out = os.environ["BENCH_PROFILE"]
            command = [
                "py-spy",
                "record",
                # e.g. "--gil --nonblocking": only the thread holding the GIL, without pausing it
                *os.environ.get("BENCH_PROFILE_ARGS", "").split(),
                "-r",
                os.environ.get("BENCH_PROFILE_RATE", "200"),
                "-f",
                os.environ.get("BENCH_PROFILE_FORMAT", "raw"),
                "-o",
                out,
                "--",
                *command,
            ]
        with self.log.open("ab") as log:
            return subprocess.Popen(
                command, env=self.env, cwd=self.root, stdout=subprocess.DEVNULL, stderr=log
            )

    def cli(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            self.command(*args),
            env=self.env,
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"sync-service {args[0]} exited {result.returncode}:\n{result.stderr[-2000:]}"
            )
        return result

    def drain(self, timeout: float) -> Drained:
        """One ``run --drain`` subprocess, timed from spawn to exit, with its CPU."""
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        spawned = time.time()
        proc = self.start("run", "--drain")
        # A blocking wait returns when the process exits. Popen.wait(timeout=...) polls
        # instead, sleeping up to 50 ms between looks, and so added 0-50 ms to the wall time.
        killer = threading.Timer(timeout, proc.kill)
        killer.start()
        try:
            code = proc.wait()
        finally:
            killer.cancel()
        wall = time.time() - spawned
        if code == -signal.SIGKILL and wall >= timeout:
            raise RuntimeError(f"run --drain did not finish:\n{self.log_tail()}")
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        # User + system: the process's work is serialised by the GIL, so a process busy most
        # of its wall time cannot gain from overlapping more (with BENCH_PROFILE, py-spy's too).
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        return Drained(code, spawned, wall, cpu)

    def track(self, task_ids: list[str]) -> None:
        for start in range(0, len(task_ids), 500):
            self.cli("track", *task_ids[start : start + 500])

    def tasks(self) -> list[dict[str, Any]]:
        """The tasks table as the service recorded it (read-only)."""
        with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=30) as conn:
            conn.row_factory = sqlite3.Row
            rows = conn.execute(
                "SELECT task_id, state, polls, features_synced, synced_at, upstream_done_at"
                " FROM tasks"
            ).fetchall()
        return [dict(r) for r in rows]

    def log_tail(self, chars: int = 2000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS/VmHWM in kB from /proc (Linux)."""
    out: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    except OSError:
        pass
    return out


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process (Linux)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuSampler:
    """Samples a process's CPU seconds in the background, so a window's share can be read."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[tuple[float, float]] = [(time.time(), proc_cpu_seconds(pid))]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(0.1):
            cpu = proc_cpu_seconds(self.pid)
            if cpu >= self.samples[-1][1]:  # 0 once the process is gone: keep the last one
                self.samples.append((time.time(), cpu))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def cores_between(self, start: float, end: float) -> float:
        """Average cores the process used between two wall-clock times (sampled, ±0.1 s)."""

        def cpu_at(at: float) -> float:
            before = [cpu for t, cpu in self.samples if t <= at]
            return before[-1] if before else self.samples[0][1]

        return (cpu_at(end) - cpu_at(start)) / (end - start) if end > start else 0.0


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * share
    low, high = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)
