"""``verify``: does Qdrant hold what the state store says, and what upstream serves?

Two checks per Qdrant collection (the alias users query):

1. ledger vs Qdrant, every point: ``missing`` (ledger row, no point), ``extra`` (point the
   ledger does not know), ``differ`` (payload fingerprint or vector names/sizes disagree).
2. a random sample of assets vs upstream, mapped exactly as the pipeline maps them:
   ``not_synced``, ``stale`` (feature gone upstream), ``payload_differs``, ``vectors_differ``,
   ``gone`` (the asset itself 404s while Qdrant or the ledger still hold it).

``repair`` deletes extras and gone assets (behind the delete guard) and re-syncs every other
drifting asset through the real pipeline, then verifies again.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sync_service.engine.pipeline import FatalError, payload_task_id
from sync_service.engine.points import SparseValues, Vector, payload_fingerprint, plan_content
from sync_service.engine.scheduler import worker_name
from sync_service.keep.forget import apply_removal, check_guard, plan_removal
from sync_service.qdrant.client import models
from sync_service.qdrant.sink import VERSION_FIELD, synced_payload
from sync_service.runtime import Service
from sync_service.state.ledger import asset_job_id
from sync_service.state.store import FAILED, PENDING, SYNCED, LeaseLost, Store
from sync_service.upstream.port import MixpeekError, MixpeekNotFound

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]
LEDGER_KINDS = ("missing", "extra", "differ")  # every point
SAMPLE_KINDS = ("not_synced", "stale", "payload_differs", "vectors_differ", "gone")
EXAMPLES = 5
PAGE = 256
#: How long a repair waits for its re-sync jobs before leaving the rest to the daemon.
REPAIR_PATIENCE = 300.0


@dataclass
class CollectionCheck:
    """What one pass found in one collection, and what a repair would have to do about it."""

    collection: str
    points: int = 0
    ledger_rows: int = 0
    sampled: list[str] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    #: Sampled assets upstream could not answer for (not drift: nothing was compared).
    errors: list[str] = field(default_factory=list)
    resync: dict[str, str | None] = field(default_factory=dict)  # asset id → collection id
    forget: set[str] = field(default_factory=set)  # feature ids whose ledger rows mislead
    extras: dict[str, str | None] = field(default_factory=dict)  # point id → its asset id
    #: Unknown points written moments ago: likely a daemon's write not recorded yet.
    in_flight: int = 0
    gone: set[str] = field(default_factory=set)  # asset ids

    @property
    def drift(self) -> bool:
        return any(self.counts.values())

    def add(self, kind: str, example: str) -> None:
        self.counts[kind] += 1
        if len(self.examples[kind]) < EXAMPLES:
            self.examples[kind].append(example)

    def needs_resync(
        self, asset_id: str | None, collection_id: Any, feature_id: str | None
    ) -> None:
        if asset_id is None:
            return  # no asset to re-sync from; the report still counts it
        if self.resync.get(asset_id) is None:
            self.resync[asset_id] = str(collection_id) if collection_id else None
        if feature_id is not None:
            self.forget.add(feature_id)


@dataclass
class VerifyReport:
    checks: list[CollectionCheck]
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage
    #: After a repair: what it did, and what the verify pass after it found.
    repaired: dict[str, int] | None = None
    after: list[CollectionCheck] | None = None

    @property
    def drift(self) -> bool:
        """Whether Qdrant drifts now: after a repair, what the second pass found."""
        return any(c.drift for c in (self.after if self.after is not None else self.checks))

    def summary_lines(self) -> list[str]:
        lines = _describe(self.checks)
        if self.repaired is not None:
            lines.append("repair: " + ", ".join(f"{k} {v}" for k, v in self.repaired.items()))
            lines += ["after repair:", *("  " + line for line in _describe(self.after or []))]
        lines.append(f"drift: {'yes' if self.drift else 'no'}")
        lines.append("timings: " + ", ".join(f"{k} {v:.2f}s" for k, v in self.timings.items()))
        return lines


def _describe(checks: Sequence[CollectionCheck]) -> list[str]:
    lines = []
    for c in checks:
        lines.append(
            f"{c.collection}: {c.points} point(s), {c.ledger_rows} ledger row(s), "
            f"{len(c.sampled)} asset(s) sampled: {'drift' if c.drift else 'in step'}"
        )
        lines += [
            f"  {kind}: {c.counts[kind]} (e.g. {', '.join(c.examples[kind])})"
            for kind in LEDGER_KINDS + SAMPLE_KINDS
            if c.counts[kind]
        ]
        lines += [f"  not checked: {e}" for e in c.errors]
    return lines


async def verify(
    service: Service,
    *,
    collections: Sequence[str] | None = None,
    sample: int = 20,
    repair: bool = False,
    force: bool = False,
    on_progress: Progress | None = None,
) -> VerifyReport:
    """Check ``collections`` (default: every one the ledger names); optionally repair them.

    Raises ValueError for a collection neither the ledger nor Qdrant knows (a typo must not
    pass as "no drift"), and DeleteGuardError when a repair would delete more than
    ``SYNC_DELETE_GUARD`` of a collection (nothing is changed then) unless ``force``.
    """
    started = time.perf_counter()
    known = await service.store.ledger_collections()
    names = list(dict.fromkeys(collections)) if collections is not None else known
    for name in names:
        if name not in known and not await service.sink.exists(name):
            raise ValueError(f"unknown collection {name!r}: not in the ledger nor in Qdrant")
    report = VerifyReport([])
    # A point the ledger does not know but written within a lease of now may be a running
    # daemon's write that is not recorded yet: reported, neither drift nor deleted.
    fresh_after = await service.store.now() - service.settings.lease_seconds
    for name in names:
        rows = await service.store.ledger(collection=name)
        assets = sorted({r.asset_id for r in rows if r.asset_id is not None})
        chosen = random.sample(assets, min(max(sample, 0), len(assets)))
        report.checks.append(await _check(service, name, chosen, fresh_after, on_progress))
    report.timings["check"] = (mark := time.perf_counter()) - started
    if repair:
        report.repaired = await _repair(service, report.checks, force=force)
        report.timings["repair"] = time.perf_counter() - mark
        mark = time.perf_counter()
        # Same sample again: the assets just repaired are the ones worth re-checking.
        report.after = [
            await _check(service, c.collection, c.sampled, fresh_after, on_progress)
            for c in report.checks
        ]
        report.timings["recheck"] = time.perf_counter() - mark
    report.timings["total"] = time.perf_counter() - started
    return report


async def _check(
    service: Service,
    name: str,
    assets: Sequence[str],
    fresh_after: float,
    on_progress: Progress | None,
) -> CollectionCheck:
    check = CollectionCheck(name, sampled=list(assets))
    exists = await service.sink.exists(name)
    cosine = exists and await service.sink.distance_of(name) == "cosine"
    await _against_ledger(service, check, exists, fresh_after, on_progress)
    for done, asset_id in enumerate(assets, 1):
        await _against_upstream(service, check, asset_id, exists, cosine)
        if on_progress is not None:
            on_progress(f"{name}: sample", done, len(assets))
    return check


async def _against_ledger(
    service: Service,
    check: CollectionCheck,
    exists: bool,
    fresh_after: float,
    on_progress: Progress | None,
) -> None:
    """Every Qdrant point against its ledger row, a page at a time (vectors are big)."""
    rows = {r.point_id: r for r in await service.store.ledger(collection=check.collection)}
    check.ledger_rows = len(rows)
    seen: set[str] = set()
    total = await service.sink.count(check.collection) if exists else 0
    pages = service.sink.pages(check.collection) if exists else None
    async for page in pages or _nothing():
        for record in page:
            seen.add(point_id := str(record.id))
            row, payload = rows.get(point_id), _payload(record)
            if row is None:
                version = (record.payload or {}).get(VERSION_FIELD)
                if isinstance(version, int | float) and version >= fresh_after:
                    check.in_flight += 1
                    continue
                check.add("extra", point_id)
                asset_id = payload.get("asset_id")
                check.extras[point_id] = str(asset_id) if asset_id is not None else None
            elif payload_fingerprint(payload) != row.payload_fp or row.vectors != _sizes(record):
                check.add("differ", point_id)
                check.needs_resync(row.asset_id, payload.get("collection_id"), row.feature_id)
        check.points += len(page)
        if on_progress is not None:
            on_progress(f"{check.collection}: points", check.points, max(total, check.points))
    for point_id, row in rows.items():
        if point_id not in seen:
            check.add("missing", point_id)
            check.needs_resync(row.asset_id, None, row.feature_id)


async def _against_upstream(
    service: Service, check: CollectionCheck, asset_id: str, exists: bool, cosine: bool
) -> None:
    """One asset as upstream serves it now, planned as the pipeline would, against Qdrant."""
    name, sink = check.collection, service.sink
    ledger = await service.store.ledger(asset_id=asset_id, collection=name)
    held = set(await sink.asset_point_ids(name, asset_id)) if exists else set()
    try:
        fetched = await service.pipeline.fetch_asset(asset_id)
    except MixpeekNotFound:
        if held or ledger:  # gone and already removed is no drift
            check.add("gone", asset_id)
            check.gone.add(asset_id)
        return
    except MixpeekError as exc:
        check.errors.append(f"asset {asset_id}: {exc}")
        return
    # The pipeline's rule for an asset job: the asset's own task id, else the job's.
    newest = max(ledger, key=lambda row: row.synced_at) if ledger else None
    task_id = payload_task_id(newest.task_id if newest else asset_job_id(asset_id), fetched.asset)
    plan = plan_content(
        fetched,
        task_id,
        await sink.schema(name),
        service.settings.vector_sizes,
    )
    # By id too: a point whose payload lost its asset_id is still this asset's.
    ids = sorted(held | {p.point_id for p in plan.points})
    records = {str(r.id): r for r in await sink.retrieve(name, ids)} if exists else {}
    for point in plan.points:
        record = records.pop(point.point_id, None)
        kinds = ["not_synced"] if record is None else []
        if record is not None and _payload(record) != point.payload:
            kinds.append("payload_differs")
        if record is not None and not same_vectors(point.vectors, record.vector, cosine=cosine):
            kinds.append("vectors_differ")
        for kind in kinds:
            check.add(kind, point.feature_id)
            check.needs_resync(asset_id, fetched.collection_id, point.feature_id)
    for point_id, record in records.items():
        # A feature still upstream but now refused by the mapping keeps its point (so does
        # the pipeline). One gone upstream is stale: its ledger row is kept so the re-sync
        # deletes the point (a stale point without a row is an extra, deleted as such).
        if _payload(record).get("feature_id") not in fetched.upstream_ids:
            check.add("stale", point_id)
            check.needs_resync(asset_id, fetched.collection_id, None)


async def _repair(
    service: Service, checks: Sequence[CollectionCheck], *, force: bool
) -> dict[str, int]:
    store, sink = service.store, service.sink
    gone = {a for c in checks for a in c.gone}
    removal = await plan_removal(store, sink, gone)
    later: dict[str, set[str]] = {}  # extras of known assets: deleted after their re-sync
    for c in checks:
        rows = await store.ledger(collection=c.collection)
        # A daemon running beside us may have recorded a point since the scan: not an extra.
        recorded, known_assets = {r.point_id for r in rows}, {r.asset_id for r in rows}
        extras = {p: a for p, a in c.extras.items() if p not in recorded}
        # An extra of an asset the ledger still knows may be a feature upstream added (e.g.
        # written by a re-index's fill): re-sync the asset, then delete what is still unknown.
        later[c.collection] = {p for p, a in extras.items() if a in known_assets and a not in gone}
        for asset_id in {extras[p] for p in later[c.collection]}:
            c.needs_resync(asset_id, None, None)
        removal.strays[c.collection] |= set(extras) - later[c.collection]
    # Guard first: a refused repair changes nothing at all, re-syncs included.
    deletions = {c: removal.count(c) + len(later.get(c, ())) for c in removal.collections}
    deletions.update({c: n for c, p in later.items() if (n := len(p)) and c not in deletions})
    await check_guard(sink, deletions, service.settings.delete_guard, force=force)
    deleted = await apply_removal(store, sink, removal)
    jobs: set[str] = set()
    for c in checks:
        groups: dict[str | None, list[str]] = defaultdict(list)
        for asset_id, collection_id in c.resync.items():
            if asset_id not in gone:
                groups[collection_id].append(asset_id)
        # Jobs before forgetting: a crash in between leaves pending jobs that restore the
        # ledger rows, never forgotten rows with nothing to bring them back.
        for collection_id, assets in groups.items():
            await store.enqueue_assets(assets, collection_id=collection_id, source="repair")
            jobs |= {asset_job_id(a) for a in assets}
        # A re-sync trusts the ledger's fingerprints: rows describing points Qdrant does not
        # hold as described would make it skip exactly the points to rewrite.
        await store.forget_features(c.collection, c.forget)
    states = await _run_jobs(service, jobs)
    for collection, points in later.items():
        known = {r.point_id for r in await store.ledger(collection=collection)}
        if unknown := sorted(points - known):
            await sink.delete_points(collection, unknown)
            deleted += len(unknown)
    return {
        "deleted points": deleted,
        "re-synced assets": states[SYNCED],
        "failed": states[FAILED],
        "left pending": states[PENDING],
    }


async def _run_jobs(service: Service, jobs: set[str]) -> Counter[str | None]:
    """Process the repair jobs now, in-process; returns their states in the end."""
    settings, store = service.settings, service.store
    owner, left = f"verify:{worker_name()}", set(jobs)
    deadline = time.monotonic() + REPAIR_PATIENCE
    while left and time.monotonic() < deadline:
        claims = await store.claim_due(
            owner, settings.claim_batch, settings.lease_seconds, task_ids=left
        )
        results = await asyncio.gather(
            *(service.pipeline.process(c) for c in claims), return_exceptions=True
        )
        for result in results:
            if isinstance(result, FatalError):
                raise result
            if isinstance(result, Exception) and not isinstance(result, LeaseLost):
                log.warning("repair job failed: %s", result, extra={"event": "verify_repair"})
        left = {t for t in left if await _state(store, t) == PENDING}
        if left and not claims:  # due later (retry, not DONE yet) or leased by a daemon
            await asyncio.sleep(settings.poll_interval)
    return Counter([await _state(store, t) for t in jobs])


async def _state(store: Store, task_id: str) -> str | None:
    rows = await store.list_tasks(task_id)
    return str(rows[0]["state"]) if rows else None


async def _nothing() -> AsyncIterator[list[models.Record]]:
    """No pages (the collection does not exist)."""
    for _ in ():
        yield []


def _payload(record: models.Record) -> dict[str, Any]:
    """The payload as synced: without the version field the sink adds to every write."""
    return synced_payload(record)


def _sizes(record: models.Record) -> dict[str, int]:
    stored = record.vector if isinstance(record.vector, Mapping) else {"": record.vector}
    return {
        name: len(v.values) if isinstance(v, models.SparseVector) else len(v or [])
        for name, v in stored.items()
    }


def same_vectors(planned: Mapping[str, Vector], stored: Any, *, cosine: bool) -> bool:
    """Whether Qdrant holds ``planned``: as float32, and unit length in a cosine collection."""
    stored = stored if isinstance(stored, Mapping) else {"": stored}
    return set(planned) == set(stored) and all(
        _same(v, stored[n], cosine) for n, v in planned.items()
    )


def _same(want: Vector, got: Any, cosine: bool) -> bool:
    if isinstance(want, SparseValues):
        # Qdrant may keep the entries in another order; a sparse vector is never normalised.
        if not isinstance(got, models.SparseVector) or sorted(want.indices) != sorted(got.indices):
            return False
        a = np.asarray(want.values, dtype=np.float32)[np.argsort(want.indices)].astype(np.float64)
        b = np.asarray(got.values, dtype=np.float64)[np.argsort(got.indices)]
    elif isinstance(got, list):
        a = np.asarray(want, dtype=np.float32).astype(np.float64)
        norm = float(np.linalg.norm(a))
        a = a / norm if cosine and norm > 0 else a  # Qdrant stores cosine vectors normalised
        b = np.asarray(got, dtype=np.float64)
    else:
        return False
    return a.shape == b.shape and bool(np.allclose(a, b, rtol=1e-5, atol=1e-6))
