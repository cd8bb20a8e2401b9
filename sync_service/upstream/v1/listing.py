"""Listing a v1 collection in the port's words: ``documents/list`` pages grouped into assets.

An asset is one root object within one collection (``adapter.py``), so a listing of documents
becomes a listing of assets by grouping the documents of each root object. What makes that
work for the keep-in-step commands:

* **A full pass** (``ListOrder.CREATED``) lists sorted by ``_internal.lineage.root_object_id``,
  so an object's documents arrive together; the last object of a page is held back to the
  next page (its documents may go on there), so every asset a full pass lists carries its
  *whole* document set, as ``Asset.feature_ids``. The state store compares that set with the
  points it holds: a document deleted upstream while its object keeps others (no event, no
  new ``updated_at``) is found by the next full pass. A server that refuses or ignores the
  sort gets plain pages grouped page by page, without feature sets (said once in the log).
* **An incremental pass** (``ListOrder.CHANGED``) filters ``_internal.updated_at gte`` and
  sorts on it (a GUESS: README "Mixpeek v1"); a server that refuses them gets plain listings,
  and one that ignores them is caught by the watcher's own checks (``keep/watch.py``).
* v1 pages by cursor, the port by number: the cursor leading to page N is kept when page N-1
  is served. Each page also gives a ``resume`` token (``AssetPage.resume``) that the state store
  keeps with the pass: another process resuming the pass at page N rebuilds the walk from it
  (one page re-listed, or as many as one object's documents span), instead of walking from
  page 1. A token that does not fit (another page, order or page size, a sort since refused, a
  cursor the server no longer takes) is ignored: the walk starts from page 1, as without one.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import UTC
from typing import Any

from sync_service.upstream.errors import MixpeekBadRequest, MixpeekNotFound
from sync_service.upstream.gen_b.models import parse_timestamp
from sync_service.upstream.port import Asset, AssetPage, ListOrder, TaskOutcome
from sync_service.upstream.v1 import models
from sync_service.upstream.v1.client import V1Client
from sync_service.upstream.v1.models import VectorIndex
from sync_service.upstream.v1.walk import Doc, Walk, WalkKey, walk_from_token

__all__ = ["DocumentListing", "asset_key", "page_with_vectors", "split_asset", "zulu"]

log = logging.getLogger(__name__)

ROOT_OBJECT = "_internal.lineage.root_object_id"
UPDATED = "_internal.updated_at"
_CHANGE_SORTS = {ListOrder.CHANGED: "asc", ListOrder.NEWEST_CHANGE: "desc"}

#: A page of documents with their vectors inline stays under this many bytes of JSON.
PAGE_BYTES = 4_000_000
#: A float as JSON ("-0.012345678901234567, "): a 1408-float vector is ~25 KB.
FLOAT_BYTES = 18
#: A document's fields, blobs and ``_internal`` without its vectors.
DOCUMENT_BYTES = 2_000
#: Sizes assumed where an index states none: a dense or sparse index of 1,024 (sparse values
#: and indices, a generous count of non-zeros), and 64 token vectors per multi-dense one.
UNKNOWN_SIZE = 1024
TOKENS = 64


def asset_key(collection_id: str, object_id: str) -> str:
    return f"{collection_id}/{object_id}"


def _source_url(internal: dict[str, Any]) -> str | None:
    processing = internal.get("processing")
    url = processing.get("source_url") if isinstance(processing, dict) else None
    return url if isinstance(url, str) and url else None


def split_asset(asset_id: str) -> tuple[str, str]:
    collection_id, sep, object_id = asset_id.partition("/")
    if not sep or not collection_id or not object_id:
        # A 2024 asset id given to a v1 upstream (or a typo): nothing by that id here.
        raise MixpeekNotFound(f"{asset_id!r} is not a v1 asset id (collection_id/object_id)")
    return collection_id, object_id


def zulu(value: Any) -> str | None:
    when = parse_timestamp(value)
    return None if when is None else when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def page_with_vectors(indexes: list[VectorIndex]) -> int:
    """Documents per page with vectors inline, from the collection's vector sizes, so a page
    stays under ``PAGE_BYTES`` (a multimodal segment, 1408 + 1024 floats, is ~45 KB: 87 a
    page); within the API's 1-1000."""
    floats = 0
    for index in indexes:
        size = index.size or UNKNOWN_SIZE
        floats += size * TOKENS if index.kind == "multi_dense" else size
    per_document = DOCUMENT_BYTES + FLOAT_BYTES * (floats or UNKNOWN_SIZE)
    return max(1, min(1000, PAGE_BYTES // per_document))


def _internal(doc: Doc) -> dict[str, Any]:
    internal = doc.get("_internal")
    return internal if isinstance(internal, dict) else {}


def _root(doc: Doc) -> str | None:
    return models.lineage(doc)["root_object_id"]


class DocumentListing:
    """The listing half of :class:`~sync_service.upstream.v1.adapter.V1Upstream` (a mixin:
    the adapter provides the client, the namespace and the collection's vector indexes)."""

    client: V1Client
    _walks: dict[WalkKey, Walk]
    #: The update-time filter and sort were refused: incremental listings are plain.
    _changed_refused: bool
    #: The root-object sort was refused or ignored: full listings are plain pages.
    _by_object_refused: bool

    async def _vector_indexes(self, collection_id: str) -> list[VectorIndex]:
        raise NotImplementedError  # the adapter's

    # -- one asset ------------------------------------------------------------------------

    async def get_asset(self, asset_id: str) -> Asset:
        collection_id, object_id = split_asset(asset_id)
        docs = [d async for d in self._documents(collection_id, object_id, vectors=False)]
        if not docs:
            raise MixpeekNotFound(f"no document of object {object_id} in {collection_id}")
        return self._asset(collection_id, object_id, docs, complete=True)

    async def delete_asset(self, asset_id: str) -> None:
        collection_id, object_id = split_asset(asset_id)
        docs = [d async for d in self._documents(collection_id, object_id, vectors=False)]
        if not docs:
            raise MixpeekNotFound(f"no document of object {object_id} in {collection_id}")
        for doc in docs:
            await self.client.delete_document(collection_id, str(doc["document_id"]))

    async def _documents(
        self, collection_id: str, object_id: str, *, vectors: bool
    ) -> AsyncIterator[Doc]:
        """Every document of ``collection_id`` whose root object is ``object_id``."""
        filters = {"AND": [{"field": ROOT_OBJECT, "operator": "eq", "value": object_id}]}
        limit = page_with_vectors(await self._vector_indexes(collection_id)) if vectors else 1000
        cursor: str | None = None
        seen: set[str] = set()
        while True:
            page = await self.client.list_documents(
                collection_id, limit=limit, cursor=cursor, filters=filters, return_vectors=vectors
            )
            for doc in page.documents:
                if _root(doc) not in (object_id, None):
                    continue  # a server that ignored the filter: keep only this object's
                yield doc
            if page.next_cursor is None or page.next_cursor in seen:
                return
            seen.add(page.next_cursor)
            cursor = page.next_cursor

    async def _object_exists(self, collection_id: str, object_id: str) -> bool:
        """Whether the object is still in a bucket the collection reads."""
        collection = await self.client.get_collection(collection_id)
        source = collection.get("source")
        source = source if isinstance(source, dict) else {}
        buckets = source.get("bucket_ids") or [source.get("bucket_id")]
        for bucket in buckets:
            if not isinstance(bucket, str) or not bucket:
                continue
            try:
                await self.client.get_object(bucket, object_id)
            except MixpeekNotFound:
                continue
            return True
        return False

    def _asset(
        self, collection_id: str, object_id: str, docs: list[Doc], *, complete: bool = False
    ) -> Asset:
        """The asset these documents make; ``complete``: they are all of its documents, so
        their feature ids (the point ids) are its feature set."""
        stamps = [s for d in docs if (s := zulu(_internal(d).get("updated_at"))) is not None]
        stamp = max(stamps, key=lambda s: parse_timestamp(s) or 0) if stamps else None
        when = parse_timestamp(stamp)
        first = docs[0] if docs else {}
        asset_id = asset_key(collection_id, object_id)
        data = {
            "asset_id": asset_id,
            "collection_id": collection_id,
            "object_id": object_id,
            "root_bucket_id": models.lineage(first)["root_bucket_id"],
            "namespace_id": _internal(first).get("namespace_id"),
            # The source's URL, as searches show an asset (_internal.processing.source_url).
            "url": _source_url(_internal(first)),
            "mixpeek_api": "v1",
        }
        features = frozenset(self._feature_id(d, collection_id) for d in docs) if complete else None
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
            feature_ids=features,
        )

    def _feature_id(self, doc: Doc, collection_id: str) -> str:
        """The point id of ``doc``, as the adapter's feature mapping makes it (a unit test
        keeps the two equal)."""
        internal = _internal(doc)
        namespace_id = str(internal.get("namespace_id") or self.client.namespace or "default")
        collection = str(doc.get("collection_id") or internal.get("collection_id") or collection_id)
        return models.point_uuid(namespace_id, collection, str(doc["document_id"]))

    # -- listing ----------------------------------------------------------------------------

    async def list_assets(
        self,
        collection_id: str,
        *,
        order: ListOrder,
        page: int = 1,
        page_size: int = 100,
        changed_since: float | None = None,
        resume: str | None = None,
    ) -> AssetPage:
        """Page ``page`` of the collection's assets, from ``page_size`` documents (without
        vectors) grouped by root object."""
        key: WalkKey = (collection_id, order, changed_since, page_size)
        walk = self._walks.get(key)
        if page == 1 or walk is None or walk.page != page:
            step = await self._step_to(key, page, resume)
        else:
            step = await self._step(key, walk)
        if step is None:
            return AssetPage([], has_next=False)
        assets, after = step
        if after is None:
            self._walks.pop(key, None)
            return AssetPage(assets, has_next=False)
        self._walks[key] = after
        return AssetPage(assets, has_next=True, resume=after.token(key, self._sorted(order)))

    def _sorted(self, order: ListOrder) -> bool:
        """Whether this order's listings are still asked sorted (not refused or ignored)."""
        refused = self._by_object_refused if order is ListOrder.CREATED else self._changed_refused
        return not refused

    async def _step_to(
        self, key: WalkKey, page: int, resume: str | None
    ) -> tuple[list[Asset], Walk | None] | None:
        """Page ``page`` for a walk not standing there (None: the listing ends before it):
        rebuilt from ``resume`` when it fits, else walked to from page 1."""
        rebuilt = walk_from_token(resume, key, page, self._sorted(key[1]))
        if rebuilt is not None:
            try:
                return await self._step_from(key, rebuilt, page)
            except MixpeekBadRequest:
                log.info(
                    "Mixpeek v1 no longer takes the cursor kept for page %d of %s: listing "
                    "from page 1",
                    page,
                    key[0],
                    extra={"event": "v1_cursor_refused", "collection_id": key[0]},
                )
        return await self._step_from(key, Walk(), page)

    async def _step_from(
        self, key: WalkKey, walk: Walk, page: int
    ) -> tuple[list[Asset], Walk | None] | None:
        while walk.page < page:  # the pages before are listed again, their assets dropped
            _, after = await self._step(key, walk)
            if after is None:
                return None
            walk = after
        return await self._step(key, walk)

    async def _step(self, key: WalkKey, walk: Walk) -> tuple[list[Asset], Walk | None]:
        """The assets of the page ``walk`` stands at, and the walk to the next (None: last)."""
        collection_id, order = key[0], key[1]
        by_object = order is ListOrder.CREATED and not self._by_object_refused
        docs, cursor = await self._list_page(key, walk.cursor)
        if by_object and not self._by_object_refused:  # (a 400 above may have refused it)
            roots = [r for d in docs if (r := _root(d)) is not None]
            if roots != sorted(roots) or (roots and walk.last and roots[0] < walk.last):
                self._refuse_by_object(collection_id, "ignored")
            else:
                return self._sorted_step(collection_id, walk, docs, cursor)
        docs = walk.carry + docs  # a walk that stopped being sorted keeps what it held
        groups = self._group(docs)
        if order is ListOrder.CHANGED:
            # Oldest change first, by each object's newest document: what a server honouring
            # the sort serves (the watcher checks the order to tell one that ignores it).
            last = {_root(d): i for i, d in enumerate(docs)}
            groups = dict(sorted(groups.items(), key=lambda item: last[item[0]]))
        # An object whose documents straddle two pages is listed on the first only (a page
        # repeating the last one's assets would look like a server ignoring the cursor).
        assets = [
            self._asset(collection_id, obj, group)
            for obj, group in groups.items()
            if obj not in walk.previous
        ]
        if cursor is None:
            return assets, None
        # Rebuilt from this page, a walk finds the objects it lists (``previous``); one that
        # still held an object from sorted pages is rebuilt from page 1.
        origin = (1, None, None) if walk.carry else (walk.page, walk.cursor, None)
        return assets, Walk(walk.page + 1, cursor, frozenset(groups), origin=origin)

    def _sorted_step(
        self, collection_id: str, walk: Walk, docs: list[Doc], cursor: str | None
    ) -> tuple[list[Asset], Walk | None]:
        # Documents of objects already listed (a cursor that re-serves a few) are dropped.
        fresh = [d for d in docs if walk.last is None or (_root(d) or "") > walk.last]
        groups = self._group(walk.carry + fresh)
        carry: list[Doc] = []
        held: str | None = None
        if cursor is not None and groups:
            held = next(reversed(groups))
            carry = groups.pop(held)  # it may go on on the next page
        assets = [self._asset(collection_id, o, g, complete=True) for o, g in groups.items()]
        if cursor is None:
            return assets, None
        last = next(reversed(groups)) if groups else walk.last
        origin: tuple[int, str | None, str | None]
        if held is None:
            origin = (walk.page + 1, cursor, last)  # nothing held: the next page itself
        elif walk.carry and _root(walk.carry[0]) == held:
            origin = walk.origin  # the object held goes on from where it began
        else:
            origin = (walk.page, walk.cursor, walk.last)  # it begins on this page
        return assets, Walk(walk.page + 1, cursor, frozenset(), last, carry, origin)

    def _refuse_by_object(self, collection_id: str, how: str) -> None:
        self._by_object_refused = True
        log.warning(
            "Mixpeek v1 %s the sort on %s when listing %s: full passes list plain pages, and "
            "documents deleted from an object that keeps others are found only by verify",
            how,
            ROOT_OBJECT,
            collection_id,
            extra={"event": "v1_sort_ignored", "collection_id": collection_id},
        )

    async def _list_page(self, key: WalkKey, cursor: str | None) -> tuple[list[Doc], str | None]:
        collection_id, order, since, size = key
        filters: dict[str, Any] | None = None
        sort: tuple[str, str] | None = None
        if order is ListOrder.CREATED:
            if not self._by_object_refused:
                sort = (ROOT_OBJECT, "asc")
        elif not self._changed_refused:
            sort = (UPDATED, _CHANGE_SORTS[order])
            if since is not None:
                filters = {"AND": [{"field": UPDATED, "operator": "gte", "value": zulu(since)}]}
        try:
            page = await self.client.list_documents(
                collection_id, limit=size, cursor=cursor, filters=filters, sort=sort
            )
        except MixpeekBadRequest:
            if filters is None and sort is None:
                raise
            # Refused the same without them, it was the cursor (a resumed pass's, expired).
            page = await self.client.list_documents(collection_id, limit=size, cursor=cursor)
            # Both are guesses; a server that refuses them gets plain listings from now on
            # (callers check order and filter themselves).
            if order is ListOrder.CREATED:
                self._refuse_by_object(collection_id, "refused")
            else:
                log.warning("Mixpeek v1 refused the updated_at filter or sort; listing in full")
                self._changed_refused = True
        return page.documents, page.next_cursor

    @staticmethod
    def _group(docs: list[Doc]) -> dict[str, list[Doc]]:
        groups: dict[str, list[Doc]] = {}
        for doc in docs:
            obj = _root(doc)
            if obj is None:
                log.warning("v1 document %s names no root object; skipped", doc.get("document_id"))
                continue
            groups.setdefault(obj, []).append(doc)
        return groups
