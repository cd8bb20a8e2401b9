"""The upstream breaker (``upstream/outage.py``): when an error is an outage, and how it heals."""

from __future__ import annotations

import asyncio

import pytest

from sync_service.upstream.errors import (
    MixpeekBadRequest,
    MixpeekNotFound,
    MixpeekServerError,
    MixpeekTransportError,
)
from sync_service.upstream.outage import MixpeekUnavailable, Outage, outage_like


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Probe:
    """Answers as told, and counts how often it was asked (each try of a probe); ``fails``:
    the next tries that fail even while up (a flaky Mixpeek); ``takes``: seconds each try
    moves the clock (a try that timed out)."""

    def __init__(self, answers: bool = True, clock: Clock | None = None) -> None:
        self.up = answers
        self.calls = 0
        self.fails = 0
        self.takes = 0.0
        self.clock = clock
        self.gate: asyncio.Event | None = None

    async def __call__(self) -> str | None:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.clock is not None:
            self.clock.now += self.takes
        if self.fails:
            self.fails -= 1
            return "GET /tasks/x answered 500"
        return None if self.up else "connection refused"


#: Tries of one probe that gets no answer (Outage's default).
TRIES = 3


DOWN = MixpeekTransportError("refused", error_type="ConnectError")
FIVE_HUNDRED = MixpeekServerError("boom", status=503)


def breaker(probe: Probe, clock: Clock) -> Outage:
    outage = Outage(recent=5.0, first_probe=1.0, max_probe=8.0, probe_pause=0.001, clock=clock)
    outage.attach(probe)
    return outage


def test_only_errors_an_outage_makes_are_outage_like() -> None:
    assert outage_like(DOWN) and outage_like(FIVE_HUNDRED)
    assert not outage_like(MixpeekNotFound("gone", status=404))
    assert not outage_like(MixpeekBadRequest("bad", status=400))
    assert not outage_like(ValueError("a bug"))


async def test_a_refusal_is_the_works_fault_without_asking() -> None:
    probe, clock = Probe(answers=False), Clock()
    outage = breaker(probe, clock)
    assert not await outage.confirm(MixpeekBadRequest("bad", status=422))
    assert probe.calls == 0 and not outage.is_open


async def test_a_recent_answer_proves_mixpeek_up() -> None:
    probe, clock = Probe(answers=False), Clock()
    outage = breaker(probe, clock)
    outage.answered()
    clock.now += 4.9
    assert not await outage.confirm(FIVE_HUNDRED)  # one asset's 500, not an outage
    assert probe.calls == 0


async def test_with_no_recent_answer_a_probe_decides() -> None:
    probe, clock = Probe(answers=True), Clock()
    outage = breaker(probe, clock)
    outage.answered()
    clock.now += 6
    assert not await outage.confirm(DOWN)  # the probe got an answer: the work's own error
    assert probe.calls == 1 and not outage.is_open

    probe.up = False
    clock.now += 6
    assert await outage.confirm(DOWN)
    assert outage.is_open and outage.since is not None
    assert "Mixpeek unavailable since" in outage.describe()
    assert "connection refused" in outage.describe()
    # While open, every outage-like error is the outage, with no further probe.
    assert await outage.confirm(FIVE_HUNDRED)
    assert await outage.confirm(MixpeekUnavailable("not sent"))
    assert probe.calls == 1 + TRIES


async def test_probes_back_off_while_open_and_the_first_answer_closes_it() -> None:
    probe, clock = Probe(answers=False), Clock()
    outage = breaker(probe, clock)
    changes: list[bool] = []
    outage.on_change(lambda o: changes.append(o.is_open))
    assert not await outage.check()
    waits = []
    for _ in range(5):
        start = clock.now
        while not outage.probe_due():
            clock.now += 0.25
        waits.append(clock.now - start)
        assert not await outage.check()
    assert waits == [1.0, 2.0, 4.0, 8.0, 8.0]  # doubling, capped at max_probe
    assert outage.unavailable_for() == pytest.approx(sum(waits))
    probe.up = True
    clock.now += 8
    assert await outage.check()
    assert not outage.is_open and outage.since is None and outage.reason is None
    assert not outage.probe_due()
    # Opened once, re-reported at each failed probe, closed once.
    assert changes == [True] * 6 + [False]
    # After it closed, the next outage starts its backoff from the first wait again.
    probe.up = False
    assert not await outage.check()
    clock.now += 1.0
    assert outage.probe_due()


