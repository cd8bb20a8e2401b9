"""No secret ever shows in what the product prints, logs or answers.

Every product process here runs with four known, recognisable secrets set at once:
``MIXPEEK_API_KEY``, ``QDRANT_API_KEY`` (with a Qdrant *server* URL, so the key is really used),
``SYNC_API_TOKEN`` and a PostgreSQL password inside ``DATABASE_URL``. Each test collects every
output of the scenario it drives (stdout and stderr of each command, text and JSON logs at DEBUG,
every control API answer with its headers, error messages and tracebacks) and fails naming each
place a secret (or its distinctive part) turned up.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import make_url

from sync_service.emulator import EmulatorConfig, EmulatorServer
from tests.acceptance.test_sync_end_to_end import Service
from tests.qdrant_server import QdrantStandIn

MIXPEEK_KEY = "sk-mixpeek-SECRET-quokka-7Q2x"
QDRANT_KEY = "qdrant-SECRET-wombat-4K9z"
API_TOKEN = "ctl-SECRET-numbat-8D3v"
PG_PASSWORD = "pg-SECRET-bilby-5R1w"

#: secret name -> (the secret, a distinctive part that also catches a truncated or mangled copy)
SECRETS: dict[str, tuple[str, str]] = {
    "MIXPEEK_API_KEY": (MIXPEEK_KEY, "quokka"),
    "QDRANT_API_KEY": (QDRANT_KEY, "wombat"),
    "SYNC_API_TOKEN": (API_TOKEN, "numbat"),
    "DATABASE_URL password": (PG_PASSWORD, "bilby"),
}
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
SECRET_ENV = {
    "MIXPEEK_API_KEY": MIXPEEK_KEY,
    "QDRANT_API_KEY": QDRANT_KEY,
    "SYNC_API_TOKEN": API_TOKEN,
}
#: What gives up fast, so the error paths end within seconds.
FAST_FAIL = {
    "SYNC_HTTP_MAX_ATTEMPTS": "2",
    "SYNC_MAX_ATTEMPTS": "1",
    "SYNC_HTTP_TIMEOUT": "3",
    # Mixpeek down for everyone costs no attempt: a drain waits this long, then leaves it.
    "SYNC_DRAIN_OUTAGE_WAIT": "1",
}


def leaks_in(text: str) -> list[str]:
    """Names of the secrets whose value (or distinctive part) occurs in ``text``."""
    return [name for name, (value, part) in SECRETS.items() if value in text or part in text]


@dataclass
class Outputs:
    """Everything a scenario printed, logged or answered, by where it came from."""

    seen: list[tuple[str, str]] = field(default_factory=list)

    def add(self, where: str, text: str) -> None:
        self.seen.append((where, text))

    def add_run(self, where: str, result: subprocess.CompletedProcess[str]) -> None:
        self.add(f"`{where}` stdout", result.stdout)
        self.add(f"`{where}` stderr", result.stderr)

    def add_response(self, where: str, response: httpx.Response) -> None:
        headers = "\n".join(f"{k}: {v}" for k, v in response.headers.multi_items())
        self.add(f"API {where} -> {response.status_code}", f"{headers}\n\n{response.text}")

    def assert_no_leaks(self) -> None:
        found = []
        for where, text in self.seen:
            for name in leaks_in(text):
                value, part = SECRETS[name]
                at = text.find(value) if value in text else text.find(part)
                context = text[max(at - 80, 0) : at + 80].replace("\n", "\\n")
                found.append(f"{name} leaked in {where}: …{context}…")
        assert not found, "secrets leaked:\n" + "\n".join(found)
        assert self.seen, "nothing was collected"


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture
def emulator() -> Iterator[EmulatorServer]:
    """The emulator requiring our secret key."""
    config = EmulatorConfig(api_key=MIXPEEK_KEY, processing_time=0.3, seed=11)
    with EmulatorServer(config) as server:
        yield server


@pytest.fixture(scope="module")
def qdrant() -> Iterator[QdrantStandIn]:
    with QdrantStandIn() as server:
        yield server


@pytest.fixture
def pg_url(postgres_url: str) -> str:
    """A fresh PostgreSQL database, reached with the secret password (trust auth ignores it)."""
    url = make_url(postgres_url).set(password=PG_PASSWORD)
    rendered = url.render_as_string(hide_password=False)
    assert PG_PASSWORD in rendered
    return rendered


def free_port() -> int:
    """A loopback port nothing listens on (for a while)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def secret_service(
    root: Path, emulator_url: str, qdrant_url: str, database_url: str, **env: str
) -> Service:
    """``Service`` (the acceptance helper) with every secret set, Qdrant as a server."""

    class _Url:  # Service only reads ``.url`` from its emulator
        url = emulator_url

    service = Service(
        root,
        _Url(),  # type: ignore[arg-type]
        **SECRET_ENV,
        QDRANT_URL=qdrant_url,
        DATABASE_URL=database_url,
        **env,
    )
    for name, (value, _) in SECRETS.items():  # guard the guard: every secret is really set
        assert any(value in v for v in service.env.values()), name
    return service


