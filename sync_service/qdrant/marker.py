"""The marks state stores write into the Qdrant they feed, so a store can tell its own Qdrant
from another (a new server at the same URL, a wiped or swapped folder).

One small collection of its own (no vectors, one point per state store that feeds this Qdrant:
several deployments may share a server for different collections), which searches and
re-indexes leave alone: :data:`MARKER_COLLECTION`.
"""

from __future__ import annotations

import uuid

from sync_service.qdrant.client import AsyncQdrantClient, UnexpectedResponse, models
from sync_service.qdrant.errors import already_exists, reachable

MARKER_COLLECTION = "_sync_service"
_NAMESPACE = uuid.UUID("5e7c0000-0000-4000-8000-000000000001")


def _point(store_id: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, store_id))


async def has_mark(client: AsyncQdrantClient, store_id: str) -> bool:
    """Whether this Qdrant carries the mark of the state store ``store_id``."""
    async with reachable():
        if not await client.collection_exists(MARKER_COLLECTION):
            return False
        return bool(await client.retrieve(MARKER_COLLECTION, [_point(store_id)]))


async def write_mark(client: AsyncQdrantClient, store_id: str) -> None:
    """Mark this Qdrant as fed by the state store ``store_id``."""
    async with reachable():
        if not await client.collection_exists(MARKER_COLLECTION):
            try:
                await client.create_collection(MARKER_COLLECTION, vectors_config={})
            except (UnexpectedResponse, ValueError) as exc:
                # Replicas starting together on a new Qdrant all make it: one wins (409).
                if not already_exists(exc):
                    raise
        point = models.PointStruct(id=_point(store_id), vector={}, payload={"store_id": store_id})
        await client.upsert(MARKER_COLLECTION, [point], wait=True)
