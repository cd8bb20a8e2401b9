"""Whether Mixpeek as a whole is down: one breaker per process, shared by every call.

A call that fails after its retries (connection errors, timeouts, 5xx) does not say whose
fault it is: one asset whose features answer 500, or Mixpeek down for everyone. Spending a
task's attempts on the second kind is how a few minutes of outage used to fail every pending
task for good. So the engine asks :meth:`Outage.confirm` before it counts an attempt: if
anything answered (any status below 500) in the last few seconds, Mixpeek is up and the error
belongs to the work; otherwise one probe request decides.

A probe that gets no answer is tried again, twice, while less than a second has passed: a
Mixpeek that answers one request in five with a 500 is flaky, not down (one probe used to decide,
and on such a Mixpeek it paused every task and failed a control-API submission at once). Only a
probe that fails every try opens the breaker: calls then fail at once with
:class:`MixpeekUnavailable` (no request is sent, so in-flight retry loops end), the daemon stops
claiming and probes again with a growing interval, and the first probe that gets an answer closes
it. Attempts failing with nothing answering for a while also start a probe in the background, so
an outage is noticed within seconds, not when the first call has used up its retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from sync_service.upstream.errors import (
    MixpeekRequestTimeout,
    MixpeekServerError,
    MixpeekTransportError,
)

__all__ = ["MixpeekUnavailable", "Outage", "outage_like"]

log = logging.getLogger(__name__)

#: A probe: None when upstream answered (any status below 500), else why it did not.
Probe = Callable[[], Awaitable[str | None]]


class MixpeekUnavailable(MixpeekTransportError):
    """The breaker is open: the call was not sent. Not retried; it costs no attempt."""

    default_retryable = False

    def _render(self) -> str:
        return self.message  # already says what and since when


def outage_like(error: BaseException) -> bool:
    """Errors an outage produces (no answer, a timeout, a 5xx), as opposed to a refusal."""
    return isinstance(error, MixpeekTransportError | MixpeekServerError | MixpeekRequestTimeout)


class Outage:
    """The breaker. ``recent``: an answer this many seconds old still proves Mixpeek up.
    ``first_probe``/``max_probe``: the growing wait between probes while it is open.
    ``probe_tries``/``probe_pause``: how often one probe asks (pausing ``probe_pause``, then
    twice that, ...) before it counts as no answer; a try is only repeated within
    ``probe_window`` seconds of the first, so a probe that timed out is not repeated."""

    what = "Mixpeek"  # in ``status``'s outage lines (engine/availability.py's ``Down``)

    def __init__(
        self,
        *,
        recent: float = 5.0,
        first_probe: float = 1.0,
        max_probe: float = 30.0,
        probe_tries: int = 3,
        probe_pause: float = 0.2,
        probe_window: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.recent = recent
        self.first_probe = first_probe
        self.max_probe = max_probe
        self.probe_tries = max(1, probe_tries)
        self.probe_pause = probe_pause
        self.probe_window = probe_window
        self._clock = clock
        self._probe: Probe | None = None
        # Nothing has answered yet: a process whose first requests fail checks at once.
        self._last_answer = float("-inf")
        self._opened_at: float | None = None
        #: When it opened (wall clock), and the last probe's reason; None while closed.
        self.since: datetime | None = None
        self.reason: str | None = None
        self._failed_probes = 0
        self._next_probe_at = 0.0
        self._probing: asyncio.Task[bool] | None = None
        self._listeners: list[Callable[[Outage], None]] = []

    # -- wiring -----------------------------------------------------------------------------

    def attach(self, probe: Probe) -> None:
        """The request that asks upstream whether it is there (the adapter's)."""
        self._probe = probe

    async def detach(self, probe: Probe) -> None:
        """No more probes through ``probe`` (the client that made it is closing); a probe
        attached since by another client stays."""
        if self._probe is not probe:
            return
        self._probe = None
        if self._probing is not None:
            self._probing.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._probing

    def on_change(self, listener: Callable[[Outage], None]) -> None:
        """Call ``listener`` each time the breaker opens or closes (metrics, the store)."""
        self._listeners.append(listener)

    # -- what the HTTP layer reports ----------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._opened_at is not None

    def answered(self) -> None:
        """An answer arrived (any status below 500): Mixpeek is there."""
        self._last_answer = self._clock()

    def failed(self) -> None:
        """An attempt got no answer or a 5xx. If nothing has answered for a while, check now
        in the background rather than when the call has used up its retries."""
        if self.is_open or self._probe is None or self._probing is not None:
            return
        if self._clock() - self._last_answer < self.recent:
            return
        with contextlib.suppress(RuntimeError):  # no running loop: nothing to probe from
            self._start_probe()

    # -- what the engine asks ------------------------------------------------------------------

    async def confirm(self, error: BaseException) -> bool:
        """Whether ``error`` (a call that failed after its retries) is Mixpeek being down,
        rather than the work's own fault. True means: spend no attempt on it."""
        if not outage_like(error):
            return False
        if isinstance(error, MixpeekUnavailable) or self.is_open:
            return True
        if self._probe is None or self._clock() - self._last_answer < self.recent:
            return False
        return not await self.check()

    def probe_due(self) -> bool:
        """Open, and the wait before the next probe is over."""
        return self.is_open and self._probing is None and self._clock() >= self._next_probe_at

    async def check(self) -> bool:
        """Probe now (one probe at a time, shared by every caller); True if Mixpeek answered."""
        if self._probe is None:
            return True
        task = self._probing or self._start_probe()
        return await asyncio.shield(task)

    def describe(self) -> str:
        """``Mixpeek unavailable since <UTC time> (<seconds> s): <reason>``, or that it is up."""
        if self.since is None:
            return "Mixpeek available"
        return (
            f"Mixpeek unavailable since {self.since:%Y-%m-%d %H:%M:%S}Z "
            f"({self.unavailable_for():.0f} s): {self.reason}"
        )

    def unavailable_for(self) -> float:
        """Seconds since it opened (0 while closed)."""
        return 0.0 if self._opened_at is None else self._clock() - self._opened_at

    # -- internals ------------------------------------------------------------------------------

    def _start_probe(self) -> asyncio.Task[bool]:
        task = asyncio.get_running_loop().create_task(self._run_probe(), name="mixpeek-probe")
        self._probing = task
        return task

    async def _run_probe(self) -> bool:
        try:
            why = await self._ask()
            if why is None:
                self._close()
                return True
            self._open(why)
            return False
        finally:
            self._probing = None

    async def _ask(self) -> str | None:
        """One probe: None as soon as a try gets an answer, else the last try's reason."""
        probe = self._probe  # detach() cancels this task: the same probe throughout
        assert probe is not None
        started = self._clock()
        pause = self.probe_pause
        for attempt in range(1, self.probe_tries + 1):
            try:
                why = await probe()
            except Exception as exc:  # the probe must decide, not raise
                why = str(exc) or type(exc).__name__
            if why is None:
                return None
            if attempt == self.probe_tries or self._clock() - started >= self.probe_window:
                break
            await asyncio.sleep(pause)
            pause *= 2
        return why

    def _open(self, why: str) -> None:
        now = self._clock()
        self._failed_probes += 1
        wait = min(self.max_probe, self.first_probe * 2 ** (self._failed_probes - 1))
        self._next_probe_at = now + wait
        self.reason = why
        if self._opened_at is not None:
            log.info(
                "Mixpeek still unavailable: %s; next probe in %.0f s",
                why,
                wait,
                extra={"event": "upstream_probe_failed", "error": why},
            )
            self._notify()  # listeners re-report it: a report that stops coming is stale
            return
        self._opened_at = now
        self.since = datetime.now(UTC)
        log.warning(
            "Mixpeek unavailable: %s; work is paused (no attempts spent) until a probe answers",
            why,
            extra={"event": "upstream_unavailable", "error": why},
        )
        self._notify()

    def _close(self) -> None:
        self._last_answer = self._clock()
        if self._opened_at is None:
            return
        down = self._clock() - self._opened_at
        self._opened_at, self.since, self.reason = None, None, None
        self._failed_probes = 0
        log.warning(
            "Mixpeek available again after %.0f s; work resumes",
            down,
            extra={"event": "upstream_available", "seconds": round(down, 1)},
        )
        self._notify()

    def _notify(self) -> None:
        for listener in self._listeners:
            try:
                listener(self)
            except Exception:  # a listener (metrics, a store write) must not break the breaker
                log.exception("outage listener failed")
