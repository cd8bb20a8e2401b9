"""Start-up stays light (ARCHITECTURE.md): which libraries a command loads, not how fast.

Each command runs in a fresh interpreter, which then lists the top-level packages it imported.
The timings themselves are the benchmark's (scenario 9); these guard the reasons for them.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

#: Lists the modules at exit: `run` ends through os._exit (cli/common.py end_process), which
#: still runs the atexit handlers.
PROBE = """
import atexit, json, sys
def report():
    # (None marks an import refused on purpose: httpx's CLI, cli/common.py)
    modules = sorted({m.split(".")[0] for m, loaded in sys.modules.items() if loaded})
    sys.__stdout__.write("\\nMODULES " + json.dumps(modules))
    sys.__stdout__.flush()
atexit.register(report)
from sync_service.cli.main import main
sys.argv = ["sync-service", *sys.argv[1:]]
try:
    main()
except SystemExit:
    pass
"""

#: ``run`` with work: a library (Qdrant's client, SQLAlchemy) is held at its import until the
#: process connects anywhere (its first request upstream), which only an import in the
#: background lets happen.
OVERLAP_PROBE = """
import importlib.machinery, os, socket, sys, threading
connected = threading.Event()
for name in ("connect", "connect_ex"):
    def patched(self, *args, _real=getattr(socket.socket, name)):
        connected.set()
        return _real(self, *args)
    setattr(socket.socket, name, patched)

class HoldQdrant:  # holds the module's execution (finders run under the global import lock)
    def find_spec(self, name, path=None, target=None):
        if name != os.environ["HOLD_MODULE"]:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)

        def exec_module(module):
            first = connected.wait(30)
            sys.__stdout__.write("\\nORDER " + ("request" if first else "import") + "\\n")
            sys.__stdout__.flush()
            os._exit(0)

        spec.loader.exec_module = exec_module
        return spec

