"""In-memory Mixpeek: tasks, assets and features, with lazily computed task progression.

Nothing runs in the background. A task's status is a pure function of the injectable clock
and of choices made when it was created (processing time, outcome, poisoned features), so
tests can drive time without sleeping and two servers with the same seed behave alike.
"""

from __future__ import annotations

import copy
import json
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from sync_service.emulator import content, lifecycle, query
from sync_service.emulator.config import EmulatorConfig
from sync_service.emulator.faults import Stats, TokenBucket
from sync_service.emulator.records import (
    FAILURE_MESSAGES,
    TERMINAL,
    Asset,
    Feature,
    Modality,
    Outcome,
    Rngs,
    Task,
)
from sync_service.emulator.timestamps import Instant

_US = 1_000_000  # microseconds a second: the resolution of every timestamp served


@dataclass
class EmulatorState:
    """Everything the emulator knows; one instance per app."""

    config: EmulatorConfig
    clock: Callable[[], float] = time.monotonic
    stats: Stats = field(default_factory=Stats)
    tasks: dict[str, Task] = field(default_factory=dict)
    assets: dict[str, Asset] = field(default_factory=dict)
    features: dict[str, Feature] = field(default_factory=dict)
    collections: dict[str, float] = field(default_factory=dict)  # id -> clock() at creation
    poisoned: dict[str, content.PoisonKind] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rngs = Rngs.seeded(self.config.seed)
        self.bucket = self._make_bucket(self.config)
        # Wall time is derived from the injectable clock so timestamps agree with it; kept in
        # whole microseconds so that a timestamp, its text and its parsed text are all equal.
        self._wall_origin = round(time.time() * _US) - round(self.clock() * _US)
        self._asset_fields = self._field_getters()
        self._pending: list[str] = []
        self._dedupe: dict[tuple[str, ...], str] = {}
        self._seq = 0
        self._feature_seq: dict[str, int] = {}  # survives deletion, so cursors stay valid
        self.seeded = 0  # assets made by seed_assets, numbering their content

    # -- configuration --------------------------------------------------------------------

    def _make_bucket(self, config: EmulatorConfig) -> TokenBucket | None:
        if config.rate_limit is None:
            return None
        return TokenBucket(config.rate_limit, config.effective_burst, self.clock)

    def update_config(self, changes: dict[str, Any]) -> EmulatorConfig:
        """Apply a validated subset of knobs at runtime (raises pydantic.ValidationError)."""
        new = self.config.patched(changes)
        if (new.rate_limit, new.effective_burst) != (
            self.config.rate_limit,
            self.config.effective_burst,
        ):
            self.bucket = self._make_bucket(new)
        if new.seed != self.config.seed:
            self.rngs = Rngs.seeded(new.seed)
        self.config = new
        return new

    # -- time -----------------------------------------------------------------------------

    def instant(self, at: float) -> Instant:
        """The wall-clock instant of clock time ``at``."""
        return Instant(self._wall_origin + round(at * _US))

    def naive_iso(self, at: float) -> str:
        """Asset timestamp: UTC without a zone suffix ("MongoDB datetime format")."""
        return self.instant(at).naive()

    def zulu_iso(self, at: float) -> str:
        """Feature timestamp: UTC with a ``Z`` suffix."""
        return self.instant(at).zulu()

    def _status_and_updated(self, asset: Asset) -> tuple[str, float]:
        # updated_at is the later of the last status change and the last change by a client.
        status, since = self.asset_status(asset)
        return status, since if asset.touched is None else max(since, asset.touched)

    def updated_clock(self, asset: Asset) -> float:
        """Clock time of the asset's ``updated_at``."""
        return self._status_and_updated(asset)[1]

    def updated_at(self, asset: Asset) -> Instant:
        """The asset's ``updated_at``, cached while its status is final."""
        if asset.updated is not None:
            return asset.updated
        status, at = self._status_and_updated(asset)
        updated = self.instant(at)
        if status in TERMINAL:
            asset.updated = updated
        return updated

    def touch(self, asset: Asset) -> None:
        """Record a change of ``asset`` now: its ``updated_at`` moves to now, and always past
        the value it had, even when the clock has not moved a microsecond since (a frozen
        test clock, two changes in a row), so a client watching ``updated_at`` sees it."""
        now = self.clock()
        floor = round(self.updated_clock(asset) * _US)
        if round(now * _US) <= floor:
            now = (floor + 1) / _US
        asset.touched = now
        asset.updated = None

    # -- submission -----------------------------------------------------------------------

    def new_id(self) -> str:
        return str(uuid.UUID(int=self.rngs.ids.getrandbits(128), version=4))

    def submit(
        self,
        modality: Modality,
        collection_id: str,
        *,
        url: str | None = None,
        text: str | None = None,
        metadata: dict[str, Any] | None = None,
        interval: int | None = None,
        settings: Any = None,
        prevent_duplicate: bool = False,
    ) -> Task | Asset:
        """Queue one index request; returns the new task, or the existing asset for a duplicate."""
        self.refresh()
        cfg = self.config
        interval = interval or cfg.interval_sec
        key_hash = content.unique_hash(url if url is not None else (text or ""))
        dedupe_key = (modality, collection_id, key_hash, settings_key(settings))
        existing = self.assets.get(self._dedupe.get(dedupe_key, ""))
        # A failed or cancelled original does not block a retry of the same content.
        status = "FAILED" if existing is None else self.asset_status(existing)[0]
        alive = status not in ("FAILED", "CANCELLED")
        if alive and prevent_duplicate and existing is not None:
            return existing
        roll = self.rngs.outcomes.random()
        outcome: Outcome = "done"
        if roll < cfg.fail_rate:
            outcome = "failed"
        elif roll < cfg.fail_rate + cfg.stuck_rate:
            outcome = "stuck"
        task = self.create_task(
            modality, collection_id, url, text, metadata, interval, outcome, cfg.processing_time
        )
        if not alive:
            self._dedupe[dedupe_key] = task.asset_id
        return task

    def create_task(
        self,
        modality: Modality,
        collection_id: str,
        url: str | None,
        text: str | None,
        metadata: dict[str, Any] | None,
        interval: int,
        outcome: Outcome,
        processing_time: float,
    ) -> Task:
        """Record a task and its asset with a decided outcome (no duplicate check)."""
        now = self.clock()
        # ids and outcomes are separate RNG streams, so submit rolling first shifts no id.
        task_id, asset_id = self.new_id(), self.new_id()
        self._choose_poison(asset_id, modality, url, interval, outcome)
        task = Task(task_id, asset_id, now, processing_time, outcome)
        meta = dict(metadata or {})
        self.tasks[task_id] = task
        self.assets[asset_id] = Asset(
            asset_id, collection_id, modality, url, text, meta, copy.deepcopy(meta), task_id,
            interval, now,
        )  # fmt: skip
        self.collections.setdefault(collection_id, now)
        self._pending.append(task_id)
        return task

    def _choose_poison(
        self, asset_id: str, modality: str, url: str | None, interval: int, outcome: Outcome
    ) -> None:
        count = content.feature_count(modality, url, interval)
        for index in range(count):
            # Always draw, so the stream does not depend on which tasks happen to fail.
            hit = self.rngs.outcomes.random() < self.config.poison_rate
            if hit and outcome == "done":
                kind = content.POISON_KINDS[len(self.poisoned) % len(content.POISON_KINDS)]
                self.poisoned[content.feature_id(asset_id, modality, index)] = kind

    # -- progression ----------------------------------------------------------------------

    def task_status(self, task: Task) -> str:
        return task.status_at(self.clock())[0]

    def asset_status(self, asset: Asset) -> tuple[str, float]:
        return self.tasks[asset.task_id].status_at(self.clock())

    def refresh(self) -> None:
        """Materialise the features of tasks that became DONE since the last look."""
        still: list[str] = []
        for task_id in self._pending:
            task = self.tasks[task_id]
            status = self.task_status(task)
            asset = self.assets.get(task.asset_id)
            if asset is None or status in ("FAILED", "CANCELLED"):
                continue
            if status == "DONE":
                self._materialise(asset, task)
            else:
                still.append(task_id)
        self._pending = still

    def _materialise(self, asset: Asset, task: Task) -> None:
        bodies = content.feature_bodies(asset.modality, asset.url, asset.text, asset.interval)
        for index, body in enumerate(bodies):
            self.add_feature(asset, index, body, task.created + task.processing_time)
        asset.next_index = len(bodies)

    def add_feature(
        self, asset: Asset, index: int, body: dict[str, Any], created: float
    ) -> Feature:
        """Store feature ``index`` of ``asset`` with the extracted fields ``body``."""
        fid = content.feature_id(asset.asset_id, asset.modality, index)
        doc = {
            "feature_id": fid,
            "asset_id": asset.asset_id,
            "collection_id": asset.collection_id,
            "modality": asset.modality,
            "created_at": self.zulu_iso(created),
            "metadata": copy.deepcopy(asset.feature_metadata),
        }
        self._seq += 1
        self._feature_seq[fid] = self._seq
        feature = Feature(doc | body, asset.content_key, index, self._seq, dict(body))
        self.features[fid] = feature
        return feature

    # -- views ----------------------------------------------------------------------------

    def _field_getters(self) -> dict[str, Callable[[Asset], Any]]:
        """One getter per ``AssetResponse`` field, in the order the API sends them: values
        uncopied, timestamps as instants."""

        def error(asset: Asset) -> str | None:
            failed = self.asset_status(asset)[0] == "FAILED"
            return FAILURE_MESSAGES[asset.modality] if failed else None

        getters: dict[str, Callable[[Asset], Any]] = {
            "asset_id": lambda a: a.asset_id,
            "collection_id": lambda a: a.collection_id,
            "status": lambda a: self.asset_status(a)[0],
            "url": lambda a: a.url,
            "metadata": lambda a: a.metadata,
            "error": error,
            "modality": lambda a: a.modality,
            "task_id": lambda a: a.task_id,
            "unique_hash": lambda a: content.unique_hash(a.content_key),
            "created_at": lambda a: self.instant(a.created),
            "updated_at": self.updated_at,
            "score": lambda _: None,
        }
        return getters

    def asset_getter(self, path: str) -> Callable[[Asset], Any]:
        """Getter of a dot path of the asset view, for filters and sort.

        Reads the record directly: a listing filters and sorts every asset of a collection
        but builds the views of one page only. Timestamps come as instants, metadata uncopied
        (read it, never change it).
        """
        head, _, rest = path.partition(".")
        field_getter = self._asset_fields.get(head)
        if field_getter is None:
            return lambda _: query.MISSING
        if not rest:
            return field_getter
        parts = rest.split(".")
        return lambda asset: query.walk(field_getter(asset), parts)

    def asset_view(self, asset: Asset) -> dict[str, Any]:
        """The ``AssetResponse`` body (the getters' values, rendered as the API sends them)."""
        view = {name: get(asset) for name, get in self._asset_fields.items()}
        view["metadata"] = copy.deepcopy(view["metadata"])
        view["created_at"] = view["created_at"].naive()
        view["updated_at"] = view["updated_at"].naive()
        return view

    def feature_view(self, feature: Feature, with_vectors: bool = False) -> dict[str, Any]:
        """The ``Feature`` body; ``vectors`` only when asked for (poison applied here)."""
        doc = copy.deepcopy(feature.doc)
        if with_vectors:
            sizes, meaningful = self.config.vector_sizes(), self.config.vector_kind == "meaningful"
            doc["vectors"] = feature.vectors(sizes, meaningful, self.poisoned.get(feature.id))
        return doc

    def features_of(self, asset_id: str) -> list[Feature]:
        """The asset's features in creation order ([] for an unknown asset)."""
        asset = self.assets.get(asset_id)
        return [] if asset is None else self._features_of(asset)

    def _features_of(self, asset: Asset) -> list[Feature]:
        # By index rather than by scanning every feature: ids are a function of the asset and
        # the index, and indices are handed out in creation order and never reused. Deleting
        # a batch of assets from a collection of 10,000 would otherwise take seconds.
        ids = (
            content.feature_id(asset.asset_id, asset.modality, i) for i in range(asset.next_index)
        )
        return [self.features[fid] for fid in ids if fid in self.features]

    def feature_seq(self, feature_id: str) -> int | None:
        return self._feature_seq.get(feature_id)

    # -- mutation -------------------------------------------------------------------------

    def cancel(self, task: Task) -> None:
        if self.task_status(task) not in TERMINAL:
            asset = self.assets.get(task.asset_id)
            if asset is not None and asset.task_id == task.task_id:
                self.touch(asset)  # the cancellation is a change too: strictly later updated_at
            task.cancelled_at = self.clock()

    def update_asset(
        self, asset: Asset, metadata: dict[str, Any], *, replace: bool, propagate: bool
    ) -> None:
        merged = dict(metadata) if replace else {**asset.metadata, **metadata}
        asset.metadata = merged
        self.touch(asset)
        if propagate:
            asset.feature_metadata = copy.deepcopy(merged)
            for feature in self._features_of(asset):
                feature.doc["metadata"] = copy.deepcopy(merged)

    def reindex_asset(self, asset_id: str, mode: lifecycle.ReindexMode = "all") -> Task:
        """Re-run the extractors on a DONE asset; see ``lifecycle.reindex``.

        Raises KeyError for an unknown asset, ``lifecycle.NotIndexed`` before its first DONE.
        """
        return lifecycle.reindex(self, self.assets[asset_id], mode)

    def seed_assets(
        self, collection_id: str, count: int, modality: Modality = "video", duration: float = 30.0
    ) -> list[Task]:
        """``count`` assets that are DONE at once; see ``lifecycle.seed``."""
        return lifecycle.seed(self, collection_id, count, modality, duration)

    def delete_asset(self, asset_id: str) -> bool:
        """Delete the asset and its features; False when there is no such asset."""
        asset = self.assets.pop(asset_id, None)
        if asset is None:
            return False
        for feature in self._features_of(asset):
            del self.features[feature.doc["feature_id"]]
        return True

    def delete_assets(self, asset_ids: Iterable[str]) -> int:
        """Delete every known asset of ``asset_ids``; returns how many there were."""
        return sum(self.delete_asset(asset_id) for asset_id in asset_ids)

    def delete_collection(self, collection_id: str) -> None:
        for asset in [a for a in self.assets.values() if a.collection_id == collection_id]:
            self.delete_asset(asset.asset_id)
        self.collections.pop(collection_id, None)

    def collection_view(self, collection_id: str) -> dict[str, Any]:
        assets = [a for a in self.assets.values() if a.collection_id == collection_id]
        vectors = sum(1 for f in self.features.values() if f.doc["collection_id"] == collection_id)
        size = (
            sum(len(a.content_key.encode()) for a in assets) + vectors * 4 * self.config.vector_size
        )
        last = max([self.collections[collection_id]] + [self.updated_clock(a) for a in assets])
        return {
            "collection_id": collection_id,
            "count": len(assets),
            "size_bytes": size,
            "last_updated": self.naive_iso(last),
        }


def settings_key(settings: Any) -> str:
    """Canonical JSON of the index settings, part of the duplicate key."""
    return json.dumps(settings, sort_keys=True, default=str)
