"""Response bodies of the v1 entities, in the published field spellings ([SDK] models)."""

from __future__ import annotations

import copy
from typing import Any

from sync_service.emulator.v1 import extractors
from sync_service.emulator.v1.model import Batch, Bucket, Collection, Namespace, StoredObject, Task
from sync_service.emulator.v1.store import V1State

FAILURE = "Feature extraction failed: the inference service returned an error"


def namespace(state: V1State, ns: Namespace) -> dict[str, Any]:
    def count(items: Any) -> int:
        return sum(1 for i in items if i.namespace_id == ns.namespace_id)

    return {
        "namespace_id": ns.namespace_id,
        "namespace_name": ns.namespace_name,
        "namespace_type": "STANDARD",
        "description": ns.description,
        "feature_extractors": copy.deepcopy(ns.feature_extractors),
        "payload_indexes": [],
        "document_count": count(state.documents.values()),
        "bucket_count": count(state.buckets.values()),
        "collection_count": count(state.collections.values()),
        "object_count": count(state.objects.values()),
        "created_at": state.naive(ns.created),
        "updated_at": state.naive(ns.created),
    }


def bucket(state: V1State, b: Bucket) -> dict[str, Any]:
    objects = sum(1 for o in state.objects.values() if o.bucket_id == b.bucket_id)
    return {
        "bucket_id": b.bucket_id,
        "bucket_name": b.bucket_name,
        "description": b.description,
        "bucket_schema": copy.deepcopy(b.bucket_schema),
        "unique_key": copy.deepcopy(b.unique_key),
        "metadata": copy.deepcopy(b.metadata),
        "object_count": objects,
        "total_size_bytes": 0,
        "created_at": state.naive(b.created),
        "updated_at": state.naive(b.created),
        "status": "ACTIVE",
        "is_locked": False,
    }


def stored_object(state: V1State, o: StoredObject) -> dict[str, Any]:
    status = "DRAFT"
    if o.task_id is not None and o.task_id in state.tasks:
        status = state.task_status(state.tasks[o.task_id])[0]
    blobs = [
        {
            "blob_id": b.blob_id,
            "property": b.property,
            "type": b.type,
            "key_prefix": o.key_prefix,
            "properties": {"url": b.data} if b.type != "text" else {"value": b.data},
            "metadata": copy.deepcopy(b.metadata),
        }
        for b in o.blobs
    ]
    return {
        "object_id": o.object_id,
        "bucket_id": o.bucket_id,
        "key_prefix": o.key_prefix,
        "blobs": blobs,
        "source_details": [],
        "metadata": copy.deepcopy(o.metadata),  # undeclared, but stored and returned
        "status": status,
        "error": None,
        "created_at": state.naive(o.created),
        "updated_at": state.naive(o.updated),
    }


def task(state: V1State, t: Task) -> dict[str, Any]:
    status = state.task_status(t)[0]
    error = FAILURE if status == "FAILED" else None
    outputs = None
    if status in ("COMPLETED", "COMPLETED_WITH_ERRORS") and t.batch_id in state.batches:
        outputs = list(state.batches[t.batch_id].collection_ids)
    extra = copy.deepcopy(t.additional_data)
    if error:
        extra["error"] = error
    return {
        "task_id": t.task_id,
        "task_type": t.task_type,
        "status": status,
        "inputs": list(t.inputs),
        "outputs": outputs,
        "additional_data": extra,
        "error": error,
    }


def batch(state: V1State, b: Batch) -> dict[str, Any]:
    t = state.tasks.get(b.task_id or "")
    status, since = ("DRAFT", b.created) if t is None else state.task_status(t)
    tier = None
    if t is not None:
        final = status in ("COMPLETED", "COMPLETED_WITH_ERRORS", "FAILED", "CANCELED")
        tier = {
            "tier_num": 0,
            "task_id": t.task_id,
            "status": status,
            "collection_ids": list(b.collection_ids),
            "source_type": "bucket",
            "started_at": state.naive(t.created),
            "completed_at": state.naive(since) if final else None,
            "documents_written": b.documents_written if final else 0,
            "errors": [FAILURE] if status == "FAILED" else [],
        }
    return {
        "batch_id": b.batch_id,
        "bucket_id": b.bucket_id,
        "status": status,  # copied from its task, as the API does
        "object_ids": list(b.object_ids),
        "loaded_object_ids": [o for o in b.object_ids if o in state.objects],
        "collection_ids": list(b.collection_ids),
        "dag_tiers": [list(b.collection_ids)] if b.collection_ids else [],
        "type": "BUCKET",
        "task_id": b.task_id,
        "tier_tasks": [tier] if tier else [],
        "current_tier": 0 if t is not None else None,
        "total_tiers": 1,
        "error": FAILURE if status == "FAILED" else None,
        "metadata": copy.deepcopy(b.metadata),
        "created_at": state.naive(b.created),
        "updated_at": state.naive(max(b.updated, since)),
    }


def collection(state: V1State, c: Collection) -> dict[str, Any]:
    extractor = extractors.resolve(c.extractor)
    dims = state.config.vector_dimensions
    count = sum(1 for d in state.documents.values() if d.collection_id == c.collection_id)
    return {
        "collection_id": c.collection_id,
        "collection_name": c.collection_name,
        "description": c.description,
        "source": {"type": "bucket", "bucket_ids": list(c.bucket_ids)},
        "feature_extractor": copy.deepcopy(c.extractor),
        "input_schema": {"properties": {}},
        "output_schema": {"properties": {}},
        "vector_indexes": extractors.vector_indexes_view(extractor, dims),
        "payload_indexes": [],
        "enabled": True,
        "lifecycle_state": "active",
        "document_count": count,
        "schema_version": 1,
        "created_at": state.naive(c.created),
        "updated_at": state.naive(c.updated),
    }


def page(results: list[Any], total: int, limit: int, offset: int) -> dict[str, Any]:
    """``{results, pagination, total_count}`` of an offset-paged list."""
    pages = -(-total // limit) if limit else 0
    pagination = {
        "total": total,
        "page": offset // limit + 1 if limit else 1,
        "page_size": limit,
        "total_pages": pages,
        "next_page": None,
        "previous_page": None,
        "next_cursor": None,
    }
    return {"results": results, "pagination": pagination, "total_count": total}
