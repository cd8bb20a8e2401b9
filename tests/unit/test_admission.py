"""The upstream admission gate: concurrency bound, priorities, even pacing, AIMD on 429."""

from __future__ import annotations

import asyncio
import itertools

from sync_service.upstream.admission import FETCH, POLL, Admission


async def test_in_flight_is_bounded_and_fetches_go_before_polls() -> None:
    gate = Admission(max_in_flight=1)
    order: list[str] = []
    release = asyncio.Event()

    async def hold() -> None:
        async with gate.slot(FETCH):
            await release.wait()

    async def request(name: str, priority: int) -> None:
        async with gate.slot(priority):
            order.append(name)

    holder = asyncio.create_task(hold())
    await asyncio.sleep(0)
    waiting = [
        asyncio.create_task(request(n, p))
        for n, p in [("poll-1", POLL), ("fetch-1", FETCH), ("poll-2", POLL), ("fetch-2", FETCH)]
    ]
    await asyncio.sleep(0)
    assert gate.in_flight == 1 and order == []
    release.set()
    await asyncio.gather(holder, *waiting)
    assert order == ["fetch-1", "fetch-2", "poll-1", "poll-2"]
    assert gate.in_flight == 0


async def test_a_rate_limit_spaces_requests_evenly() -> None:
    gate = Admission(rate_per_minute=600)  # one every 0.1 s
    loop = asyncio.get_running_loop()
    times: list[float] = []

    async def request() -> None:
        async with gate.slot():
            times.append(loop.time())

    await asyncio.gather(*(request() for _ in range(6)))
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(gap >= 0.09 for gap in gaps), gaps  # never faster than the budget allows


def test_429_slows_down_and_success_recovers() -> None:
    gate = Admission(rate_per_minute=600)
    gate.rate_limited()
    gate.rate_limited()
    assert gate.current_rate == 600 * 0.8 * 0.8
    for _ in range(100):
        gate.succeeded()
    assert gate.current_rate == 600


async def test_a_cancelled_waiter_leaks_no_place() -> None:
    gate = Admission(max_in_flight=1)
    async with gate.slot():
        waiter = asyncio.create_task(gate._acquire(FETCH))
        await asyncio.sleep(0)
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
    assert gate.in_flight == 0
    async with gate.slot():
        assert gate.in_flight == 1
