"""When to poll a task that is not finished yet.

The blind schedule grows the interval (x1.5 per poll, up to ``SYNC_MAX_POLL_INTERVAL``) so a
long task does not spend the upstream budget on questions; its price is freshness: a task that
finishes just after a poll waits out the grown interval (p95 7 s for tasks of 5-25 s at a 1 s
poll interval).

Tasks of one workload take similar times, so the learned schedule remembers how long the last
tasks took and polls densely where tasks are finishing: a task of age ``a`` is next polled when
``SHARE`` of the remembered tasks that were still running at age ``a`` had finished, never
sooner than the poll interval, and *never later than the blind schedule would*. It therefore
only adds polls, where completions are likely, and cannot make freshness worse. A task older
than every remembered one backs off again from the longest: the first cohort a cold daemon
sees is followed from its first completions on, and a stuck task soon polls sparsely again.
A daemon that has seen nothing finish yet polls exactly as the blind schedule does.

A duration is learned only from a task seen unfinished at least once (one tracked after it was
already DONE tells nothing about how long tasks take), as the span between the last poll that
saw it running and the one that saw it DONE: it finished somewhere in there, equally likely
anywhere. A point (say the midpoint) would not do: tasks polled on one schedule share their poll
times, so the points would bunch where the polls were and the schedule learned from them would
poll only there again, as coarsely as before, for ever.
"""

from __future__ import annotations

import bisect
from collections import deque
from enum import StrEnum

#: How many recent durations are remembered: enough for quantiles, few enough to follow a
#: workload that changes.
WINDOW = 200
#: The share of the still-running remembered tasks that may finish between two polls.
SHARE = 0.05
#: The blind schedule's growth per poll.
GROWTH = 1.5


class PollScheduleKind(StrEnum):
    learned = "learned"
    backoff = "backoff"


class PollSchedule:
    """The delay before a still-running task's next poll (one per process, not thread-safe).

    The learned durations are kept as a piecewise-linear distribution function: of the
    remembered tasks, ``_at[i]`` (a count, fractional between span ends) had finished by age
    ``_ages[i]``.
    """

    def __init__(
        self,
        interval: float,
        max_interval: float,
        *,
        learn: bool = True,
        window: int = WINDOW,
        share: float = SHARE,
    ) -> None:
        self.interval = interval
        self.max_interval = max_interval
        self.learn = learn
        self.share = share
        self._spans: deque[tuple[float, float]] = deque(maxlen=window)
        self._ages: list[float] = []
        self._at: list[float] = []
        self._stale = False

    def observe(self, *, seen_running_at: float, seen_done_at: float) -> None:
        """A task was seen running at age ``seen_running_at`` and DONE at ``seen_done_at``."""
        if not self.learn or seen_done_at < seen_running_at or seen_running_at < 0:
            return
        self._spans.append((seen_running_at, seen_done_at))
        self._stale = True

    def delay(self, *, age: float, polls: int) -> float:
        """Seconds until the next poll of a task ``age`` seconds old, polled ``polls`` times."""
        # (The exponent is capped: 1.5**1751 overflows a float, and 1.5**64 is past any cap.)
        blind = min(self.max_interval, self.interval * GROWTH ** min(polls, 64))
        if self._stale:
            self._rebuild()
        if not self._ages:
            return blind
        if age >= self._ages[-1]:
            # Older than every remembered task: back off again, but from the longest one, so a
            # cohort still finishing is followed (each completion moves that end on) and a
            # stuck task's interval grows as the blind one does. Never more often than every
            # SHARE of the task's age: a cohort finishing over ten minutes is not polled every
            # interval for ten minutes.
            past = (age - self._ages[-1]) * (GROWTH - 1)
            return min(blind, max(self.interval, past, age * self.share))
        done = self._finished_by(age)
        finishing = self._age_when(done + self.share * (len(self._spans) - done))
        return min(blind, max(self.interval, finishing - age))

    @property
    def learned(self) -> int:
        """How many durations are remembered."""
        return len(self._spans)

    def _rebuild(self) -> None:
        # Each span spreads one task evenly over its width: a sweep over the span ends, adding
        # up the slopes, gives the distribution at every end (the function is linear between).
        edges: list[tuple[float, float]] = []
        for lo, hi in self._spans:
            width = max(hi - lo, 1e-9)  # a zero-width span is a step
            edges += [(lo, 1 / width), (lo + width, -1 / width)]
        edges.sort()
        self._ages, self._at = [], []
        slope = done = 0.0
        for age, change in edges:
            if self._ages:
                done += slope * (age - self._ages[-1])
            self._ages.append(age)
            self._at.append(done)
            slope += change
        self._stale = False

    def _finished_by(self, age: float) -> float:
        i = bisect.bisect_right(self._ages, age) - 1
        if i < 0:
            return 0.0
        a0, a1, d0, d1 = self._ages[i], self._ages[i + 1], self._at[i], self._at[i + 1]
        return d0 if a1 == a0 else d0 + (d1 - d0) * (age - a0) / (a1 - a0)

    def _age_when(self, done: float) -> float:
        j = min(bisect.bisect_left(self._at, done), len(self._at) - 1)
        if j == 0:
            return self._ages[0]
        a0, a1, d0, d1 = self._ages[j - 1], self._ages[j], self._at[j - 1], self._at[j]
        return a1 if d1 == d0 else a0 + (a1 - a0) * (done - d0) / (d1 - d0)
