"""The v1 API's answers as the adapter reads them, tolerant of every published variant.

Plain functions and frozen dataclasses over the JSON: each reads the few fields the service
decides on and keeps the rest as served (``raw``), because a document becomes a Qdrant payload
verbatim. Where Mixpeek's OpenAPI, SDK and docs disagree (README "Mixpeek v1" lists what was
assumed) every variant is read: three vector placements, two list-page shapes,
``error`` / ``error_message`` / ``additional_data.error`` on tasks, ``dimensions`` or ``size``
on vector indexes, lineage in ``_internal.lineage`` or (2025 documents) at the root.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from sync_service.upstream.errors import MixpeekBadResponse
from sync_service.upstream.port import VectorShape

__all__ = [
    "Batch",
    "DocumentPage",
    "Task",
    "VectorIndex",
    "document_vectors",
    "lineage",
    "point_uuid",
    "strip_presigned",
    "vector_indexes",
]

#: The v1 point id is uuid5(NAMESPACE_URL, this + "{namespace}/{collection}/{document}").
POINT_PREFIX = "mixpeek://v1/"
_LINEAGE_KEYS = ("root_object_id", "root_bucket_id", "source_object_id", "source_document_id")


def as_object(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise MixpeekBadResponse(f"expected a JSON object, got {type(data).__name__}")
    return data


def results(data: Any) -> list[dict[str, Any]]:
    """The items of a v1 list answer: ``results`` (or ``items``, or a bare list)."""
    items = data if isinstance(data, list) else None
    if isinstance(data, dict):
        items = data.get("results", data.get("items"))
    if not isinstance(items, list):
        raise MixpeekBadResponse("list answer has no results list")
    return [item for item in items if isinstance(item, dict)]


def _str(value: Any) -> str | None:
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _strs(value: Any) -> list[str]:
    return [s for s in (_str(v) for v in value) if s] if isinstance(value, list) else []


@dataclass(frozen=True)
class Task:
    """``TaskResponse``: what the service needs of a task, and its batch when it names one."""

    task_id: str
    status: str
    error: str | None
    batch_id: str | None
    bucket_id: str | None
    collection_ids: list[str]
    raw: Mapping[str, Any] = field(repr=False)

    @classmethod
    def from_json(cls, data: Any) -> Task:
        body = as_object(data)
        task_id = _str(body.get("task_id"))
        if task_id is None:
            raise MixpeekBadResponse("task answer has no task_id")
        extra = body.get("additional_data")
        extra = extra if isinstance(extra, dict) else {}
        inputs = _strs(body.get("inputs"))
        batch_id = _str(extra.get("batch_id")) or next(
            (i for i in inputs if i.startswith("btch_")), None
        )
        error = body.get("error") or body.get("error_message") or extra.get("error")
        return cls(
            task_id=task_id,
            status=_str(body.get("status")) or "UNKNOWN",  # unknown counts as not finished
            error=str(error) if error else None,
            batch_id=batch_id,
            bucket_id=_str(extra.get("bucket_id")),
            collection_ids=_strs(extra.get("collection_ids")),
            raw=body,
        )


@dataclass(frozen=True)
class Batch:
    """``BatchModel``: the objects a batch processed and the collections it wrote to."""

    batch_id: str
    bucket_id: str | None
    status: str | None
    object_ids: list[str]
    collection_ids: list[str]
    task_id: str | None
    documents_written: int | None
    error: str | None = None
    #: Each tier's task (tier 0 first) with its status: the batch is done when all are.
    tiers: tuple[tuple[str | None, str | None], ...] = ()

    @classmethod
    def from_json(cls, data: Any) -> Batch:
        body = as_object(data)
        batch_id = _str(body.get("batch_id"))
        if batch_id is None:
            raise MixpeekBadResponse("batch answer has no batch_id")
        written: list[int] = [
            t["documents_written"]
            for t in body.get("tier_tasks") or []
            if isinstance(t, dict) and isinstance(t.get("documents_written"), int)
        ]
        return cls(
            batch_id=batch_id,
            bucket_id=_str(body.get("bucket_id")),
            status=_str(body.get("status")),
            object_ids=_strs(body.get("object_ids")),
            collection_ids=_strs(body.get("collection_ids")),
            task_id=_str(body.get("task_id")),
            documents_written=sum(written) if written else None,
            error=_str(body.get("error")) or _str(body.get("error_summary")),
            tiers=tuple(
                (_str(t.get("task_id")), _str(t.get("status")))
                for t in body.get("tier_tasks") or []
                if isinstance(t, dict)
            ),
        )

    def has_task(self, task_id: str) -> bool:
        """Whether ``task_id`` is this batch's task or one of its tiers'."""
        return task_id == self.task_id or any(task_id == t for t, _ in self.tiers)


@dataclass(frozen=True)
class DocumentPage:
    """One page of ``documents/list``: ``pagination.next_cursor`` or a top-level one."""

    documents: list[dict[str, Any]]
    next_cursor: str | None

    @classmethod
    def from_json(cls, data: Any) -> DocumentPage:
        body = as_object(data)
        results = body.get("results")
        if not isinstance(results, list):
            raise MixpeekBadResponse("documents list answer has no results list")
        docs = [d for d in results if isinstance(d, dict) and _str(d.get("document_id"))]
        pagination = body.get("pagination")
        cursor = _str(pagination.get("next_cursor")) if isinstance(pagination, dict) else None
        cursor = cursor or _str(body.get("next_cursor"))
        # The end: empty results or no cursor (``has_more`` without a cursor cannot go on),
        # so a server that keeps answering cannot make a walk endless.
        if not results or cursor is None:
            cursor = None
        return cls(docs, cursor)


@dataclass(frozen=True)
class VectorIndex:
    """One vector index of a collection: its storage name and kind."""

    name: str
    kind: str  # "dense", "sparse" or "multi_dense"
    size: int | None
    primary: bool
    distance: str | None = None


#: Spellings of the index types (the enum is dense|sparse|multi_dense; be liberal).
_KINDS = {"multi-dense": "multi_dense", "multidense": "multi_dense", "multivector": "multi_dense"}


def vector_indexes(data: Any) -> list[VectorIndex]:
    """``GET /v1/collections/{id}/features`` → the collection's vector indexes, primary first."""
    body = as_object(data)
    out: list[VectorIndex] = []
    for item in body.get("features") or []:
        index = item.get("vector_index") if isinstance(item, dict) else None
        name = _str(index.get("name")) if isinstance(index, dict) else None
        if not isinstance(index, dict) or name is None:
            continue
        size = index.get("dimensions", index.get("size"))
        kind = str(index.get("type") or "dense").lower()
        kind = _KINDS.get(kind, kind)
        primary = bool(item.get("primary"))
        size = size if isinstance(size, int) and not isinstance(size, bool) else None
        out.append(VectorIndex(name, kind, size, primary, _str(index.get("distance"))))
    out.sort(key=lambda i: not i.primary)  # stable: the served order otherwise
    return out