sys.meta_path.insert(0, HoldQdrant())
from sync_service.cli.main import main
sys.argv = ["sync-service", "run", "--drain"]
main()
"""

HEAVY = {"qdrant_client", "numpy", "fastapi", "uvicorn", "aiohttp", "httpx", "alembic"}


def _env(tmp_path: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MIXPEEK_", "QDRANT_", "SYNC_", "DATABASE_URL"))
    }
    env.update(
        MIXPEEK_API_URL="http://127.0.0.1:9",
        MIXPEEK_API_KEY="startup-test",
        QDRANT_PATH=str(tmp_path / "qdrant"),
        DATABASE_URL=f"sqlite:///{tmp_path / 'sync.db'}",
        SYNC_API_PORT="0",
    )
    return env


def _loaded(tmp_path: Path, *args: str) -> set[str]:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        cwd=tmp_path,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    marker = result.stdout.rsplit("MODULES ", 1)
    assert len(marker) == 2, result.stderr[-2000:]
    return set(json.loads(marker[1]))


@pytest.fixture
def migrated(tmp_path: Path) -> Path:
    _loaded(tmp_path, "migrate")
    assert (tmp_path / "sync.db").exists()
    return tmp_path


def test_help_loads_no_settings_store_or_client(tmp_path: Path) -> None:
    loaded = _loaded(tmp_path, "--help")
    assert (
        loaded & (HEAVY | {"sqlalchemy", "pydantic", "pydantic_settings", "apscheduler"}) == set()
    )


def test_status_reads_sqlite_without_sqlalchemy(migrated: Path) -> None:
    loaded = _loaded(migrated, "status")
    assert loaded & (HEAVY | {"sqlalchemy", "aiosqlite", "apscheduler"}) == set()
    assert _loaded(migrated, "status", "--json") & {"sqlalchemy"} == set()


def test_run_drain_with_nothing_to_do_loads_neither_qdrant_nor_http(migrated: Path) -> None:
    assert _loaded(migrated, "run", "--drain") & HEAVY == set()  # binds the store to Qdrant
    assert not (migrated / "qdrant").exists()  # the embedded folder is not opened either
    # Bound, and still idle: told from SQLite directly (engine/idle.py).
    again = _loaded(migrated, "run", "--drain")
    assert again & (HEAVY | {"sqlalchemy", "aiosqlite", "apscheduler"}) == set()


@pytest.mark.parametrize("api", [False, True])  # the control API off, and on
def test_run_with_work_asks_upstream_before_it_imports_sqlalchemy(
    migrated: Path, api: bool
) -> None:
    # Under MIXPEEK_API_VERSION=auto the version probe goes out before the store is opened.
    # A Qdrant server (never reached here); an embedded folder is taken at start instead.
    port = 0
    if api:
        with socket.socket() as free:
            free.bind(("127.0.0.1", 0))
            port = free.getsockname()[1]
    env = {
        **_env(migrated),
        "QDRANT_URL": "http://127.0.0.1:9",
        "HOLD_MODULE": "sqlalchemy",
        "SYNC_API_PORT": str(port),
    }
    subprocess.run([sys.executable, "-c", PROBE, "track", "t-1"], cwd=migrated, env=env)
    result = subprocess.run(
        [sys.executable, "-c", OVERLAP_PROBE],
        cwd=migrated,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "ORDER request" in result.stdout, result.stdout[-500:] + result.stderr[-2000:]


def test_run_that_writes_nothing_never_imports_qdrant(migrated: Path) -> None:
    """Qdrant's client is imported at the first write (runtime.SinkInMaking): a run whose
    work ends without one (a task upstream does not know) never loads it."""
    from sync_service.emulator import EmulatorConfig, EmulatorServer
    from tests.conftest import API_KEY

    with EmulatorServer(EmulatorConfig(api_key=API_KEY)) as emulator:
        env = {
            **_env(migrated),
            "QDRANT_URL": "http://127.0.0.1:9",  # a server: never reached
            "MIXPEEK_API_URL": emulator.url,
            "MIXPEEK_API_KEY": API_KEY,
        }
        subprocess.run([sys.executable, "-c", PROBE, "track", "t-unknown"], cwd=migrated, env=env)
        result = subprocess.run(
            [sys.executable, "-c", PROBE, "run", "--drain"],
            cwd=migrated,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    loaded = set(json.loads(result.stdout.rsplit("MODULES ", 1)[1]))
    assert {"sqlalchemy", "aiohttp"} <= loaded  # it worked: the task was polled, and failed
    assert "qdrant_client" not in loaded
    assert "task not found upstream" in result.stderr


def test_a_command_ends_even_if_a_library_left_a_thread_running() -> None:
    """`run` ends through end_process: a non-daemon thread left behind (as an unclosed
    aiosqlite connection's worker) is named in the log and does not keep the process up."""
    import subprocess
    import sys

    script = (
        "import threading\n"
        "from sync_service.control import logs\n"
        "logs.configure('INFO', 'text')\n"
        "threading.Thread(target=threading.Event().wait, name='stuck-worker').start()\n"
        "from sync_service.cli.common import end_process\n"
        "end_process(3)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 3
    assert "exiting with threads still running: stuck-worker" in done.stderr


def test_a_command_ends_without_teardown_but_with_its_exit_handlers_and_output() -> None:
    """end_process skips the interpreter's teardown (os._exit) but not what a normal exit
    does that matters: atexit handlers (logging's flush, a coverage tool's save) run, and
    buffered output reaches its pipe."""
    import subprocess
    import sys

    script = (
        "import atexit, logging, sys\n"
        "from sync_service.control import logs\n"
        "logs.configure('INFO', 'text')\n"
        "atexit.register(lambda: print('atexit ran', end=''))\n"
        "sys.stdout.write('buffered;')\n"  # a pipe: block-buffered, not yet written
        "logging.getLogger('t').info('last line')\n"
        "from sync_service.cli.common import end_process\n"
        "end_process(0)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "buffered;atexit ran"
    assert "last line" in done.stderr


def test_planning_points_needs_no_numpy() -> None:
    """The daemon's loop checks and fingerprints vectors without numpy: Qdrant's client
    imports it in a thread at start, and an import of it on the loop waited for that one."""
    script = (
        "import sys\n"
        "from sync_service.engine.points import plan_points\n"
        "feature = {'feature_id': 'f-1', 'vectors': {'v': [0.5, 1.0], 's': "
        "{'indices': [1], 'values': [0.5]}, 'm': [[0.5, 1.0]]}}\n"
        "plan = plan_points([feature], {'asset_id': 'a-1'}, 't-1', {})\n"
        "assert len(plan.points) == 1, plan.rejected\n"
        "print('numpy' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.stdout.strip() == "False", done.stderr[-2000:]


def test_the_cli_loads_neither_httpxs_cli_nor_rich_to_call_mixpeek() -> None:
    """httpx's own command-line client (click, rich, pygments) is ~40 ms of every command
    that calls Mixpeek, and `run` prints nothing on the console (rich is loaded on use)."""
    script = (
        "import sys\n"
        "import sync_service.cli.main, sync_service.upstream.connect, httpx\n"
        "print(sorted({'rich', 'pygments', 'click'} & set(sys.modules)), httpx.main.__module__)"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.stdout.split() == ["[]", "httpx"], done.stderr[-2000:]  # httpx's stand-in
