"""What the state store records: a claimed task, a synced feature, a dead letter, a sync's
outcome, a mirrored collection (the values passed in and out of
:class:`~sync_service.state.store.Store`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

#: Task states, exactly (docs/contract.md §3).
STATES = ("pending", "synced", "failed")


#: Task ids of asset jobs (backfill, repair): synced straight from the asset, no task to poll.
ASSET_JOB_PREFIX = "asset:"


@dataclass(frozen=True)
class Claim:
    """A task leased to this worker; ``token`` fences every write made on its behalf."""

    task_id: str
    token: int
    polls: int
    attempts: int
    created_at: float
    asset_id: str | None
    collection_id: str | None
    upstream_done_at: float | None
    polled_at: float | None  # when a poll last saw it still running
    #: The database clock when the lease was taken (compare with ``created_at``).
    claimed_at: float
    #: The task's dead letters when claimed: none means a sync need not clear earlier ones.
    dead_letters: int = 0


@dataclass(frozen=True)
class SyncedFeature:
    """A feature whose point Qdrant acknowledged."""

    feature_id: str
    point_id: str
    asset_id: str | None
    modality: str | None
    vectors: dict[str, int]
    payload_fp: str
    vectors_fp: str


@dataclass(frozen=True)
class DeadLetter:
    """A feature (or a whole task, when ``feature_id`` is None) set aside with a reason."""

    reason: str
    feature_id: str | None = None
    payload_excerpt: str | None = None


@dataclass(frozen=True)
class SyncResult:
    """What one DONE task produced: recorded in one transaction."""

    upstream_status: str
    asset_id: str | None
    collection_id: str | None
    qdrant_collection: str | None
    features: Sequence[SyncedFeature] = field(default_factory=tuple)
    dead_letters: Sequence[DeadLetter] = field(default_factory=tuple)
    #: Features of the asset that are gone upstream and whose points were deleted.
    removed: Sequence[str] = field(default_factory=tuple)
    #: The version the points were written with (the claim's time); None: not versioned.
    version: float | None = None
    #: Feature ids actually written now; None: all. Unchanged points keep their ledger rows
    #: (and versions) as they are, exactly like their points in Qdrant.
    written: frozenset[str] | None = None
    #: The upstream configuration the asset was fetched under (the removal breaker's
    #: evidence: a fetch that found the asset); None records nothing.
    upstream: str | None = None
    #: The asset's ``updated_at`` as fetched for this sync: a listing that serves the same
    #: value has nothing new to queue.
    asset_stamp: str | None = None


@dataclass(frozen=True)
class Mirror:
    """One collection's mirroring state (a row of ``mirrors``)."""

    collection_id: str
    watched: bool
    source: str | None
    watermark: float | None
    #: The watermark, once its overlap window was listed after every late write could show.
    watermark_settled: float | None
    incremental_due_at: float | None
    full_due_at: float | None
    last_incremental_at: float | None
    last_full_at: float | None
    pass_no: int
    pass_step: str | None
    pass_next_page: int
    #: The upstream's token for that page (None: the page number suffices).
    pass_resume: str | None
    pass_total_pages: int | None
    pass_listed: int
    pass_requeue_all: bool
    pass_force: bool
    pass_no_sweep: bool
    pass_watermark: float | None
    held_points: int | None
    held_total: int | None
    held_assets: list[str]
    held_at: float | None
    filter_ignored: bool
    last_error: str | None

    @classmethod
    def from_row(cls, row: Any) -> Mirror:
        return cls(
            collection_id=row.collection_id,
            watched=bool(row.watched),
            source=row.source,
            watermark=row.watermark,
            watermark_settled=row.watermark_settled,
            incremental_due_at=row.incremental_due_at,
            full_due_at=row.full_due_at,
            last_incremental_at=row.last_incremental_at,
            last_full_at=row.last_full_at,
            pass_no=int(row.pass_no),
            pass_step=row.pass_step,
            pass_next_page=int(row.pass_next_page),
            pass_resume=row.pass_resume,
            pass_total_pages=row.pass_total_pages,
            pass_listed=int(row.pass_listed),
            pass_requeue_all=bool(row.pass_requeue_all),
            pass_force=bool(row.pass_force),
            pass_no_sweep=bool(row.pass_no_sweep),
            pass_watermark=row.pass_watermark,
            held_points=row.held_points,
            held_total=row.held_total,
            held_assets=json.loads(row.held_assets) if row.held_assets else [],
            held_at=row.held_at,
            filter_ignored=bool(row.filter_ignored),
            last_error=row.last_error,
        )


#: A daemon re-reports an outage at every probe (30 s apart at most): an older report is from a
#: process that stopped without clearing it.
OUTAGE_FRESH = 120.0


def outage_key(owner: str, what: str) -> str:
    """The ``service_info`` key of one process's report of ``what``'s outage (keys are at most
    64 long)."""
    import hashlib

    return "outage/" + hashlib.sha256(f"{what}\0{owner}".encode()).hexdigest()[:24]


def stale_outage_keys(rows: Sequence[tuple[str, str]], now: float) -> list[str]:
    """The keys of outage reports (``(key, value)`` rows) ten times older than
    ``OUTAGE_FRESH``: written by processes killed mid-outage, which never cleared them."""
    stale = []
    for key, value in rows:
        try:
            if now - float(json.loads(value)["reported"]) > 10 * OUTAGE_FRESH:
                stale.append(key)
        except (ValueError, KeyError, TypeError):
            continue  # not a report this code wrote: left alone
    return stale


def fresh_outages(values: Sequence[str], now: float) -> list[dict[str, Any]]:
    """The outage reports (``service_info`` values) made within ``OUTAGE_FRESH`` of ``now``."""
    found = []
    for value in values:
        try:
            report = json.loads(value)
            if now - float(report["reported"]) <= OUTAGE_FRESH:
                found.append(report)
        except (ValueError, KeyError, TypeError):
            continue  # not a report this code wrote: ignore rather than fail `status`
    return sorted(found, key=lambda r: str(r.get("since")))
