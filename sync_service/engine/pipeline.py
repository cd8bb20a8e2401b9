"""One tracked task, from poll to synced: the story of docs/contract.md §1, top to bottom.

poll the task → not finished: poll again later (a growing interval), or fail it as timed out
             → FAILED upstream: record ``failed`` with the asset's error
             → DONE: fetch the asset's features and each feature's vectors, map them to points,
               upsert them into Qdrant (``wait=True``), and only then record ``synced``.

A crash between any two steps is a harmless redo: point ids are deterministic and nothing is
recorded before Qdrant acknowledged it. Outcomes are written through the lease's fencing token,
so a worker that lost its lease records nothing.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from sync_service.control.logs import describe_error
from sync_service.control.metrics import Metrics
from sync_service.engine.availability import Down, holding_back, qdrant_health
from sync_service.engine.failpoints import failpoint
from sync_service.engine.outcomes import Outcomes
from sync_service.engine.persist import persist
from sync_service.engine.points import Plan, Rejected, collection_name, excerpt, plan_content
from sync_service.engine.poll_schedule import PollSchedule, PollScheduleKind
from sync_service.engine.resync import ledger_rows, plan_writes
from sync_service.keep.forget import remove_assets
from sync_service.qdrant.faults import SinkUnavailable
from sync_service.settings import Settings
from sync_service.state.records import ASSET_JOB_PREFIX, Claim, DeadLetter, SyncResult
from sync_service.state.store import Store
from sync_service.upstream.port import (
    Asset,
    AssetContent,
    MixpeekAuthError,
    MixpeekBadRequest,
    MixpeekError,
    MixpeekNotFound,
    Outage,
    TaskOutcome,
    TaskState,
    Upstream,
)

if TYPE_CHECKING:  # its module loads Qdrant's client: not before there is work
    from sync_service.engine.read_ahead import ReadAhead
    from sync_service.qdrant.sink import QdrantSink

log = logging.getLogger(__name__)


#: The removal breaker: of the last GONE_WINDOW asset fetches (by every replica: the state
#: store keeps them), more than GONE_SHARE (and at least GONE_MIN) answering 404 stops removals
#: of "gone" assets.
GONE_WINDOW, GONE_SHARE, GONE_MIN = 50, 0.5, 5


class FatalError(Exception):
    """A problem no retry can fix (e.g. the API key was refused): the daemon must stop."""


class Pipeline:
    """Processes claimed tasks. Between tasks it keeps only what it learns (how long tasks
    take); the truth about each task, and the removal breaker's evidence, is in the store."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        upstream: Upstream,
        sink: QdrantSink,
        metrics: Metrics | None = None,
        outage: Outage | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.upstream = upstream
        self.sink = sink
        self.metrics = metrics or Metrics()
        #: The upstream's breaker; passed in when the upstream is made on first use.
        self.outage: Outage = outage or getattr(upstream, "outage", None) or Outage()
        self.outcomes = Outcomes(settings, store, self.metrics, self.outage)
        self.qdrant = qdrant_health()  # logs Qdrant's outage once, not once per task
        self.metrics.watch_qdrant(self.qdrant)
        # Fetch outcomes are shared by replicas with the same upstream: URL and namespace.
        self.upstream_key = hashlib.sha256(
            f"{settings.mixpeek_api_url}\n{settings.mixpeek_namespace or ''}".encode()
        ).hexdigest()[:32]
        #: ``run``'s polls sent before its first claim, taken instead of polling again.
        self.read_ahead: ReadAhead | None = None
        self.poll_schedule = PollSchedule(
            settings.poll_interval,
            settings.max_poll_interval,
            learn=settings.poll_schedule is PollScheduleKind.learned,
        )

    async def held_back(self) -> list[Down]:
        """What holds new claims back now, probed when due: Mixpeek's breaker, Qdrant."""
        # self.sink is read only if Qdrant is down: the sink may not be made yet (SinkInMaking)
        return await holding_back(self.outage, self.qdrant, lambda: self.sink.ping())

    async def process(self, claim: Claim) -> None:
        """Advance one claimed task as far as it can go now."""
        await failpoint("after_claim")
        if claim.task_id.startswith(ASSET_JOB_PREFIX) and claim.asset_id:
            # An asset job (backfill, repair): the asset is known; there is no task to poll.
            await self._sync(claim, claim.asset_id, None)
            return
        try:
            task = await self._poll(claim.task_id)
        except MixpeekNotFound:
            await self.outcomes.fail(claim, "task not found upstream (404)")
            return
        except MixpeekAuthError as exc:
            raise FatalError(str(exc)) from None
        except MixpeekBadRequest as exc:  # a 4xx no retry changes: fail now, with why
            await self.outcomes.fail(claim, f"polling the task was refused (not retried): {exc}")
            return
        except MixpeekError as exc:
            await self.outcomes.retry_later(claim, f"polling the task failed: {exc}", cause=exc)
            return
        await failpoint("after_poll")

        outcome = task.outcome
        if outcome is TaskOutcome.PENDING:
            await self._not_finished(claim, task)
        elif outcome is TaskOutcome.FAILED:
            reason = f"failed upstream (status {task.status})"
            if why := await self.upstream.failure_reason(task):
                reason = f"{reason}: {why}"
            await self.outcomes.fail(claim, reason, task.status)
        elif not task.asset_id:
            await self.outcomes.fail(claim, "task is DONE but names no asset_id", task.status)
        else:
            if claim.polled_at is not None and claim.upstream_done_at is None:  # was running
                self.poll_schedule.observe(
                    seen_running_at=claim.polled_at - claim.created_at,
                    seen_done_at=claim.claimed_at - claim.created_at,
                )
            if task.more_assets:
                # One claim syncs one asset; the task's others become asset jobs, queued
                # before this one is recorded, so a crash in between loses none of them.
                more = list(task.more_assets)
                await persist(lambda: self.store.enqueue_assets(more, source="task"))
            await self._sync(claim, task.asset_id, task)

    async def _poll(self, task_id: str) -> TaskState:
        """The task's state: the read-ahead's answer if one waits for it, else a poll."""
        if self.read_ahead is not None:
            state = await self.read_ahead.take(task_id)
            if state is not None:
                return state
        return await self.upstream.get_task(task_id)

    # -- the three outcomes ---------------------------------------------------------------

    async def _not_finished(self, claim: Claim, task: TaskState) -> None:
        waited = claim.claimed_at - claim.created_at
        if waited > self.settings.task_timeout:
            await self.outcomes.fail(
                claim,
                f"timed out: still {task.status or 'unfinished'} upstream after {waited:.0f}s "
                f"(SYNC_TASK_TIMEOUT={self.settings.task_timeout:g})",
                task.status,
            )
            return
        delay = self.poll_schedule.delay(age=waited, polls=claim.polls)
        await persist(
            lambda: self.store.reschedule(claim, upstream_status=task.status, delay=delay)
        )
        log.debug(
            "task not finished",
            extra={
                "event": "task_polled",
                "task_id": claim.task_id,
                "status": task.status,
                "next_poll_in": round(delay, 2),
            },
        )

    async def _sync(self, claim: Claim, asset_id: str, task: TaskState | None) -> None:
        """Sync the asset of a DONE task (or of an asset job, ``task`` None).

        Syncing again is a re-sync: only new and changed points are written, then the points
        of features gone upstream are deleted.
        """
        status = task.status if task is not None else None
        try:
            fetched = await self.fetch_asset(asset_id, only_if_done=task is None)
            if task is None and (outcome := self._asset_outcome(fetched)) is not None:
                await outcome(claim)
                return
            status = status or fetched.asset.status or "DONE"
            await failpoint("after_fetch")
            target = collection_name(self.settings.qdrant_collection_for(fetched.collection_id))
            task_id = payload_task_id(claim.task_id, fetched.asset)
            plan = plan_content(
                fetched,
                task_id,
                await self.sink.schema(target),
                self.settings.vector_sizes,
            )
            # A collection holds one API generation (v1 and 2024 points never mix).
            await self.sink.check_generation(target, fetched.generation)
            await self._make_room(target, plan, fetched.generation)
            writes = plan_writes(
                plan.points,
                await self.store.ledger(asset_id=asset_id, collection=target),
                fetched.upstream_ids,
            )
            if writes.payload_only:
                # The ledger says these points exist; one lost in Qdrant needs its vectors too.
                ids = [p.point_id for p in writes.payload_only]
                present = await self.sink.existing(target, ids)
                writes.upsert += [p for p in writes.payload_only if p.point_id not in present]
                writes.payload_only = [p for p in writes.payload_only if p.point_id in present]
            refused = await self.sink.upsert(target, writes.upsert, version=claim.claimed_at)
            await self.sink.set_payloads(target, writes.payload_only, version=claim.claimed_at)
            self.qdrant.answered()
        except MixpeekAuthError as exc:
            raise FatalError(str(exc)) from None
        except MixpeekNotFound:
            await self._asset_gone(claim, asset_id, status)
            return
        except SinkUnavailable as exc:
            # Qdrant's outage is not the task's fault: wait for it without spending attempts.
            await self._qdrant_down(claim, exc, asset_id)
            return
        except Exception as exc:  # upstream or network trouble: worth another try
            # A request refused as invalid (a 4xx, a collection name Qdrant does not allow):
            # no retry can fix it.
            from sync_service.qdrant.errors import refusal  # Qdrant's client: on error only

            why = str(exc) if isinstance(exc, MixpeekBadRequest) else refusal(exc)
            if why is not None:
                why = f"syncing the asset failed (not retried): {why}"
                await self.outcomes.fail(claim, why, status)
                return
            await self.outcomes.retry_later(
                claim, f"syncing the asset failed: {describe_error(exc)}", cause=exc, done=asset_id
            )
            return
        await failpoint("after_upsert")

        if refused:
            # Points Qdrant refused (isolated from their batches) become dead letters.
            gone = {r.point.point_id for r in refused}
            plan.points[:] = [p for p in plan.points if p.point_id not in gone]
            plan.rejected += [
                Rejected(r.point.feature_id, r.reason, excerpt(r.point.payload)) for r in refused
            ]
        if writes.removed:
            try:  # after the writes, never before: a crash here leaves extras, not gaps
                await self.sink.delete_points(target, [r.point_id for r in writes.removed])
            except SinkUnavailable as exc:
                await self._qdrant_down(claim, exc, asset_id)
                return
        rejected = [
            Rejected(f.feature_id, "feature vanished upstream (404)", excerpt(f.data))
            for f in fetched.vanished
        ] + plan.rejected
        # What upstream says the task should have made and did not (a v1 batch's shortfall).
        rejected += [Rejected(None, why, "") for why in (task.problems if task else ())]
        result = SyncResult(
            upstream_status=status,
            asset_id=asset_id,
            collection_id=fetched.collection_id,
            qdrant_collection=target,
            features=ledger_rows(plan.points),
            dead_letters=[DeadLetter(r.reason, r.feature_id, r.payload_excerpt) for r in rejected],
            removed=[r.feature_id for r in writes.removed],
            version=claim.claimed_at,
            written=frozenset(p.feature_id for p in writes.upsert + writes.payload_only),
            upstream=self.upstream_key,
            asset_stamp=fetched.asset.stamp,
        )
        lag = await persist(lambda: self.store.mark_synced(claim, result))
        self.metrics.task_synced(len(plan.points), len(rejected), lag)
        self.metrics.resynced(len(writes.unchanged), len(writes.payload_only), len(writes.removed))
        await failpoint("after_record")
        log.info(
            "task synced",
            extra={
                "event": "task_synced",
                "task_id": claim.task_id,
                "asset_id": asset_id,
                "collection": target,
                "points": len(plan.points),
                "written": len(writes.upsert) + len(writes.payload_only),
                "removed": len(writes.removed),
                "dead_letters": len(rejected),
            },
        )
        for item in rejected:
            log.warning(
                "feature set aside",
                extra={
                    "event": "dead_letter",
                    "task_id": claim.task_id,
                    "feature_id": item.feature_id,
                    "reason": item.reason,
                },
            )

    # -- steps ------------------------------------------------------------------------------

    async def fetch_asset(self, asset_id: str, *, only_if_done: bool = False) -> AssetContent:
        """The asset with every feature's vectors, as the upstream serves it.

        A method, with this pipeline's upstream, because ``verify`` and ``reindex`` fetch
        through the service's pipeline: what they compare or rebuild from is what the daemon
        syncs.
        """
        return await self.upstream.fetch_content(asset_id, only_if_done=only_if_done)

    def _asset_outcome(self, fetched: AssetContent) -> Callable[[Claim], Awaitable[None]] | None:
        """For an asset job: what to do instead of syncing when the asset is not DONE."""
        asset = fetched.asset
        if asset.outcome is TaskOutcome.SUCCEEDED:
            return None
        if asset.outcome is TaskOutcome.FAILED:
            reason = f"failed upstream (asset status {asset.status})" + (
                f": {asset.error}" if asset.error else ""
            )
            return lambda claim: self.outcomes.fail(claim, reason, str(asset.status))

        async def later(claim: Claim) -> None:
            task = TaskState(claim.task_id, str(asset.status), asset.outcome)
            await self._not_finished(claim, task)

        return later

    async def _qdrant_down(self, claim: Claim, exc: SinkUnavailable, asset_id: str | None) -> None:
        self.qdrant.failed(exc)  # one warning for the outage; each task's wait at DEBUG
        await self.outcomes.retry_later(
            claim, str(exc), count_attempt=False, done=asset_id, paused=True
        )

    async def _asset_gone(self, claim: Claim, asset_id: str, status: str | None) -> None:
        """The asset is gone upstream (404): its points go too, then the task is failed.

        Unless most assets fetched lately were "gone": that is likelier a wrong API URL, key or
        namespace than a mass deletion, so the points are kept and the task fails saying why;
        ``forget`` (or ``verify --repair``, under the delete guard) removes them on purpose.
        """
        await persist(lambda: self.store.record_fetch(self.upstream_key, asset_id, gone=True))
        recent = await persist(
            lambda: self.store.recent_fetch_outcomes(self.upstream_key, GONE_WINDOW)
        )
        gone = sum(recent)
        if gone >= GONE_MIN and gone / len(recent) > GONE_SHARE:
            reason = (
                f"asset not found upstream (404); its points were kept: {gone} of the last "
                f"{len(recent)} assets fetched were not found either (check "
                "MIXPEEK_API_URL / MIXPEEK_NAMESPACE; `sync-service forget` removes assets)"
            )
            await self.outcomes.fail(claim, reason, status)
            return
        try:
            # Only where its ledger rows are: scanning every collection per 404 would not scale.
            removed = await remove_assets(self.store, self.sink, [asset_id], every_collection=False)
        except SinkUnavailable as exc:
            await self._qdrant_down(claim, exc, None)
            return
        self.metrics.resynced(0, 0, removed)
        note = f"; its {removed} point(s) were removed from Qdrant" if removed else ""
        await self.outcomes.fail(claim, f"asset not found upstream (404){note}", status)

    async def _make_room(self, target: str, plan: Plan, generation: str) -> None:
        """Create the collection (recording ``generation``) or add the vector names the plan
        needs. A vector name Qdrant cannot add turns the features that carry it into dead
        letters."""
        refused = set(await self.sink.ensure_vectors(target, plan.new_vectors, generation))
        if not refused:
            return
        keep = []
        for point in plan.points:
            missing = refused.intersection(point.vectors)
            if missing:
                plan.rejected.append(
                    Rejected(
                        point.feature_id,
                        f"Qdrant could not add vector name(s) {sorted(missing)} to {target}",
                        excerpt(point.payload),
                    )
                )
            else:
                keep.append(point)
        plan.points[:] = keep


def payload_task_id(job_id: str, asset: Asset) -> str:
    """The ``task_id`` a job's points carry: the tracked task's own id; for an asset job
    (backfill, repair), the task upstream names on the asset, if any."""
    if job_id.startswith(ASSET_JOB_PREFIX):
        return asset.task_id or job_id
    return job_id
