"""Backfill: sync every asset of existing Mixpeek collections, resumably.

Listing and syncing are separate steps joined by the state store. Each page of ``POST
/assets`` becomes pending asset jobs *in the same transaction* that moves the collection's
cursor, so a crash resumes at the first page not yet queued; the jobs themselves are ordinary
leased work, synced by this process's daemon loop or by any running daemon (replicas
included), each exactly as a tracked task would be. Syncing an asset that is already in
Qdrant is a re-sync: unchanged points cost no write.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sync_service.failpoints import failpoint
from sync_service.mixpeek import MixpeekClient
from sync_service.scheduler import Daemon
from sync_service.store import Store

log = logging.getLogger(__name__)


@dataclass
class Progress:
    """Where a backfill stands: assets listed so far (and expected), jobs finished."""

    listed: int = 0
    expected: int | None = None
    synced: int = 0
    failed: int = 0
    pending: int = 0
    #: The wait was given up: no job finished for ``stall_after`` seconds.
    stalled: bool = False

    @property
    def finished(self) -> int:
        return self.synced + self.failed


async def list_into_store(
    client: MixpeekClient,
    store: Store,
    collection_id: str,
    *,
    page_size: int = 100,
    on_page: Callable[[int, int | None], None] | None = None,
) -> int:
    """Queue every asset of ``collection_id`` as a pending asset job, page by page.

    Resumes an unfinished backfill at its stored cursor. Returns the assets listed in total
    (this run and, when resuming, the runs before it).
    """
    cursor = await store.start_backfill(collection_id)
    page = cursor.next_page
    listed = cursor.assets_listed
    if page > 1:
        log.info(
            "resuming backfill",
            extra={"event": "backfill_resumed", "collection_id": collection_id, "page": page},
        )
    previous: list[str] | None = None
    while True:
        answer = await client.list_assets(collection_id, page=page, page_size=page_size)
        ids = [asset.asset_id for asset in answer.results]
        if ids and ids == previous:  # a server ignoring ?page= would make this loop forever
            log.warning("Mixpeek repeated page %d of assets; stopping the listing", page)
            await store.finish_backfill(collection_id)
            return listed
        previous = ids
        await store.enqueue_assets(
            ids, collection_id=collection_id, cursor=(page + 1, answer.total_pages)
        )
        await failpoint("after_backfill_page")
        listed += len(ids)
        if on_page is not None:
            on_page(listed, answer.total)
        if not answer.has_next:
            await store.finish_backfill(collection_id)
            return listed
        page += 1


async def progress_of(store: Store, collection_ids: Sequence[str], listed: int) -> Progress:
    counts = await store.asset_job_counts(collection_ids, source="backfill")
    return Progress(
        listed=listed,
        synced=counts["synced"],
        failed=counts["failed"],
        pending=counts["pending"],
    )


async def backfill(
    client: MixpeekClient,
    store: Store,
    daemon: Daemon | None,
    collection_ids: Sequence[str],
    *,
    page_size: int = 100,
    on_progress: Callable[[Progress], None] | None = None,
    refresh: float = 0.5,
    stall_after: float = 300.0,
) -> Progress:
    """List the collections into the store and, with a ``daemon``, sync them until none is
    pending. Without one (another process owns the embedded Qdrant), only queue them."""
    state = Progress()
    loop = asyncio.get_running_loop()
    runner = asyncio.create_task(daemon.run()) if daemon is not None else None
    try:
        expected: dict[str, int | None] = {}
        done_listing: dict[str, int] = {}
        for collection_id in collection_ids:

            def on_page(listed: int, total: int | None, cid: str = collection_id) -> None:
                done_listing[cid] = listed
                expected[cid] = total
                state.listed = sum(done_listing.values())
                totals = list(expected.values())
                state.expected = None if None in totals else sum(t or 0 for t in totals)
                if on_progress is not None:
                    on_progress(state)

            await list_into_store(
                client, store, collection_id, page_size=page_size, on_page=on_page
            )
        last_change, finished = loop.time(), -1
        while runner is not None and not runner.done():
            current = await progress_of(store, collection_ids, state.listed)
            current.expected = state.expected
            state = current
            if on_progress is not None:
                on_progress(state)
            if state.pending == 0:
                break
            if state.finished != finished:
                last_change, finished = loop.time(), state.finished
            elif loop.time() - last_change > stall_after:
                # E.g. Qdrant down: the jobs wait for it without giving up. Stop waiting here;
                # they stay pending for a running daemon or the next backfill.
                state.stalled = True
                break
            await asyncio.sleep(refresh)
    finally:
        if daemon is not None and runner is not None:
            if not daemon.stopping:  # a second stop request would abandon the work in flight
                daemon.request_stop()  # graceful: work in flight finishes, leases released
            await runner
    final = await progress_of(store, collection_ids, state.listed)
    final.expected, final.stalled = state.expected, state.stalled
    if on_progress is not None:
        on_progress(final)
    return final
