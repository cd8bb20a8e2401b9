"""Webhook events applied in the daemon, each one only a hint to read Mixpeek again.

The receiver (``control/webhooks.py``) queued them in the state store; any replica's daemon
claims them there (a lease, so each is applied once and a dead replica's are taken over) and:

* ``collection.documents.written``: makes the watched collection's incremental pass due now
  (many events for one collection make one pass; a pass running meanwhile is followed by
  another, since it may have listed before the write);
* ``object.deleted``: queues an asset job for each asset of that object the service knows; the
  job reads what Mixpeek still serves (confirming the deletion) and removes what it no longer
  does, so documents that outlive their object stay;
* ``collection.deleted``: holds it for a person (``status``; ``sync-service webhook confirm``
  removes the collection's points, ``webhook dismiss`` keeps them): one event must not empty a
  collection.

Events of another namespace (webhooks are organization-wide) and of collections or objects the
service does not know are recorded as ignored. Watch never depends on them: a missed event is
found by the next pass.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable

from sync_service.control.metrics import Metrics
from sync_service.control.webhook_envelope import (
    COLLECTION_DELETED,
    DOCUMENTS_WRITTEN,
    OBJECT_DELETED,
    type_label,
)
from sync_service.keep.watcher import Watcher
from sync_service.settings import Settings
from sync_service.state.store import STORE_ERRORS, Store
from sync_service.state.webhooks import DONE, HELD, PASS_REQUESTED, Applied, WebhookEvent
from sync_service.upstream.port import MixpeekError, Upstream

log = logging.getLogger(__name__)

#: Events claimed at once: a flood is applied in slices of this many (bounded memory).
BATCH = 200
#: How long a claim lasts: a replica that dies holding events hands them over after this.
LEASE_SECONDS = 30.0
#: How often old event ids are forgotten (SYNC_WEBHOOK_RETENTION says which).
PRUNE_EVERY = 600.0


class WebhookApplier:
    """Applies queued webhook events, one batch at a time (never two at once in a process)."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        upstream: Upstream,
        metrics: Metrics,
        *,
        owner: str,
        on_pass: Callable[[], None] | None = None,
        on_queued: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.upstream = upstream
        self.metrics = metrics
        self.owner = owner
        self.on_pass = on_pass
        self.on_queued = on_queued
        self._lock = asyncio.Lock()
        self._again = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._prune_at = time.monotonic()
        self.stopping = False

    # -- in the daemon ----------------------------------------------------------------------

    def wake(self) -> None:
        """Apply the new events now (the receiver queued one), not at the next tick."""
        if not self.stopping:
            task = asyncio.get_running_loop().create_task(self.tick())
            self._tasks.add(task)  # keep a reference until it is done
            task.add_done_callback(self._tasks.discard)

    async def tick(self) -> None:
        """The daemon's job: apply what is queued (by any replica's receiver), and now and
        then forget old event ids. Failures wait for the next tick (the events stay queued)."""
        if self.stopping:
            return
        try:
            await self.drain()
            if time.monotonic() >= self._prune_at:
                self._prune_at = time.monotonic() + PRUNE_EVERY
                await self.prune()
        except STORE_ERRORS as exc:  # the daemon's own ticks report the store's health
            log.debug("webhook events wait for the state store: %s", type(exc).__name__)
        except MixpeekError as exc:
            log.warning("webhook events wait: %s", exc, extra={"event": "webhook_deferred"})

    async def stop(self, grace: float) -> None:
        """Let a batch being applied end within ``grace`` seconds (what the daemon's stop has
        left), then cancel it: a write under way still ends whole (``state/base.py``). No
        batch starts once stopping; what is cut short is claimed again later."""
        self.stopping = True
        if self._tasks:
            _, late = await asyncio.wait(list(self._tasks), timeout=max(grace, 0.0))
            for task in late:
                task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- applying ---------------------------------------------------------------------------

    async def drain(self) -> int:
        """Apply every queued event, a batch at a time; returns how many were applied. A call
        while another runs has that one go on until nothing is queued (it returns 0)."""
        if self._lock.locked():
            self._again = True
            return 0
        applied = 0
        async with self._lock:
            while not self.stopping:
                self._again = False
                count = await self.apply_batch()
                applied += count
                if count < BATCH and not self._again:
                    break
        return applied

    async def apply_batch(self) -> int:
        events = await self.store.claim_webhooks(self.owner, BATCH, LEASE_SECONDS)
        if not events:
            return 0
        try:
            namespaces = await self.upstream.namespace_ids()
        except MixpeekError as exc:  # cannot tell whose events these are: later
            await self.store.release_webhooks(self.owner, [e.event_id for e in events])
            log.warning(
                "webhook events wait: Mixpeek did not say which namespace is ours: %s",
                exc,
                extra={"event": "webhook_deferred", "count": len(events)},
            )
            return 0
        watched = {m.collection_id for m in await self.store.mirrors(watched_only=True)}
        passes: dict[str, str] = {}
        results: dict[str, Applied] = {}
        reconcile: list[tuple[str, str]] = []
        for event in events:
            if namespaces and event.namespace is not None and event.namespace not in namespaces:
                results[event.event_id] = Applied(DONE, "ignored_namespace")
            elif event.event_type == DOCUMENTS_WRITTEN:
                target = _named(event, watched)
                if target is None:
                    results[event.event_id] = Applied(DONE, "ignored_unwatched")
                else:
                    passes[event.event_id] = target
            elif event.event_type == OBJECT_DELETED:
                assets = []
                if event.object_id is not None:
                    assets = await self.store.object_assets(event.object_id)
                reconcile += assets
                outcome = "reconcile_queued" if assets else "ignored_unknown_object"
                results[event.event_id] = Applied(DONE, outcome)
            elif event.event_type == COLLECTION_DELETED:
                named = [c for c in (event.collection_id, event.collection_name) if c]
                known = await self.store.known_collections(named)
                if known:
                    results[event.event_id] = Applied(HELD, "held", known[0])
                    self._say_held(event, known[0])
                else:
                    results[event.event_id] = Applied(DONE, "ignored_unknown_collection")
            else:  # queued by an older receiver that handled more types
                results[event.event_id] = Applied(DONE, "ignored_type")
        requested = await self.store.request_passes(self.owner, passes)
        queued = await self.store.reconcile_assets(reconcile) if reconcile else []
        await self.store.finish_webhooks(self.owner, results)
        self._count(events, passes, requested, results)
        if requested and self.on_pass is not None:
            self.on_pass()
        if queued and self.on_queued is not None:
            self.on_queued()
        return len(events)

    async def prune(self) -> None:
        pruned = await self.store.prune_webhooks(self.settings.webhook_retention)
        if pruned:
            log.debug("forgot %d old webhook event ids", pruned)

    def _say_held(self, event: WebhookEvent, collection_id: str) -> None:
        log.warning(
            "Mixpeek says collection %s was deleted (event %s): its points stay until a person "
            "runs `sync-service webhook confirm %s` (or `webhook dismiss %s`)",
            collection_id,
            event.event_id,
            collection_id,
            collection_id,
            extra={"event": "webhook_collection_deleted", "collection_id": collection_id},
        )

    def _count(
        self,
        events: list[WebhookEvent],
        passes: dict[str, str],
        requested: list[str],
        results: dict[str, Applied],
    ) -> None:
        outcomes: Counter[tuple[str, str]] = Counter()
        for event in events:
            if event.event_id in passes:
                watched = passes[event.event_id] in requested
                outcome = PASS_REQUESTED if watched else "ignored_unwatched"
            else:
                outcome = results[event.event_id].outcome
            outcomes[(type_label(event.event_type), outcome)] += 1
        for (label, outcome), n in outcomes.items():
            self.metrics.webhook_applied.labels(label, outcome).inc(n)
        log.info(
            "applied %d webhook event(s): %s",
            len(events),
            ", ".join(f"{n} {o}" for (_, o), n in sorted(outcomes.items())),
            extra={"event": "webhooks_applied", "count": len(events), "passes": requested},
        )


def _named(event: WebhookEvent, watched: set[str]) -> str | None:
    """The watched collection an event names (by id, or by name as the watch set may)."""
    for candidate in (event.collection_id, event.collection_name):
        if candidate is not None and candidate in watched:
            return candidate
    return None


def applier_for(
    watcher: Watcher, on_pass: Callable[[], None], on_queued: Callable[[], None]
) -> WebhookApplier:
    """The daemon's applier, over the watcher's store, upstream and metrics: ``on_pass`` starts
    the passes made due, ``on_queued`` claims the asset jobs queued."""
    m = watcher.mirroring
    return WebhookApplier(
        m.settings,
        m.store,
        m.upstream,
        m.metrics,
        owner=watcher.owner,
        on_pass=on_pass,
        on_queued=on_queued,
    )
