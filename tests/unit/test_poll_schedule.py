"""The poll schedule: blind backoff when nothing is known, dense where tasks finish, and never
later than the blind schedule (so learning can only make freshness better)."""

from __future__ import annotations

import heapq
import itertools
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sync_service.engine.poll_schedule import PollSchedule

INTERVAL, MAX = 1.0, 30.0


def blind(polls: int) -> float:
    return min(MAX, INTERVAL * 1.5 ** min(polls, 64))


def learned(durations: list[float], **kwargs: object) -> PollSchedule:
    schedule = PollSchedule(INTERVAL, MAX, **kwargs)  # type: ignore[arg-type]
    for d in durations:
        schedule.observe(seen_running_at=d, seen_done_at=d)
    return schedule


def test_a_cold_schedule_is_the_blind_backoff() -> None:
    schedule = PollSchedule(INTERVAL, MAX)
    delays = [schedule.delay(age=0.0, polls=p) for p in range(12)]
    assert delays == [blind(p) for p in range(12)]
    assert delays[-1] == MAX  # grown to the cap


def test_among_the_usual_durations_polls_come_every_interval() -> None:
    schedule = learned([5 + 20 * i / 199 for i in range(200)])  # tasks take 5-25 s
    for age in (5.0, 10.0, 17.5, 24.0):
        assert schedule.delay(age=age, polls=20) == pytest.approx(INTERVAL, rel=0.01)
    # Before the usual durations it backs off as the blind schedule does...
    assert schedule.delay(age=1.0, polls=1) == blind(1)
    # ...but not past the start of the window: after 4.75 s the blind poll would be at 8.1 s.
    assert 4.75 + schedule.delay(age=4.75, polls=3) == pytest.approx(6.0, abs=0.1)
    # Older than every task it remembers (a stuck task): it backs off again from the longest,
    # growing as the blind schedule does, capped by it, and never more often than 5 % of its age.
    assert schedule.delay(age=25.5, polls=12) == pytest.approx(25.5 * 0.05)
    assert schedule.delay(age=40.0, polls=12) == pytest.approx((40 - 25) * 0.5)
    assert schedule.delay(age=400.0, polls=12) == blind(12)


def test_a_duration_is_the_span_between_the_last_two_polls() -> None:
    schedule = PollSchedule(0.1, MAX)
    schedule.observe(seen_running_at=4.0, seen_done_at=8.0)  # it finished somewhere in (4, 8]
    assert schedule.learned == 1
    # 5 % of it lies in (4, 4.2]: a 3 s old task is polled at 4.2 s, a 6 s old one at 6.1 s.
    assert schedule.delay(age=3.0, polls=30) == pytest.approx(1.2)
    assert schedule.delay(age=6.0, polls=30) == pytest.approx(0.1)


def test_spans_of_bunched_polls_still_teach_a_dense_schedule() -> None:
    # A cold daemon polled a cohort at 0, 1, 2.5, 4.75, 8.1, 13.2 and 20.8 s: every task
    # finished inside one of those gaps, so the spans share their ends.
    polls = [0.0, 1.0, 2.5, 4.75, 8.1, 13.2, 20.8, 32.2]
    schedule = PollSchedule(INTERVAL, MAX)
    for lo, hi in itertools.pairwise(polls[3:]):
        for _ in range(10):
            schedule.observe(seen_running_at=lo, seen_done_at=hi)
    # The next cohort is polled through the gaps, not only at their ends.
    ages, polls_made = [4.75], 3
    while ages[-1] < 25:
        ages.append(ages[-1] + schedule.delay(age=ages[-1], polls=polls_made))
        polls_made += 1
    gaps = [b - a for a, b in itertools.pairwise(ages)]
    assert max(gaps) <= 2.5 and len(ages) > 10


def test_switched_off_it_learns_nothing() -> None:
    schedule = learned([5.0] * 50, learn=False)
    assert schedule.learned == 0
    assert schedule.delay(age=4.9, polls=8) == blind(8)


def test_nonsense_observations_are_ignored() -> None:
    schedule = PollSchedule(INTERVAL, MAX)
    schedule.observe(seen_running_at=5.0, seen_done_at=4.0)  # DONE before it was running
    schedule.observe(seen_running_at=-1.0, seen_done_at=4.0)  # clocks disagree
    assert schedule.learned == 0


def test_it_follows_a_workload_that_changes() -> None:
    schedule = learned([60.0] * 200)
    assert schedule.delay(age=59.5, polls=30) == INTERVAL
    for _ in range(200):  # the workload is now short texts
        schedule.observe(seen_running_at=1.0, seen_done_at=2.0)
    assert schedule.learned == 200
    # The long tasks are forgotten: a 59.5 s old task is far past the short ones.
    assert schedule.delay(age=59.5, polls=30) == pytest.approx((59.5 - 2.0) * 0.5)


@given(
    durations=st.lists(st.floats(0, 1e4, allow_nan=False), max_size=60),
    age=st.floats(0, 2e4, allow_nan=False),
    polls=st.integers(0, 100_000),  # 1.5**1751 alone would overflow a float
)
def test_never_sooner_than_the_interval_nor_later_than_the_blind_schedule(
    durations: list[float], age: float, polls: int
) -> None:
    delay = learned(durations).delay(age=age, polls=polls)
    assert INTERVAL <= delay <= blind(polls)


def _cohort(schedule: PollSchedule, durations: list[float]) -> tuple[list[float], int]:
    """Tasks of these durations, all started at 0 and polled concurrently as the schedule
    says (learning from each as it is seen DONE): each one's lag, and the polls made."""
    due = [(0.0, i, 0, 0.0) for i in range(len(durations))]  # (poll at, task, polls, last)
    lags = [0.0] * len(durations)
    made = 0
    while due:
        at, i, polls, last = heapq.heappop(due)
        made += 1
        if durations[i] <= at:
            lags[i] = at - durations[i]
            if polls:
                schedule.observe(seen_running_at=last, seen_done_at=at)
        else:
            delay = schedule.delay(age=at, polls=polls)
            heapq.heappush(due, (at + delay, i, polls + 1, at))
    return lags, made


def _p95(values: list[float]) -> float:
    return sorted(values)[int(0.95 * (len(values) - 1))]


def test_a_cohort_spread_over_minutes_is_not_polled_every_interval() -> None:
    rng = random.Random(1)
    first = [rng.uniform(10, 600) for _ in range(200)]
    _, polls = _cohort(PollSchedule(2.0, MAX), first)
    every_interval = sum(int(d / 2.0) + 2 for d in first)
    assert polls < every_interval / 2


def test_a_cold_daemon_follows_its_first_cohort_and_a_warm_one_keeps_up() -> None:
    rng = random.Random(6)
    first = [rng.uniform(5, 25) for _ in range(200)]
    second = [rng.uniform(5, 25) for _ in range(200)]
    blind_lags, blind_polls = _cohort(PollSchedule(INTERVAL, MAX, learn=False), first)
    schedule = PollSchedule(INTERVAL, MAX)
    cold, cold_polls = _cohort(schedule, first)
    warm, warm_polls = _cohort(schedule, second)
    assert _p95(blind_lags) > 5 * INTERVAL  # the blind backoff waits out grown intervals
    # Cold: from the first completions on it polls densely (the ones before cost the backoff).
    assert _p95(cold) < _p95(blind_lags) / 2
    assert _p95(warm) <= 1.5 * INTERVAL
    # The price: more polls, but fewer than polling every interval from the start.
    every_interval = sum(int(d / INTERVAL) + 2 for d in second)
    assert blind_polls < cold_polls and blind_polls < warm_polls < every_interval
