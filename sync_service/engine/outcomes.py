"""How a unit of work ends for now: failed for good, or to be tried again later.

An attempt is spent only on an error that belongs to the work. Qdrant being down is not the
task's fault, and neither is Mixpeek being down: before it counts an attempt for an upstream
error, :meth:`Outcomes.retry_later` asks the process's breaker (``upstream/outage.py``) whether
Mixpeek answers anyone. While it does not, the task waits without losing an attempt, and the
daemon claims nothing until a probe gets an answer. A state-store read failing mid-sync is
not the task's fault either.
"""

from __future__ import annotations

import logging
import random

from sync_service.control.metrics import Metrics
from sync_service.engine.persist import persist
from sync_service.settings import Settings
from sync_service.state.records import Claim
from sync_service.state.store import STORE_ERRORS, Store
from sync_service.upstream.port import MixpeekUnavailable, Outage

log = logging.getLogger("sync_service.engine.pipeline")  # the pipeline's story, one logger


class Outcomes:
    """Records a claimed task's outcome when it is not (yet) synced."""

    def __init__(self, settings: Settings, store: Store, metrics: Metrics, outage: Outage) -> None:
        self.settings = settings
        self.store = store
        self.metrics = metrics
        self.outage = outage

    async def fail(self, claim: Claim, error: str, upstream_status: str | None = None) -> None:
        """Failed for good (``retry`` re-queues it)."""
        await persist(lambda: self.store.mark_failed(claim, error, upstream_status=upstream_status))
        self.metrics.task_failed()
        log.info(
            "task failed", extra={"event": "task_failed", "task_id": claim.task_id, "error": error}
        )

    async def retry_later(
        self,
        claim: Claim,
        error: str,
        *,
        cause: BaseException | None = None,
        count_attempt: bool = True,
        done: str | None = None,
        paused: bool = False,
    ) -> None:
        """Try again later. ``cause``: the upstream error, so that an outage costs no attempt;
        ``count_attempt=False``: an outage already known (Qdrant's); ``done``: the task's asset,
        when upstream already said DONE; ``paused``: an outage that pauses the claims and was
        logged once (Qdrant's): the task is due again as soon as they resume, its wait is
        logged at DEBUG."""
        down = count_attempt and cause is not None and await self.outage.confirm(cause)
        if down:
            count_attempt = False
            said = isinstance(cause, MixpeekUnavailable)
            error = f"{error} (no attempt spent{'' if said else ': Mixpeek unavailable'})"
        elif count_attempt and isinstance(cause, STORE_ERRORS):  # a read mid-sync failed
            down, count_attempt = True, False  # due again once the store answers
            error = f"{error} (state store unavailable: no attempt spent)"
        attempt = claim.attempts + 1
        if count_attempt:
            delay = min(self.settings.max_poll_interval, self.settings.poll_interval * 2**attempt)
        elif down or paused:  # claims pause during the outage: due again once it ends
            delay = self.settings.poll_interval
        else:  # no attempt count to grow from, so wait the longest interval
            delay = self.settings.max_poll_interval
        delay *= random.uniform(0.5, 1.0)  # jitter, so a burst of failures spreads out
        limit = self.settings.max_attempts if count_attempt else None
        gave_up = await persist(
            lambda: self.store.retry_later(
                claim,
                error=error,
                delay=delay,
                max_attempts=limit,
                done_asset_id=done,
            )
        )
        if gave_up:
            self.metrics.task_failed()
        log.log(
            logging.DEBUG if paused and not gave_up else logging.WARNING,
            "task failed" if gave_up else "task will be retried",
            extra={
                "event": "task_failed" if gave_up else "task_retry",
                "task_id": claim.task_id,
                "attempt": attempt if count_attempt else None,
                "error": error,
            },
        )
