"""Running the emulator: a blocking ``serve()`` for the CLI and a threaded test server."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import threading
import time
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any, Self

import httpx
import uvicorn

from sync_service.emulator.app import CONTROL_PREFIX, create_app
from sync_service.emulator.config import EmulatorConfig
from sync_service.emulator.lifecycle import ReindexMode
from sync_service.emulator.records import Modality
from sync_service.emulator.state import EmulatorState
from sync_service.emulator.wire_faults import ExposeTransport


def _bind(host: str, port: int) -> socket.socket:
    # Binding ourselves (rather than letting uvicorn do it) is what makes port 0 usable:
    # the real port is known before the server starts, so callers can be told the URL.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must be IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on sockets whose
    # proto says TCP, and without it every keep-alive response stalls ~40 ms (Nagle plus
    # delayed ACK).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _uvicorn(app: Any) -> uvicorn.Server:
    config = uvicorn.Config(
        ExposeTransport(app),  # lets reset/truncate faults drop the connection on purpose
        log_level="warning",
        lifespan="off",
        access_log=False,
        # A hanging or dripping answer must not hold a stop for its full length.
        timeout_graceful_shutdown=2,
    )
    return uvicorn.Server(config)


def serve(
    config: EmulatorConfig | None = None,
    host: str = "127.0.0.1",
    port: int = 8800,
    *,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve the emulator until SIGINT/SIGTERM; ``on_ready(url)`` runs once it is listening."""
    serve_app(create_app(config), host, port, on_ready=on_ready)


def serve_app(
    app: Any, host: str, port: int, *, on_ready: Callable[[str], None] | None = None
) -> None:
    """Serve any emulator app (2024 or v1) until SIGINT/SIGTERM."""
    sock = _bind(host, port)
    url = _url(sock)
    server = _uvicorn(app)

    async def main() -> None:
        running = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started and not running.done():
            await asyncio.sleep(0.01)
        if server.started and on_ready is not None:
            on_ready(url)
        await running

    # uvicorn stops gracefully on SIGINT/SIGTERM, then re-raises the signal it caught. Turning
    # that SIGTERM into KeyboardInterrupt makes both a normal stop: exit status 0, no traceback.
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(main())
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


class ThreadedApp:
    """An ASGI app served by uvicorn on a background thread and a free port (tests, demos).

    Shared by both emulators; ``health_path`` is the route polled until the server answers.
    """

    health_path = "/healthcheck"

    def __init__(
        self, app: Any, *, host: str = "127.0.0.1", port: int = 0, startup_timeout: float = 10.0
    ) -> None:
        self.app = app
        self.host, self.port = host, port
        self.url = ""
        self._startup_timeout = startup_timeout
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None

    def _started(self) -> None:
        """Hook run once the server answers, before ``start`` returns."""

    def start(self) -> None:
        """Start serving and return once the health route answers."""
        self._sock = _bind(self.host, self.port)
        self.url = _url(self._sock)
        self._server = server = _uvicorn(self.app)
        sock = self._sock
        self._thread = threading.Thread(
            target=lambda: asyncio.run(server.serve(sockets=[sock])),
            name="mixpeek-emulator",
            daemon=True,  # never keep a test run alive if a test forgets to stop it
        )
        self._thread.start()
        deadline = time.monotonic() + self._startup_timeout
        while time.monotonic() < deadline:
            if not self._thread.is_alive():
                break
            if server.started:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{self.url}{self.health_path}", timeout=1.0).status_code == 200:
                        self._started()
                        return
            time.sleep(0.01)
        self.stop()
        raise RuntimeError(f"Mixpeek emulator did not start on {self.url}")

    def stop(self) -> None:
        """Ask uvicorn to exit, wait for the thread, release the socket. Idempotent."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10.0)
        if self._sock is not None:
            self._sock.close()
        self._server = self._thread = self._sock = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class EmulatorServer(ThreadedApp):
    """The emulator on a background thread, for tests and demos.

    >>> with EmulatorServer(EmulatorConfig(processing_time=0.3)) as emu:
    ...     httpx.get(f"{emu.url}/healthcheck").json()
    {'status': 'ok'}

    ``port=0`` picks a free port. ``state`` is the live in-process state; prefer
    ``state.stats.snapshot()`` (thread-safe) or HTTP for reading it while requests run.
    """

    def __init__(
        self,
        config: EmulatorConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] = time.monotonic,
        startup_timeout: float = 10.0,
    ) -> None:
        app = create_app(config, clock=clock)
        super().__init__(app, host=host, port=port, startup_timeout=startup_timeout)
        self.state: EmulatorState = app.state.emulator

    def _started(self) -> None:
        self.state.stats.reset()  # a fresh server reports zero requests

    @property
    def config(self) -> EmulatorConfig:
        return self.state.config

    def update_config(self, **changes: Any) -> EmulatorConfig:
        """Change knobs of the running server (same as ``PATCH /_emulator/config``)."""
        return self.state.update_config(changes)

    def seed(
        self, collection_id: str, count: int, modality: Modality = "video", duration: float = 30.0
    ) -> dict[str, Any]:
        """``count`` assets DONE at once (``POST /_emulator/seed``): asset_ids, task_ids."""
        body = {
            "collection_id": collection_id,
            "count": count,
            "modality": modality,
            "duration": duration,
        }
        return self._control("/seed", body)

    def reindex(self, asset_id: str, mode: ReindexMode = "all") -> dict[str, Any]:
        """Re-index a DONE asset (``POST /_emulator/assets/{id}/reindex``)."""
        return self._control(f"/assets/{asset_id}/reindex", {"mode": mode})

    def change_asset(self, asset_id: str, metadata: dict[str, Any]) -> dict[str, Any]:
        """Merge ``metadata`` into an asset and its features (``PATCH /_emulator/assets/{id}``);
        answers the asset, its ``updated_at`` moved to now."""
        return self._control(f"/assets/{asset_id}", {"metadata": metadata}, "PATCH")

    def delete_assets(self, asset_ids: list[str]) -> int:
        """Delete assets and their features (``POST /_emulator/assets/delete``); unknown ids
        are skipped. Returns how many were deleted."""
        return int(self._control("/assets/delete", {"asset_ids": asset_ids})["deleted"])

    def _control(self, path: str, body: dict[str, Any], method: str = "POST") -> dict[str, Any]:
        # Over HTTP rather than on self.state: the handlers run on the server's event loop, so
        # the in-memory state is never changed from two threads at once.
        url = f"{self.url}{CONTROL_PREFIX}{path}"
        response = httpx.request(method, url, json=body, timeout=60.0)
        response.raise_for_status()
        answer: dict[str, Any] = response.json()
        return answer
