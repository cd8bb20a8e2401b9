"""Builds the service's parts from settings, and closes them again."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import Future
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

from sync_service import collector
from sync_service.control.metrics import Metrics
from sync_service.keep.binding import check_mark, check_target
from sync_service.settings import Settings
from sync_service.upstream.port import Outage

if TYPE_CHECKING:
    # Imported when made: Qdrant's client (~0.2 s), aiohttp, and SQLAlchemy (which `run`
    # imports while its first request is out).
    from sync_service.engine.pipeline import Pipeline
    from sync_service.engine.read_ahead import ReadAhead
    from sync_service.qdrant.sink import QdrantSink
    from sync_service.state.store import Store
    from sync_service.upstream.connect import Probed
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
    #: Told of each webhook event the control API queued (the daemon applies it at once).
    on_webhook: Callable[[], None] | None = None
    #: When the daemon's stop grace ends (event loop time): the control API, which stops
    #: after the daemon, waits for its requests under way only until then.
    stop_deadline: float | None = None
    #: Told when a part started in the background fails (``stop_on_failure``), and such a
    #: failure met before anyone was told to listen.
    _stop: Callable[[BaseException], None] | None = field(default=None, init=False, repr=False)
    _failure: BaseException | None = field(default=None, init=False, repr=False)

    def webhook_received(self) -> None:
        if self.on_webhook is not None:
            self.on_webhook()

    def stop_on_failure(self, stop: Callable[[BaseException], None]) -> None:
        """``stop`` is told if a part made in the background fails: the sink
        (``overlap_sink``) or the control API (``control/server.py``)."""
        self._stop = stop
        if isinstance(self.sink, SinkInMaking):
            self.sink.on_failure = stop
        if self._failure is not None:
            stop(self._failure)

    def background_failed(self, exc: BaseException) -> None:
        """A part started in the background failed: the daemon stops and raises it."""
        if self._stop is not None:
            self._stop(exc)
        elif self._failure is None:
            self._failure = exc


def open_upstream(
    settings: Settings,
    observer: Metrics | None = None,
    outage: Outage | None = None,
    *,
    probe_early: bool = False,
    probe: Future[Probed] | None = None,
) -> Upstream:
    """Mixpeek behind the upstream port (its client's modules load here, when made)."""
    from sync_service.upstream.connect import open_upstream as connect

    return connect(settings, observer, outage, probe_early=probe_early, probe=probe)


def qdrant_sink(settings: Settings, metrics: Metrics) -> QdrantSink:
    from sync_service.qdrant.sink import QdrantSink

    return QdrantSink.from_settings(settings, on_batch=metrics.upsert_batch)


@asynccontextmanager
async def open_service(
    settings: Settings,
    *,
    migrate: bool = False,
    defer_when_idle: bool = False,
    overlap_sink: bool = False,
    upstream_first: bool = False,
    version_probe: Future[Probed] | None = None,
) -> AsyncIterator[Service]:
    """The store, the Qdrant sink, the upstream and the pipeline over them (``migrate``: an
    older schema may be migrated).

    ``defer_when_idle`` (``run --drain``): if the store holds no work (``Store.has_work``), the
    sink and the upstream are made on first use instead, so a drain with nothing to do neither
    loads their libraries nor opens the embedded Qdrant folder.

    ``overlap_sink`` (``run``): Qdrant's client is imported in a thread when the work first
    reaches for the sink (its first write), while the requests upstream go on, and the sink
    is made and its mark checked then (``SinkInMaking``). Not for an embedded Qdrant
    folder: its lock is how other commands tell a daemon runs (``backfill`` queues its
    assets for it), so the daemon takes it at start.

    ``upstream_first`` (``run``, when it will call Mixpeek at once): the upstream is entered
    before the store is opened, so under ``MIXPEEK_API_VERSION=auto`` the version probe is on
    its way while the store's and the daemon's modules are imported (in a thread, so the loop
    takes the answer meanwhile); its round trip then no longer delays the first poll. On a
    SQLite store the polls of the tasks the first claim will take go out then too
    (``engine/read_ahead.py``). ``version_probe``: that probe, when ``run`` sent it already
    (``upstream/version_probe.py``; only with ``upstream_first``).
    """
    metrics = Metrics()
    outage = Outage()  # made before the upstream, which may wait for first use
    metrics.watch_outage(outage)
    async with contextlib.AsyncExitStack() as stack:
        upstream: Upstream | None = None
        ahead: ReadAhead | None = None
        if upstream_first:
            upstream = await stack.enter_async_context(
                open_upstream(settings, metrics, outage, probe_early=True, probe=version_probe)
            )
            from sync_service.engine.read_ahead import ReadAhead, due_at_start

            url = settings.database_url.get_secret_value()
            if due := await due_at_start(url, settings.claim_batch):
                ahead = ReadAhead(upstream, due, max_age=settings.poll_interval)
                stack.push_async_callback(ahead.close)
            await asyncio.wrap_future(import_in_thread(DAEMON_MODULE))
        from sync_service.engine.pipeline import Pipeline
        from sync_service.state.store import open_store

        store = await stack.enter_async_context(open_store(settings, migrate=migrate))
        await check_target(store, settings)  # before the Qdrant folder is even opened
        if defer_when_idle and upstream is None and not await store.has_work():
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
        daemon = overlap_sink  # `run`: it calls Mixpeek at once
        folder = not settings.qdrant_url and str(settings.qdrant_path) != ":memory:"
        overlap_sink = overlap_sink and not folder
        upstream_cm: Upstream | None = None
        if overlap_sink:
            if upstream is None:
                # Its imports come first; under MIXPEEK_API_VERSION=auto the version probe
                # starts on entry, while the rest of start-up runs.
                upstream_cm = open_upstream(settings, metrics, outage, probe_early=daemon)
            sink = cast(
                "QdrantSink",
                SinkInMaking(
                    lambda: qdrant_sink(settings, metrics),
                    lambda made: check_mark(store, made, settings),
                ),
            )
            stack.push_async_callback(sink.close)
        else:
            sink = qdrant_sink(settings, metrics)
            stack.push_async_callback(sink.close)
            await check_mark(store, sink, settings)
            if upstream is None:
                upstream_cm = open_upstream(settings, metrics, outage, probe_early=daemon)
        if upstream_cm is not None:
            upstream = await stack.enter_async_context(upstream_cm)
        assert upstream is not None
        pipeline = Pipeline(settings, store, upstream, sink, metrics, outage)
        pipeline.read_ahead = ahead
        yield Service(settings, store, upstream, sink, pipeline, metrics)


#: What ``run`` imports while the version probe is out (``open_service(upstream_first=True)``):
#: the daemon, and through it the engine, the store and SQLAlchemy.
DAEMON_MODULE = "sync_service.engine.scheduler"


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


def import_in_thread(module: str) -> Future[None]:
    """Import ``module`` in a thread (done when the returned future is).

    The import and the event loop share the GIL, so the import runs while the loop waits for
    answers. A thread that wants the GIL gets it when the holder's switch interval ends, and
    the loop gives it up at every socket call, so at Python's 5 ms the loop waits up to 5 ms
    behind the import for each batch of answers. While the import runs the interval is 1 ms:
    scenario 10 went from 0.802 to 0.810 of ideal (five alternating pairs). The interval is
    restored when the import ends (shorter intervals throughout were no better, as measured
    in an earlier release). The garbage collector is held off meanwhile (``collector.py``):
    the module's objects live as long as the process, and are frozen when it ends.
    """
    done: Future[None] = Future()
    # Running from the start: an import cannot be stopped, so a cancelled wait for it (the
    # control API's, at a quick exit) must not cancel the future the thread will complete.
    done.set_running_or_notify_cancel()

    def load() -> None:
        try:
            try:
                importlib.import_module(module)
            finally:
                sys.setswitchinterval(before)
                collector.release()
        except BaseException as exc:  # handed to whoever awaits the module
            done.set_exception(exc)
        else:
            done.set_result(None)

    before = sys.getswitchinterval()
    sys.setswitchinterval(min(before, _IMPORT_SWITCH_INTERVAL))
    collector.hold()
    threading.Thread(target=load, name=f"import {module}", daemon=True).start()
    return done


#: Python's switch interval while Qdrant's client imports beside the loop (import_in_thread).
_IMPORT_SWITCH_INTERVAL = 0.001


class SinkInMaking:
    """The daemon's Qdrant sink, made when the work first reaches for it.

    The first requests upstream (polls, asset and feature fetches) need none of Qdrant's
    client. The first call that reaches Qdrant starts its import in a thread, waits for it,
    makes the sink and checks Qdrant's mark (``check_mark``) before anything is written, as
    ``open_service`` does at start otherwise; the requests go on meanwhile. Imported at
    start instead, its ~0.2 s of CPU shared the GIL with the daemon's start and its first
    claim: scenario 10 measured 0.842 → 0.850 of ideal and 0.835 → 0.842 (six and eight
    alternating pairs) for importing it on first use. Every attribute reached before the
    sink is made must be one of its coroutine methods.

    If the sink cannot be made (Qdrant's folder in use, a Qdrant without the store's mark),
    ``on_failure`` is told (the daemon stops and raises it) and the callers are cancelled,
    so their tasks spend no attempt on it.
    """

    def __init__(
        self,
        make: Callable[[], QdrantSink],
        ready: Callable[[QdrantSink], Awaitable[None]],
    ) -> None:
        self._make = make
        self._ready = ready
        self._lock = asyncio.Lock()
        self.loaded: Future[None] | None = None  # the import, once started
        self.made: QdrantSink | None = None
        self.failure: BaseException | None = None
        self.on_failure: Callable[[BaseException], None] | None = None

    def load(self) -> Future[None]:
        """Qdrant's client, the sink's module and the models its writes use, importing in a
        thread (started once)."""
        if self.loaded is None:
            self.loaded = import_in_thread("sync_service.qdrant.preload")
        return self.loaded

    async def get(self) -> QdrantSink:
        if self.made is not None:
            return self.made
        async with self._lock:
            if self.made is None and self.failure is None:
                try:
                    await asyncio.wrap_future(self.load())
                    sink = self._make()
                    try:
                        await self._ready(sink)
                    except BaseException:
                        await sink.close()
                        raise
                    self.made = sink
                except Exception as exc:
                    self.failure = exc
                    if self.on_failure is not None:
                        self.on_failure(exc)
        if self.made is not None:
            return self.made
        assert self.failure is not None
        if self.on_failure is None:
            raise self.failure
        raise asyncio.CancelledError  # the daemon stops, and raises the failure

    def __getattr__(self, name: str) -> Any:
        if self.made is not None:
            return getattr(self.made, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            return await getattr(await self.get(), name)(*args, **kwargs)

        return call

    async def close(self) -> None:
        # A daemon stopped before the import ended still lets it finish: a thread cut off
        # in the middle of an import at exit can leave the interpreter hanging.
        if self.loaded is not None:
            with contextlib.suppress(Exception):
                await asyncio.wrap_future(self.loaded)
        if self.made is not None:
            await self.made.close()
