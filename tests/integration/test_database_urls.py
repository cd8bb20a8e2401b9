"""libpq parameters in DATABASE_URL against the real PostgreSQL: the state store opens, and the
server sees what they asked for."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from sqlalchemy import text

from sync_service.state.store import Store


async def settings_seen(url: str) -> dict[str, str]:
    store = Store.open(url)
    try:
        await store.migrate()
        await store.track(["t1"])
        async with store.engine.connect() as conn:
            rows = await conn.execute(
                text(
                    "SELECT current_setting('application_name'), current_setting('search_path'),"
                    " current_setting('work_mem'), inet_server_addr() IS NULL"
                )
            )
            name, path, work_mem, over_socket = rows.one()
    finally:
        await store.close()
    return {"application_name": name, "search_path": path, "work_mem": work_mem,
            "socket": str(over_socket)}  # fmt: skip


async def test_application_name_options_timeout_and_sslmode(postgres_url: str) -> None:
    options = quote("-c work_mem=8MB --search-path=public")
    query = f"sslmode=prefer&application_name=sync-test&connect_timeout=5&options={options}"
    seen = await settings_seen(f"{postgres_url}?{query}")
    assert seen["application_name"] == "sync-test"
    assert seen["work_mem"] == "8MB" and seen["search_path"] == "public"
    assert seen["socket"] == "False"


async def test_a_socket_directory_host(postgres_url: str) -> None:
    database = postgres_url.rpartition("/")[2]
    seen = await settings_seen(f"postgresql://postgres@/{database}?host=/var/run/postgresql")
    assert seen["socket"] == "True"  # a Unix socket has no server address


async def test_sslmode_require_against_a_server_without_ssl_says_so(postgres_url: str) -> None:
    store = Store.open(f"{postgres_url}?sslmode=require")
    try:
        with pytest.raises(Exception, match=r"(?i)ssl"):
            await store.migrate()
    finally:
        await store.close()
