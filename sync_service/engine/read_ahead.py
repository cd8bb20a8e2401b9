"""Polls sent while the daemon loads: ``run``'s read-ahead.

``run`` can reach Mixpeek once its client's modules are loaded, a good while before its first
claim (SQLAlchemy, the store and the daemon's modules load in between: 0.3 s of 0.8 here), and
the connections would idle meanwhile. On a SQLite store the tasks that claim will take are
known at once (read with the standard library's driver, ``state/peek.py``): their polls go out
then, and the pipeline takes each answer instead of polling again.

An answer is only a look: the task is still claimed before anything is written. It is used
once, by this process; a task still running only while the answer is younger than
``SYNC_POLL_INTERVAL`` (a poll that recent is as fresh as the daemon's own), a finished one
whenever (it stays finished). A read-ahead poll that failed is forgotten, and the pipeline
polls itself, with its own error handling. A task another replica claims first costs one poll.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from sync_service.state.peek import peek_sqlite
from sync_service.upstream.port import TaskOutcome

if TYPE_CHECKING:
    from sync_service.upstream.port import TaskState, Upstream

log = logging.getLogger(__name__)


async def due_at_start(database_url: str, limit: int) -> list[str]:
    """The upstream tasks a claim would take now (at most ``limit``), or none when the store
    is not a SQLite file ``peek`` reads."""
    return await peek_sqlite(database_url, lambda store: store.due_tasks(limit)) or []


class ReadAhead:
    """The polls of ``task_ids``, sent at once (they queue for the client's connections)."""

    def __init__(
        self,
        upstream: Upstream,
        task_ids: Sequence[str],
        max_age: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max_age = max_age
        self._clock = clock
        self._polls: dict[str, asyncio.Task[tuple[TaskState, float]]] = {}
        self.sent = len(task_ids)
        self.used = 0
        for task_id in task_ids:
            poll = self._poll(upstream, task_id)
            self._polls[task_id] = asyncio.create_task(poll, name=f"read-ahead:{task_id}")
        log.debug("read-ahead: %d polls sent", self.sent, extra={"event": "read_ahead_sent"})

    async def _poll(self, upstream: Upstream, task_id: str) -> tuple[TaskState, float]:
        state = await upstream.get_task(task_id)
        return state, self._clock()  # the answer, and when it came

    async def take(self, task_id: str) -> TaskState | None:
        """The read-ahead answer for ``task_id`` (awaited if still on its way), once; None if
        there is none, it failed, or it is too old."""
        poll = self._polls.pop(task_id, None)
        if poll is None:
            return None
        try:
            state, answered = await poll
        except Exception:  # the pipeline's own poll meets it again, or not, and says so
            return None
        if state.outcome is TaskOutcome.PENDING and self._clock() - answered > self._max_age:
            return None  # it may have finished since: asked again
        self.used += 1
        return state

    async def close(self) -> None:
        """Stop the polls no claim took (their tasks were claimed elsewhere, or not due)."""
        left = list(self._polls.values())
        self._polls.clear()
        for poll in left:
            poll.cancel()
        await asyncio.gather(*left, return_exceptions=True)
        if self.sent:
            log.debug(
                "read-ahead: %d of %d answers used",
                self.used,
                self.sent,
                extra={"event": "read_ahead_used", "used": self.used, "sent": self.sent},
            )
