"""The id a state store writes into the Qdrant it feeds, so each can tell the other apart.

It lives in a small collection of its own (no vectors, one point), which searches and
re-indexes leave alone: :data:`MARKER_COLLECTION`.
"""

from __future__ import annotations

from qdrant_client import AsyncQdrantClient, models

from sync_service.qdrant.errors import reachable

MARKER_COLLECTION = "_sync_service"
_MARKER_POINT = "5e7c0000-0000-4000-8000-000000000001"


async def read_marker(client: AsyncQdrantClient) -> str | None:
    """The state store id this Qdrant is marked with (None: never marked, or wiped)."""
    async with reachable():
        if not await client.collection_exists(MARKER_COLLECTION):
            return None
        found = await client.retrieve(MARKER_COLLECTION, [_MARKER_POINT], with_payload=True)
    value = (found[0].payload or {}).get("store_id") if found else None
    return str(value) if value else None


async def write_marker(client: AsyncQdrantClient, store_id: str) -> None:
    """Mark this Qdrant as fed by the state store ``store_id``."""
    async with reachable():
        if not await client.collection_exists(MARKER_COLLECTION):
            await client.create_collection(MARKER_COLLECTION, vectors_config={})
        point = models.PointStruct(id=_MARKER_POINT, vector={}, payload={"store_id": store_id})
        await client.upsert(MARKER_COLLECTION, [point], wait=True)
