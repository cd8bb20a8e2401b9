"""Builds the service's parts from settings, and closes them again."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

from sync_service.control.metrics import Metrics
from sync_service.engine.pipeline import Pipeline
from sync_service.keep.binding import check_mark, check_target
from sync_service.settings import Settings
from sync_service.state.store import Store, open_store
from sync_service.upstream.port import Outage

if TYPE_CHECKING:  # Qdrant's client (most of a second) and aiohttp: imported when made
    from sync_service.qdrant.sink import QdrantSink
    from sync_service.upstream.port import Upstream

T = TypeVar("T")


@dataclass
class Service:
    settings: Settings
    store: Store
    upstream: Upstream
    sink: QdrantSink
    pipeline: Pipeline
    metrics: Metrics
    #: The store held no work at start, so the sink and the client wait for first use.
    idle: bool = False


def open_upstream(
    settings: Settings, observer: Metrics | None = None, outage: Outage | None = None
) -> Upstream:
    """Mixpeek behind the upstream port (its client's modules load here, when made)."""
    from sync_service.upstream.connect import open_upstream as connect

    return connect(settings, observer, outage)


def qdrant_sink(settings: Settings, metrics: Metrics) -> QdrantSink:
    from sync_service.qdrant.sink import QdrantSink

    return QdrantSink.from_settings(settings, on_batch=metrics.upsert_batch)


@asynccontextmanager
async def open_service(
    settings: Settings, *, migrate: bool = False, defer_when_idle: bool = False
) -> AsyncIterator[Service]:
    """The store, the Qdrant sink, the upstream and the pipeline over them (``migrate``: an
    older schema may be migrated).

    ``defer_when_idle`` (``run --drain``): if the store holds no work (``Store.has_work``), the
    sink and the upstream are made on first use instead, so a drain with nothing to do neither
    loads their libraries nor opens the embedded Qdrant folder.
    """
    metrics = Metrics()
    outage = Outage()  # made before the upstream, which may wait for first use
    metrics.watch_outage(outage)
    async with open_store(settings, migrate=migrate) as store:
        await check_target(store, settings)  # before the Qdrant folder is even opened
        if defer_when_idle and not await store.has_work():
            lazy_sink = OnFirstUse(lambda: qdrant_sink(settings, metrics))
            lazy_upstream = OnFirstUse(lambda: open_upstream(settings, metrics, outage))
            sink, upstream = cast("QdrantSink", lazy_sink), cast("Upstream", lazy_upstream)
            try:
                pipeline = Pipeline(settings, store, upstream, sink, metrics, outage)
                yield Service(settings, store, upstream, sink, pipeline, metrics, idle=True)
            finally:
                try:
                    if lazy_upstream.made is not None:
                        await lazy_upstream.made.aclose()
                finally:
                    if lazy_sink.made is not None:
                        await lazy_sink.made.close()
            return
        sink = qdrant_sink(settings, metrics)
        try:
            await check_mark(store, sink, settings)
            async with open_upstream(settings, metrics, outage) as upstream:
                pipeline = Pipeline(settings, store, upstream, sink, metrics, outage)
                yield Service(settings, store, upstream, sink, pipeline, metrics)
        finally:
            await sink.close()


class OnFirstUse(Generic[T]):
    """Stands in for a part that is made when something first reaches for one of its
    attributes (see ``open_service``): work tracked after the check still finds it."""

    def __init__(self, make: Callable[[], T]) -> None:
        self._make = make
        self.made: T | None = None

    def __getattr__(self, name: str) -> Any:
        if self.made is None:
            self.made = self._make()
        return getattr(self.made, name)


class ControlApiError(Exception):
    """The control API could not start (e.g. its port is taken)."""


@asynccontextmanager
async def serve_control_api(service: Service) -> AsyncIterator[str | None]:
    """Serve the control API beside the daemon; yields its URL (None when turned off)."""
    settings = service.settings
    if settings.api_port == 0:
        yield None
        return
    from sync_service.control.api import create_api

    token = settings.api_token.get_secret_value() if settings.api_token else None
    app = create_api(
        store=service.store,
        upstream=service.upstream,
        sink=service.sink,
        metrics=service.metrics,
        token=token,
        max_body_bytes=settings.api_max_body_bytes,
        outage=service.pipeline.outage,
    )
    family = socket.AF_INET6 if ":" in settings.api_host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((settings.api_host, settings.api_port))
    except OSError as exc:
        sock.close()
        raise ControlApiError(
            f"control API cannot listen on {settings.api_host}:{settings.api_port}: {exc.strerror}"
        ) from None
    import uvicorn  # only where the API is served: a third of the daemon's start-up otherwise

    class _ApiServer(uvicorn.Server):
        """uvicorn without its own signal handling: the daemon owns SIGTERM/SIGINT."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    config = uvicorn.Config(app, lifespan="off", log_level="warning", access_log=False)
    server = _ApiServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name="control-api")
    while not server.started and not task.done():
        await asyncio.sleep(0.01)
    host, port = sock.getsockname()[:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, timeout=5)
        sock.close()
