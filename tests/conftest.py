"""Shared fixtures. The host's configuration must never leak into a test."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sync_service.emulator import EmulatorConfig, EmulatorServer
from sync_service.settings import Settings

API_KEY = "sk-test-SECRET-4242"


def _share_httpx_default_tls_context() -> None:
    """Every ``httpx.Client`` builds a TLS context at construction (the CA bundle loaded and
    parsed: ~30 ms of CPU), even one that only ever speaks plain HTTP to a local emulator. The
    tests make thousands of short-lived clients (``httpx.get``, the oracle's ``served``): in
    the replica tests that was 7 of 24 s. The default context (``verify=True``, no client
    certificate, the same CA variables) is built once per test process and shared, as one
    context can be; any other ``verify`` goes through unchanged. Only the tests' process is
    changed: the service's subprocesses and its own TLS set-up (tests/integration/
    test_http_transport.py) are not."""
    from httpx._transports import default

    make = default.create_ssl_context  # type: ignore[attr-defined]  # not re-exported
    made: dict[tuple[str | None, str | None], Any] = {}

    def shared(verify: Any = True, cert: Any = None, trust_env: bool = True) -> Any:
        if verify is not True or cert is not None or not trust_env:
            return make(verify=verify, cert=cert, trust_env=trust_env)
        key = (os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))
        if key not in made:
            made[key] = make(verify=verify, cert=cert, trust_env=trust_env)
        return made[key]

    default.create_ssl_context = shared  # type: ignore[attr-defined]


_share_httpx_default_tls_context()


def local_settings(tmp_path: Path, emulator: EmulatorServer, **extra: Any) -> Settings:
    """An in-process service against ``emulator``: embedded Qdrant and SQLite in tmp_path,
    fast polls, no control API; ``extra`` overrides or adds variables."""
    values: dict[str, Any] = {
        "MIXPEEK_API_URL": emulator.url,
        "MIXPEEK_API_KEY": API_KEY,
        "QDRANT_PATH": tmp_path / "qdrant",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'sync.db'}",
        "SYNC_POLL_INTERVAL": 0.05,
        "SYNC_MAX_POLL_INTERVAL": 0.1,
        "SYNC_API_PORT": 0,
    }
    return Settings(_env_file=None, **{**values, **extra})


_PREFIXES = ("MIXPEEK_", "QDRANT_", "SYNC_", "DATABASE_URL")

# The reliability report: scenarios append one line each (from any xdist worker); the controller
# prints them at the end of the run (`pytest -m reliability` runs just the matrix). The file's
# path travels to the workers in the environment, which they inherit when xdist spawns them.
REPORT_VARIABLE = "RELIABILITY_REPORT_FILE"  # not SYNC_*: tests clear those


def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput"):  # the controller (or a run without xdist)
        handle, path = tempfile.mkstemp(prefix="sync-reliability-", suffix=".txt")
        os.close(handle)
        os.environ[REPORT_VARIABLE] = path


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if hasattr(terminalreporter.config, "workerinput"):
        return
    path = Path(os.environ.get(REPORT_VARIABLE, ""))
    if not path.is_file():
        return
    lines = sorted(line for line in path.read_text().splitlines() if line)
    path.unlink()
    if lines:
        terminalreporter.section("reliability report")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.fixture
def report() -> Callable[[str], None]:
    """Add one line to the reliability report."""

    path = Path(os.environ[REPORT_VARIABLE])

    def add(line: str) -> None:
        with path.open("a") as f:
            f.write(line + "\n")

    return add


@pytest.fixture(autouse=True)
def _no_process_outlives_its_test() -> Iterator[None]:
    """A daemon a test started (``tests/harness.py``'s ``Service.start``) and a failed assertion
    left running is killed when its test ends, not left to run on after the suite. (Read from
    ``sys.modules``: pytest loads this file as ``conftest``, the harness imports it as
    ``tests.conftest``, two modules; and a test that never imported the harness started none.)"""
    yield
    harness = sys.modules.get("tests.harness")
    started: list[subprocess.Popen[str]] = getattr(harness, "STARTED", [])
    while started:
        process = started.pop()
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=30)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith(_PREFIXES):
            monkeypatch.delenv(name)
    # Settings also read ./.env: run every test from an empty folder of its own.
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def emulator() -> Iterator[EmulatorServer]:
    """A fast emulator on a free loopback port (real HTTP)."""
    with EmulatorServer(EmulatorConfig(api_key=API_KEY, processing_time=0.4, seed=1)) as server:
        yield server


@pytest.fixture
def http(emulator: EmulatorServer) -> Iterator[httpx.Client]:
    """A client of the ``emulator`` fixture's API, with the API key."""
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.Client(base_url=emulator.url, headers=headers, timeout=30.0) as client:
        yield client


PG_TEST_URL = os.environ.get("PG_TEST_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def _postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database for one test, dropped afterwards."""
    import asyncio
    import uuid

    import asyncpg  # type: ignore[import-untyped]

    from sync_service.settings import async_database_url

    admin = async_database_url(PG_TEST_URL).set(drivername="postgresql")
    name = f"sync_test_{uuid.uuid4().hex[:12]}"

    async def admin_execute(sql: str) -> None:
        conn = await asyncpg.connect(admin.render_as_string(hide_password=False), timeout=5)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    try:
        asyncio.run(admin_execute(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError) as exc:
        if os.environ.get("REQUIRE_POSTGRES") == "1":
            pytest.fail(
                f"PostgreSQL is required (REQUIRE_POSTGRES=1) but {PG_TEST_URL} failed: {exc}"
            )
        pytest.skip(f"no PostgreSQL at {PG_TEST_URL} ({exc}); set PG_TEST_URL to run these")
    try:
        yield admin.set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def postgres_url() -> Iterator[str]:
    yield from _postgres_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each state-store test runs on a SQLite file and on a real PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'state' / 'sync.db'}"
    else:
        yield from _postgres_database()


@pytest.fixture(params=["2024", "v1"])
def api(request: pytest.FixtureRequest) -> str:
    """The Mixpeek API generation a capability test runs against (tests/upstreams.py)."""
    return str(request.param)
