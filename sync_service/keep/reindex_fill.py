"""Re-index steps 3 and 4: size the new collection from upstream, and fill it.

Each asset the ledger lists is fetched as upstream serves it now, planned into points as the
pipeline plans them, and upserted straight into a physical collection. The catch-up after the
swap writes the same way (with pruning), so it uses :func:`write_assets` too.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from sync_service.engine.failpoints import failpoint
from sync_service.engine.pipeline import payload_task_id
from sync_service.engine.points import (
    Plan,
    PlannedPoint,
    Rejected,
    VectorSpec,
    plan_content,
    point_id_for,
)
from sync_service.keep.forget import remove_assets
from sync_service.runtime import Service
from sync_service.state.ledger import LedgerRow
from sync_service.upstream.port import MixpeekNotFound

#: Called with (stage, assets done, assets in the stage) after each asset written.
Progress = Callable[[str, int, int], None]
#: Assets a pass fetches and writes at a time.
FILL_CONCURRENCY = 8
#: Points of a fill sampled for its check (see :mod:`sync_service.keep.reindex_check`).
SAMPLE_POINTS = 20
#: Assets fetched at most, in search of one with vectors, to size the new collection.
SIZE_SAMPLE = 5


@dataclass
class Written:
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


def latest_tasks(rows: Iterable[LedgerRow]) -> dict[str, str]:
    """Asset id → the task id of its latest sync (what its points' payloads carry)."""
    latest: dict[str, LedgerRow] = {}
    for row in sorted(rows, key=lambda r: r.synced_at):
        if row.asset_id is not None:
            latest[row.asset_id] = row
    return {asset_id: row.task_id for asset_id, row in sorted(latest.items())}


async def write_assets(
    service: Service,
    target: str,
    tasks: dict[str, str],
    version: float,
    stage: str,
    on_progress: Progress | None,
    prune: bool = False,
) -> Written:
    """Fetch, plan and upsert each asset into ``target``, a few assets at a time."""
    written, todo, rng = Written(), iter(tasks), random.Random()

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
    plan = plan_content(fetched, task_id, schema, sizes)
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


async def upstream_schema(
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
        plan = plan_content(fetched, tasks[asset_id], {}, sizes)
        if plan.new_vectors:
            return {**current, **plan.new_vectors, **configured}
    return {**current, **configured}
