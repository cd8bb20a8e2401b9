"""Opening the state store's database: SQLite (one writer, WAL) or PostgreSQL (server-side
timeouts), each with the async driver SQLAlchemy needs."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from sync_service.settings import SettingUnusable, async_database_url
from sync_service.state.dsn import parse_query


def connect(database_url: str, *, statement_timeout: float = 30.0) -> AsyncEngine:
    """An engine for ``DATABASE_URL`` (not connected yet)."""
    url = async_database_url(database_url)
    if url.get_backend_name() == "sqlite":
        _check_sqlite_file(url.database or "")
        engine = create_async_engine(url, connect_args={"timeout": 30})
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    else:
        engine = create_async_engine(
            url, pool_pre_ping=True, connect_args=_pg_arguments(database_url, statement_timeout)
        )
    return engine


def _check_sqlite_file(database: str) -> None:
    """Make the SQLite file's folder and open the file once, here, or raise SettingUnusable
    naming DATABASE_URL.

    Opened synchronously first because aiosqlite, when its first connect fails, stops its
    worker thread without waiting for it: the thread then reports to an event loop that
    ``asyncio.run`` has already closed, and prints a traceback of its own."""
    if not database or database == ":memory:":
        return
    path = Path(database).expanduser()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SettingUnusable(
            f"DATABASE_URL: cannot make the folder {str(path.parent)!r} ({exc.strerror})"
        ) from None
    try:
        connection = sqlite3.connect(path)
        try:
            connection.execute("PRAGMA schema_version")  # "file is not a database" shows here
        finally:
            connection.close()
    except sqlite3.Error as exc:
        raise SettingUnusable(
            f"DATABASE_URL: cannot open the SQLite file {str(path)!r} ({exc})"
        ) from None


def _pg_arguments(database_url: str, statement_timeout: float) -> dict[str, Any]:
    """asyncpg's arguments: the service's timeouts plus what the URL's libpq parameters ask."""
    options = parse_query(database_url.partition("?")[2])
    millis = str(int(statement_timeout * 1000))
    arguments: dict[str, Any] = {
        # A client-side deadline alone can overshoot by seconds when the server hangs
        # (docs/contract.md §6.5): the server itself ends a statement that runs long.
        "server_settings": {
            **options.server_settings,
            "statement_timeout": millis,
            "lock_timeout": millis,
            "idle_in_transaction_session_timeout": str(int(statement_timeout * 2000)),
        },
        "command_timeout": statement_timeout + 5,
        "timeout": options.connect_timeout or 10,
    }
    ssl = options.ssl_argument()
    if ssl is not None:
        arguments["ssl"] = ssl
    return arguments


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets `status` read while `run` writes. synchronous=NORMAL may lose the last commit on
    # power loss, never consistency: the points are already in Qdrant, so a lost commit is a
    # harmless redo under the delivery contract.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
