"""Re-index an alias into a fresh physical collection, then swap the alias atomically.

Users query ``NAME`` (an alias); its points live in ``NAME__vN``. A run:

1. finds what serves ``NAME``: the alias's collection, or a plain collection ``NAME`` (an install
   from before aliases, which this run migrates); nothing at all is an error;
2. records the run as ``filling`` *before* creating ``NAME__v{N+1}``, so a crash shows; a run a
   crash left ``filling`` (or a failed check left ``check_failed``) is resumed instead, in the
   same collection: point ids are deterministic, so filling again is idempotent;
3. creates it with the requested distance and the vector sizes upstream serves now (a sample
   asset's), the current collection's for names the sample lacks; a size ``SYNC_VECTOR_SIZES``
   configures wins over both;
4. fills it from upstream, every asset the ledger lists for ``NAME``, straight into the physical
   name (the daemon meanwhile keeps writing through the alias into the old collection);
5. checks it: point count as planned, and a sample against what upstream served. A failed check
   leaves the alias alone, records ``check_failed`` and raises :class:`ReindexError`;
6. records ``catching_up``, points the alias at it in one request (searches see old or new,
   never neither), catches up what the daemon did to the old collection meanwhile, and records
   ``swapped``. The next ``reindex`` finishes a run a crash left ``catching_up``.

:func:`rollback` goes back the same way (``rolling_back``, catch-up, ``rolled_back``; the next
rollback finishes an interrupted one). Migrating a plain collection cannot be atomic: Qdrant
refuses an alias named like a collection, so the plain collection is deleted and the alias
created in the very next request; searches of ``NAME`` fail in that gap (milliseconds), and a
pre-alias install has no old collection to roll back to. One run or rollback per alias at a
time: it holds a lock in the state store (renewed while it runs, expiring if it dies).

This module runs those steps in order, records each state, holds the lock and reports; the
steps themselves live next to it: :mod:`~sync_service.keep.reindex_fill` (steps 3 and 4),
:mod:`~sync_service.keep.reindex_check` (step 5), :mod:`~sync_service.keep.reindex_catch_up`
(the catch-up of step 6, and of a rollback).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass

from sync_service.engine.scheduler import worker_name
from sync_service.keep.reindex_catch_up import catch_up
from sync_service.keep.reindex_check import check_fill
from sync_service.keep.reindex_fill import Progress, latest_tasks, upstream_schema, write_assets
from sync_service.runtime import Service
from sync_service.settings import Distance
from sync_service.state.ledger import Reindex
from sync_service.state.store import STORE_ERRORS

log = logging.getLogger(__name__)

#: States whose collection was never served: a new run resumes filling it.
RESUMABLE = ("filling", "check_failed")


class ReindexError(Exception):
    """A re-index that cannot start, or whose new collection failed its check (not swapped:
    ``held``, a guard that held, which the CLI reports with exit code 3)."""

    def __init__(
        self, message: str, report: ReindexReport | None = None, *, held: bool = False
    ) -> None:
        super().__init__(message)
        self.report = report
        self.held = held


@dataclass
class ReindexReport:
    alias: str
    old_physical: str  # the plain collection itself when migrated
    new_physical: str
    distance: str
    resumed: bool = False
    migrated: bool = False  # from a plain collection: deleted, so no rollback
    assets: int = 0
    points: int = 0
    skipped: int = 0  # assets gone upstream
    rejected: int = 0  # features the mapping or Qdrant refused (as the daemon would)
    caught_up: int = 0
    pruned: int = 0  # points of assets removed while the old collection was served
    seconds: float = 0.0
    check: str = "not run"
    check_passed: bool = False

    def summary_lines(self) -> list[str]:
        kept = "no rollback (migrated)" if self.migrated else f"kept {self.old_physical}"
        return [
            f"{self.alias}: {self.old_physical} -> {self.new_physical}, distance {self.distance}"
            + (" (resumed)" if self.resumed else ""),
            f"filled: {self.assets} asset(s), {self.points} point(s); skipped {self.skipped} "
            f"asset(s) gone upstream; {self.rejected} feature(s) refused",
            f"check: {'passed' if self.check_passed else 'FAILED'}: {self.check}",
            f"caught up: {self.caught_up} asset(s) synced during the fill"
            + (f", pruned {self.pruned} point(s) of removed assets" if self.pruned else "")
            + f"; {kept}",
            f"took {self.seconds:.1f}s",
        ]


async def reindex(
    service: Service,
    alias: str,
    *,
    distance: Distance | None = None,
    on_progress: Progress | None = None,
) -> ReindexReport:
    """Rebuild ``alias`` from upstream into a new physical collection and swap to it.

    ``distance`` defaults to SYNC_DISTANCE, or when resuming to the resumed collection's.
    One run (or rollback) per alias at a time: another one raises :class:`ReindexError`.
    """
    async with _exclusive(service, alias):
        return await _reindex(service, alias, distance=distance, on_progress=on_progress)


async def _reindex(
    service: Service,
    alias: str,
    *,
    distance: Distance | None,
    on_progress: Progress | None,
) -> ReindexReport:
    began = time.monotonic()
    store, sink = service.store, service.sink
    run = await store.reindex(alias)
    if run is not None and run.state == "rolling_back":
        # A new build would start from whichever collection is served and skip its catch-up.
        raise ReindexError(f"a rollback of {alias} was interrupted: run reindex --rollback first")
    if run is not None and run.state == "catching_up":
        report = await _unfinished(service, run, distance)
        await _swap_and_catch_up(service, report, run.started_at, on_progress)
        report.seconds = time.monotonic() - began
        return report
    current = await sink.alias_target(alias)
    migrated = current is None and await sink.exists(alias)
    current = alias if migrated else current
    if current is None:
        raise ReindexError(f"nothing to re-index: {alias!r} is no alias or collection in Qdrant")
    schema = await sink.schema(current)
    if not schema:
        raise ReindexError(f"{current} has no vectors: nothing to re-index")
    resumed = run is not None and run.state in RESUMABLE and run.physical not in (current, alias)
    new = run.physical if run is not None and resumed else await _next_physical(service, alias)
    kept: Distance | None = None  # the distance of the collection a resumed run filled
    if resumed and await sink.exists(new):
        kept = Distance(await sink.distance_of(new) or service.settings.distance)
    distance = distance or kept or service.settings.distance
    report = ReindexReport(alias, current, new, distance.value, resumed=resumed, migrated=migrated)
    started = await store.save_reindex(alias, state="filling", physical=new, previous=current)
    tasks = latest_tasks(await store.ledger(collection=alias))
    schema = await upstream_schema(service, tasks, schema)
    if kept is not None:  # never served (not swapped): rebuilt unless it is as asked
        built = await sink.schema(new)
        if kept != distance or any(built.get(n, s) != s for n, s in schema.items()):
            await sink.drop(new)
    # The new collection holds what the current one does: its API generation's mark (and, for
    # v1, its payload indexes) go with it.
    await sink.create_physical(new, schema, distance, generation=await sink.generation(current))
    log.info("re-index filling", extra={"event": "reindex_fill", "alias": alias, "physical": new})

    # Fill writes carry the run's start as their version: a write the daemon claims later is
    # newer and wins over them, and the catch-up's (versioned later still) replace them.
    fill = await write_assets(service, new, tasks, started.started_at, "fill", on_progress)
    report.assets, report.skipped = len(tasks) - fill.skipped, fill.skipped
    report.points, report.rejected = len(fill.expected), fill.rejected
    report.check, report.check_passed = await check_fill(service, current, new, fill, distance)
    report.seconds = time.monotonic() - began
    if not report.check_passed:
        await store.save_reindex(alias, state="check_failed", physical=new, previous=current)
        raise ReindexError(
            f"{new} failed its check ({report.check}); {alias} still serves {current}. "
            "Running reindex again fills it again.",
            report,
            held=True,
        )
    # Recorded before the swap: from here on a crash leaves a run the next reindex finishes.
    await store.save_reindex(
        alias, state="catching_up", physical=new, previous=None if migrated else current
    )
    await _swap_and_catch_up(service, report, started.started_at, on_progress)
    report.seconds = time.monotonic() - began
    return report


async def rollback(service: Service, alias: str) -> str:
    """Point ``alias`` back at the collection its last re-index replaced; returns that name.

    The run's record keeps its names; its state becomes ``rolled_back``. Assets the daemon
    synced since the run began are synced into the old collection again, and the points of
    assets removed since (forgotten, gone upstream) are pruned from it.
    """
    async with _exclusive(service, alias):
        return await _rollback(service, alias)


async def _rollback(service: Service, alias: str) -> str:
    store, sink = service.store, service.sink
    run = await store.reindex(alias)
    if run is None or run.state not in ("swapped", "catching_up", "rolling_back"):
        state = run.state if run is not None else "none"
        raise ReindexError(f"no swapped re-index of {alias!r} to roll back (last run: {state})")
    if run.previous is None:
        raise ReindexError(f"{alias} was migrated from a plain collection: nothing to go back to")
    if not await sink.exists(run.previous):
        raise ReindexError(f"cannot roll back {alias}: {run.previous} no longer exists")
    # Recorded before the alias moves: a crash below leaves a run the next rollback finishes.
    await store.save_reindex(
        alias, state="rolling_back", physical=run.physical, previous=run.previous
    )
    await sink.point_alias(alias, run.previous)
    log.info("re-index rolled back", extra={"event": "reindex_rollback", "alias": alias})
    # Since the run began (a resumed one's start time is kept): a superset of what the daemon
    # wrote into the new collection after the swap, and syncing again is idempotent.
    await catch_up(service, alias, run.started_at, None)
    await store.save_reindex(
        alias, state="rolled_back", physical=run.physical, previous=run.previous
    )
    return run.previous


@asynccontextmanager
async def _exclusive(service: Service, alias: str) -> AsyncIterator[None]:
    """Hold the alias's re-index lock (in the state store, so across processes and replicas)
    while the body runs, renewing it; a second run would fill and prune the same collection."""
    store, name, owner = service.store, f"reindex:{alias}", worker_name()
    seconds = service.settings.lease_seconds
    if not await store.acquire_lock(name, owner, seconds):
        holder = await store.lock_holder(name)
        if holder is not None and _dead_here(holder[0]):
            # Killed on this machine (e.g. kill -9): no need to wait for its lock to expire.
            await store.release_lock(name, holder[0])
        if not await store.acquire_lock(name, owner, seconds):
            left = f" (its lock expires in {holder[1]:.0f}s)" if holder is not None else ""
            raise ReindexError(
                f"another reindex or rollback of {alias} is running{left}; "
                "try again when it has ended"
            )

    async def renew() -> None:
        while True:
            await asyncio.sleep(seconds / 3)
            with suppress(*STORE_ERRORS):  # a later renewal may succeed before it expires
                await store.acquire_lock(name, owner, seconds)

    keeper = asyncio.create_task(renew())
    try:
        yield
    finally:
        keeper.cancel()
        with suppress(asyncio.CancelledError):
            await keeper
        with suppress(*STORE_ERRORS):  # if this fails, the lock expires on its own
            await store.release_lock(name, owner)


def _dead_here(owner: str) -> bool:
    """Whether lock owner ``owner`` (host:pid:…) was a process of this host that is gone."""
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


async def _unfinished(service: Service, run: Reindex, distance: Distance | None) -> ReindexReport:
    """The report of a run a crash left ``catching_up``: checked, maybe not yet swapped."""
    metric = await service.sink.distance_of(run.physical) or "-"
    if distance is not None and distance.value != metric:
        raise ReindexError(f"finish the run to {run.physical} ({metric}) first: omit --distance")
    old, migrated = run.previous or run.alias, run.previous is None
    report = ReindexReport(run.alias, old, run.physical, metric, resumed=True, migrated=migrated)
    report.check, report.check_passed = "passed before the run was interrupted", True
    return report


async def _swap_and_catch_up(
    service: Service, report: ReindexReport, since: float, on_progress: Progress | None
) -> None:
    """Point the alias at the new collection, catch it up, record ``swapped`` (re-runnable)."""
    store, sink, alias, new = service.store, service.sink, report.alias, report.new_physical
    previous = None if report.migrated else report.old_physical
    target = await sink.alias_target(alias)
    plain = target is None and await sink.exists(alias)
    if (plain and previous is not None) or target not in (None, new, previous):
        raise ReindexError(f"{alias} is not what this run replaces ({target or 'a collection'})")
    if plain:
        await sink.drop(alias)  # the gap the module docstring describes starts here...
    if target != new:
        await sink.point_alias(alias, new)  # ...and ends here
    log.info("re-index swapped", extra={"event": "reindex_swap", "alias": alias, "physical": new})
    report.caught_up, report.pruned = await catch_up(service, alias, since, on_progress)
    await store.save_reindex(alias, state="swapped", physical=new, previous=previous)


async def _next_physical(service: Service, alias: str) -> str:
    pattern = re.compile(re.escape(alias) + r"__v(\d+)")
    names = await service.sink.physical_collections()
    versions = [int(m[1]) for name in names if (m := pattern.fullmatch(name))]
    return f"{alias}__v{max(versions, default=0) + 1}"
