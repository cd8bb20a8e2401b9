"""Mirroring whole Mixpeek collections: incremental passes, full passes and the deletion sweep.

An **incremental pass** asks upstream for the assets changed since the collection's watermark
(minus an overlap window for clock skew and late writes), oldest change first, and queues asset
jobs for the new and changed ones. An upstream that ignores the filter (older results come
back) gets a full pass instead, said once in the log.

A **full pass** lists every asset, page by page, each page recorded with its jobs and the
cursor in one transaction (so a crash or another replica resumes at the next page), then
**sweeps**: the assets the ledger (or an earlier listing) holds for the collection that this
listing did not return are candidates; each is confirmed with a direct fetch (404 = gone,
anything else keeps it), and the gone ones' points are removed, ledger first. A listing cut
short by an error never sweeps, and a sweep that would remove more than ``SYNC_DELETE_GUARD``
of a collection's points removes nothing and is *held* until forced or the guard is raised.

The jobs queued here are ordinary leased work: the daemon (any replica) syncs them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sync_service.control.metrics import Metrics
from sync_service.engine.failpoints import failpoint
from sync_service.engine.points import collection_name
from sync_service.keep.forget import Removal, apply_removal, plan_removal
from sync_service.qdrant.sink import QdrantSink
from sync_service.settings import Settings
from sync_service.state.mirrors import SWEEPING, Listed
from sync_service.state.store import Store
from sync_service.upstream.errors import MixpeekAuthError, MixpeekError, MixpeekNotFound
from sync_service.upstream.gen_b.client import MixpeekClient
from sync_service.upstream.gen_b.models import Asset, Page, TaskOutcome, classify_status

log = logging.getLogger(__name__)

PAGE_SIZE = 100
#: The listing's order: by creation, so assets added during a pass append to its end.
FULL_SORT = ("created_at", "asc")
CHANGED_SORT = ("updated_at", "asc")
NEWEST_FIRST = ("updated_at", "desc")


class ListingError(Exception):
    """A listing could not be read to its end (after the client's retries)."""


class PassLost(Exception):
    """Another process took the collection's lock: this pass stops where it is."""


@dataclass
class HeldSweep:
    """A sweep the delete guard held: nothing was deleted."""

    points: int
    total: int
    assets: list[str]

    @property
    def share(self) -> float:
        return self.points / self.total if self.total else 0.0


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
        client: MixpeekClient,
        sink: QdrantSink | None,
        metrics: Metrics | None = None,
        *,
        on_queued: Callable[[], None] | None = None,
        page_size: int = PAGE_SIZE,
    ) -> None:
        self.settings = settings
        self.store = store
        self.client = client
        self.sink = sink
        self.metrics = metrics or Metrics()
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
            page = await self._page(collection_id, number, _changed_since(since), CHANGED_SORT)
            stamps = [_epoch(a) for a in page.results]
            known = [t for t in stamps if t is not None]
            if len(known) < len(stamps) or any(t < since - 0.001 for t in known):
                return await self._fell_back(collection_id, "ignored the updated_at filter")
            if known != sorted(known):
                return await self._fell_back(collection_id, "ignored the sort on updated_at")
            if mirror.filter_ignored:
                log.info(
                    "Mixpeek honours the updated_at filter of %s again",
                    collection_id,
                    extra={"event": "watch_filter_honoured", "collection_id": collection_id},
                )
                await self.store.set_filter_ignored(collection_id, False)
                mirror = await self.store.mirror(collection_id) or mirror
            await self._record(report, page, None, watermark=_newest(stamps))
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
        )
        self.metrics.watch_pass(collection_id, "incremental", report.listed)
        self._log_pass(report)
        return report

    async def _fell_back(self, collection_id: str, what: str) -> PassReport:
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
        await self.store.finish_incremental(collection_id, next_in=self.settings.watch_interval)
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
                newest = await self._page(collection_id, 1, None, NEWEST_FIRST, size=1)
                stamp = _newest([_epoch(a) for a in newest.results])
                await self.store.set_pass_watermark(collection_id, stamp)
                mirror = await self.store.mirror(collection_id) or mirror
            number, previous = mirror.pass_next_page, None
            while True:
                page = await self._page(collection_id, number, None, FULL_SORT)
                ids = [a.asset_id for a in page.results]
                if ids and ids == previous:  # a server ignoring ?page= would loop forever
                    raise ListingError(
                        f"Mixpeek served page {number} of {collection_id} twice (does it "
                        "ignore ?page=?): the listing is incomplete"
                    )
                previous = ids
                await self._record(
                    report,
                    page,
                    (mirror.pass_no, number + 1),
                    watermark=None,
                    requeue_all=mirror.pass_requeue_all,
                )
                if on_page is not None:
                    on_page(report, page.total)
                if not page.has_next:
                    break
                number += 1
            await self.store.start_sweep(collection_id)
        if defer_sweep and not mirror.pass_no_sweep:
            await self.store.due_full_now(collection_id)
            return report
        if not mirror.pass_no_sweep:
            await self._sweep(report, mirror.pass_no, force=mirror.pass_force)
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
        page: Page[Asset],
        cursor: tuple[int, int] | None,
        *,
        watermark: float | None,
        requeue_all: bool = False,
    ) -> None:
        """Record a listed page (with a full pass's (pass number, next page) ``cursor``)."""
        listed = [
            Listed(
                a.asset_id,
                _stamp(a),
                failed=_outcome(a) is TaskOutcome.FAILED,
            )
            for a in page.results
        ]
        queued = await self.store.record_page(
            report.collection_id,
            listed,
            pass_no=cursor[0] if cursor else None,
            next_page=cursor[1] if cursor else None,
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
        filters: dict[str, Any] | None,
        sort: tuple[str, str],
        *,
        size: int | None = None,
    ) -> Page[Asset]:
        """One page of the listing; ListingError if it cannot be read (after retries)."""
        try:
            return await self.client.list_assets(
                collection_id,
                page=number,
                page_size=size or self.page_size,
                filters=filters,
                sort=sort,
            )
        except MixpeekAuthError:
            raise
        except MixpeekError as exc:
            raise ListingError(f"listing {collection_id} failed on page {number}: {exc}") from exc

    async def _pages(self, collection_id: str, sort: tuple[str, str]) -> AsyncIterator[Page[Asset]]:
        """Every page of an unfiltered listing, in order."""
        number, previous = 1, None
        while True:
            page = await self._page(collection_id, number, None, sort)
            ids = [a.asset_id for a in page.results]
            if ids and ids == previous:  # a server ignoring ?page= would loop forever
                raise ListingError(
                    f"Mixpeek served page {number} of {collection_id} twice (does it ignore "
                    "?page=?): the listing is incomplete"
                )
            yield page
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
        async for page in self._pages(collection_id, FULL_SORT):
            for asset in page.results:
                listed.add(asset.asset_id)
                report.queued.append(asset.asset_id)
                if _outcome(asset) is TaskOutcome.FAILED:
                    report.failed_upstream.append(asset.asset_id)
        report.listed = len(listed)
        candidates = sorted(await self.store.known_assets(collection_id) - listed)
        report.gone = await self.confirm_gone(candidates)
        if report.gone:
            doomed = await self.store.ledger_counts(collection_id, report.gone)
            report.removed_points = sum(doomed.values())
            report.held = await self.guard(collection_id, report.gone)
        return report

    # -- sweep ----------------------------------------------------------------------------

    async def _sweep(self, report: PassReport, pass_no: int, *, force: bool) -> None:
        """Remove the assets this full listing did not return that upstream confirms gone."""
        cid = report.collection_id
        candidates = await self.store.sweep_candidates(cid, pass_no)
        gone = await self.confirm_gone(candidates)
        report.gone = gone
        report.swept = True
        if not gone:
            return
        # The guard first, on the ledger's counts: planning a removal scans Qdrant per asset,
        # which a held sweep (repeated every full pass) must not pay for.
        held = await self.guard(cid, gone)
        if held is not None and not force:
            report.held = held
            await self.store.hold_sweep(cid, points=held.points, total=held.total, assets=gone)
            self.metrics.watch_held(cid)
            log.warning(
                "sweep of %s held: it would delete %d of %d points (%.0f%%, %d assets gone "
                "upstream), more than SYNC_DELETE_GUARD=%.0f%%; nothing deleted. Check "
                "MIXPEEK_API_URL/MIXPEEK_NAMESPACE, then `sync-service backfill --collection-id "
                "%s --force` removes them (`--dry-run` lists them)",
                cid,
                held.points,
                held.total,
                held.share * 100,
                len(gone),
                self.settings.delete_guard * 100,
                cid,
                extra={"event": "sweep_held", "collection_id": cid},
            )
            return
        # The intent is durable before anything goes: a sweep killed half-way finishes the
        # removal of these (ledger rows and strays alike) on its next run.
        await self.store.mark_gone(cid, gone)
        removal = await self.plan(cid, gone)
        report.removed_points = await apply_removal(self.store, self.qdrant, removal)
        await self.store.forget_mirror_assets(cid, gone)
        self.metrics.watch_swept(cid, len(gone))
        self.metrics.resynced(0, 0, report.removed_points)
        log.info(
            "swept %d asset(s) deleted upstream from %s (%d point(s))",
            len(gone),
            cid,
            report.removed_points,
            extra={"event": "sweep_removed", "collection_id": cid, "assets": len(gone)},
        )

    async def confirm_gone(self, candidates: Sequence[str]) -> list[str]:
        """Of these assets, those upstream answers 404 for (any other answer keeps one)."""

        async def gone(asset_id: str) -> bool:
            try:
                await self.client.get_asset(asset_id)
            except MixpeekNotFound:
                return True
            except MixpeekAuthError:
                raise
            except MixpeekError as exc:
                log.warning(
                    "kept %s: confirming its deletion failed: %s",
                    asset_id,
                    exc,
                    extra={"event": "sweep_unconfirmed", "asset_id": asset_id},
                )
            return False

        answers = await asyncio.gather(*(gone(a) for a in candidates))
        return [a for a, g in zip(candidates, answers, strict=True) if g]

    @property
    def qdrant(self) -> QdrantSink:
        if self.sink is None:
            raise RuntimeError("this pass needs Qdrant, which another process holds")
        return self.sink

    async def plan(self, collection_id: str, asset_ids: Sequence[str]) -> Removal:
        """What removing these assets deletes: their ledger rows, plus any point their
        collection's Qdrant collection holds with their ``asset_id`` (a killed removal's)."""
        target = collection_name(self.settings.qdrant_collection_for(collection_id))
        return await plan_removal(
            self.store, self.qdrant, asset_ids, every_collection=False, also=[target]
        )

    async def guard(self, collection_id: str, gone: Sequence[str]) -> HeldSweep | None:
        """The delete guard: held when removing ``gone`` would delete more than
        ``SYNC_DELETE_GUARD`` of this Mixpeek collection's points (per Qdrant collection).

        Measured against the collection's own points, not the Qdrant collection's: where
        several Mixpeek collections share one, a wrong listing of each would otherwise pass
        the guard one small share at a time."""
        doomed = await self.store.ledger_counts(collection_id, gone)
        own = await self.store.collection_points(collection_id)
        for qdrant_collection, points in sorted(doomed.items()):
            total = own.get(qdrant_collection, 0)
            if total and points / total > self.settings.delete_guard:
                return HeldSweep(points, total, list(gone))
        return None

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


