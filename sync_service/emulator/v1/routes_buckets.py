"""Buckets, their objects and batches: the ingestion side of v1.

Request spellings drift between the OpenAPI and the docs; both are accepted: ``bucket_schema``
or ``schema``, a blob's ``data`` or ``url``.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from sync_service.emulator.responses import ApiError, json_response
from sync_service.emulator.v1 import views
from sync_service.emulator.v1.api import namespace
from sync_service.emulator.v1.model import Batch, Blob, Bucket, StoredObject
from sync_service.emulator.v1.store import V1State

Policy = Literal["insert", "update", "upsert"]


class CreateBucket(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)
    bucket_name: str = Field(min_length=1)
    description: str | None = None
    bucket_schema: dict[str, Any] | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    unique_key: dict[str, Any] | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class BlobIn(BaseModel):
    model_config = ConfigDict(extra="allow")
    property: str
    type: str
    data: Any = None
    url: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class CreateObject(BaseModel):
    model_config = ConfigDict(extra="allow")
    key_prefix: str | None = None
    blobs: list[BlobIn] = Field(min_length=1)
    metadata: dict[str, Any] = Field(default_factory=dict)


class CreateBatch(BaseModel):
    model_config = ConfigDict(extra="allow")
    object_ids: list[str] = Field(min_length=1)
    metadata: dict[str, Any] = Field(default_factory=dict)


def _unique_value(bucket: Bucket, metadata: dict[str, Any]) -> tuple[Any, ...] | None:
    """The object's unique key: its metadata values of the bucket's ``unique_key.fields``."""
    if not bucket.unique_key:
        return None
    fields = bucket.unique_key.get("fields") or []
    values = tuple(metadata.get(f) for f in fields)
    return None if all(v is None for v in values) else values


def add_bucket_routes(router: APIRouter, state: V1State) -> None:
    def batch_of(bucket: Bucket, batch_id: str) -> Batch:
        batch = state.batches.get(batch_id)
        if batch is None or batch.bucket_id != bucket.bucket_id:
            raise ApiError(404, f"Batch {batch_id} not found", {"id": batch_id})
        return batch

    @router.post("/v1/buckets")
    async def create_bucket(request: Request, body: CreateBucket) -> Response:
        ns = namespace(state, request)
        if any(
            b.bucket_name == body.bucket_name and b.namespace_id == ns.namespace_id
            for b in state.buckets.values()
        ):
            raise ApiError(409, f"Bucket {body.bucket_name} already exists")
        schema = body.bucket_schema or body.schema_ or {"properties": {}}
        bucket = Bucket(
            state.new_id("bkt"),
            ns.namespace_id,
            body.bucket_name,
            body.description,
            schema,
            body.unique_key,
            body.metadata,
            state.clock(),
        )
        state.buckets[bucket.bucket_id] = bucket
        return json_response(views.bucket(state, bucket))

    @router.get("/v1/buckets/{bucket}")
    async def get_bucket(request: Request, bucket: str) -> Response:
        return json_response(
            views.bucket(state, state.bucket_of(namespace(state, request), bucket))
        )

    @router.post("/v1/buckets/list")
    async def list_buckets(request: Request, limit: int = 10, offset: int = 0) -> Response:
        ns = namespace(state, request)
        items = [
            views.bucket(state, b)
            for b in state.buckets.values()
            if b.namespace_id == ns.namespace_id
        ]
        return json_response(views.page(items[offset : offset + limit], len(items), limit, offset))

    @router.post("/v1/buckets/{bucket}/objects")
    async def create_object(
        request: Request, bucket: str, body: CreateObject, policy: Policy | None = None
    ) -> Response:
        b = state.bucket_of(namespace(state, request), bucket)
        key = _unique_value(b, body.metadata)
        existing = None
        if key is not None:
            same = (o for o in state.objects.values() if o.bucket_id == b.bucket_id)
            existing = next((o for o in same if _unique_value(b, o.metadata) == key), None)
        chosen = policy or (b.unique_key or {}).get("default_policy") or "insert"
        if existing is not None and chosen == "insert":
            raise ApiError(
                409,
                "An object with this unique key already exists",
                {"object_id": existing.object_id},
            )
        blobs = [
            Blob(
                state.new_id("blob"),
                x.property,
                x.type,
                x.data if x.data is not None else x.url,
                x.metadata,
            )
            for x in body.blobs
        ]
        now = state.clock()
        if existing is not None:  # update / upsert: same object, new content
            existing.blobs, existing.metadata = blobs, body.metadata
            existing.key_prefix, existing.updated = body.key_prefix, state.later(existing.updated)
            return json_response(views.stored_object(state, existing))
        obj = StoredObject(
            state.new_id("obj"),
            b.bucket_id,
            b.namespace_id,
            body.key_prefix,
            blobs,
            body.metadata,
            now,
            now,
        )
        state.objects[obj.object_id] = obj
        state.emit(
            "object.created", obj.namespace_id, "object", obj.object_id, {"bucket_id": b.bucket_id}
        )
        return json_response(views.stored_object(state, obj))

    @router.get("/v1/buckets/{bucket}/objects/{object_id}")
    async def get_object(request: Request, bucket: str, object_id: str) -> Response:
        b = state.bucket_of(namespace(state, request), bucket)
        return json_response(views.stored_object(state, state.object_of(b, object_id)))

    @router.delete("/v1/buckets/{bucket}/objects/{object_id}")
    async def delete_object(
        request: Request, bucket: str, object_id: str, cascade: bool = False
    ) -> Response:
        b = state.bucket_of(namespace(state, request), bucket)
        state.delete_object(state.object_of(b, object_id), cascade)
        return Response(status_code=204)

    @router.post("/v1/buckets/{bucket}/batches")
    async def create_batch(request: Request, bucket: str, body: CreateBatch) -> Response:
        b = state.bucket_of(namespace(state, request), bucket)
        for object_id in body.object_ids:
            state.object_of(b, object_id)  # 404 for an object not in this bucket
        now = state.clock()
        batch = Batch(
            state.new_id("btch"),
            b.bucket_id,
            b.namespace_id,
            list(body.object_ids),
            now,
            now,
            body.metadata,
        )
        batch.collection_ids = [c.collection_id for c in state.collections_of_bucket(b.bucket_id)]
        state.batches[batch.batch_id] = batch
        return json_response(views.batch(state, batch))

    @router.get("/v1/buckets/{bucket}/batches/{batch_id}")
    async def get_batch(request: Request, bucket: str, batch_id: str) -> Response:
        b = state.bucket_of(namespace(state, request), bucket)
        return json_response(views.batch(state, batch_of(b, batch_id)))

    @router.post("/v1/buckets/{bucket}/batches/list")
    async def list_batches(
        request: Request, bucket: str, limit: int = 100, offset: int = 0
    ) -> Response:
        b = state.bucket_of(namespace(state, request), bucket)
        items = [
            views.batch(state, x) for x in state.batches.values() if x.bucket_id == b.bucket_id
        ]
        return json_response({"results": items[offset : offset + limit], "total_count": len(items)})

    @router.post("/v1/buckets/{bucket}/batches/{batch_id}/submit")
    async def submit(request: Request, bucket: str, batch_id: str) -> Response:
        b = state.bucket_of(namespace(state, request), bucket)
        task = state.submit(batch_of(b, batch_id))
        return json_response(views.task(state, task))
