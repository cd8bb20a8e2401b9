"""Mirroring whole Mixpeek collections: incremental passes, full passes and the deletion sweep.

An **incremental pass** asks upstream for the assets changed since the collection's watermark
(minus an overlap window for clock skew and late writes), oldest change first, and queues asset
jobs for the new and changed ones. An upstream that ignores the filter (older results come
back) gets a full pass instead, said once in the log.

A **full pass** lists every asset, page by page, each page recorded with its jobs and the
cursor in one transaction (so a crash or another replica resumes at the next page), then
**sweeps** deletions (``sweep.py``). A listing cut short by an error never sweeps.

The jobs queued here are ordinary leased work: the daemon (any replica) syncs them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sync_service.control.metrics import Metrics
from sync_service.engine.failpoints import failpoint
from sync_service.keep.sweep import HeldSweep, Sweeper
from sync_service.settings import Settings
from sync_service.state.listings import Listed
from sync_service.state.mirrors import SWEEPING
from sync_service.state.store import Store
from sync_service.upstream.port import (
    AssetPage,
    ListOrder,
    MixpeekAuthError,
    MixpeekError,
    TaskOutcome,
    Upstream,
)

if TYPE_CHECKING:  # its module loads Qdrant's client: not before there is work
    from sync_service.qdrant.sink import QdrantSink

log = logging.getLogger(__name__)

PAGE_SIZE = 100
#: The listing's order: by creation, so assets added during a pass append to its end.
FULL_SORT = ListOrder.CREATED


class ListingError(Exception):
    """A listing could not be read to its end (after the client's retries)."""


@dataclass
class PassReport:
    """What one pass over one collection found and did."""

    collection_id: str
    kind: str  # incremental | full
    listed: int = 0
    queued: list[str] = field(default_factory=list)
    failed_upstream: list[str] = field(default_factory=list)
    #: Confirmed deleted upstream (removed, unless the sweep was held or a dry run).
    gone: list[str] = field(default_factory=list)
    removed_points: int = 0
    held: HeldSweep | None = None
    swept: bool = False
    fell_back: bool = False  # an incremental pass that became a full one


class Mirroring:
    """Runs passes over collections. Stateless between calls: the state store holds it all."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        upstream: Upstream,
        sink: QdrantSink | None,
        metrics: Metrics | None = None,
        *,
        on_queued: Callable[[], None] | None = None,
        page_size: int = PAGE_SIZE,
    ) -> None:
        self.settings = settings
        self.store = store
        self.upstream = upstream
        self.sink = sink
        self.metrics = metrics or Metrics()
        self.sweeper = Sweeper(settings, store, upstream, sink, self.metrics)
        self.on_queued = on_queued
        self.page_size = page_size
        self._said_ignored: set[str] = set()
        self._said_empty: set[str] = set()
        #: The kind of pass each collection is in (an incremental one may become full).
        self.kind: dict[str, str] = {}

    # -- incremental ----------------------------------------------------------------------

    async def incremental(self, collection_id: str) -> PassReport:
        """Queue the assets changed since the watermark; a full pass if upstream ignores the
        filter or the sort, or there is no watermark yet."""
        mirror = await self.store.mirror(collection_id)
        if mirror is None or mirror.watermark is None:
            return await self.full(collection_id)
        self.kind[collection_id] = "incremental"
        started, began = await self.store.now(), time.monotonic()
        overlap = self.settings.watch_overlap
        settled = mirror.watermark_settled == mirror.watermark
        # Below a settled watermark no late write can still appear: list from it (the assets
        # stamped exactly at it come again, and are not queued twice).
        bound = mirror.watermark if settled else mirror.watermark - overlap
        report = PassReport(collection_id, "incremental")
        # Keyset paging: each request lists from the newest stamp read so far (page 1), so an
        # asset that changes meanwhile moves behind the cursor instead of shifting a page by
        # one under it. Only a page of one single stamp is paged by number.
        since, number = bound, 1
        while True:
            page = await self._page(collection_id, number, ListOrder.CHANGED, since=since)
            stamps = [a.changed_at for a in page.assets]
            known = [t for t in stamps if t is not None]
            if len(known) < len(stamps) or any(t < since - 0.001 for t in known):
                return await self._fell_back(
                    collection_id, "ignored the updated_at filter", started
                )
            if known != sorted(known):
                return await self._fell_back(
                    collection_id, "ignored the sort on updated_at", started
                )
            if mirror.filter_ignored:
                log.info(
                    "Mixpeek honours the updated_at filter of %s again",
                    collection_id,
                    extra={"event": "watch_filter_honoured", "collection_id": collection_id},
                )
                await self.store.set_filter_ignored(collection_id, False)
                mirror = await self.store.mirror(collection_id) or mirror
            await self._record(report, page, None, watermark=newest(stamps))
            if not page.has_next or not known:
                break
            if known[-1] > since:
                since, number = known[-1], 1
            else:
                number += 1
        await self.store.finish_incremental(
            collection_id,
            # Passes start an interval apart, however long each one took.
            next_in=max(self.settings.watch_interval - (time.monotonic() - began), 0.0),
            started=None if settled else started,
            overlap=overlap,
            began=started,
        )
        self.metrics.watch_pass(collection_id, "incremental", report.listed)
        self._log_pass(report)
        return report

    async def _fell_back(self, collection_id: str, what: str, began: float) -> PassReport:
        """Upstream cannot list changes: a full listing finds them instead (said once)."""
        if collection_id not in self._said_ignored:
            self._said_ignored.add(collection_id)
            log.warning(
                "Mixpeek %s when listing %s: its changes are found by full listings instead",
                what,
                collection_id,
                extra={"event": "watch_filter_ignored", "collection_id": collection_id},
            )
        await self.store.set_filter_ignored(collection_id, True)
        full = await self.full(collection_id)
        await self.store.finish_incremental(
            collection_id, next_in=self.settings.watch_interval, began=began
        )
        full.fell_back = True
        return full

    # -- full -----------------------------------------------------------------------------

    async def full(
        self,
        collection_id: str,
        *,
        requeue_all: bool = False,
        force: bool = False,
        sweep: bool = True,
        defer_sweep: bool = False,
        on_page: Callable[[PassReport, int | None], None] | None = None,
    ) -> PassReport:
        """List every asset (resuming an unfinished pass), then sweep deletions.

        ``requeue_all`` queues every listed asset (``backfill``: a re-sync of everything);
        otherwise only new and changed assets, and those never synced. ``force`` sweeps past
        the delete guard; ``sweep=False`` ends the pass without one (and leaves a held sweep
        as it is). ``defer_sweep`` leaves the listed pass for a daemon to sweep (this process
        cannot reach Qdrant). ``on_page(report, total assets upstream)`` follows the listing.
        """
        self.kind[collection_id] = "full"
        mirror = await self.store.begin_full_pass(
            collection_id, requeue_all=requeue_all, force=force, no_sweep=not sweep
        )
        report = PassReport(collection_id, "full", listed=mirror.pass_listed)
        if mirror.pass_step != SWEEPING:
            if mirror.pass_next_page > 1:
                log.info(
                    "resuming the full listing of %s at page %d",
                    collection_id,
                    mirror.pass_next_page,
                    extra={"event": "watch_resumed", "collection_id": collection_id},
                )
            else:
                # The watermark this pass leaves: upstream's newest change before it began.
                # Changes during the listing are newer, so the incremental passes after it
                # find them, on pages already listed too.
                top = await self._page(collection_id, 1, ListOrder.NEWEST_CHANGE, size=1)
                await self.store.set_pass_watermark(
                    collection_id, newest([a.changed_at for a in top.assets])
                )
                mirror = await self.store.mirror(collection_id) or mirror
            async for number, page in self._pages(
                collection_id, FULL_SORT, first=mirror.pass_next_page, resume=mirror.pass_resume
            ):
                await self._record(
                    report,
                    page,
                    (mirror.pass_no, number + 1),
                    watermark=None,
                    requeue_all=mirror.pass_requeue_all,
                )
                if on_page is not None:
                    on_page(report, page.total)
            await self.store.start_sweep(collection_id)
        if defer_sweep and not mirror.pass_no_sweep:
            await self.store.due_full_now(collection_id)
            return report
        if not mirror.pass_no_sweep:
            swept = await self.sweeper.sweep(collection_id, mirror.pass_no, force=mirror.pass_force)
            report.gone, report.held, report.swept = swept.gone, swept.held, True
            report.removed_points = swept.removed_points
        await self.store.finish_full_pass(
            collection_id,
            next_in=self.settings.watch_full_interval,
            watermark=mirror.pass_watermark,
            held=None if mirror.pass_no_sweep else report.held is not None,
            incremental_in=self.settings.watch_interval,
        )
        self.metrics.watch_pass(collection_id, "full", report.listed)
        if report.listed == 0 and collection_id not in self._said_empty:
            self._said_empty.add(collection_id)
            log.warning(
                "Mixpeek lists no asset in %s (is the collection id right? MIXPEEK_NAMESPACE?)",
                collection_id,
                extra={"event": "watch_empty", "collection_id": collection_id},
            )
        self._log_pass(report)
        return report

    async def _record(
        self,
        report: PassReport,
        page: AssetPage,
        cursor: tuple[int, int] | None,
        *,
        watermark: float | None,
        requeue_all: bool = False,
    ) -> None:
        """Record a listed page (with a full pass's (pass number, next page) ``cursor``)."""
        listed = [
            Listed(
                a.asset_id, a.stamp, failed=a.outcome is TaskOutcome.FAILED, features=a.feature_ids
            )
            for a in page.assets
        ]
        queued = await self.store.record_page(
            report.collection_id,
            listed,
            pass_no=cursor[0] if cursor else None,
            next_page=cursor[1] if cursor else None,
            resume=page.resume if cursor else None,
            total_pages=page.total_pages,
            requeue_all=requeue_all,
            heal=cursor is not None,
            watermark=watermark,
        )
        await failpoint("after_listing_page")
        report.listed += len(listed)
        report.queued += queued
        report.failed_upstream += [a.asset_id for a in listed if a.failed]
        if queued and self.on_queued is not None:
            self.on_queued()

    async def _page(
        self,
        collection_id: str,
        number: int,
        order: ListOrder,
        *,
        since: float | None = None,
        size: int | None = None,
        resume: str | None = None,
    ) -> AssetPage:
        """One page of the listing; ListingError if it cannot be read (after retries)."""
        try:
            return await self.upstream.list_assets(
                collection_id,
                order=order,
                page=number,
                page_size=size or self.page_size,
                changed_since=since,
                resume=resume,
            )
        except MixpeekAuthError:
            raise
        except MixpeekError as exc:
            raise ListingError(f"listing {collection_id} failed on page {number}: {exc}") from exc

    async def _pages(
        self, collection_id: str, order: ListOrder, *, first: int = 1, resume: str | None = None
    ) -> AsyncIterator[tuple[int, AssetPage]]:
        """(number, page) of an unfiltered listing, in order from page ``first`` (``resume``:
        the upstream's token for it, as the pass recorded it)."""
        number, previous = first, None
        while True:
            page = await self._page(collection_id, number, order, resume=resume)
            resume = None  # the upstream keeps its own place from here on
            ids = [a.asset_id for a in page.assets]
            if ids and ids == previous:  # a server ignoring ?page= would loop forever
                raise ListingError(
                    f"Mixpeek served page {number} of {collection_id} twice (does it ignore "
                    "?page=?): the listing is incomplete"
                )
            yield number, page
            if not page.has_next:
                return
            number, previous = number + 1, ids

    async def preview(self, collection_id: str) -> PassReport:
        """A dry run of a full pass and its sweep: lists and confirms, changes nothing.

        ``queued`` is every listed asset (what ``backfill`` queues; ``failed_upstream`` those
        FAILED there); ``gone`` what the sweep would remove, ``held`` whether the guard would
        hold.
        """
        report = PassReport(collection_id, "full")
        listed: set[str] = set()
        async for _number, page in self._pages(collection_id, FULL_SORT):
            for asset in page.assets:
                listed.add(asset.asset_id)
                report.queued.append(asset.asset_id)
                if asset.outcome is TaskOutcome.FAILED:
                    report.failed_upstream.append(asset.asset_id)
        report.listed = len(listed)
        candidates = sorted(await self.store.known_assets(collection_id) - listed)
        report.gone = await self.sweeper.confirm_gone(candidates)
        if report.gone:
            doomed = await self.store.ledger_counts(collection_id, report.gone)
            report.removed_points = sum(doomed.values())
            report.held = await self.sweeper.guard(collection_id, report.gone)
        return report

    # -- sweep ----------------------------------------------------------------------------

    def _log_pass(self, report: PassReport) -> None:
        # A pass that changed nothing is routine (every minute, for months): debug only.
        busy = bool(report.queued or report.gone or report.failed_upstream or report.held) or (
            report.kind == "full" and report.listed > 0
        )
        log.log(
            logging.INFO if busy else logging.DEBUG,
            "%s pass of %s: %d listed, %d queued, %d failed upstream, %d gone",
            report.kind,
            report.collection_id,
            report.listed,
            len(report.queued),
            len(report.failed_upstream),
            len(report.gone),
            extra={
                "event": "watch_pass",
                "collection_id": report.collection_id,
                "kind": report.kind,
                "listed": report.listed,
                "queued": len(report.queued),
            },
        )


def newest(stamps: Sequence[float | None]) -> float | None:
    """The newest of these change stamps (epoch seconds; None if none is known)."""
    known = [s for s in stamps if s is not None]
    return max(known) if known else None
