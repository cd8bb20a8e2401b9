"""A report when stopping takes too long: where every thread and task is, in the log.

A daemon told to stop is gone within its grace periods (``SYNC_SHUTDOWN_GRACE``); one that is
not waits on something: a statement, an answer, a thread. An orchestrator kills it in the end
(Kubernetes after ``terminationGracePeriodSeconds``), and then nobody can ask on what it
waited. This says so while it still can. The report comes from a timer thread, not from the
event loop, since the loop may be what is stuck; the timer dies with the process.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import traceback

__all__ = ["report_stall", "where_everything_is"]

log = logging.getLogger(__name__)


def report_stall(
    after: float, what: str, loop: asyncio.AbstractEventLoop | None = None
) -> threading.Timer:
    """Log a warning with :func:`where_everything_is` if the process still runs ``after``
    seconds from now (cancel the returned timer to call it off)."""

    def report() -> None:
        log.warning(
            "%s still not done after %.0f s; where each thread and task is:\n%s",
            what,
            after,
            where_everything_is(loop),
            extra={"event": "stop_stalled", "after_s": after},
        )

    timer = threading.Timer(after, report)
    timer.name = "stall-report"
    timer.daemon = True
    timer.start()
    return timer


def where_everything_is(loop: asyncio.AbstractEventLoop | None = None) -> str:
    """Every thread's stack, then what each of the loop's tasks awaits (read from another
    thread: a task may move on meanwhile, which a report can live with)."""
    frames = sys._current_frames()
    parts = []
    for thread in threading.enumerate():
        frame = frames.get(thread.ident or -1)
        if frame is not None and thread is not threading.current_thread():
            stack = "".join(traceback.format_stack(frame, limit=12))
            parts.append(f"thread {thread.name!r}:\n{stack}")
    if loop is not None:
        try:
            tasks = asyncio.all_tasks(loop)
        except RuntimeError:  # the loop's task set kept changing under us
            tasks = set()
        for task in sorted(tasks, key=lambda t: t.get_name()):
            chain = "".join(f"  {line}\n" for line in _awaiting(task)) or "  (not started)\n"
            parts.append(f"task {task.get_name()!r} awaiting:\n{chain}")
    return "\n".join(parts)


def _awaiting(task: asyncio.Task[object]) -> list[str]:
    """The task's chain of awaits, outermost first (``get_stack`` stops at the first)."""
    lines = []
    coro: object = task.get_coro()
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is None:
            break
        code = frame.f_code
        lines.append(f"{code.co_filename}:{frame.f_lineno} in {code.co_name}")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return lines
