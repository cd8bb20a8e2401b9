"""The report of a stop that hangs (engine/stall.py): where each thread and task waits."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import pytest

from sync_service.engine.stall import report_stall, where_everything_is


async def test_the_report_names_the_stuck_thread_and_the_await_a_task_hangs_on() -> None:
    release = threading.Event()

    def blocked_worker() -> None:
        release.wait()

    worker = threading.Thread(target=blocked_worker, name="stuck-worker", daemon=True)
    worker.start()

    async def waits_forever() -> None:
        await asyncio.Event().wait()

    task = asyncio.create_task(waits_forever(), name="hung-task")
    await asyncio.sleep(0)
    try:
        report = await asyncio.to_thread(where_everything_is, asyncio.get_running_loop())
    finally:
        release.set()
        task.cancel()
    assert "thread 'stuck-worker'" in report
    assert "in blocked_worker" in report
    assert "task 'hung-task' awaiting:" in report
    # The chain goes down to the innermost await, not only the task's own coroutine.
    assert "in waits_forever" in report and "in wait" in report.split("hung-task")[1]


def test_a_stop_that_ends_in_time_reports_nothing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="sync_service.engine.stall")
    timer = report_stall(0.2, "stopping")
    timer.cancel()
    time.sleep(0.4)
    assert caplog.records == []


def test_a_stop_still_running_is_reported_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="sync_service.engine.stall")
    timer = report_stall(0.05, "stopping")
    timer.join(5)
    [record] = caplog.records
    assert record.getMessage().startswith("stopping still not done after 0 s")
    assert record.__dict__["event"] == "stop_stalled"
    assert "thread 'MainThread'" in record.getMessage()
