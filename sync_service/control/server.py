"""Serves the control API beside the daemon (``run``), without holding the daemon back.

The port is bound and listening before the daemon starts, so a taken port is a clear error at
once and a client that connects early waits in the backlog. The API itself loads in the
background: its module imports FastAPI, uvicorn and Qdrant's client (~0.4 s of CPU, in
threads), and the daemon's first claim used to wait for all of it (bench scenario 10 with the
API on, six alternating pairs: the daemon started 1.04 s after the spawn, now 0.69). If it
cannot start, the daemon stops and raises why (``Service.background_failed``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from sync_service.runtime import Service, SinkInMaking, import_in_thread

if TYPE_CHECKING:
    import uvicorn

log = logging.getLogger("sync_service")  # the lifecycle lines of `run` (cli/main.py)


class ControlApiError(Exception):
    """The control API could not start (e.g. its port is taken)."""


@asynccontextmanager
async def serve_control_api(service: Service) -> AsyncIterator[str | None]:
    """Serve the control API beside the daemon; yields its URL (None when turned off) as soon
    as its port listens, and logs ``api_started`` once it answers."""
    settings = service.settings
    if settings.api_port == 0:
        yield None
        return
    family = socket.AF_INET6 if ":" in settings.api_host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((settings.api_host, settings.api_port))
        sock.listen(2048)  # uvicorn's backlog: connections wait here while the API loads
    except OSError as exc:
        sock.close()
        raise ControlApiError(
            f"control API cannot listen on {settings.api_host}:{settings.api_port}: {exc.strerror}"
        ) from None
    host, port = sock.getsockname()[:2]
    url = f"http://{host}:{port}"
    servers: list[uvicorn.Server] = []
    task = asyncio.create_task(_serve(service, sock, url, servers), name="control-api")
    try:
        yield url
    finally:
        wait = _requests_wait(service)
        if servers:
            # uvicorn waits that long for requests under way, then cancels them (each caller
            # gets a 503 from the Guard: control/api.py) and ends.
            # Typed int, used as asyncio.timeout's delay: a fraction of a second is kept.
            servers[0].config.timeout_graceful_shutdown = wait  # type: ignore[assignment]
            servers[0].should_exit = True
        else:  # still loading: nothing is served yet
            task.cancel()
        if not task.done():  # neither raises nor is cancelled by it
            await asyncio.wait([task], timeout=wait + 1)
        if not task.done():  # uvicorn did not end: cut off
            task.cancel()
            await asyncio.wait([task], timeout=1)
        if task.done() and not task.cancelled():
            task.exception()  # retrieved: a failure was reported through the service
        sock.close()


#: The longest the control API waits for its requests under way once told to exit.
REQUESTS_WAIT = 5.0
#: Enough for an idle server to notice it should exit (uvicorn looks every 0.1 s) and close.
CLOSE_WAIT = 0.25


def _requests_wait(service: Service) -> float:
    """How long requests under way may still take: at most :data:`REQUESTS_WAIT`, and no
    longer than the daemon's stop grace has left (SYNC_SHUTDOWN_GRACE bounds the whole stop,
    the API included: a request waiting on a slow Mixpeek must not hold the exit back)."""
    if service.stop_deadline is None:
        return REQUESTS_WAIT
    left = service.stop_deadline - asyncio.get_running_loop().time()
    return min(REQUESTS_WAIT, max(left, CLOSE_WAIT))


class _CutRequestsFilter(logging.Filter):
    """uvicorn logs the requests it cancels when the stop grace is over as an ERROR. Here
    that is a stop doing what it was told (SYNC_SHUTDOWN_GRACE), and each caller got a 503
    saying why (control/api.py's Guard): a warning, in the service's words."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and record.msg.startswith("Cancel %s running task"):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.msg = (
                "control API stopped: %s request(s) still under way when the shutdown grace "
                "ran out were cut; each caller was answered 503 with Retry-After"
            )
            record.event = "api_requests_cut"
        return True


_CUT_REQUESTS = _CutRequestsFilter()


async def _serve(
    service: Service, sock: socket.socket, url: str, servers: list[uvicorn.Server]
) -> None:
    """Load the API (in threads), then serve it until told to exit."""
    try:
        if isinstance(service.sink, SinkInMaking):
            # The API's module imports Qdrant's client too: one thread at a time imports it.
            await asyncio.wrap_future(service.sink.load())
        await asyncio.wrap_future(import_in_thread("sync_service.control.api"))
        await asyncio.wrap_future(import_in_thread("uvicorn"))
        import uvicorn

        from sync_service.control.api import create_api

        logging.getLogger("uvicorn.error").addFilter(_CUT_REQUESTS)  # once: same object

        settings = service.settings
        token = settings.api_token.get_secret_value() if settings.api_token else None
        secret = settings.webhook_secret
        app = create_api(
            store=service.store,
            upstream=service.upstream,
            sink=service.sink,
            metrics=service.metrics,
            token=token,
            max_body_bytes=settings.api_max_body_bytes,
            outage=service.pipeline.outage,
            qdrant=service.pipeline.qdrant,
            webhook_secret=secret.get_secret_value() if secret else None,
            webhook_header=settings.webhook_header,
            on_webhook=service.webhook_received,
        )

        class _ApiServer(uvicorn.Server):
            """uvicorn without its own signal handling: the daemon owns SIGTERM/SIGINT."""

            @contextlib.contextmanager
            def capture_signals(self) -> Iterator[None]:
                yield

            async def startup(self, sockets: list[socket.socket] | None = None) -> None:
                await super().startup(sockets)
                log.info("control API listening", extra={"event": "api_started", "url": url})

        # log_config=None: uvicorn's lines go through the service's handler (control/logs.py),
        # so a JSON log stays JSON lines; its own config gave them a handler and format apart.
        config = uvicorn.Config(
            app, lifespan="off", log_level="warning", access_log=False, log_config=None
        )
        server = _ApiServer(config)
        servers.append(server)
        await server.serve(sockets=[sock])
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        service.background_failed(exc)