async def test_concurrent_callers_share_one_probe() -> None:
    probe, clock = Probe(answers=False), Clock()
    probe.gate = asyncio.Event()
    outage = breaker(probe, clock)
    checks = [asyncio.create_task(outage.confirm(DOWN)) for _ in range(20)]
    await asyncio.sleep(0)
    probe.gate.set()
    assert await asyncio.gather(*checks) == [True] * 20
    assert probe.calls == TRIES  # one probe, tried TRIES times


async def test_failed_attempts_with_nothing_answering_start_a_probe_in_the_background() -> None:
    probe, clock = Probe(answers=False), Clock()
    outage = breaker(probe, clock)
    outage.answered()
    outage.failed()  # an answer 0 s ago: nothing suspected yet
    await asyncio.sleep(0)
    assert probe.calls == 0
    clock.now += 5
    outage.failed()
    outage.failed()  # one probe at a time
    await asyncio.sleep(0.05)
    assert probe.calls == TRIES and outage.is_open
    outage.failed()  # already open: the ticks probe from now on
    await asyncio.sleep(0.05)
    assert probe.calls == TRIES


async def test_a_process_that_never_got_an_answer_checks_at_once() -> None:
    probe, clock = Probe(answers=False), Clock()
    outage = breaker(probe, clock)
    assert await outage.confirm(DOWN)


async def test_without_a_probe_nothing_is_an_outage() -> None:
    outage = Outage()
    assert not await outage.confirm(DOWN)
    assert await outage.check()
    outage.failed()
    assert not outage.is_open


async def test_a_probe_that_raises_counts_as_no_answer() -> None:
    clock = Clock()
    outage = Outage(clock=clock)

    async def broken() -> str | None:
        raise OSError("network is unreachable")

    outage.attach(broken)
    assert not await outage.check()
    assert outage.reason == "network is unreachable"


async def test_a_flaky_mixpeek_is_not_an_outage() -> None:
    """A probe whose first tries answer 500 and whose next one answers: Mixpeek is up (with
    one try, a Mixpeek failing one request in five paused everything one probe in five)."""
    clock = Clock()
    probe = Probe(answers=True, clock=clock)
    outage = breaker(probe, clock)
    probe.fails = TRIES - 1
    assert not await outage.confirm(FIVE_HUNDRED)
    assert probe.calls == TRIES and not outage.is_open
    # Every try failing is an outage, with the last try's reason.
    probe.fails = TRIES
    clock.now += 6
    assert await outage.confirm(FIVE_HUNDRED)
    assert outage.is_open and outage.reason == "GET /tasks/x answered 500"


async def test_a_probe_try_that_took_its_time_is_not_repeated() -> None:
    """Tries are repeated only within probe_window (1 s) of the first: a try that timed out
    says enough, and a hung Mixpeek must not hold a failing call for three timeouts."""
    clock = Clock()
    probe = Probe(answers=False, clock=clock)
    probe.takes = 1.5
    outage = breaker(probe, clock)
    assert await outage.confirm(DOWN)
    assert probe.calls == 1 and outage.is_open


# -- Qdrant's availability (engine/availability.py): a probe that answers is a trial ----------


async def test_qdrant_answering_probes_but_failing_writes_is_one_outage(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A full disk: the probe (a read) answers, the writes fail. The outage goes on (one
    warning, the same since, waits that keep doubling), rather than "available again" at each
    probe, which kept the gauge at 1 and a drain from ever giving up."""
    from sync_service.engine import availability

    caplog.set_level("DEBUG", logger="sync_service.engine.scheduler")
    qdrant = availability.qdrant_health()
    qdrant.failed(ConnectionError("Qdrant answered 500: No space left on device"))
    since = qdrant.since

    async def answers() -> None:
        pass

    for wait in (2.0, 4.0, 8.0):
        qdrant._next_probe = 0  # due
        assert await qdrant.holding(answers) is False  # on trial: work goes through
        assert await qdrant.holding(answers) is False  # and stays through while on trial
        qdrant.failed(ConnectionError("Qdrant answered 500: No space left on device"))
        assert qdrant.down and qdrant.since == since and qdrant._wait == wait
        assert await qdrant.holding(answers) is True  # held again until the next probe
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert [getattr(r, "event", None) for r in warnings] == ["qdrant_unavailable"]


async def test_a_trial_with_nothing_failing_ends_the_outage(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sync_service.engine import availability

    monkeypatch.setattr(availability, "TRIAL", 0.05)
    qdrant = availability.qdrant_health()
    qdrant.failed(ConnectionError("refused"))

    async def answers() -> None:
        pass

    qdrant._next_probe = 0
    assert await qdrant.holding(answers) is False and qdrant.down
    await asyncio.sleep(0.06)  # no write came to say otherwise (an idle daemon)
    assert await qdrant.holding(answers) is False and not qdrant.down
