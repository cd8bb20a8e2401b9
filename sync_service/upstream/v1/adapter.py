"""Mixpeek's v1 API behind the upstream port: :class:`V1Upstream`.

The port speaks of assets with features; v1 of objects whose documents land in collections. The
mapping (README "Mixpeek v1"):

* an **asset** is one root object *within one collection*:
  ``asset_id = "{collection_id}/{object_id}"``. A collection is one Qdrant collection
  (``QDRANT_COLLECTION``), so an asset never spans two; the object is what a document's
  ``_internal.lineage.root_object_id`` names, so a listing, a task and a sweep all find the
  same asset;
* its **features** are the collection's documents with that root object, listed with their
  vectors inline; the feature id is the point id, ``uuid5(NAMESPACE_URL,
  "mixpeek://v1/{namespace_id}/{collection_id}/{document_id}")``, a UUID so the engine's point
  id rule (docs/contract.md §4) keeps it as is;
* a **task** (a submitted batch) produced the assets (collection, object) of its batch's
  objects and collections: the first is the task's asset, the rest go in ``more_assets``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from sync_service.upstream.errors import MixpeekNotFound
from sync_service.upstream.owner import ClientOwner
from sync_service.upstream.port import AssetContent, Feature, WebhookSubscription
from sync_service.upstream.v1 import models
from sync_service.upstream.v1.client import V1Client
from sync_service.upstream.v1.intake import LISTING_GRACE, V1Intake
from sync_service.upstream.v1.listing import DocumentListing, asset_key, split_asset
from sync_service.upstream.v1.listing import zulu as _zulu
from sync_service.upstream.v1.models import VectorIndex
from sync_service.upstream.v1.webhooks import Webhooks

__all__ = ["V1Upstream", "asset_key", "split_asset"]

log = logging.getLogger(__name__)


class V1Upstream(V1Intake, DocumentListing, ClientOwner):
    """:class:`~sync_service.upstream.port.Upstream` over :class:`V1Client`; tasks and
    submissions are :class:`V1Intake`'s (``intake.py``), listings, single assets and deletes
    :class:`DocumentListing`'s (``listing.py``)."""

    client: V1Client

    def __init__(self, client: V1Client, *, listing_grace: float = LISTING_GRACE) -> None:
        super().__init__(client, listing_grace=listing_grace)
        self.outage = client.outage
        # A collection's vector indexes, read once per process (they are fixed for its life).
        self._indexes: dict[str, list[VectorIndex]] = {}
        # Per listing, where its walk over v1's cursors stands (``listing.py``).
        self._walks = {}
        self._changed_refused = False
        self._by_object_refused = False
        self._webhooks = Webhooks(client)

    # -- assets -----------------------------------------------------------------------------------

    async def fetch_content(
        self,
        asset_id: str,
        *,
        only_if_done: bool = False,  # noqa: ARG002 (v1 writes a document once processed)
    ) -> AssetContent:
        collection_id, object_id = split_asset(asset_id)
        indexes = await self._vector_indexes(collection_id)
        docs = [d async for d in self._documents(collection_id, object_id, vectors=True)]
        if not docs and not await self._object_exists(collection_id, object_id):
            # Gone, as for get_asset: the engine removes its points behind the removal breaker
            # and verify's repair behind the delete guard (a re-sync to no points would remove
            # them past both). An object that is there made no document here (an extractor
            # that does not read it): no points, and nothing failed.
            raise MixpeekNotFound(f"no document of object {object_id} in {collection_id}")
        features = [self._feature(doc, indexes, asset_id, collection_id) for doc in docs]
        return AssetContent(
            self._asset(collection_id, object_id, docs),
            collection_id,
            features,
            [],
            frozenset(f.feature_id for f in features),
            declared={i.name: models.shape(i) for i in indexes},
            generation="v1",
        )

    async def _vector_indexes(self, collection_id: str) -> list[VectorIndex]:
        if collection_id not in self._indexes:
            answer = await self.client.collection_features(collection_id)
            self._indexes[collection_id] = models.vector_indexes(answer)
        return self._indexes[collection_id]

    def _feature(
        self, doc: dict[str, Any], indexes: list[VectorIndex], asset_id: str, collection_id: str
    ) -> Feature:
        vectors, keys = models.document_vectors(doc, indexes)
        data: dict[str, Any] = models.strip_presigned(
            {k: v for k, v in doc.items() if k not in keys and k != "_vectors"}
        )
        internal = doc.get("_internal") if isinstance(doc.get("_internal"), dict) else {}
        assert isinstance(internal, dict)
        document_id = str(doc["document_id"])
        # The namespace's id, never its name: a point id must not change with a rename.
        namespace_id = str(internal.get("namespace_id") or self.client.namespace or "default")
        collection = str(doc.get("collection_id") or internal.get("collection_id") or collection_id)
        feature_id = models.point_uuid(namespace_id, collection, document_id)
        data.update(
            feature_id=feature_id,
            asset_id=asset_id,
            document_id=document_id,
            collection_id=collection,
            namespace_id=namespace_id,
            **models.lineage(doc),
            modality=internal.get("modality") or doc.get("modality"),
            mixpeek_created_at=_zulu(internal.get("created_at")),
            mixpeek_updated_at=_zulu(internal.get("updated_at")),
            mixpeek_api="v1",
            vectors=vectors,
        )
        return Feature(feature_id, data)

    # -- webhooks ---------------------------------------------------------------------------

    async def namespace_ids(self) -> frozenset[str]:
        return await self._webhooks.namespace_ids()

    async def save_webhook(
        self, name: str, url: str, event_types: tuple[str, ...], headers: Mapping[str, str]
    ) -> tuple[WebhookSubscription, bool]:
        return await self._webhooks.save(name, url, event_types, headers)

    async def list_webhooks(self) -> list[WebhookSubscription]:
        return await self._webhooks.list()

    async def delete_webhook(self, webhook_id: str) -> None:
        await self._webhooks.delete(webhook_id)
