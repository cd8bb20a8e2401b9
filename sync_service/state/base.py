"""What every group of state-store queries needs of :class:`~sync_service.state.store.Store`:
its engine and dialect, a write transaction, writes that end whole (:func:`completes`), and an
INSERT with the dialect's ON CONFLICT."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from contextlib import AbstractAsyncContextManager
from typing import Any, ParamSpec, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

P = ParamSpec("P")
T = TypeVar("T")


def completes(write: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, Coroutine[Any, Any, T]]:
    """A write that runs to its end even when its caller is cancelled; the caller's
    cancellation is raised once the write has ended (committed or rolled back).

    Cut off mid-statement, a write can strand its transaction: an ``INSERT ... RETURNING``
    cancelled between SQLite's step and the fetch of its row leaves the statement open, the
    rollback then fails, and the pool discards a connection that still holds SQLite's write
    lock, so every later write, in this process and others, waits on it (reproduced: 1 in
    15 cancellations at random moments). Callers are cancelled in ordinary operation: a
    stopping daemon's work, a webhook batch past its time, a watch pass told to stop. Each
    statement is bounded (SQLite's busy timeout, PostgreSQL's statement timeout), so the
    wait is too. Every method that opens ``_writing()`` carries this (tests/unit/test_layout.py).
    """

    @functools.wraps(write)
    async def whole(*args: P.args, **kwargs: P.kwargs) -> T:
        task = asyncio.create_task(write(*args, **kwargs))
        cancelled = False
        while not task.done():
            try:
                await asyncio.wait((task,))  # a cancelled wait leaves the task running
            except asyncio.CancelledError:
                cancelled = True
        if cancelled:
            if not task.cancelled():
                task.exception()  # retrieved: the caller's cancellation is what it sees
            raise asyncio.CancelledError
        return task.result()

    return whole


class Queries:
    """Base of the query groups the store inherits (ledger, views, mirrors, listings, breaker)."""

    engine: AsyncEngine
    dialect: str

    def _writing(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """A write transaction: the store queues this process's SQLite writers on a lock."""
        raise NotImplementedError

    def _insert(self, table: Any) -> Any:
        """INSERT with the dialect's ON CONFLICT support."""
        # Imported here: a SQLite store need not load the PostgreSQL dialect (and vice versa).
        if self.dialect == "postgresql":
            from sqlalchemy.dialects import postgresql

            return postgresql.insert(table)
        from sqlalchemy.dialects import sqlite

        return sqlite.insert(table)
