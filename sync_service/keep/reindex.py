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
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import re
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field

from sync_service.engine.failpoints import failpoint
from sync_service.engine.pipeline import payload_task_id
from sync_service.engine.points import (
    Plan,
    PlannedPoint,
    Rejected,
    VectorSpec,
    plan_points,
    point_id_for,
)
from sync_service.engine.scheduler import worker_name
from sync_service.keep.forget import remove_assets
from sync_service.keep.verify import same_vectors
from sync_service.qdrant.sink import VERSION_FIELD, synced_payload
from sync_service.runtime import Service
from sync_service.settings import Distance
from sync_service.state.ledger import LedgerRow, Reindex
from sync_service.state.store import STORE_ERRORS
from sync_service.upstream.errors import MixpeekNotFound

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]
FILL_CONCURRENCY = 8
SAMPLE_POINTS = 20
#: Assets fetched at most, in search of one with vectors, to size the new collection.
SIZE_SAMPLE = 5
#: How often the catch-up looks whether the leases held at the swap are released, and how
#: long past SYNC_LEASE_SECONDS it waits for them at most.
LEASE_POLL, LEASE_MARGIN = 0.2, 5.0
#: States whose collection was never served: a new run resumes filling it.
RESUMABLE = ("filling", "check_failed")


class ReindexError(Exception):
    """A re-index that cannot start, or whose new collection failed its check (not swapped)."""

    def __init__(self, message: str, report: ReindexReport | None = None) -> None:
        super().__init__(message)
        self.report = report


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