def shape(index: VectorIndex) -> VectorShape:
    """The port's word for a vector index (an unknown type is taken as dense)."""
    kind: Literal["dense", "sparse", "multi_dense"] = (
        "sparse"
        if index.kind == "sparse"
        else "multi_dense"
        if index.kind == "multi_dense"
        else "dense"
    )
    return VectorShape(kind, None if kind == "sparse" else index.size, index.distance)


def lineage(doc: Mapping[str, Any]) -> dict[str, str | None]:
    """The lineage ids, from ``_internal.lineage`` or else the 2025 root fields."""
    internal = doc.get("_internal")
    lin = internal.get("lineage") if isinstance(internal, dict) else None
    lin = lin if isinstance(lin, dict) else {}
    return {key: _str(lin.get(key)) or _str(doc.get(key)) for key in _LINEAGE_KEYS}


def document_vectors(
    doc: Mapping[str, Any], indexes: list[VectorIndex]
) -> tuple[dict[str, Any], set[str]]:
    """The document's vectors as ``{name: value}``, and the keys that held them.

    Accepts the three placements seen in Mixpeek's docs and SDKs: root keys named after the
    collection's vector indexes (matched by name, never guessed), a ``vectors`` dict, one
    ``vector`` list (the primary index's). Values pass through unchecked: checking them is
    the point mapper's job.
    """
    found: dict[str, Any] = {}
    keys: set[str] = set()
    nested = doc.get("vectors")
    if isinstance(nested, dict):
        found.update({str(k): v for k, v in nested.items()})
        keys.add("vectors")
    for index in indexes:
        if index.name in doc and index.name not in ("vectors", "vector"):
            found.setdefault(index.name, doc[index.name])
            keys.add(index.name)
    single = doc.get("vector")
    if isinstance(single, list | dict):
        keys.add("vector")
        if indexes and indexes[0].name not in found:
            found[indexes[0].name] = single
    return found, keys


def strip_presigned(value: Any) -> Any:
    """``value`` without ``presigned_url`` keys at any depth (they expire within the hour)."""
    if isinstance(value, dict):
        return {k: strip_presigned(v) for k, v in value.items() if k != "presigned_url"}
    if isinstance(value, list):
        return [strip_presigned(v) for v in value]
    return value


def point_uuid(namespace_id: str, collection_id: str, document_id: str) -> str:
    """The point id: uuid5 of ``mixpeek://v1/{namespace}/{collection}/{document}``.

    Deterministic, and distinct across namespaces that share document ids (clones)."""
    name = f"{POINT_PREFIX}{namespace_id}/{collection_id}/{document_id}"
    return str(uuid.uuid5(uuid.NAMESPACE_URL, name))
