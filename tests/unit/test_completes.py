"""state/base.py's ``completes``: a write ends whole; the caller's cancellation comes after."""

from __future__ import annotations

import asyncio

import pytest

from sync_service.state.base import completes


class Writes:
    def __init__(self) -> None:
        self.ended: list[str] = []

    @completes
    async def write(self, name: str, seconds: float, fail: bool = False) -> str:
        await asyncio.sleep(seconds)
        if fail:
            raise RuntimeError("write failed")
        self.ended.append(name)
        return name


async def test_it_returns_what_the_write_returns() -> None:
    assert await Writes().write("a", 0) == "a"


async def test_a_cancelled_caller_waits_for_the_write_then_is_cancelled() -> None:
    writes = Writes()
    caller = asyncio.ensure_future(writes.write("a", 0.05))
    await asyncio.sleep(0.01)
    caller.cancel()
    caller.cancel()  # twice: still one whole write
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert writes.ended == ["a"]


async def test_a_timeout_around_a_write_is_still_a_timeout() -> None:
    writes = Writes()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await writes.write("a", 0.05)
    assert writes.ended == ["a"]


async def test_a_write_failing_after_the_cancellation_still_cancels_the_caller() -> None:
    caller = asyncio.ensure_future(Writes().write("a", 0.03, fail=True))
    await asyncio.sleep(0.01)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller


async def test_a_failing_write_raises_its_error() -> None:
    with pytest.raises(RuntimeError, match="write failed"):
        await Writes().write("a", 0, fail=True)
