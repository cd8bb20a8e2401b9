"""``status``'s reads of a SQLite store (and those of an idle ``run --drain`` and of ``run``'s
read-ahead), made with the standard library's driver.

Importing SQLAlchemy and its async driver takes about a third of a second, more than the rest
of ``status``. A SQLite store already at the newest schema (the usual case) is read here instead:
the same few reads as :class:`~sync_service.state.store.Store` makes for ``status``, with the same
SQL, in one read transaction. Anything else (PostgreSQL, a URL with options, a store to create or
migrate, any SQLite error) gets ``None`` back and opens the store as every command does, so its
outcome and its errors stay those of the full path. ``tests/integration/test_status_peek.py``
checks that both give the same answers.
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Awaitable, Callable
from contextlib import closing
from types import SimpleNamespace
from typing import Any, TypeVar
from urllib.parse import quote

from sync_service.state.migrate import HEAD
from sync_service.state.records import ASSET_JOB_PREFIX, STATES, Mirror, fresh_outages

T = TypeVar("T")

#: schema.db_now as compiled for SQLite: the database clock in epoch seconds.
_NOW = "((julianday('now') - 2440587.5) * 86400.0)"

#: A plain file URL: no query options, no %-escapes, nothing SQLAlchemy would read differently.
_PLAIN_SQLITE = re.compile(r"sqlite(?:\+aiosqlite|\+pysqlite)?:///(?P<path>[^?#%]+)")


class StorePeek:
    """The reads ``status`` (and ``engine/idle.py``, ``engine/read_ahead.py``) make, with the
    signatures of the store's own."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def _rows(self, sql: str, *params: Any) -> list[sqlite3.Row]:
        return self._conn.execute(sql, params).fetchall()

    async def counts(self) -> dict[str, int]:
        found = {
            str(state): int(n)
            for state, n in self._rows("SELECT state, count(*) FROM tasks GROUP BY state")
        }
        return {state: found.get(state, 0) for state in STATES}

    async def list_tasks(self, task_id: str | None = None) -> list[dict[str, Any]]:
        where = "" if task_id is None else " WHERE task_id = ?"
        params = () if task_id is None else (task_id,)
        sql = f"SELECT * FROM tasks{where} ORDER BY created_at, task_id"
        return [dict(row) for row in self._rows(sql, *params)]

    async def dead_letters(self, task_id: str | None = None) -> list[dict[str, Any]]:
        where = "" if task_id is None else " WHERE task_id = ?"
        params = () if task_id is None else (task_id,)
        sql = f"SELECT * FROM dead_letters{where} ORDER BY id"
        return [dict(row) for row in self._rows(sql, *params)]

    async def task_history(self, task_id: str) -> list[dict[str, Any]]:
        sql = "SELECT * FROM task_history WHERE task_id = ? ORDER BY id"
        return [dict(row) for row in self._rows(sql, task_id)]

    async def now(self) -> float:
        return float(self._rows(f"SELECT {_NOW}")[0][0])

    async def assets_known(self) -> dict[str, int]:
        rows = self._rows(
            "SELECT collection_id, count(DISTINCT asset_id) FROM synced_features "
            "WHERE collection_id IN (SELECT collection_id FROM mirrors) GROUP BY collection_id"
        )
        return {str(c): int(n) for c, n in rows}

    async def outages(self) -> list[dict[str, Any]]:
        rows = self._rows("SELECT value FROM service_info WHERE key LIKE 'outage/%'")
        return fresh_outages([row[0] for row in rows], time.time())

    async def info(self, key: str) -> str | None:
        rows = self._rows("SELECT value FROM service_info WHERE key = ?", key)
        return str(rows[0][0]) if rows else None

    async def has_work(self) -> bool:
        # Store.has_work's two reads, as compiled for SQLite.
        return bool(
            self._rows("SELECT task_id FROM tasks WHERE state = 'pending' LIMIT 1")
            or self._rows(
                "SELECT collection_id FROM mirrors WHERE watched = 1 OR pass_step IS NOT NULL"
                " OR held_at IS NOT NULL LIMIT 1"
            )
        )

    async def due_tasks(self, limit: int) -> list[str]:
        """Upstream tasks (not asset jobs) a claim would take now, in the order it takes
        them: Store.claim_due's inner read, as compiled for SQLite (``run``'s read-ahead)."""
        rows = self._rows(
            "SELECT task_id FROM tasks WHERE state = 'pending' AND task_id NOT LIKE ? "
            f"AND next_poll_at <= {_NOW} "
            f"AND (lease_expires_at IS NULL OR lease_expires_at < {_NOW}) "
            "ORDER BY next_poll_at LIMIT ?",
            f"{ASSET_JOB_PREFIX}%",
            limit,
        )
        return [str(row[0]) for row in rows]

    async def deleted_upstream(self) -> dict[str, dict[str, Any]]:
        # Store.deleted_upstream's read, as compiled for SQLite.
        rows = self._rows(
            "SELECT target, event_id, received_at FROM webhook_events WHERE state = 'held' "
            "ORDER BY received_at, event_id"
        )
        held: dict[str, dict[str, Any]] = {}
        for target, event_id, received_at in rows:
            held.setdefault(str(target), {"event_id": event_id, "received_at": received_at})
        return held

    async def mirrors(self) -> list[Mirror]:
        rows = self._rows("SELECT * FROM mirrors ORDER BY collection_id")
        return [Mirror.from_row(SimpleNamespace(**dict(row))) for row in rows]


async def peek_sqlite(database_url: str, read: Callable[[StorePeek], Awaitable[T]]) -> T | None:
    """``read`` over a snapshot of the SQLite store at ``database_url``, or None when this path
    does not apply (see the module's docstring): the caller then opens the store."""
    plain = _PLAIN_SQLITE.fullmatch(database_url)
    if plain is None:
        return None
    uri = f"file:{quote(plain['path'])}?mode=rw"  # rw: never create a store here
    try:
        with closing(sqlite3.connect(uri, uri=True, timeout=30, isolation_level=None)) as conn:
            conn.row_factory = sqlite3.Row
            conn.execute("BEGIN")  # one snapshot for every read
            try:
                version = conn.execute("SELECT version_num FROM alembic_version").fetchall()
                if [tuple(v) for v in version] != [(HEAD,)]:
                    return None  # to create or migrate: the store does that
                return await read(StorePeek(conn))
            finally:
                conn.execute("ROLLBACK")
    except sqlite3.Error:
        return None