def run_cli(
    service: Service, *args: str, check: bool = True, **env: str
) -> subprocess.CompletedProcess[str]:
    """One ``sync-service`` command with the service's environment plus ``env``."""
    result = subprocess.run(
        [sys.executable, "-m", "sync_service", *args],
        env={**service.env, **env},
        cwd=service.root,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{args} exited {result.returncode}:\n{result.stderr[-3000:]}")
    return result


def seed(database_url: str, *task_ids: str) -> None:
    """Track tasks in-process (the ``track`` command's own output is checked elsewhere)."""
    from sync_service.state.store import Store

    async def main() -> None:
        store = Store.open(database_url)
        try:
            await store.migrate()
            await store.track(task_ids)
        finally:
            await store.close()

    asyncio.run(main())


def run_parallel(
    service: Service, outputs: Outputs, jobs: dict[str, tuple[list[str], dict[str, str]]]
) -> dict[str, subprocess.CompletedProcess[str]]:
    """Independent commands at once (each is a subprocess, mostly waiting); outputs recorded."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {
            where: pool.submit(run_cli, service, *args, check=False, **env)
            for where, (args, env) in jobs.items()
        }
        results = {where: future.result() for where, future in futures.items()}
    for where, result in results.items():
        outputs.add_run(where, result)
    return results


# -- Settings ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "MIXPEEK_API_KEY",
        "QDRANT_API_KEY",
        "SYNC_API_TOKEN",
        "DATABASE_URL password",
    ],
)
def test_settings_repr_and_str_hide_secrets(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    for key, value in SECRET_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("QDRANT_URL", "http://127.0.0.1:6333")
    monkeypatch.setenv("DATABASE_URL", f"postgresql://sync:{PG_PASSWORD}@127.0.0.1:5432/sync")
    from sync_service.settings import Settings

    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.mixpeek_api_key is not None  # the secrets were read
    assert settings.mixpeek_api_key.get_secret_value() == MIXPEEK_KEY
    assert PG_PASSWORD in settings.database_url.get_secret_value()
    outputs = Outputs()
    outputs.add("repr(Settings())", repr(settings))
    outputs.add("str(Settings())", str(settings))
    outputs.add("Settings().model_dump_json()", settings.model_dump_json())
    value, part = SECRETS[name]
    leaked = [where for where, text in outputs.seen if value in text or part in text]
    assert not leaked, f"{name} leaked in {', '.join(leaked)}"


# -- the working loop -------------------------------------------------------------------------


def test_submit_track_run_status_migrate_print_no_secret(
    tmp_path: Path, emulator: EmulatorServer, qdrant: QdrantStandIn, pg_url: str
) -> None:
    service = secret_service(
        tmp_path, emulator.url, qdrant.url, pg_url, SYNC_LOG_LEVEL="DEBUG", QDRANT_COLLECTION="sx"
    )
    outputs = Outputs()

    def cli(where: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        result = run_cli(service, *args, **env)
        outputs.add_run(where, result)
        return result

    first = cli(
        "submit",
        "submit",
        "--collection-id",
        "sx",
        "--video",
        "https://example.com/a.mp4?duration=15",
        "--text",
        "hello",
        "--metadata",
        '{"k": "v"}',
    ).stdout.split()
    unknown = str(uuid.uuid4())
    cli("track", "track", unknown, first[0])
    cli("run --drain (text logs, DEBUG)", "run", "--drain")
    image = ["--image", "https://example.com/c.jpg"]
    (second,) = cli("submit --image", "submit", "--collection-id", "sx", *image).stdout.split()
    json_run = cli("run --drain (JSON logs, DEBUG)", "run", "--drain", SYNC_LOG_FORMAT="json")
    results = run_parallel(
        service,
        outputs,
        {
            "status": (["status"], {}),
            f"status {first[0]}": (["status", first[0]], {}),
            "status --json": (["status", "--json"], {}),
            "migrate": (["migrate"], {}),
        },
    )
    assert all(r.returncode == 0 for r in results.values()), results

    # The scenario really ran: on PostgreSQL, into the Qdrant server, with JSON logs.
    status = json.loads(results["status --json"].stdout)
    assert status["counts"] == {"pending": 0, "synced": 3, "failed": 1}, status
    events = [json.loads(line) for line in json_run.stderr.splitlines() if line.startswith("{")]
    assert any(e.get("event") == "task_synced" and e["task_id"] == second for e in events)
    assert any(r["method"] == "PUT" and r["path"].endswith("/points") for r in qdrant.requests())
    outputs.assert_no_leaks()


# -- the control API --------------------------------------------------------------------------


def wait_for_api(base: str, daemon: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert daemon.poll() is None, "the daemon stopped"
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.05)
    raise AssertionError("the control API did not come up")


def stop(daemon: subprocess.Popen[str], outputs: Outputs, where: str) -> int:
    """SIGTERM the daemon and record what it printed."""
    if daemon.poll() is None:
        daemon.send_signal(signal.SIGTERM)
    try:
        stdout, stderr = daemon.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        daemon.kill()
        stdout, stderr = daemon.communicate()
    outputs.add(f"`{where}` stdout", stdout)
    outputs.add(f"`{where}` stderr", stderr)
    return daemon.returncode


def test_control_api_answers_and_daemon_logs_hold_no_secret(
    tmp_path: Path, emulator: EmulatorServer, qdrant: QdrantStandIn, pg_url: str
) -> None:
    port = free_port()
    service = secret_service(
        tmp_path,
        emulator.url,
        qdrant.url,
        pg_url,
        SYNC_API_PORT=str(port),
        SYNC_API_MAX_BODY_BYTES="4096",
        SYNC_LOG_FORMAT="json",
        SYNC_LOG_LEVEL="DEBUG",
        QDRANT_COLLECTION="sx_api",
    )
    outputs = Outputs()
    base = f"http://127.0.0.1:{port}"
    daemon = service.start("run")
    try:
        wait_for_api(base, daemon)
        with httpx.Client(base_url=base, timeout=10) as http:

            def call(method: str, path: str, **kwargs: Any) -> httpx.Response:
                headers = kwargs.pop("headers", AUTH)
                answer = http.request(method, path, headers=headers, **kwargs)
                outputs.add_response(f"{method} {path}", answer)
                return answer

            submitted = call(
                "POST",
                "/submit",
                json={
                    "collection_id": "sx",
                    "items": [
                        {"kind": "text", "text": "hi", "metadata": {"a": 1}},
                        {"kind": "video", "url": "https://example.com/v.mp4?duration=12"},
                    ],
                },
            )
            assert submitted.status_code == 200, submitted.text
            task_ids = submitted.json()["task_ids"]
            assert call("POST", "/tasks", json={"task_ids": ["unknown-x"]}).status_code == 200
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                counts = http.get("/tasks", headers=AUTH).json()["counts"]
                if counts["pending"] == 0:
                    break
                time.sleep(0.1)
            assert counts == {"pending": 0, "synced": 2, "failed": 1}, counts

            for path in ("/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/redoc"):
                assert call("GET", path).status_code == 200, path
            call("GET", "/tasks")
            call("GET", "/tasks?limit=1")
            call("GET", f"/tasks/{task_ids[0]}")
            call("GET", "/tasks/unknown-x")
            call("GET", "/dead-letters")
            call("GET", f"/dead-letters?task_id={task_ids[1]}")
            # Errors: not found, unauthenticated, wrong token, malformed, too big, wrong method.
            assert call("GET", "/tasks/nope").status_code == 404
            assert call("POST", "/dead-letters/999/retry").status_code == 404
            assert call("DELETE", "/dead-letters/999").status_code == 404
            assert call("GET", "/no-such-route").status_code == 404
            assert call("PUT", "/tasks").status_code == 405
            for path in ("/metrics", "/openapi.json", "/tasks", "/docs"):
                assert call("GET", path, headers={}).status_code == 401
                wrong = {"Authorization": "Bearer " + API_TOKEN[:-1]}
                assert call("GET", path, headers=wrong).status_code == 401
                basic = {"Authorization": "Basic " + API_TOKEN}
                assert call("GET", path, headers=basic).status_code == 401
            assert call("POST", "/tasks", json={"task_ids": []}).status_code == 422
            assert call("POST", "/tasks", content=b"{not json").status_code == 422
            assert call("POST", "/submit", json={"collection_id": "c"}).status_code == 422
            bad_url = {"collection_id": "c", "items": [{"kind": "image", "url": "ftp://x/y"}]}
            assert call("POST", "/submit", json=bad_url).status_code == 422
            big = {"task_ids": [f"t{i:05}" for i in range(600)]}
            assert call("POST", "/tasks", json=big).status_code == 413
            assert call("GET", "/tasks?limit=0").status_code == 422
            assert call("GET", "/dead-letters?limit=abc").status_code == 422
    finally:
        code = stop(daemon, outputs, "run (control API, JSON logs, DEBUG)")
    assert code == 0
    assert '"event": "api_started"' in outputs.seen[-1][1]
    outputs.assert_no_leaks()


# -- configuration errors ---------------------------------------------------------------------


def test_configuration_errors_print_no_secret(tmp_path: Path) -> None:
    service = secret_service(
        tmp_path,
        "http://127.0.0.1:9",
        "http://127.0.0.1:9",
        f"postgresql://sync:{PG_PASSWORD}@127.0.0.1:5432/sync",
    )
    outputs = Outputs()
    results = run_parallel(
        service,
        outputs,
        {
            "status (SYNC_POLL_INTERVAL=-1)": (["status"], {"SYNC_POLL_INTERVAL": "-1"}),
            "run (SYNC_POLL_INTERVAL=-1)": (["run"], {"SYNC_POLL_INTERVAL": "-1"}),
            "submit (SYNC_POLL_INTERVAL=-1)": (
                ["submit", "--collection-id", "c", "--text", "x"],
                {"SYNC_POLL_INTERVAL": "-1"},
            ),
            "migrate (two bad values)": (
                ["migrate"],
                {"SYNC_POLL_INTERVAL": "-1", "SYNC_LOG_LEVEL": "LOUD"},
            ),
            "status (SYNC_MAX_POLL_INTERVAL < SYNC_POLL_INTERVAL)": (
                ["status"],
                {"SYNC_POLL_INTERVAL": "5", "SYNC_MAX_POLL_INTERVAL": "1"},
            ),
            "track (DATABASE_URL without a host)": (
                ["track", "t"],
                {"DATABASE_URL": f"postgresql://sync:{PG_PASSWORD}@/sync"},
            ),
            "status (DATABASE_URL of an unsupported database)": (
                ["status"],
                {"DATABASE_URL": f"mysql://sync:{PG_PASSWORD}@127.0.0.1/sync"},
            ),
            "run (non-loopback API, token set empty)": (
                ["run"],
                {"SYNC_API_HOST": "0.0.0.0", "SYNC_API_PORT": "8080", "SYNC_API_TOKEN": ""},
            ),
        },
    )
    for where, result in results.items():
        assert result.returncode == 2, (where, result.stderr)
        assert result.stderr.startswith("configuration error: "), (where, result.stderr)
    assert not (tmp_path / "data").exists()
    outputs.assert_no_leaks()


# -- error paths ------------------------------------------------------------------------------


def test_a_refused_key_prints_no_secret(tmp_path: Path, qdrant: QdrantStandIn, pg_url: str) -> None:
    other = EmulatorConfig(api_key="sk-the-right-one-000000", processing_time=0.3)
    with EmulatorServer(other) as emulator:
        # A refused key stops the daemon without handing its lease back: a short lease lets
        # the second run take the task again at once.
        service = secret_service(
            tmp_path,
            emulator.url,
            qdrant.url,
            pg_url,
            SYNC_LOG_LEVEL="DEBUG",
            SYNC_LEASE_SECONDS="0.5",
            **FAST_FAIL,
        )
        outputs = Outputs()
        seed(pg_url, "some-task")
        results = run_parallel(
            service,
            outputs,
            {
                "submit (key refused)": (["submit", "--collection-id", "c", "--text", "x"], {}),
                "run --drain (key refused, text logs)": (["run", "--drain"], {}),
            },
        )
        results |= run_parallel(
            service,
            outputs,
            {
                "run --drain (key refused, JSON logs)": (
                    ["run", "--drain"],
                    {"SYNC_LOG_FORMAT": "json"},
                ),
            },
        )
    for where, result in results.items():
        if where.startswith(("submit", "run")):
            assert result.returncode == 1 and "refused" in result.stderr, (where, result.stderr)
    outputs.assert_no_leaks()


class EchoingUpstream:
    """A hostile Mixpeek: every answer is an error whose body repeats the request's headers
    (``Authorization: Bearer <key>`` included). ``/tasks/auth*`` and the index routes answer
    401, other ``/tasks/...`` 500; paths with ``html`` get an HTML page, the rest JSON."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                self.rfile.read(int(self.headers.get("content-length") or 0))
                echo = f"{self.command} {self.path} {dict(self.headers)}"
                refused = self.command == "POST" or self.path.startswith("/tasks/auth")
                if "html" in self.path:
                    body = f"<html><title>Denied: {echo}</title><p>{echo}</p></html>"
                    kind = "text/html"
                else:
                    body = json.dumps({"error": {"message": f"bad: {echo}", "type": "Echo"}})
                    kind = "application/json"
                data = body.encode()
                self.send_response(401 if refused else 500)
                self.send_header("content-type", kind)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = _answer

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> EchoingUpstream:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_an_upstream_that_echoes_the_key_is_redacted(
    tmp_path: Path, qdrant: QdrantStandIn, pg_url: str
) -> None:
    with EchoingUpstream() as upstream:
        # The echo is real: a plain client sees its key in the answer.
        echoed = httpx.get(f"{upstream.url}/tasks/x", headers={"Authorization": "Bearer abc12345"})
        assert echoed.status_code == 500 and "abc12345" in echoed.text
        service = secret_service(
            tmp_path,
            upstream.url,
            qdrant.url,
            pg_url,
            SYNC_LOG_LEVEL="DEBUG",
            # It echoes as a 2024 server would (auto would stop at its 500 on /v1/health).
            MIXPEEK_API_VERSION="2024",
            **FAST_FAIL,
        )
        outputs = Outputs()
        seed(pg_url, "json-task", "html-task")
        results = run_parallel(
            service,
            outputs,
            {
                "submit --text (401 echoing the key)": (
                    ["submit", "--collection-id", "c", "--text", "x"],
                    {},
                ),
                "run --drain (500 echoing the key, text logs)": (["run", "--drain"], {}),
            },
        )
        seed(pg_url, "auth-task", "auth-html-task")
        results |= run_parallel(
            service,
            outputs,
            {
                "run --drain (401 echoing the key, JSON logs)": (
                    ["run", "--drain"],
                    {"SYNC_LOG_FORMAT": "json"},
                ),
                "status html-task": (["status", "html-task"], {}),
                "status --json": (["status", "--json"], {}),
            },
        )
    assert results["run --drain (401 echoing the key, JSON logs)"].returncode == 1
    tasks = {t["task_id"]: t for t in json.loads(results["status --json"].stdout)["tasks"]}
    # The echoed bodies did reach the product: its messages carry them, key redacted.
    assert "bad: GET /tasks/json-task" in tasks["json-task"]["error"], tasks
    assert "Bearer ***" in tasks["json-task"]["error"], tasks
    assert "Bearer ***" in results["submit --text (401 echoing the key)"].stderr
    outputs.assert_no_leaks()


def test_an_unreachable_mixpeek_prints_no_secret(
    tmp_path: Path, qdrant: QdrantStandIn, pg_url: str
) -> None:
    service = secret_service(
        tmp_path, "http://127.0.0.1:9", qdrant.url, pg_url, SYNC_LOG_LEVEL="DEBUG", **FAST_FAIL
    )
    outputs = Outputs()
    seed(pg_url, "t-1", "t-2")
    results = run_parallel(
        service,
        outputs,
        {
            "submit (Mixpeek unreachable)": (["submit", "--collection-id", "c", "--text", "x"], {}),
            "run --drain (Mixpeek unreachable)": (["run", "--drain"], {}),
        },
    )
    assert results["submit (Mixpeek unreachable)"].returncode == 1
    drain = results["run --drain (Mixpeek unreachable)"]
    assert drain.returncode == 1 and "Mixpeek unavailable since" in drain.stderr
    status = run_cli(service, "status", "--json")
    outputs.add_run("status --json", status)
    tasks = json.loads(status.stdout)["tasks"]
    # An outage is nobody's task's fault: they wait, with why, and no attempt spent.
    assert all(t["state"] == "pending" and "no attempt spent" in t["error"] for t in tasks)
    assert all("polling the task failed" in t["error"] for t in tasks)
    outputs.assert_no_leaks()


def test_an_unreachable_postgresql_prints_no_secret(tmp_path: Path, qdrant: QdrantStandIn) -> None:
    url = f"postgresql://postgres:{PG_PASSWORD}@127.0.0.1:{free_port()}/sync"
    service = secret_service(tmp_path, "http://127.0.0.1:9", qdrant.url, url, **FAST_FAIL)
    debug = {"SYNC_LOG_LEVEL": "DEBUG"}
    outputs = Outputs()
    results = run_parallel(
        service,
        outputs,
        {
            "status (PostgreSQL unreachable)": (["status"], debug),
            "migrate (PostgreSQL unreachable)": (["migrate"], debug),
            "run --drain (PostgreSQL unreachable, JSON logs)": (
                ["run", "--drain"],
                {**debug, "SYNC_LOG_FORMAT": "json"},
            ),
            "submit (PostgreSQL unreachable)": (
                ["submit", "--collection-id", "c", "--text", "x"],
                debug,
            ),
        },
    )
    for where, result in results.items():
        assert result.returncode == 1, (where, result.stderr[-2000:])
    outputs.assert_no_leaks()


def test_an_unreachable_qdrant_server_prints_no_secret(
    tmp_path: Path, emulator: EmulatorServer, pg_url: str
) -> None:
    port = free_port()
    service = secret_service(
        tmp_path,
        emulator.url,
        f"http://127.0.0.1:{free_port()}",
        pg_url,
        SYNC_API_PORT=str(port),
        SYNC_LOG_LEVEL="DEBUG",
        SYNC_POLL_INTERVAL="0.1",
        SYNC_MAX_POLL_INTERVAL="0.2",
        SYNC_LOG_FORMAT="json",
        **FAST_FAIL,
    )
    outputs = Outputs()
    base = f"http://127.0.0.1:{port}"
    # JSON logs here; the text logs of such failures are covered by the tests above.
    daemon = service.start("run")
    try:
        wait_for_api(base, daemon)
        with httpx.Client(base_url=base, headers=AUTH, timeout=10) as http:
            submitted = http.post(
                "/submit",
                json={"collection_id": "c", "items": [{"kind": "text", "text": "x"}] * 2},
            )
            outputs.add_response("POST /submit", submitted)
            ready = http.get("/readyz")
            outputs.add_response("GET /readyz (Qdrant unreachable)", ready)
            assert ready.status_code == 503 and ready.json()["qdrant"].startswith("error")
            # The first write to find Qdrant down records why on its task and pauses the
            # claims (a claimed task could only wait too): the other task may still say
            # PROCESSING, and `status` says why nothing moves.
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                listing = http.get("/tasks")
                shown = run_cli(service, "status")
                errors = any(t["error"] for t in listing.json()["tasks"])
                if errors and "Qdrant unavailable since" in shown.stdout:
                    break
                time.sleep(0.1)
            outputs.add_response("GET /tasks (Qdrant unreachable)", listing)
            outputs.add_run("status (Qdrant unreachable)", shown)
            tasks = listing.json()["tasks"]
            assert len(tasks) == 2 and any(t["error"] for t in tasks), tasks
            assert "Qdrant unavailable since" in shown.stdout, shown.stdout
            for task in tasks:
                detail = http.get(f"/tasks/{task['task_id']}")
                outputs.add_response("GET /tasks/{id} (Qdrant unreachable)", detail)
            metrics = http.get("/metrics")
            outputs.add_response("GET /metrics", metrics)
            assert "sync_qdrant_up 0.0" in metrics.text
    finally:
        stop(daemon, outputs, "run (Qdrant unreachable, JSON logs, DEBUG)")
    outputs.add_run("status", run_cli(service, "status"))
    outputs.assert_no_leaks()


def test_the_leak_detector_finds_a_leak() -> None:
    """Guard the guard: a secret or its distinctive part anywhere is reported, with where."""
    outputs = Outputs()
    outputs.add("here", f"key=***{MIXPEEK_KEY[-12:]}")
    outputs.add("there", "clean")
    with pytest.raises(AssertionError, match=r"MIXPEEK_API_KEY leaked in here"):
        outputs.assert_no_leaks()
    assert leaks_in(f"postgresql://u:{PG_PASSWORD}@h/d") == ["DATABASE_URL password"]
    assert leaks_in("nothing to see") == []
