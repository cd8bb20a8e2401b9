"""Records of the in-memory store: tasks, assets, features, and the seeded RNG streams."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Literal

from sync_service.emulator.content import PoisonKind, feature_vector, poison_vector
from sync_service.emulator.embedding import feature_embedding
from sync_service.emulator.timestamps import Instant

Modality = Literal["video", "image", "text"]
Outcome = Literal["done", "failed", "stuck"]
TERMINAL = frozenset({"DONE", "FAILED", "CANCELLED"})

FAILURE_MESSAGES: dict[str, str] = {
    "video": "Video download failed: HTTP 404 from source",
    "image": "Image download failed: HTTP 404 from source",
    "text": "Text processing failed: embedding model returned an error",
}


@dataclass
class Task:
    task_id: str
    asset_id: str
    created: float  # clock() at submission
    processing_time: float  # snapshot, so a runtime config change never rewrites history
    outcome: Outcome
    cancelled_at: float | None = None

    def status_at(self, now: float) -> tuple[str, float]:
        """``(status, clock time the status began)``."""
        if self.cancelled_at is not None:
            return "CANCELLED", self.cancelled_at
        elapsed, total = now - self.created, self.processing_time
        if elapsed >= total and self.outcome != "stuck":
            return ("DONE" if self.outcome == "done" else "FAILED"), self.created + total
        if elapsed >= 0.3 * total:
            return "PROCESSING", self.created + 0.3 * total
        if elapsed >= 0.1 * total:
            return "DOWNLOADING", self.created + 0.1 * total
        return "INITIALIZING", self.created


@dataclass
class Asset:
    asset_id: str
    collection_id: str
    modality: Modality
    url: str | None
    text: str | None
    metadata: dict[str, Any]
    feature_metadata: dict[str, Any]  # what features get when they materialise
    task_id: str
    interval: int
    created: float
    touched: float | None = None  # clock() of the last PATCH/PUT or re-index
    generation: int = 0  # re-indexes so far
    # Feature indices used so far (0: not materialised yet). Never reused, so a feature that
    # a re-index adds gets an id no earlier feature of the asset had.
    next_index: int = 0
    # updated_at, kept once the status is final (it cannot move then until the next change,
    # and every change clears it): listing 10,000 assets reads it for each one.
    updated: Instant | None = None

    @property
    def content_key(self) -> str:
        return self.url if self.url is not None else (self.text or "")


@dataclass
class Feature:
    doc: dict[str, Any]  # the JSON body, without vectors
    content_key: str
    index: int
    seq: int  # position in the stable (creation) order, used by the list cursor
    # What the extractor produced, before any re-index stamp, so re-stamping never compounds.
    extracted: dict[str, Any] = field(default_factory=dict)
    vector_generation: int = 0  # which embedding run the vectors come from

    @property
    def meaning(self) -> str:
        """What the feature shows and says: the texts its extractors produced."""
        parts = (self.extracted.get(k) for k in ("description", "transcription", "text"))
        return "\n".join(p for p in parts if isinstance(p, str))

    def vector(self, size: int, name: str, meaningful: bool = True) -> list[float]:
        """The feature's healthy ``size``-d vector ``name`` (poison is applied by the view):
        its text embedded, or with ``meaningful`` False seeded noise."""
        if not meaningful:
            salt = (self.content_key,) if name == "multimodal-v1" else (self.content_key, name)
            return feature_vector("\x1f".join(salt), self.index, size, self.vector_generation)
        seed = f"{self.content_key}\x1f{self.index}\x1f{self.vector_generation}"
        return feature_embedding(self.meaning, seed, size, name)

    @property
    def id(self) -> str:
        return str(self.doc["feature_id"])

    def vectors(
        self, sizes: dict[str, int], meaningful: bool, poison: PoisonKind | None = None
    ) -> dict[str, list[float]]:
        """Every named vector; ``poison`` breaks the first one (the served ``multimodal-v1``)."""
        vectors = {name: self.vector(size, name, meaningful) for name, size in sizes.items()}
        if poison is not None:
            first = next(iter(vectors))
            vectors[first] = poison_vector(vectors[first], poison)
        return vectors


@dataclass
class Rngs:
    ids: random.Random
    outcomes: random.Random
    faults: random.Random

    @classmethod
    def seeded(cls, seed: int) -> Rngs:
        # Separate streams: fault decisions must not shift the ids a test expects.
        return cls(*(random.Random(f"{seed}:{name}") for name in ("ids", "outcomes", "faults")))