@contextlib.asynccontextmanager
async def holding(store: Store, name: str, owner: str, seconds: float) -> AsyncIterator[None]:
    """Hold lock ``name`` (already acquired by ``owner``) while the body runs: renewed every
    third of ``seconds``; if another process takes it (it expired), the body is cancelled."""
    body = asyncio.current_task()
    lost = False

    async def renew() -> None:
        nonlocal lost
        while True:
            await asyncio.sleep(seconds / 3)
            try:
                held = await store.acquire_lock(name, owner, seconds)
            except Exception:
                continue  # the store is down: the body's own writes fail too
            if not held and body is not None:
                log.warning("lost the lock %s; stopping", name, extra={"event": "lock_lost"})
                lost = True
                body.cancel()
                return

    renewer = asyncio.create_task(renew())
    try:
        yield
    except asyncio.CancelledError:
        # Cancelled by the renewer (and by nothing else): the pass, not the process, ends.
        if lost and body is not None and body.uncancel() == 0:
            raise PassLost(f"another process took the lock {name}") from None
        raise
    finally:
        renewer.cancel()
        with contextlib.suppress(Exception):
            await asyncio.shield(store.release_lock(name, owner))


def lock_name(collection_id: str) -> str:
    """The lock that lets one process at a time list a collection."""
    return f"watch:{collection_id}"


