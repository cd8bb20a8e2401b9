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
from collections.abc import AsyncIterator, Mapping
from datetime import UTC
from typing import Any

from sync_service.upstream.errors import MixpeekBadRequest, MixpeekNotFound, MixpeekUnsupported
from sync_service.upstream.gen_b.models import parse_timestamp
from sync_service.upstream.owner import ClientOwner
from sync_service.upstream.port import (
    Asset,
    AssetContent,
    AssetPage,
    Feature,
    ListOrder,
    Submission,
    TaskOutcome,
    TaskState,
    WebhookSubscription,
    classify_status,
)
from sync_service.upstream.v1 import models
from sync_service.upstream.v1.client import PAGE_WITH_VECTORS, V1Client
from sync_service.upstream.v1.models import VectorIndex
from sync_service.upstream.v1.webhooks import Webhooks

__all__ = ["V1Upstream", "asset_key", "split_asset"]

log = logging.getLogger(__name__)

_SORTS: dict[ListOrder, tuple[str, str] | None] = {
    ListOrder.CREATED: None,  # the default order: creation, with keyset cursors
    ListOrder.CHANGED: ("_internal.updated_at", "asc"),
    ListOrder.NEWEST_CHANGE: ("_internal.updated_at", "desc"),
}
_WalkKey = tuple[str, ListOrder, float | None, int]


def asset_key(collection_id: str, object_id: str) -> str:
    return f"{collection_id}/{object_id}"


def split_asset(asset_id: str) -> tuple[str, str]:
    collection_id, sep, object_id = asset_id.partition("/")
    if not sep or not collection_id or not object_id:
        # A 2024 asset id given to a v1 upstream (or a typo): nothing by that id here.
        raise MixpeekNotFound(f"{asset_id!r} is not a v1 asset id (collection_id/object_id)")
    return collection_id, object_id


def _zulu(value: Any) -> str | None:
    when = parse_timestamp(value)
    return None if when is None else when.astimezone(UTC).isoformat().replace("+00:00", "Z")


