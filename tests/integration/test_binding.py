"""The state store records the Qdrant it feeds; replicas starting at once agree on it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from qdrant_client import AsyncQdrantClient
from sqlalchemy import text

from sync_service.keep.binding import (
    TargetMismatch,
    check_mark,
    check_target,
    describe_target,
    rebind,
)
from sync_service.qdrant.marker import MARKER_COLLECTION, has_mark, write_mark
from sync_service.qdrant.sink import QdrantSink
from sync_service.settings import Settings
from sync_service.state.store import Store
from tests.qdrant_server import QdrantStandIn


def settings(tmp_path: Path, database_url: str, qdrant: str) -> Settings:
    return Settings(_env_file=None, DATABASE_URL=database_url, QDRANT_PATH=tmp_path / qdrant)


async def test_replicas_starting_at_once_record_one_target(
    tmp_path: Path, database_url: str
) -> None:
    config = settings(tmp_path, database_url, "q")
    stores = [Store.open(database_url) for _ in range(4)]
    try:
        await stores[0].prepare(may_migrate=True)
        await asyncio.gather(*(check_target(s, config) for s in stores))
        ids = {await s.info("qdrant_target_id") for s in stores}
        assert len(ids) == 1 and None not in ids
        assert {await s.info("qdrant_target") for s in stores} == {describe_target(config)}
        with pytest.raises(TargetMismatch):
            await check_target(stores[0], settings(tmp_path, database_url, "elsewhere"))
    finally:
        for s in stores:
            await s.close()


async def test_a_qdrant_without_the_stores_mark_is_refused_once_the_store_has_synced(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'sync.db'}"
    config = settings(tmp_path, url, "q")
    store = Store.open(url)
    sink = QdrantSink(AsyncQdrantClient(":memory:"))
    other = QdrantSink(AsyncQdrantClient(":memory:"))
    try:
        await store.prepare(may_migrate=True)
        await check_target(store, config)
        await check_mark(store, sink, config)  # first use: marked
        store_id = await store.info("qdrant_target_id")
        assert store_id is not None and await sink.has_mark(store_id)
        assert await sink.names() == []  # the mark is no collection a reader sees
        await sink.mark("another-deployment")  # a server may be shared: marks add up
        await check_mark(store, sink, config)
        # A ledger row as a sync leaves it; then the address serves a Qdrant without the mark.
        async with store.engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO synced_features (task_id, feature_id, point_id, "
                    "qdrant_collection, vectors, payload_fp, vectors_fp, synced_at) "
                    "VALUES ('t', 'f', 'p', 'c', '{}', '', '', 0)"
                )
            )
        with pytest.raises(TargetMismatch, match="does not carry this state store's mark"):
            await check_mark(store, other, config)
        await rebind(store, other, config)
        await check_mark(store, other, config)
    finally:
        await other.close()
        await sink.close()
        await store.close()


async def test_a_mark_written_while_another_replica_makes_the_marker_collection() -> None:
    with QdrantStandIn() as server:
        client = AsyncQdrantClient(url=server.url)
        try:
            await write_mark(client, "store-a")  # the marker collection exists now

            async def not_yet(name: str) -> bool:  # another replica saw it missing, too
                return False

            client.collection_exists = not_yet  # type: ignore[method-assign]
            await write_mark(client, "store-b")  # its creation answers 409: taken as made
            del client.collection_exists
            assert await has_mark(client, "store-a") and await has_mark(client, "store-b")
            assert await client.collection_exists(MARKER_COLLECTION)
        finally:
            await client.close()