class Watcher:
    """Watch mode in the daemon: runs each watched collection's due passes, one replica per
    collection at a time (a renewed lock in the state store)."""

    def __init__(
        self,
        mirroring: Mirroring,
        *,
        owner: str,
        lease_seconds: float,
        on_fatal: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.mirroring = mirroring
        self.store = mirroring.store
        self.owner = owner
        self.lease_seconds = lease_seconds
        self.on_fatal = on_fatal
        self.running: dict[str, asyncio.Task[None]] = {}
        self.stopping = False
        self._ticking = asyncio.Lock()

    async def tick(self) -> None:
        """Start the passes that are due and not running anywhere (one tick at a time: the
        lock is this process's for every pass it runs, so it cannot tell two ticks apart)."""
        if self._ticking.locked():
            return
        async with self._ticking:
            await self._start_due()

    async def _start_due(self) -> None:
        for collection_id, _kind in await self.store.due_mirrors():
            if collection_id in self.running or self.stopping:
                continue
            name = lock_name(collection_id)
            if not await self.store.acquire_lock(name, self.owner, self.lease_seconds):
                continue  # another replica lists it
            # Read again under the lock: a replica may have just finished this very pass.
            kind = dict(await self.store.due_mirrors()).get(collection_id)
            if kind is None or self.stopping:
                await self.store.release_lock(name, self.owner)
                continue
            task = asyncio.create_task(
                self._run(collection_id, kind), name=f"watch:{collection_id}"
            )
            self.running[collection_id] = task
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        for collection_id, running in list(self.running.items()):
            if running is task:
                del self.running[collection_id]

    async def stop(self) -> None:
        """Cut the passes short (each resumes at its next page) and hand their locks back."""
        self.stopping = True
        for task in list(self.running.values()):
            task.cancel()
        await asyncio.gather(*self.running.values(), return_exceptions=True)

    async def _run(self, collection_id: str, kind: str) -> None:
        try:
            async with holding(
                self.store, lock_name(collection_id), self.owner, self.lease_seconds
            ):
                await self._pass(collection_id, kind)
        except PassLost as exc:  # another replica took over; it resumes the pass
            log.warning("%s", exc, extra={"event": "lock_lost", "collection_id": collection_id})

    async def _pass(self, collection_id: str, kind: str) -> None:
        try:
            if kind == "full":
                await self.mirroring.full(collection_id)
            else:
                await self.mirroring.incremental(collection_id)
        except asyncio.CancelledError:
            raise
        except MixpeekAuthError as exc:
            await self._failed(collection_id, str(exc), kind)
            if self.on_fatal is not None:
                self.on_fatal(exc)
        except Exception as exc:  # upstream, Qdrant or store trouble: try again later
            await self._failed(collection_id, _describe(exc), kind)

    async def _failed(self, collection_id: str, error: str, kind: str) -> None:
        full = self.mirroring.kind.get(collection_id, kind) == "full"
        retry_in = min(self.mirroring.settings.watch_interval, 30.0)
        log.warning(
            "watch pass of %s failed (tried again in %.0fs): %s",
            collection_id,
            retry_in,
            error,
            extra={"event": "watch_pass_failed", "collection_id": collection_id},
        )
        with contextlib.suppress(Exception):
            await self.store.pass_failed(collection_id, error, retry_in=retry_in, full=full)


def _stamp(asset: Asset) -> str | None:
    """The asset's ``updated_at`` exactly as served: what tells a changed asset apart."""
    raw = asset.raw.get("updated_at")
    return None if raw is None else str(raw)[:64]


def _epoch(asset: Asset) -> float | None:
    """The asset's ``updated_at`` in epoch seconds (a naive timestamp is taken as UTC)."""
    when = asset.updated_at
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def _newest(stamps: Sequence[float | None]) -> float | None:
    known = [s for s in stamps if s is not None]
    return max(known) if known else None


def _changed_since(epoch: float) -> dict[str, Any]:
    return {"AND": [{"key": "updated_at", "operator": "gte", "value": _iso(epoch)}]}


def _iso(epoch: float) -> str:
    """A filter value in the form upstream serves its own timestamps (naive UTC, µs)."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")


def _outcome(asset: Asset) -> TaskOutcome:
    return classify_status(asset.status) if asset.status else TaskOutcome.SUCCEEDED


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def watch_view(store: Store) -> list[dict[str, Any]]:
    """Each watched collection (and any other with a pass under way or a held sweep), as
    ``status``, ``watch list`` and the control API show it."""
    now = await store.now()
    known = await store.assets_known()
    rows = []
    for m in await store.mirrors():
        if not (m.watched or m.pass_step or m.held_at is not None):
            continue
        step = m.pass_step
        if step == "listing":
            total = f" of {m.pass_total_pages}" if m.pass_total_pages else ""
            step = f"full: listing page {m.pass_next_page}{total}"
        elif step is not None:
            step = "full: sweeping"
        rows.append(
            {
                "collection_id": m.collection_id,
                "watched": m.watched,
                "source": m.source,
                "last_incremental_ago": _age(now, m.last_incremental_at),
                "last_full_ago": _age(now, m.last_full_at),
                "lag_seconds": _age(now, m.watermark),
                "assets_known": known.get(m.collection_id, 0),
                "pass": step,
                "held_sweep": None
                if m.held_at is None
                else {
                    "points": m.held_points,
                    "total": m.held_total,
                    "assets": m.held_assets,
                    "held_ago": _age(now, m.held_at),
                },
                "filter_ignored": m.filter_ignored,
                "last_error": m.last_error,
            }
        )
    return rows


def _age(now: float, then: float | None) -> float | None:
    return None if then is None else round(max(now - then, 0.0), 1)
