"""Backfill: one full pass and sweep over Mixpeek collections, then sync what it queued.

The pass is watch mode's full pass (``watch.py``), with every listed asset queued (a re-sync
of everything: unchanged points cost their upstream reads and no Qdrant write). Listing and
syncing are joined by the state store: each page becomes pending asset jobs in the same
transaction that moves the pass's cursor, so a crash resumes at the first page not yet
queued; the jobs are ordinary leased work, synced by this process's daemon loop or by any
running daemon (replicas included), never twice at once.

Outcomes, for a person or a CronJob (the exit codes of ``backfill``): the pass completed
(assets FAILED upstream are normal data, reported); work could not be done because of errors;
or the delete guard held a sweep.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sync_service.control.logs import describe_error
from sync_service.engine.scheduler import Daemon
from sync_service.keep.sweep import HeldSweep
from sync_service.keep.watch import Mirroring, PassReport
from sync_service.keep.watcher import holding, lock_name
from sync_service.state.store import Store
from sync_service.upstream.port import MixpeekAuthError

log = logging.getLogger(__name__)

#: Job errors that are upstream's data, not trouble: a dead link, an asset deleted meanwhile.
UPSTREAM_OUTCOMES = ("failed upstream", "asset not found upstream")

OK, ERRORS, HELD = 0, 1, 3


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
    #: Listed assets whose job failed because of upstream's data (FAILED there, or gone).
    failed_upstream: list[str] = field(default_factory=list)
    #: Jobs that failed for another reason (after their retries).
    errors: list[tuple[str, str]] = field(default_factory=list)
    passes: list[PassReport] = field(default_factory=list)
    #: Collections whose pass could not be completed, with the reason.
    pass_errors: dict[str, str] = field(default_factory=dict)
    waiting_for: str | None = None  # another process's pass of a collection, waited for

    @property
    def finished(self) -> int:
        return self.synced + self.failed

    @property
    def held(self) -> dict[str, HeldSweep]:
        return {p.collection_id: p.held for p in self.passes if p.held is not None}

    @property
    def exit_code(self) -> int:
        if self.pass_errors or self.errors or self.pending or self.stalled:
            return ERRORS
        return HELD if self.held else OK


async def backfill(
    mirroring: Mirroring,
    daemon: Daemon | None,
    collection_ids: Sequence[str],
    *,
    owner: str,
    lease_seconds: float,
    force: bool = False,
    sweep: bool = True,
    defer_sweep: bool = False,
    on_progress: Callable[[Progress], None] | None = None,
    refresh: float = 0.5,
    stall_after: float = 300.0,
) -> Progress:
    """Run a full pass over each collection and, with a ``daemon``, sync the jobs until none is
    pending. Without one (another process owns the embedded Qdrant), only queue them."""
    store = mirroring.store
    state = Progress()
    started = await store.now()
    loop = asyncio.get_running_loop()
    runner = asyncio.create_task(daemon.run()) if daemon is not None else None

    def show() -> None:
        if on_progress is not None:
            on_progress(state)

    try:
        listed: dict[str, int] = {}
        expected: dict[str, int | None] = {}
        for collection_id in collection_ids:

            def on_page(report: PassReport, total: int | None, cid: str = collection_id) -> None:
                listed[cid], expected[cid] = report.listed, total
                state.listed = sum(listed.values())
                totals = list(expected.values())
                state.expected = None if None in totals else sum(t or 0 for t in totals)
                show()

            try:
                await _wait_for_lock(store, collection_id, owner, lease_seconds, state, show)
                async with holding(store, lock_name(collection_id), owner, lease_seconds):
                    report = await mirroring.full(
                        collection_id,
                        requeue_all=True,
                        force=force,
                        sweep=sweep,
                        defer_sweep=defer_sweep,
                        on_page=on_page,
                    )
            except MixpeekAuthError:
                raise
            except Exception as exc:  # the listing, Qdrant or the store failed after retries
                state.pass_errors[collection_id] = describe_error(exc, limit=300)
                await _note_failure(store, collection_id, state.pass_errors[collection_id])
                continue
            state.passes.append(report)
            listed[collection_id] = report.listed
            state.listed = sum(listed.values())
        last_change, finished = loop.time(), -1
        while runner is not None and not runner.done():
            await _count(store, collection_ids, started, state)
            show()
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
    await _count(store, collection_ids, started, state)
    show()
    return state


async def _wait_for_lock(
    store: Store,
    collection_id: str,
    owner: str,
    seconds: float,
    state: Progress,
    show: Callable[[], None],
) -> None:
    """Take the collection's listing lock, waiting while another process's pass holds it."""
    name = lock_name(collection_id)
    while not await store.acquire_lock(name, owner, seconds):
        holder = await store.lock_holder(name)
        state.waiting_for = (
            f"{collection_id} (listed by {holder[0] if holder else 'another process'})"
        )
        show()
        await asyncio.sleep(1.0)
    state.waiting_for = None


async def _note_failure(store: Store, collection_id: str, error: str) -> None:
    try:
        await store.pass_failed(collection_id, error, retry_in=0.0, full=True)
    except Exception:  # the store itself may be what failed
        log.debug("could not record the failed pass", exc_info=True)


async def _count(
    store: Store, collection_ids: Sequence[str], since: float, state: Progress
) -> None:
    counts = await store.asset_job_counts(collection_ids, since=since)
    state.synced, state.failed, state.pending = (
        counts["synced"],
        counts["failed"],
        counts["pending"],
    )
    failures = await store.failed_asset_jobs(collection_ids, since=since)
    state.failed_upstream = sorted(a for a, e in failures if _upstream_data(e))
    state.errors = sorted((a, e) for a, e in failures if not _upstream_data(e))


def _upstream_data(error: str) -> bool:
    # The removal breaker's "points were kept" is a 404 that looks like a wrong URL: trouble.
    return error.startswith(UPSTREAM_OUTCOMES) and "were kept" not in error
