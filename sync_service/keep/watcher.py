"""Watch mode in the daemon: which collection's pass runs where, and what ``status`` shows.

A pass holds the collection's lock in the state store (renewed while it runs), so one replica
at a time lists a collection; the passes themselves are in ``watch.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from sync_service.control.logs import describe_error
from sync_service.engine.availability import Availability
from sync_service.keep.watch import Mirroring
from sync_service.qdrant.faults import SinkUnavailable
from sync_service.state.store import Store
from sync_service.upstream.port import MixpeekAuthError

log = logging.getLogger(__name__)


class PassLost(Exception):
    """Another process took the collection's lock: this pass stops where it is."""


@contextlib.asynccontextmanager
async def holding(store: Store, name: str, owner: str, seconds: float) -> AsyncIterator[None]:
    """Hold lock ``name`` (already acquired by ``owner``) while the body runs: renewed every
    third of ``seconds``; if another process takes it (it expired), the body is cancelled."""
    body = asyncio.current_task()
    lost = False

    async def renew() -> None:
        nonlocal lost
        while True:
            await asyncio.sleep(seconds / 3)
            try:
                held = await store.acquire_lock(name, owner, seconds)
            except Exception:
                continue  # the store is down: the body's own writes fail too
            if not held and body is not None:
                log.warning("lost the lock %s; stopping", name, extra={"event": "lock_lost"})
                lost = True
                body.cancel()
                return

    renewer = asyncio.create_task(renew())
    try:
        yield
    except asyncio.CancelledError:
        # Cancelled by the renewer (and by nothing else): the pass, not the process, ends.
        if lost and body is not None and body.uncancel() == 0:
            raise PassLost(f"another process took the lock {name}") from None
        raise
    finally:
        # A renewal under way ends whole (the store's writes do) and before the release:
        # after it, it would take the lock back.
        renewer.cancel()
        await asyncio.wait([renewer])
        with contextlib.suppress(Exception):
            await store.release_lock(name, owner)


def lock_name(collection_id: str) -> str:
    """The lock that lets one process at a time list a collection."""
    return f"watch:{collection_id}"


class Watcher:
    """Watch mode in the daemon: runs each watched collection's due passes, one replica per
    collection at a time (a renewed lock in the state store)."""

    def __init__(
        self,
        mirroring: Mirroring,
        *,
        owner: str,
        lease_seconds: float,
        on_fatal: Callable[[BaseException], None] | None = None,
        qdrant: Availability | None = None,
    ) -> None:
        self.mirroring = mirroring
        #: Qdrant as the daemon sees it: a pass that finds it down says so there (one warning
        #: for the outage) and the daemon starts no pass until it answers again.
        self.qdrant = qdrant
        self.store = mirroring.store
        self.owner = owner
        self.lease_seconds = lease_seconds
        self.on_fatal = on_fatal
        self.running: dict[str, asyncio.Task[None]] = {}
        self.stopping = False
        self._ticking = asyncio.Lock()

    async def tick(self) -> None:
        """Start the passes that are due and not running anywhere (one tick at a time: the
        lock is this process's for every pass it runs, so it cannot tell two ticks apart)."""
        if self._ticking.locked():
            return
        async with self._ticking:
            await self._start_due()

    async def _start_due(self) -> None:
        for collection_id, _kind in await self.store.due_mirrors():
            if collection_id in self.running or self.stopping:
                continue
            name = lock_name(collection_id)
            if not await self.store.acquire_lock(name, self.owner, self.lease_seconds):
                continue  # another replica lists it
            # Read again under the lock: a replica may have just finished this very pass.
            kind = dict(await self.store.due_mirrors()).get(collection_id)
            if kind is None or self.stopping:
                await self.store.release_lock(name, self.owner)
                continue
            task = asyncio.create_task(
                self._run(collection_id, kind), name=f"watch:{collection_id}"
            )
            self.running[collection_id] = task
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        for collection_id, running in list(self.running.items()):
            if running is task:
                del self.running[collection_id]

    async def stop(self) -> None:
        """Cut the passes short (each resumes at its next page) and hand their locks back."""
        self.stopping = True
        for task in list(self.running.values()):
            task.cancel()
        await asyncio.gather(*self.running.values(), return_exceptions=True)

    async def _run(self, collection_id: str, kind: str) -> None:
        try:
            async with holding(
                self.store, lock_name(collection_id), self.owner, self.lease_seconds
            ):
                await self._pass(collection_id, kind)
        except PassLost as exc:  # another replica took over; it resumes the pass
            log.warning("%s", exc, extra={"event": "lock_lost", "collection_id": collection_id})

    async def _pass(self, collection_id: str, kind: str) -> None:
        try:
            if kind == "full":
                await self.mirroring.full(collection_id)
            else:
                await self.mirroring.incremental(collection_id)
        except asyncio.CancelledError:
            raise
        except MixpeekAuthError as exc:
            await self._failed(collection_id, str(exc), kind)
            if self.on_fatal is not None:
                self.on_fatal(exc)
        except SinkUnavailable as exc:
            if self.qdrant is not None:
                self.qdrant.failed(exc)
            error = describe_error(exc, limit=300)
            await self._failed(collection_id, error, kind, quiet=self.qdrant is not None)
        except Exception as exc:  # upstream, Qdrant or store trouble: try again later
            await self._failed(collection_id, describe_error(exc, limit=300), kind)

    async def _failed(self, collection_id: str, error: str, kind: str, quiet: bool = False) -> None:
        """``quiet``: an outage logged once elsewhere (Qdrant's); this pass's line is DEBUG."""
        full = self.mirroring.kind.get(collection_id, kind) == "full"
        retry_in = min(self.mirroring.settings.watch_interval, 30.0)
        log.log(
            logging.DEBUG if quiet else logging.WARNING,
            "watch pass of %s failed (tried again in %.0fs): %s",
            collection_id,
            retry_in,
            error,
            extra={"event": "watch_pass_failed", "collection_id": collection_id},
        )
        with contextlib.suppress(Exception):
            await self.store.pass_failed(collection_id, error, retry_in=retry_in, full=full)
