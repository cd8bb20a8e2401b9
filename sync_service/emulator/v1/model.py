"""Records of the v1 store and the task's status progression (a pure function of time)."""

from __future__ import annotations

import random
import string
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

Outcome = Literal["completed", "partial", "failed", "stuck"]
TERMINAL = frozenset({"COMPLETED", "COMPLETED_WITH_ERRORS", "FAILED", "CANCELED"})
_ALNUM = string.ascii_lowercase + string.digits

# The id shapes of the published API: ns_640658775e, bkt_6a3a022d, btch_ + 12 characters,
# col_ + 10 alphanumerics, doc_ + 24 hex, wh_ + 16 hex; tasks are UUIDs.
_ID_SHAPES: dict[str, tuple[str, int]] = {
    "ns": ("hex", 10),
    "bkt": ("hex", 8),
    "obj": ("hex", 12),
    "blob": ("hex", 12),
    "btch": ("alnum", 12),
    "col": ("alnum", 10),
    "doc": ("hex", 24),
    "wh": ("hex", 16),
    "evt": ("hex", 16),
    "org": ("hex", 10),
}


def make_id(prefix: str, rng: random.Random) -> str:
    """A new ``prefix_…`` id drawn from ``rng`` (the seeded id stream: same seed, same ids)."""
    if prefix == "task":
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))
    kind, length = _ID_SHAPES[prefix]
    if kind == "hex":
        return f"{prefix}_{rng.getrandbits(4 * length):0{length}x}"
    return f"{prefix}_" + "".join(rng.choice(_ALNUM) for _ in range(length))


@dataclass
class Namespace:
    namespace_id: str
    namespace_name: str
    description: str | None
    feature_extractors: list[dict[str, Any]]
    created: float


@dataclass
class Bucket:
    bucket_id: str
    namespace_id: str
    bucket_name: str
    description: str | None
    bucket_schema: dict[str, Any]
    unique_key: dict[str, Any] | None
    metadata: dict[str, Any]
    created: float


@dataclass
class Blob:
    blob_id: str
    property: str
    type: str  # video | image | text | string | ...
    data: Any  # a URL, a data URI or the value itself
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class StoredObject:
    object_id: str
    bucket_id: str
    namespace_id: str
    key_prefix: str | None
    blobs: list[Blob]
    metadata: dict[str, Any]
    created: float
    updated: float
    task_id: str | None = None  # the last task that processed it
    runs: int = 0  # times it was processed: salts random document ids


@dataclass
class Collection:
    collection_id: str
    namespace_id: str
    collection_name: str
    description: str | None
    bucket_ids: list[str]
    extractor: dict[str, Any]  # feature_extractor as given, completed with its id
    created: float
    updated: float


@dataclass
class Batch:
    batch_id: str
    bucket_id: str
    namespace_id: str
    object_ids: list[str]
    created: float
    updated: float
    metadata: dict[str, Any] = field(default_factory=dict)
    task_id: str | None = None
    collection_ids: list[str] = field(default_factory=list)
    documents_written: int = 0


@dataclass
class Task:
    task_id: str
    task_type: str
    namespace_id: str
    batch_id: str | None
    created: float
    processing_time: float  # snapshot: a runtime config change never rewrites history
    outcome: Outcome
    inputs: list[str]
    additional_data: dict[str, Any]
    canceled_at: float | None = None
    applied: bool = False  # its documents were written (or it ended without any)

    def status_at(self, now: float) -> tuple[str, float]:
        """``(status, clock time it began)``: PENDING, IN_PROGRESS, PROCESSING, then final."""
        if self.canceled_at is not None:
            return "CANCELED", self.canceled_at
        elapsed, total = now - self.created, self.processing_time
        if elapsed >= total and self.outcome != "stuck":
            final = {"completed": "COMPLETED", "partial": "COMPLETED_WITH_ERRORS"}
            return final.get(self.outcome, "FAILED"), self.created + total
        if elapsed >= 0.4 * total:
            return "PROCESSING", self.created + 0.4 * total
        if elapsed >= 0.1 * total:
            return "IN_PROGRESS", self.created + 0.1 * total
        return "PENDING", self.created

    @property
    def done_at(self) -> float:
        return self.created + self.processing_time


@dataclass
class Document:
    document_id: str
    collection_id: str
    namespace_id: str
    object_id: str  # root and source object (tier 1 only: no collection-to-collection)
    bucket_id: str
    fields: dict[str, Any]  # root fields: passthrough metadata and extractor outputs
    meaning: dict[str, str]  # vector name -> the text its vector embeds
    modality: str
    position: int
    created: float
    updated: float
    seq: int  # creation order: the default listing order and the cursor's key
    generation: int = 0  # changes so far: salts the vectors' noise
    source_url: str | None = None  # the blob it was made from, when that is a URL


@dataclass
class Webhook:
    webhook_id: str
    body: dict[str, Any]  # webhook_name, event_types, channels, is_active as stored
    created: float
    updated: float
