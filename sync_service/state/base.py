"""What every group of state-store queries needs of :class:`~sync_service.state.store.Store`:
its engine and dialect, a write transaction, and an INSERT with the dialect's ON CONFLICT."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine


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
