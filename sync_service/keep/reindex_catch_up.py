"""Re-index step 6, after the swap: catch the new collection up with what the daemon did.

While the fill ran, the daemon kept writing through the alias into the old collection; once
the alias points at the new one, this syncs those assets again and prunes the points of
assets removed meanwhile. A rollback catches the old collection up the same way.
"""

from __future__ import annotations

import asyncio
import logging
import time

from sync_service.keep.reindex_fill import Progress, latest_tasks, write_assets
from sync_service.qdrant.sink import VERSION_FIELD
from sync_service.runtime import Service

log = logging.getLogger(__name__)

#: How often the catch-up looks whether the leases held at the swap are released, and how
#: long past SYNC_LEASE_SECONDS it waits for them at most.
LEASE_POLL, LEASE_MARGIN = 0.2, 5.0


async def catch_up(
    service: Service, alias: str, since: float, on_progress: Progress | None
) -> tuple[int, int]:
    """Bring the collection ``alias`` serves now (just swapped to) in step with the ledger.

    The daemon wrote into the collection the alias served before: the assets the ledger
    recorded at or after ``since`` are synced again, and the points of assets it no longer
    lists (forgotten or gone upstream meanwhile) are pruned. Returns (assets, points pruned).
    """
    store = service.store
    swapped_at = await store.now()  # before the snapshot: every claim older is in it, or done
    # A lease held at the swap may have written into the old collection and not yet recorded
    # it. Once released, its ledger rows are committed (or it lost the lease, and the redo
    # writes through the alias, here); a lease claimed after the swap writes here too.
    await _leases_released(service, await store.held_leases())
    # Versioned at the read: a daemon write claimed after it holds newer data and wins.
    version = await store.now()
    rows = await store.ledger(collection=alias)
    tasks = latest_tasks(r for r in rows if r.synced_at >= since)
    await write_assets(service, alias, tasks, version, "catch-up", on_progress, prune=True)
    listed = {r.asset_id for r in rows if r.asset_id is not None}
    return len(tasks), await _prune(service, alias, listed, swapped_at)


async def _leases_released(service: Service, held: set[tuple[str, int]]) -> None:
    """Wait until none of ``held`` is held any more (a lease expires if its worker died)."""
    deadline = time.monotonic() + service.settings.lease_seconds + LEASE_MARGIN
    while held := held & await service.store.held_leases():
        if time.monotonic() > deadline:
            # Heartbeats kept them: still working, so likely not written yet (a write is
            # recorded right after it lands); `verify` finds any write left behind.
            tasks = sorted(t for t, _ in held)
            log.warning("catch-up stopped waiting for leases held at the swap: %s", tasks)
            return
        await asyncio.sleep(LEASE_POLL)


async def _prune(service: Service, alias: str, listed: set[str], before: float) -> int:
    """Delete the points of assets not ``listed`` whose write is versioned ``before``.

    A later write is the daemon's, claimed after the swap: its ledger row may not be committed
    yet. No delete guard: the ledger is what the fill was built from and checked against, and
    the collection served meanwhile has lost these points already.
    """
    stale: list[str] = []
    async for page in service.sink.pages(alias, with_vectors=False):
        for record in page:
            payload = record.payload or {}
            asset_id, version = payload.get("asset_id"), payload.get(VERSION_FIELD)
            old = not isinstance(version, int | float) or version < before
            if asset_id is not None and asset_id not in listed and old:
                stale.append(str(record.id))
    await service.sink.delete_points(alias, stale)
    return len(stale)
