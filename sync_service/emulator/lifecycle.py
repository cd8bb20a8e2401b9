"""Upstream changes after indexing: re-indexing an asset, and seeding big collections fast.

Also the bodies of the control routes that edit and delete assets as another client would.

A re-index models Mixpeek re-running its extractors on an asset that is already DONE. Each one
bumps the asset's ``generation`` (0 when first indexed) and changes, by ``mode``:

- ``vectors``: every feature keeps its id and payload; its vectors are re-derived from its
  content key, its index and the new generation.
- ``payload``: every feature keeps its id and vectors (byte for byte); its ``description``
  (``text`` when it has none) gains a generation stamp and its ``metadata`` is re-derived from
  the asset's with ``reindex_generation`` added.
- ``features``: the asset's last feature disappears and one with a new id (a never used
  index) covering the same span takes its place, born at the new generation (new vectors,
  stamped payload); the other features are left exactly as they were.
- ``all``: the three at once.

The new generation is served as soon as the re-index is asked for, not when its task is DONE:
that is the simplest, and a client that tracks the task reads the asset only after DONE, so it
sees the same content either way. The task always succeeds (no fail/stuck roll, so re-indexes
never shift the outcome stream of later submissions) after the configured processing time.
The asset points at the new task from then on, so its status and ``updated_at`` follow it.

Everything is a function of the seed and the order of calls, like the rest of the emulator.
"""

from __future__ import annotations

import copy
from typing import Any, Literal, Protocol
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field

from sync_service.emulator import content
from sync_service.emulator.config import EmulatorConfig
from sync_service.emulator.records import Asset, Feature, Modality, Outcome, Task


class EmulatorState(Protocol):
    """What these changes need of the emulator's state (``state.EmulatorState`` is one): a
    protocol, so this module does not import the state that calls it."""

    config: EmulatorConfig
    tasks: dict[str, Task]
    features: dict[str, Feature]
    seeded: int

    def clock(self) -> float: ...
    def refresh(self) -> None: ...
    def new_id(self) -> str: ...
    def touch(self, asset: Asset) -> None: ...
    def features_of(self, asset_id: str) -> list[Feature]: ...
    def add_feature(
        self, asset: Asset, index: int, body: dict[str, Any], created: float
    ) -> Feature: ...
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
    ) -> Task: ...


ReindexMode = Literal["vectors", "payload", "features", "all"]
SEED_HOST = "https://seed.emulator.invalid"  # .invalid: never resolvable, clearly fake


class NotIndexed(ValueError):
    """The asset has no features to re-index (still processing, failed or cancelled)."""


class ReindexRequest(BaseModel):
    """Body of ``POST /_emulator/assets/{asset_id}/reindex``."""

    # Control bodies are strict: a typo must be a 422, not a silently different test.
    model_config = ConfigDict(extra="forbid")

    mode: ReindexMode = "all"


class AssetChange(BaseModel):
    """Body of ``PATCH /_emulator/assets/{asset_id}``."""

    model_config = ConfigDict(extra="forbid")

    metadata: dict[str, Any]


class DeleteRequest(BaseModel):
    """Body of ``POST /_emulator/assets/delete``."""

    model_config = ConfigDict(extra="forbid")

    asset_ids: list[str]


class SeedRequest(BaseModel):
    """Body of ``POST /_emulator/seed``."""

    model_config = ConfigDict(extra="forbid")

    collection_id: str = Field(min_length=1)
    count: int = Field(ge=1, le=100_000)
    modality: Modality = "video"
    duration: float = Field(default=30.0, gt=0, le=86_400, description="Video seconds.")


def reindex(state: EmulatorState, asset: Asset, mode: ReindexMode) -> Task:
    """Change ``asset``'s features as ``mode`` says; returns the re-index task."""
    state.refresh()  # control routes skip the middleware's refresh
    if asset.next_index == 0:
        raise NotIndexed(f"Asset {asset.asset_id} has no features to re-index yet")
    asset.generation += 1
    now = state.clock()
    kept = state.features_of(asset.asset_id)  # creation order: the last one is the newest
    if mode in ("features", "all"):
        kept = _replace_last(state, asset, kept, now)
    for feature in kept:
        if mode in ("vectors", "all"):
            feature.vector_generation = asset.generation
        if mode in ("payload", "all"):
            _stamp(feature, asset)
    task = Task(state.new_id(), asset.asset_id, now, state.config.processing_time, "done")
    # Not added to the pending list: materialising would bring back the first generation.
    state.tasks[task.task_id] = task
    state.touch(asset)  # before the switch: past the updated_at the old task gave
    asset.task_id = task.task_id
    return task


def _replace_last(
    state: EmulatorState, asset: Asset, features: list[Feature], now: float
) -> list[Feature]:
    """Drop the last feature and add a new one in its place; returns the untouched ones."""
    victim = features[-1] if features else None
    if victim is not None:
        del state.features[victim.doc["feature_id"]]
        template = victim.extracted
    else:  # every feature was deleted by hand: re-extract the asset's last one
        bodies = content.feature_bodies(asset.modality, asset.url, asset.text, asset.interval)
        template = bodies[-1]
    index = asset.next_index
    asset.next_index += 1
    body = dict(template)
    if asset.url is not None and "start_time" in template:
        # Same span, but the texts of a new segment: a re-run extractor saw it differently.
        span = (template["start_time"], template["end_time"])
        body = content.video_body(asset.url, index, span, template["interval_sec"])
    fresh = state.add_feature(asset, index, body, now)
    fresh.vector_generation = asset.generation
    _stamp(fresh, asset)
    return features[:-1]


def _stamp(feature: Feature, asset: Asset) -> None:
    """Re-derive the payload from what was extracted, marked with the asset's generation."""
    body = dict(feature.extracted)
    key = "description" if "description" in body else "text"
    if body.get(key) is not None:
        body[key] = f"{body[key]} [re-indexed, generation {asset.generation}]"
    feature.doc.update(body)
    metadata = copy.deepcopy(asset.feature_metadata)
    feature.doc["metadata"] = metadata | {"reindex_generation": asset.generation}


def seed(
    state: EmulatorState, collection_id: str, count: int, modality: Modality, duration: float
) -> list[Task]:
    """``count`` new assets that are DONE already, with the content a submission would get.

    They go through the same task creation (ids, poison) and materialisation as a normal
    submission, only with zero processing time and a forced success, so a big collection is
    ready in one call instead of after a processing time per asset.
    """
    folder = quote(collection_id, safe="")
    tasks: list[Task] = []
    for _ in range(count):
        number = state.seeded
        state.seeded += 1  # numbered across calls, so every seeded asset has its own content
        url: str | None = None
        text: str | None = None
        if modality == "video":
            url = f"{SEED_HOST}/{folder}/{number}.mp4?duration={duration:g}"
        elif modality == "image":
            url = f"{SEED_HOST}/{folder}/{number}.jpg"
        else:
            text = f"Seeded text {number} of collection {collection_id}"
        interval = state.config.interval_sec
        tasks.append(
            state.create_task(modality, collection_id, url, text, None, interval, "done", 0.0)
        )
    state.refresh()  # zero processing time: every new task is DONE, so this materialises them
    return tasks