@dataclass
class _Written:
    """What a pass wrote, and a uniform random sample of it to check (a reservoir)."""

    expected: set[str] = field(default_factory=set)
    sample: list[PlannedPoint] = field(default_factory=list)
    done: int = 0
    skipped: int = 0
    rejected: int = 0

    def add(self, plan: Plan, rng: random.Random) -> None:
        self.rejected += len(plan.rejected)
        for point in plan.points:
            self.expected.add(point.point_id)
            if len(self.sample) < SAMPLE_POINTS:
                self.sample.append(point)
            elif (slot := rng.randrange(len(self.expected))) < SAMPLE_POINTS:
                self.sample[slot] = point


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
    tasks = _latest_tasks(await store.ledger(collection=alias))
    schema = await _upstream_schema(service, tasks, schema)
    if kept is not None:  # never served (not swapped): rebuilt unless it is as asked
        built = await sink.schema(new)
        if kept != distance or any(built.get(n, s) != s for n, s in schema.items()):
            await sink.drop(new)
    await sink.create_physical(new, schema, distance)
    log.info("re-index filling", extra={"event": "reindex_fill", "alias": alias, "physical": new})

    # Fill writes carry the run's start as their version: a write the daemon claims later is
    # newer and wins over them, and the catch-up's (versioned later still) replace them.
    fill = await _write_assets(service, new, tasks, started.started_at, "fill", on_progress)
    report.assets, report.skipped = len(tasks) - fill.skipped, fill.skipped
    report.points, report.rejected = len(fill.expected), fill.rejected
    report.check, report.check_passed = await _check(service, current, new, fill, distance)
    report.seconds = time.monotonic() - began
    if not report.check_passed:
        await store.save_reindex(alias, state="check_failed", physical=new, previous=current)
        raise ReindexError(
            f"{new} failed its check ({report.check}); {alias} still serves {current}. "
            "Running reindex again fills it again.",
            report,
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
    await _catch_up(service, alias, run.started_at, None)
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
    report.caught_up, report.pruned = await _catch_up(service, alias, since, on_progress)
    await store.save_reindex(alias, state="swapped", physical=new, previous=previous)


async def _next_physical(service: Service, alias: str) -> str:
    pattern = re.compile(re.escape(alias) + r"__v(\d+)")
    names = await service.sink.physical_collections()
    versions = [int(m[1]) for name in names if (m := pattern.fullmatch(name))]
    return f"{alias}__v{max(versions, default=0) + 1}"


def _latest_tasks(rows: Iterable[LedgerRow]) -> dict[str, str]:
    """Asset id → the task id of its latest sync (what its points' payloads carry)."""
    latest: dict[str, LedgerRow] = {}
    for row in sorted(rows, key=lambda r: r.synced_at):
        if row.asset_id is not None:
            latest[row.asset_id] = row
    return {asset_id: row.task_id for asset_id, row in sorted(latest.items())}


async def _write_assets(
    service: Service,
    target: str,
    tasks: dict[str, str],
    version: float,
    stage: str,
    on_progress: Progress | None,
    prune: bool = False,
) -> _Written:
    """Fetch, plan and upsert each asset into ``target``, a few assets at a time."""
    written, todo, rng = _Written(), iter(tasks), random.Random()

    async def worker() -> None:
        for asset_id in todo:  # one shared iterator: each asset goes to exactly one worker
            plan = await _write_asset(service, target, asset_id, tasks[asset_id], version, prune)
            if plan is None:
                written.skipped += 1
            else:
                written.add(plan, rng)
            written.done += 1
            await failpoint("after_reindex_asset")
            if on_progress is not None:
                on_progress(stage, written.done, len(tasks))

    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(min(FILL_CONCURRENCY, len(tasks))):
                group.create_task(worker())
    except ExceptionGroup as failed:  # the first error stops the others: raise it as itself
        raise failed.exceptions[0] from None
    return written


async def _write_asset(
    service: Service, target: str, asset_id: str, task_id: str, version: float, prune: bool
) -> Plan | None:
    """One asset as upstream serves it now, into ``target``; None if it is gone upstream.

    With ``prune`` (a catch-up, into a collection the daemon may have changed), an asset gone
    upstream is removed as the daemon removes one, and so are points of features gone upstream.
    """
    sink = service.sink
    try:
        fetched = await service.pipeline.fetch_asset(asset_id)
    except MixpeekNotFound:
        if prune:
            await remove_assets(service.store, sink, [asset_id])
        return None
    task_id = payload_task_id(task_id, fetched.asset)
    schema, sizes = await sink.schema(target), service.settings.vector_sizes
    plan = plan_points(fetched.features, fetched.asset, task_id, schema, sizes)
    # A vector name upstream serves now and the collection lacks is added, as the pipeline does.
    lacking = set(await sink.ensure_vectors(target, plan.new_vectors))
    refused = {p.point_id: "vector name refused" for p in plan.points if lacking & set(p.vectors)}
    kept = [p for p in plan.points if p.point_id not in refused]
    refused |= {r.point.point_id: r.reason for r in await sink.upsert(target, kept, version)}
    dropped = [p for p in plan.points if p.point_id in refused]
    plan.rejected += [Rejected(p.feature_id, refused[p.point_id], "") for p in dropped]
    plan.points[:] = [p for p in plan.points if p.point_id not in refused]
    if prune:  # a feature refused now keeps its point, as in the pipeline: only gone ones go
        keep = {point_id_for(f) for f in fetched.upstream_ids}
        held = await sink.asset_point_ids(target, asset_id)
        await sink.delete_points(target, [i for i in held if i not in keep])
    return plan


async def _check(
    service: Service, current: str, physical: str, fill: _Written, distance: Distance
) -> tuple[str, bool]:
    """Whether ``physical`` holds exactly the planned points, and the sample as planned."""
    sink, guard = service.sink, service.settings.delete_guard
    held = set(await sink.point_ids(physical))
    # Points a crashed fill wrote for features gone upstream since: no ledger would know them.
    await sink.delete_points(physical, sorted(held - fill.expected))
    count, before = await sink.count(physical), await sink.count(current)
    if before and (before - count) / before > guard:
        # Upstream 404ing most assets is likelier a wrong key or namespace than a mass deletion.
        return f"{count} point(s) where {current} has {before}: over SYNC_DELETE_GUARD", False
    if count != len(fill.expected):
        lost = sorted(fill.expected - held)[:3]
        return f"{count} point(s), {len(fill.expected)} planned (lost e.g. {lost})", False
    ids = [p.point_id for p in fill.sample]
    records = {str(r.id): r for r in await sink.retrieve(physical, ids)} if ids else {}
    cosine = distance is Distance.cosine
    wrong = [
        p.point_id
        for p in fill.sample
        if (r := records.get(p.point_id)) is None
        or synced_payload(r) != p.payload
        or not same_vectors(p.vectors, r.vector, cosine=cosine)
    ]
    if wrong:
        return f"{len(wrong)} of {len(ids)} sampled point(s) differ: {wrong[:3]}", False
    return f"{count} point(s) as planned; {len(ids)} sampled point(s) match upstream", True


async def _catch_up(
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
    tasks = _latest_tasks(r for r in rows if r.synced_at >= since)
    await _write_assets(service, alias, tasks, version, "catch-up", on_progress, prune=True)
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


async def _upstream_schema(
    service: Service, tasks: Mapping[str, str], current: Mapping[str, VectorSpec]
) -> dict[str, VectorSpec]:
    """The new collection's vectors as configured, else as upstream serves them now, else as
    in ``current``.

    A re-index may be what moves a collection to a new embedding size, so the sizes of the
    collection it replaces are only a fallback for names the sampled asset lacks. A size
    ``SYNC_VECTOR_SIZES`` lists wins over both, as when the pipeline creates a collection.
    """
    sizes = service.settings.vector_sizes
    configured = {n: VectorSpec(size=sizes[n]) for n in current if n in sizes}
    for asset_id in list(tasks)[:SIZE_SAMPLE]:
        try:
            fetched = await service.pipeline.fetch_asset(asset_id)
        except MixpeekNotFound:
            continue  # the fill skips it too
        plan = plan_points(fetched.features, fetched.asset, tasks[asset_id], {}, sizes)
        if plan.new_vectors:
            return {**current, **plan.new_vectors, **configured}
    return {**current, **configured}