class V1Upstream(ClientOwner):
    """:class:`~sync_service.upstream.port.Upstream` over :class:`V1Client`."""

    client: V1Client

    def __init__(self, client: V1Client) -> None:
        self.client = client
        self.outage = client.outage
        # A collection's vector indexes, read once per process (they are fixed for its life).
        self._indexes: dict[str, list[VectorIndex]] = {}
        # Per listing: (the page number the cursor leads to, the cursor, the previous page's
        # assets), so the port's numbered pages walk v1's cursors.
        self._walks: dict[_WalkKey, tuple[int, str, frozenset[str]]] = {}
        self._filters_refused = False
        self._webhooks = Webhooks(client)

    # -- tasks ----------------------------------------------------------------------------------

    async def get_task(self, task_id: str) -> TaskState:
        task = await self.client.get_task(task_id)
        outcome = classify_status(task.status)
        assets: list[str] = []
        if outcome is TaskOutcome.SUCCEEDED:
            assets = await self._task_assets(task)
        first = assets[0] if assets else None
        return TaskState(task.task_id, task.status, outcome, first, tuple(assets[1:]))

    async def _task_assets(self, task: models.Task) -> list[str]:
        """The (collection, object) assets of the task's batch, collection by collection."""
        if not (task.batch_id and task.bucket_id):
            return []
        batch = await self.client.get_batch(task.bucket_id, task.batch_id)
        collections = batch.collection_ids or task.collection_ids
        return [asset_key(c, o) for c in collections for o in batch.object_ids]

    async def failure_reason(self, task: TaskState) -> str | None:
        try:
            return (await self.client.get_task(task.task_id)).error
        except MixpeekNotFound:
            return None

    # -- assets -----------------------------------------------------------------------------------

    async def get_asset(self, asset_id: str) -> Asset:
        collection_id, object_id = split_asset(asset_id)
        docs = [d async for d in self._documents(collection_id, object_id, vectors=False)]
        if not docs:
            raise MixpeekNotFound(f"no document of object {object_id} in {collection_id}")
        return self._asset(collection_id, object_id, docs)

    async def fetch_content(
        self,
        asset_id: str,
        *,
        only_if_done: bool = False,  # noqa: ARG002 (v1 writes a document once processed)
    ) -> AssetContent:
        collection_id, object_id = split_asset(asset_id)
        indexes = await self._vector_indexes(collection_id)
        docs = [d async for d in self._documents(collection_id, object_id, vectors=True)]
        features = [self._feature(doc, indexes, asset_id, collection_id) for doc in docs]
        # No document left is not a 404: an object re-processed into nothing (or failed in a
        # COMPLETED_WITH_ERRORS batch) syncs to no points, which removes the ones it had.
        return AssetContent(
            self._asset(collection_id, object_id, docs),
            collection_id,
            features,
            [],
            frozenset(f.feature_id for f in features),
        )

    async def delete_asset(self, asset_id: str) -> None:
        collection_id, object_id = split_asset(asset_id)
        docs = [d async for d in self._documents(collection_id, object_id, vectors=False)]
        if not docs:
            raise MixpeekNotFound(f"no document of object {object_id} in {collection_id}")
        for doc in docs:
            await self.client.delete_document(collection_id, str(doc["document_id"]))

    async def _documents(
        self, collection_id: str, object_id: str, *, vectors: bool
    ) -> AsyncIterator[dict[str, Any]]:
        """Every document of ``collection_id`` whose root object is ``object_id``."""
        where = {"field": "_internal.lineage.root_object_id", "operator": "eq", "value": object_id}
        filters = {"AND": [where]}
        cursor: str | None = None
        seen: set[str] = set()
        while True:
            page = await self.client.list_documents(
                collection_id,
                limit=PAGE_WITH_VECTORS if vectors else 1000,
                cursor=cursor,
                filters=filters,
                return_vectors=vectors,
            )
            for doc in page.documents:
                if models.lineage(doc)["root_object_id"] not in (object_id, None):
                    continue  # a server that ignored the filter: keep only this object's
                yield doc
            if page.next_cursor is None or page.next_cursor in seen:
                return
            seen.add(page.next_cursor)
            cursor = page.next_cursor

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

    def _asset(self, collection_id: str, object_id: str, docs: list[dict[str, Any]]) -> Asset:
        stamps = [
            s
            for d in docs
            if isinstance(d.get("_internal"), dict)
            and (s := _zulu(d["_internal"].get("updated_at"))) is not None
        ]
        stamp = max(stamps, key=lambda s: parse_timestamp(s) or 0) if stamps else None
        when = parse_timestamp(stamp)
        first = docs[0] if docs else {}
        lin = models.lineage(first)
        internal = first.get("_internal") if isinstance(first.get("_internal"), dict) else {}
        assert isinstance(internal, dict)
        asset_id = asset_key(collection_id, object_id)
        data = {
            "asset_id": asset_id,
            "collection_id": collection_id,
            "object_id": object_id,
            "root_bucket_id": lin["root_bucket_id"],
            "namespace_id": internal.get("namespace_id"),
            "mixpeek_api": "v1",
        }
        return Asset(
            asset_id=asset_id,
            collection_id=collection_id,
            status="COMPLETED",  # a document exists only once processed
            outcome=TaskOutcome.SUCCEEDED,
            stamp=stamp,
            changed_at=None if when is None else when.timestamp(),
            error=None,
            task_id=None,
            data=data,
        )

    # -- listing ----------------------------------------------------------------------------------

    async def list_assets(
        self,
        collection_id: str,
        *,
        order: ListOrder,
        page: int = 1,
        page_size: int = 100,
        changed_since: float | None = None,
    ) -> AssetPage:
        """Page ``page`` of the collection's assets: a page of documents without vectors,
        grouped by root object. v1 pages by cursor, so the cursor that leads to page N is kept
        when page N-1 is served; a page asked out of turn (a pass resumed after a restart)
        walks there from page 1."""
        key: _WalkKey = (collection_id, order, changed_since, page_size)
        walk = self._walks.get(key)
        if page == 1 or walk is None or walk[0] != page:
            number, cursor, previous = 1, None, frozenset[str]()
            while number < page:  # out of turn: walk to it
                docs, cursor = await self._list_page(key, cursor)
                previous = frozenset(self._group(docs))
                if cursor is None:
                    return AssetPage([], has_next=False)
                number += 1
        else:
            _, cursor, previous = walk
        docs, next_cursor = await self._list_page(key, cursor)
        groups = self._group(docs)
        if next_cursor is None:
            self._walks.pop(key, None)
        else:
            self._walks[key] = (page + 1, next_cursor, frozenset(groups))
        # An object whose documents straddle two pages is listed on the first only (a page
        # repeating the last one's assets would look like a server ignoring the cursor).
        assets = [
            self._asset(collection_id, obj, group)
            for obj, group in groups.items()
            if obj not in previous
        ]
        return AssetPage(assets, has_next=next_cursor is not None)

    async def _list_page(
        self, key: _WalkKey, cursor: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        collection_id, order, since, size = key
        filters = sort = None
        if not self._filters_refused:
            sort = _SORTS[order]
            if since is not None:
                value = _zulu(since)
                filters = {
                    "AND": [{"field": "_internal.updated_at", "operator": "gte", "value": value}]
                }
        try:
            page = await self.client.list_documents(
                collection_id, limit=size, cursor=cursor, filters=filters, sort=sort
            )
        except MixpeekBadRequest:
            if filters is None and sort is None:
                raise
            # The update-time filter and sort are guesses; a server that refuses them gets
            # plain listings from now on (callers check order and filter themselves).
            log.warning("Mixpeek v1 refused the updated_at filter or sort; listing in full")
            self._filters_refused = True
            page = await self.client.list_documents(collection_id, limit=size, cursor=cursor)
        return page.documents, page.next_cursor

    @staticmethod
    def _group(docs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
        groups: dict[str, list[dict[str, Any]]] = {}
        for doc in docs:
            obj = models.lineage(doc)["root_object_id"]
            if obj is None:
                log.warning("v1 document %s names no root object; skipped", doc.get("document_id"))
                continue
            groups.setdefault(obj, []).append(doc)
        return groups

    # -- intake -----------------------------------------------------------------------------------

    async def embed(
        self,
        text: str,  # noqa: ARG002
        vector_name: str,  # noqa: ARG002
    ) -> list[float] | dict[str, list[Any]]:
        raise MixpeekUnsupported(
            "the v1 adapter cannot embed a text yet (v1 embeds through a retriever or an "
            "inference call, not wired here)"
        )

    async def submit(self, item: Submission) -> str | None:
        """One object in the bucket the collection reads from, in a batch of its own, submitted:
        the batch's task id. ``item.collection_id`` names a v1 collection (id or name)."""
        collection = await self.client.get_collection(item.collection_id)
        source = collection.get("source") if isinstance(collection.get("source"), dict) else {}
        assert isinstance(source, dict)
        buckets = source.get("bucket_ids") or (
            [source["bucket_id"]] if source.get("bucket_id") else []
        )
        if not buckets:
            raise MixpeekBadRequest(
                f"collection {item.collection_id} reads no bucket: nothing to submit into"
            )
        # The blob's property is named after its kind: an assumption about the bucket's schema.
        body: dict[str, Any] = {
            "blobs": [{"property": item.kind, "type": item.kind, "data": item.content}]
        }
        if item.metadata is not None:
            body["metadata"] = dict(item.metadata)
        obj = await self.client.create_object(str(buckets[0]), body)
        batch = await self.client.create_batch(str(buckets[0]), [str(obj["object_id"])])
        task = await self.client.submit_batch(str(buckets[0]), batch.batch_id)
        return task.task_id

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
