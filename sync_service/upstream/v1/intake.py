"""Work intake on v1: submitting items as batches, and following a batch's task to its end.

The port's task is what the service tracks; on v1 that is a submitted batch's task, tracked by
its task id or by the batch id (``btch_…``, or ``bkt_…/btch_…`` to skip looking for its bucket).

* **Submit**: one object per item in the bucket the collection reads from, then one batch per
  bucket for every item submitted together, submitted: one task to track per batch.
* **A task ends** (``COMPLETED``, ``COMPLETED_WITH_ERRORS``; ``FAILED`` and ``CANCELED`` end
  failed): no endpoint lists a batch's documents (README "Mixpeek v1"), so each collection the
  batch wrote to is listed by ``root_object_id`` and the documents found are checked against the
  ``documents_written`` the batch reports. Fewer found than written is given a grace period (a
  listing may lag the write), then synced with the shortfall reported; a COMPLETED_WITH_ERRORS
  batch's objects that produced nothing are reported too (``TaskState.problems``, which the
  engine records as the task's dead letters).
* **A task that 404s** (Mixpeek keeps tasks about 24 h) is resolved through its batch: the
  batch's status is its task's.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from typing import Any

from sync_service.upstream.errors import (
    MixpeekBadRequest,
    MixpeekNotFound,
)
from sync_service.upstream.owner import read_embedding
from sync_service.upstream.port import (
    Embedding,
    Submission,
    TaskOutcome,
    TaskState,
    classify_status,
)
from sync_service.upstream.v1 import models
from sync_service.upstream.v1.client import V1Client
from sync_service.upstream.v1.listing import asset_key

__all__ = ["V1Intake"]

log = logging.getLogger(__name__)

#: Object ids per ``root_object_id in [...]`` filter (a guess: the API states no limit).
OBJECT_CHUNK = 100
#: Seconds a finished batch may list fewer documents than it reports written before it is
#: synced anyway, with the shortfall reported.
LISTING_GRACE = 30.0
#: Buckets and batches read per page when looking for a batch or an expired task's batch.
_PAGE = 100
_BLOB_TYPES = {"video": ("video",), "image": ("image",), "text": ("text", "string")}


def batch_ref(tracked: str) -> tuple[str | None, str] | None:
    """``(bucket or None, batch)`` when the tracked id names a batch, else None."""
    bucket, sep, batch = tracked.rpartition("/")
    if not batch.startswith("btch_"):
        return None
    return (bucket or None) if sep else None, batch


class V1Intake:
    """The port's task and intake methods; :class:`~sync_service.upstream.v1.adapter.V1Upstream`
    inherits them."""

    client: V1Client

    def __init__(self, client: V1Client, *, listing_grace: float = LISTING_GRACE) -> None:
        self.client = client
        self.listing_grace = listing_grace
        # What this process learnt: the batch behind a task, the bucket of a batch, the
        # error of a failed task (so an expired task's reason is not lost), when a finished
        # batch was first seen short of documents.
        self._batch_of: dict[str, tuple[str, str]] = {}
        self._bucket_of: dict[str, str] = {}
        self._errors: dict[str, str] = {}
        self._short_since: dict[str, float] = {}

    # -- tasks --------------------------------------------------------------------------------

    async def get_task(self, task_id: str) -> TaskState:
        ref = batch_ref(task_id)
        if ref is not None:
            named = await self._batch(*ref)
            return await self._state(task_id, named.status or "DRAFT", named, named.error)
        try:
            task = await self.client.get_task(task_id)
        except MixpeekNotFound:
            found = await self._batch_of_task(task_id)
            if found is None:
                raise
            log.info("v1 task %s expired upstream; following its batch %s", task_id, found.batch_id)
            return await self._state(task_id, found.status or "UNKNOWN", found, found.error)
        batch: models.Batch | None = None
        if task.batch_id and task.bucket_id:
            self._batch_of[task_id] = (task.bucket_id, task.batch_id)
            if classify_status(task.status) is TaskOutcome.SUCCEEDED:
                batch = await self.client.get_batch(task.bucket_id, task.batch_id)
        return await self._state(task_id, task.status, batch, task.error, task.collection_ids)

    async def _state(
        self,
        tracked: str,
        status: str,
        batch: models.Batch | None,
        error: str | None,
        collections: Sequence[str] = (),
    ) -> TaskState:
        outcome = classify_status(status)
        if error:
            self._errors[tracked] = error
        if outcome is not TaskOutcome.SUCCEEDED or batch is None:
            return TaskState(tracked, status, outcome)
        if any(classify_status(s) is TaskOutcome.PENDING for _, s in batch.tiers):
            # A later tier still runs: the batch is done only when every tier is.
            return TaskState(tracked, f"{status} (a later tier is running)", TaskOutcome.PENDING)
        return await self._produced(tracked, status, batch, list(collections))

    async def _produced(
        self, tracked: str, status: str, batch: models.Batch, fallback: list[str]
    ) -> TaskState:
        """The (collection, object) assets a finished batch produced, checked against the
        document count it reports."""
        collections = batch.collection_ids or fallback
        objects = batch.object_ids
        found: Counter[tuple[str, str]] = Counter()
        for collection_id in collections:
            found.update(await self._count(collection_id, objects))
        listed, written = sum(found.values()), batch.documents_written
        problems: list[str] = []
        if written is not None and listed < written:
            since = self._short_since.setdefault(tracked, time.monotonic())
            if time.monotonic() - since < self.listing_grace:
                waiting = f"{status} (listed {listed} of {written} documents)"
                return TaskState(tracked, waiting, TaskOutcome.PENDING)
            problems.append(
                f"batch {batch.batch_id} reports {written} document(s) written but "
                f"{listed} are listed in {', '.join(collections)} (deleted since, or not "
                "listable yet: the next pass of a watched collection finds them)"
            )
        self._short_since.pop(tracked, None)
        if status.upper() == "COMPLETED_WITH_ERRORS":
            for object_id in objects:
                if not any(found[(c, object_id)] for c in collections):
                    problems.append(
                        f"object {object_id} produced no document ({status}"
                        + (f": {batch.error})" if batch.error else ")")
                    )
        assets = [asset_key(c, o) for c in collections for o in objects if found[(c, o)]]
        if not assets and collections and objects:
            # Nothing to sync, but a synced task with its problems says more than a failure.
            assets = [asset_key(collections[0], objects[0])]
        first = assets[0] if assets else None
        return TaskState(
            tracked, status, TaskOutcome.SUCCEEDED, first, tuple(assets[1:]), tuple(problems)
        )

    async def _count(self, collection_id: str, objects: list[str]) -> Counter[tuple[str, str]]:
        """Documents per (collection, root object) of ``objects`` in ``collection_id``."""
        counts: Counter[tuple[str, str]] = Counter()
        for start in range(0, len(objects), OBJECT_CHUNK):
            chunk = set(objects[start : start + OBJECT_CHUNK])
            where = {
                "field": "_internal.lineage.root_object_id",
                "operator": "in",
                "value": sorted(chunk),
            }
            cursor: str | None = None
            seen: set[str] = set()
            while True:
                page = await self.client.list_documents(
                    collection_id, limit=1000, cursor=cursor, filters={"AND": [where]}
                )
                for doc in page.documents:
                    root = models.lineage(doc)["root_object_id"]
                    if root in chunk:  # a server that ignored the filter: count only these
                        counts[(collection_id, root)] += 1
                if page.next_cursor is None or page.next_cursor in seen:
                    break
                seen.add(page.next_cursor)
                cursor = page.next_cursor
        return counts

    async def failure_reason(self, task: TaskState) -> str | None:
        if task.task_id not in self._errors:
            try:
                await self.get_task(task.task_id)  # remembers the error it reads
            except MixpeekNotFound:
                return None
        return self._errors.get(task.task_id)

    # -- batches ------------------------------------------------------------------------------

    async def _batch(self, bucket_id: str | None, batch_id: str) -> models.Batch:
        """The batch, finding its bucket when not given; MixpeekNotFound when none has it."""
        bucket_id = bucket_id or self._bucket_of.get(batch_id)
        if bucket_id is not None:
            return await self.client.get_batch(bucket_id, batch_id)
        async for bucket in self._buckets():
            try:
                batch = await self.client.get_batch(bucket, batch_id)
            except MixpeekNotFound:
                continue
            self._bucket_of[batch_id] = bucket
            return batch
        raise MixpeekNotFound(f"no bucket of this namespace holds batch {batch_id}")

    async def _batch_of_task(self, task_id: str) -> models.Batch | None:
        """The batch whose task (or a tier's) is ``task_id``: remembered, else looked for in
        every bucket's batches (rare: only after a task expired)."""
        if task_id in self._batch_of:
            bucket_id, batch_id = self._batch_of[task_id]
            return await self.client.get_batch(bucket_id, batch_id)
        async for bucket in self._buckets():
            offset = 0
            while True:
                batches = await self.client.list_batches(bucket, offset=offset, limit=_PAGE)
                for batch in batches:
                    if batch.has_task(task_id):
                        self._batch_of[task_id] = (bucket, batch.batch_id)
                        return batch
                if len(batches) < _PAGE:
                    break
                offset += _PAGE
        return None

    async def _buckets(self) -> AsyncIterator[str]:
        offset = 0
        while True:
            page = await self.client.list_buckets(offset=offset, limit=_PAGE)
            for bucket in page:
                if isinstance(bucket.get("bucket_id"), str):
                    yield bucket["bucket_id"]
            if len(page) < _PAGE:
                return
            offset += _PAGE

    # -- intake -------------------------------------------------------------------------------

    async def submit(self, item: Submission) -> str | None:
        """One item: an object in the bucket the collection reads from, in a batch of its own."""
        return await anext(aiter(self.submit_all([item])), None)

    async def submit_all(self, items: Sequence[Submission]) -> AsyncIterator[str]:
        """Every item as an object in its collection's bucket; one batch per bucket, submitted.
        ``item.collection_id`` names a v1 collection (id or name)."""
        by_bucket: dict[str, list[str]] = {}
        schemas: dict[str, dict[str, Any]] = {}
        for item in items:
            bucket = await self._source_bucket(item.collection_id)
            if bucket not in schemas:
                schemas[bucket] = await self._schema(bucket)
            body: dict[str, Any] = {
                "blobs": [
                    {
                        "property": _property(schemas[bucket], item.kind),
                        "type": item.kind,
                        "data": item.content,
                    }
                ]
            }
            if item.metadata is not None:
                body["metadata"] = dict(item.metadata)
            obj = await self.client.create_object(bucket, body)
            by_bucket.setdefault(bucket, []).append(str(obj["object_id"]))
        for bucket, object_ids in by_bucket.items():
            batch = await self.client.create_batch(bucket, object_ids)
            self._bucket_of[batch.batch_id] = bucket
            task = await self.client.submit_batch(bucket, batch.batch_id)
            self._batch_of[task.task_id] = (bucket, batch.batch_id)
            yield task.task_id

    async def _source_bucket(self, collection_id: str) -> str:
        collection = await self.client.get_collection(collection_id)
        source = collection.get("source") if isinstance(collection.get("source"), dict) else {}
        assert isinstance(source, dict)
        buckets = source.get("bucket_ids") or (
            [source["bucket_id"]] if source.get("bucket_id") else []
        )
        if not buckets:
            raise MixpeekBadRequest(
                f"collection {collection_id} reads no bucket (its source is "
                f"{source.get('type') or 'unknown'}): nothing to submit into"
            )
        return str(buckets[0])

    async def _schema(self, bucket_id: str) -> dict[str, Any]:
        bucket = await self.client.get_bucket(bucket_id)
        schema = bucket.get("bucket_schema") or bucket.get("schema")
        properties = schema.get("properties") if isinstance(schema, dict) else None
        return properties if isinstance(properties, dict) else {}

    async def embed(self, text: str, vector_name: str) -> Embedding:
        return await read_embedding(
            self.client.embed(text, vector_name),
            api="Mixpeek v1 API",
            route="POST /v1/features/extractors/embed",
        )


def _property(schema: dict[str, Any], kind: str) -> str:
    """The bucket property an item of ``kind`` goes in: the first whose type fits, else one
    named after the kind (what a bucket made for the service declares)."""
    for name, spec in schema.items():
        if isinstance(spec, dict) and str(spec.get("type", "")).lower() in _BLOB_TYPES[kind]:
            return str(name)
    return kind
