"""The v1 emulator's in-memory state, with lazily computed task progression.

As in the 2024 emulator, nothing runs in the background for tasks: a task's status is a pure
function of the injectable clock, and its documents are written by ``refresh`` (called by the
request pipeline and by the webhook dispatcher's tick) once it is final. Ids come from one
seeded stream and outcomes from another, so two servers with the same seed and the same
requests hold the same data.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from sync_service.emulator.faults import Stats, TokenBucket
from sync_service.emulator.records import Rngs
from sync_service.emulator.responses import ApiError
from sync_service.emulator.timestamps import Instant
from sync_service.emulator.v1 import documents, extractors
from sync_service.emulator.v1.config import V1Config
from sync_service.emulator.v1.model import (
    TERMINAL,
    Batch,
    Bucket,
    Collection,
    Document,
    Namespace,
    Outcome,
    StoredObject,
    Task,
    Webhook,
    make_id,
)

_US = 1_000_000
DEFAULT_NAMESPACE = "default"


@dataclass
class Event:
    event_id: str
    event_type: str
    namespace_id: str
    subject: dict[str, str]
    metadata: dict[str, Any]
    occurred: float  # clock time


@dataclass
class V1State:
    config: V1Config
    clock: Callable[[], float] = time.monotonic
    stats: Stats = field(default_factory=Stats)
    namespaces: dict[str, Namespace] = field(default_factory=dict)
    buckets: dict[str, Bucket] = field(default_factory=dict)
    objects: dict[str, StoredObject] = field(default_factory=dict)
    batches: dict[str, Batch] = field(default_factory=dict)
    collections: dict[str, Collection] = field(default_factory=dict)
    documents: dict[str, Document] = field(default_factory=dict)
    tasks: dict[str, Task] = field(default_factory=dict)
    webhooks: dict[str, Webhook] = field(default_factory=dict)
    outbox: list[Event] = field(default_factory=list)  # drained by the dispatcher

    def __post_init__(self) -> None:
        self.rngs = Rngs.seeded(self.config.seed)
        self.bucket = self._make_bucket(self.config)
        self._wall_origin = round(time.time() * _US) - round(self.clock() * _US)
        self._seq = 0
        self._events = 0
        self._pending: list[str] = []
        self.organization_id = make_id("org", self.rngs.ids)
        self.started = self.clock()
        # A namespace to start with, so a first try needs no set-up (its id is seeded too).
        self.create_namespace(DEFAULT_NAMESPACE, None, [])

    # -- configuration and time -----------------------------------------------------------

    def _make_bucket(self, config: V1Config) -> TokenBucket | None:
        if config.rate_limit is None:
            return None
        return TokenBucket(config.rate_limit, config.effective_burst, self.clock)

    def update_config(self, changes: dict[str, Any]) -> V1Config:
        """Apply a validated subset of knobs at runtime (raises pydantic.ValidationError)."""
        new = self.config.patched(changes)
        assert isinstance(new, V1Config)
        if (new.rate_limit, new.effective_burst) != (
            self.config.rate_limit,
            self.config.effective_burst,
        ):
            self.bucket = self._make_bucket(new)
        if new.seed != self.config.seed:
            self.rngs = Rngs.seeded(new.seed)
        self.config = new
        return new

    def instant(self, at: float) -> Instant:
        return Instant(self._wall_origin + round(at * _US))

    def zulu(self, at: float) -> str:
        """Document timestamps: UTC with ``Z``, as the API's document examples."""
        return self.instant(at).zulu()

    def naive(self, at: float) -> str:
        """Entity timestamps: naive UTC with microseconds, as real bucket responses."""
        return self.instant(at).naive()

    def new_id(self, prefix: str) -> str:
        return make_id(prefix, self.rngs.ids)

    def later(self, previous: float) -> float:
        """Now, or a microsecond past ``previous`` when the clock has not moved (a frozen test
        clock): every change moves ``updated_at`` strictly forward."""
        now = self.clock()
        return now if round(now * _US) > round(previous * _US) else previous + 1 / _US

    # -- lookups (namespace-scoped; ids or names) -----------------------------------------

    def namespace(self, ident: str) -> Namespace:
        for ns in self.namespaces.values():
            if ident in (ns.namespace_id, ns.namespace_name):
                return ns
        raise ApiError(404, f"Namespace {ident} not found", {"id": ident})

    def bucket_of(self, ns: Namespace, ident: str) -> Bucket:
        for b in self.buckets.values():
            if b.namespace_id == ns.namespace_id and ident in (b.bucket_id, b.bucket_name):
                return b
        raise ApiError(404, f"Bucket {ident} not found", {"id": ident})

    def collection_of(self, ns: Namespace | None, ident: str) -> Collection:
        for c in self.collections.values():
            in_ns = ns is None or c.namespace_id == ns.namespace_id
            if in_ns and ident in (c.collection_id, c.collection_name):
                return c
        raise ApiError(404, f"Collection {ident} not found", {"id": ident})

    def object_of(self, bucket: Bucket, object_id: str) -> StoredObject:
        obj = self.objects.get(object_id)
        if obj is None or obj.bucket_id != bucket.bucket_id:
            raise ApiError(404, f"Object {object_id} not found", {"id": object_id})
        return obj

    def extractor(self, collection: Collection) -> extractors.Extractor:
        return extractors.resolve(collection.extractor)

    def collections_of_bucket(self, bucket_id: str) -> list[Collection]:
        return [c for c in self.collections.values() if bucket_id in c.bucket_ids]

    # -- creation -------------------------------------------------------------------------

    def create_namespace(
        self, name: str, description: str | None, feature_extractors: list[dict[str, Any]]
    ) -> Namespace:
        if any(ns.namespace_name == name for ns in self.namespaces.values()):
            raise ApiError(409, f"Namespace {name} already exists", {"name": name})
        ns = Namespace(self.new_id("ns"), name, description, feature_extractors, self.clock())
        self.namespaces[ns.namespace_id] = ns
        return ns

    def create_collection(
        self,
        ns: Namespace,
        name: str,
        description: str | None,
        bucket_ids: list[str],
        extractor_spec: dict[str, Any],
    ) -> Collection:
        extractor = extractors.resolve(extractor_spec)  # 400 before anything is stored
        if any(
            c.collection_name == name and c.namespace_id == ns.namespace_id
            for c in self.collections.values()
        ):
            raise ApiError(409, f"Collection {name} already exists", {"name": name})
        buckets = [self.bucket_of(ns, b).bucket_id for b in bucket_ids]
        spec = {"version": extractor.version, **extractor_spec}
        spec["feature_extractor_id"] = extractors.extractor_id(extractor)
        now = self.clock()
        col = Collection(
            self.new_id("col"), ns.namespace_id, name, description, buckets, spec, now, now
        )
        self.collections[col.collection_id] = col
        self.emit("collection.created", ns.namespace_id, "collection", col.collection_id, {})
        return col

    def submit(self, batch: Batch) -> Task:
        """Submit a DRAFT batch; a submitted one answers its task again (idempotent)."""
        if batch.task_id is not None and batch.task_id in self.tasks:
            return self.tasks[batch.task_id]
        cfg = self.config
        roll = self.rngs.outcomes.random()
        outcome: Outcome = "completed"
        shares: tuple[tuple[Outcome, float], ...] = (
            ("failed", cfg.fail_rate),
            ("stuck", cfg.stuck_rate),
            ("partial", cfg.partial_rate),
        )
        for name, rate in shares:
            if roll < rate:
                outcome = name
                break
            roll -= rate
        batch.collection_ids = [
            c.collection_id for c in self.collections_of_bucket(batch.bucket_id)
        ]
        extra = {
            "batch_id": batch.batch_id,
            "bucket_id": batch.bucket_id,
            "namespace_id": batch.namespace_id,
            "collection_ids": list(batch.collection_ids),
            "total_tiers": 1,
            "current_tier": 0,
            "object_count": len(batch.object_ids),
        }
        task = Task(
            self.new_id("task"),
            "api_buckets_batches_process",
            batch.namespace_id,
            batch.batch_id,
            self.clock(),
            cfg.processing_time,
            outcome,
            [batch.batch_id],
            extra,
        )
        self.tasks[task.task_id] = task
        batch.task_id = task.task_id
        batch.updated = task.created
        for object_id in batch.object_ids:
            if object_id in self.objects:
                self.objects[object_id].task_id = task.task_id
        self._pending.append(task.task_id)
        return task

    # -- progression ----------------------------------------------------------------------

    def task_status(self, task: Task) -> tuple[str, float]:
        return task.status_at(self.clock())

    def expired(self, task: Task) -> bool:
        expiry = self.config.task_expiry
        return expiry is not None and self.clock() - task.created > expiry

    def refresh(self) -> None:
        """Write the documents of tasks that became final since the last look."""
        still: list[str] = []
        for task_id in self._pending:
            task = self.tasks[task_id]
            status, since = self.task_status(task)
            if status not in TERMINAL:
                still.append(task_id)
            elif not task.applied:
                task.applied = True
                if status in ("COMPLETED", "COMPLETED_WITH_ERRORS"):
                    self._apply(task, since)
        self._pending = still

    def _apply(self, task: Task, at: float) -> None:
        batch = self.batches[task.batch_id or ""]
        objects = [self.objects[o] for o in batch.object_ids if o in self.objects]
        if task.outcome == "partial" and objects:
            objects = objects[:-1]  # the last object "failed": it yields nothing
        written: dict[str, list[str]] = {}
        for obj in objects:
            for col in self.collections_of_bucket(obj.bucket_id):
                if col.collection_id in batch.collection_ids:
                    ids = self.process(obj, col, at)
                    written.setdefault(col.collection_id, []).extend(ids)
        batch.documents_written = sum(len(ids) for ids in written.values())
        batch.updated = at
        for collection_id, ids in written.items():
            self.documents_written(collection_id, ids, at)

    def process(self, obj: StoredObject, col: Collection, at: float) -> list[str]:
        """Run ``col``'s extractor on ``obj`` at clock time ``at``; the ids written.

        Deterministic ids overwrite the documents of an earlier run (created_at kept);
        random ids add new documents beside the old ones, as Mixpeek does without a
        bucket ``unique_key``.
        """
        extractor = self.extractor(col)
        stable = self.stable_ids(obj.bucket_id)
        obj.runs += 1
        ids = []
        for position, (modality, fields, meaning) in enumerate(
            documents.extract(extractor, obj, self.config.interval_sec)
        ):
            if stable:
                doc_id = documents.deterministic_id(obj, col, position)
            else:
                doc_id = self.new_id("doc")
            old = self.documents.get(doc_id)
            self._seq += 1
            doc = Document(
                doc_id,
                col.collection_id,
                col.namespace_id,
                obj.object_id,
                obj.bucket_id,
                {**obj.metadata, **fields},
                meaning,
                modality,
                position,
                old.created if old else at,
                self.later(old.updated) if old else at,
                old.seq if old else self._seq,
                (old.generation + 1) if old else 0,
                documents.source_url(extractor, obj),
            )
            self.documents[doc_id] = doc
            ids.append(doc_id)
        return ids

    def stable_ids(self, bucket_id: str) -> bool:
        mode = self.config.document_ids
        if mode != "bucket":
            return mode == "deterministic"
        return self.buckets[bucket_id].unique_key is not None

    # -- deletion -------------------------------------------------------------------------

    def delete_object(self, obj: StoredObject, cascade: bool) -> int:
        """Delete ``obj``; with ``cascade`` its documents in every collection too."""
        del self.objects[obj.object_id]
        gone = 0
        if cascade or self.config.object_delete_cascades:
            gone = self.delete_documents(
                [d.document_id for d in self.documents.values() if d.object_id == obj.object_id]
            )
        meta = {"object_id": obj.object_id, "bucket_id": obj.bucket_id}
        self.emit("object.deleted", obj.namespace_id, "object", obj.object_id, meta)
        return gone

    def delete_documents(self, ids: Iterable[str]) -> int:
        return sum(self.documents.pop(i, None) is not None for i in list(ids))

    def delete_collection(self, col: Collection) -> None:
        self.delete_documents(
            [d.document_id for d in self.documents.values() if d.collection_id == col.collection_id]
        )
        del self.collections[col.collection_id]
        self.emit("collection.deleted", col.namespace_id, "collection", col.collection_id, {})

    # -- events ---------------------------------------------------------------------------

    def emit(
        self, kind: str, namespace_id: str, subject: str, ident: str, meta: dict[str, Any]
    ) -> None:
        metadata = {f"{subject}_id": ident, "namespace_id": namespace_id, **meta}
        event = Event(
            self.new_event_id(),
            kind,
            namespace_id,
            {"type": subject, "id": ident},
            metadata,
            self.clock(),
        )
        self.outbox.append(event)

    def new_event_id(self) -> str:
        # Counted, not drawn: emitting events must not shift the seeded ids of the data.
        self._events += 1
        return f"evt_{self._events:016x}"

    def documents_written(self, collection_id: str, ids: list[str], at: float) -> None:
        col = self.collections[collection_id]
        col.updated = max(col.updated, at)
        meta = {
            "document_count": len(ids),
            "document_ids": ids[:100],
            "index_signature": f"sig_{col.collection_id[4:]}",
        }
        self.emit(
            "collection.documents.written", col.namespace_id, "collection", collection_id, meta
        )
