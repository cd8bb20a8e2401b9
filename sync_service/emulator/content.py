"""Deterministic content and vectors: pure functions of the indexed URL or text.

Nothing here depends on the emulator seed or on time, so the same URL always yields the same
segments, descriptions and vectors on every run and every server. That is what lets tests
compare Qdrant points against an independently computed expectation.
"""

from __future__ import annotations

import hashlib
import math
import random
import uuid
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

import numpy as np

from sync_service.emulator import library

VECTOR_NAME = "multimodal-v1"
MIN_DURATION = 20.0
MAX_DURATION = 120.0

PoisonKind = Literal["nan", "inf", "wrong_length"]
POISON_KINDS: tuple[PoisonKind, ...] = ("nan", "inf", "wrong_length")

# Fixed namespace so feature ids are stable across processes and versions.
_FEATURE_NAMESPACE = uuid.UUID("6f1d6f0e-6d69-7870-6565-6b2d656d7531")

_ADJECTIVES = ("bright", "quiet", "crowded", "empty", "sunlit", "rainy", "busy", "calm", "old")
_SUBJECTS = ("a woman", "two people", "a dog", "a cyclist", "a chef", "children", "a car")
_ACTIONS = ("walking", "talking", "cooking", "driving", "laughing", "running", "reading")
_PLACES = ("a kitchen", "a street", "a park", "an office", "a beach", "a studio", "a car")
_SPOKEN = ("welcome back", "let's get started", "this is important", "thanks for watching",
           "as you can see", "here is the trick", "one more thing")  # fmt: skip
_ON_SCREEN = ("SALE", "NEW", "STEP 1", "SUBSCRIBE", "TIP", "LIVE", "CHAPTER 2")


def _digest(*parts: object) -> bytes:
    # \x1f (unit separator) keeps ("ab", 1) and ("a", "b1") apart.
    return hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()


def _rng(*parts: object) -> random.Random:
    return random.Random(int.from_bytes(_digest(*parts)[:8], "big"))


def unique_hash(content: str) -> str:
    """``AssetResponse.unique_hash``: sha256 hex of the URL or text."""
    return hashlib.sha256(content.encode()).hexdigest()


def video_duration(url: str) -> float:
    """Seconds of video behind ``url``: its ``duration`` query parameter, else from its hash."""
    values = parse_qs(urlsplit(url).query).get("duration")
    if values:
        try:
            given = float(values[0])
        except ValueError:
            given = math.nan
        if math.isfinite(given) and given > 0:
            return given
    spread = int.from_bytes(_digest("duration", url)[:8], "big") % 10001
    return MIN_DURATION + (MAX_DURATION - MIN_DURATION) * spread / 10000


def segments(duration: float, interval: int) -> list[tuple[float, float]]:
    """``(start_time, end_time)`` of each ``interval``-second window; the last one is cut short."""
    if interval <= 0:
        raise ValueError("interval must be positive")
    count = max(1, math.ceil(duration / interval))
    return [(float(i * interval), float(min((i + 1) * interval, duration))) for i in range(count)]


def video_spans(url: str, interval: int) -> list[tuple[float, float]]:
    """``(start_time, end_time)`` of each segment of the video behind ``url``: a library
    video's scripted scenes, else ``interval``-second windows of its duration."""
    scenes = library.video_scenes(url)
    if scenes is not None:
        step = float(library.INTERVAL)
        return [(i * step, (i + 1) * step) for i in range(len(scenes))]
    return segments(video_duration(url), interval)


def video_segment_texts(url: str, index: int) -> dict[str, str]:
    """The describe/transcribe/read outputs of one video segment."""
    scenes = library.video_scenes(url)
    if scenes is not None and index < len(scenes):
        scene = scenes[index]
        texts = {"description": scene.description, "transcription": scene.transcription}
        return texts | {"text": scene.on_screen + "\n"}
    rng = _rng("video", url, index)
    description = (
        f"The segment shows {rng.choice(_SUBJECTS)} {rng.choice(_ACTIONS)} "
        f"in {rng.choice(_ADJECTIVES)} {rng.choice(_PLACES).split(' ', 1)[1]}."
    )
    transcription = f"{rng.choice(_SPOKEN).capitalize()}, {rng.choice(_SPOKEN)}."
    on_screen = "\n".join(rng.sample(_ON_SCREEN, 2)) + "\n"
    return {"description": description, "transcription": transcription, "text": on_screen}


def image_texts(url: str) -> dict[str, str]:
    """The describe/read outputs of an image."""
    scene = library.image_scene(url)
    if scene is not None:
        return {"description": scene[0], "text": scene[1]}
    rng = _rng("image", url)
    description = (
        f"A {rng.choice(_ADJECTIVES)} photo of {rng.choice(_SUBJECTS)} in {rng.choice(_PLACES)}."
    )
    return {"description": description, "text": rng.choice(_ON_SCREEN)}


def video_body(url: str, index: int, span: tuple[float, float], interval: int) -> dict[str, Any]:
    """The extracted fields of video feature ``index`` covering ``span`` seconds."""
    texts = video_segment_texts(url, index)
    return {"start_time": span[0], "end_time": span[1], "interval_sec": interval} | texts


def feature_bodies(
    modality: str, url: str | None, text: str | None, interval: int
) -> list[dict[str, Any]]:
    """The extracted fields of each feature of a freshly indexed asset, in index order."""
    if modality == "video" and url is not None:
        spans = video_spans(url, interval)
        step = library.INTERVAL if library.video_scenes(url) is not None else interval
        return [video_body(url, i, span, step) for i, span in enumerate(spans)]
    if modality == "image" and url is not None:
        return [image_texts(url)]
    return [{"text": text}]


def feature_vector(content_key: str, index: int, size: int, generation: int = 0) -> list[float]:
    """A unit-length ``size``-d vector for segment ``index`` of ``content_key``.

    ``generation`` counts re-embeddings of the feature (see ``lifecycle``). Values are float32
    turned into Python floats, so JSON round-trips them to exactly the float32 a real
    embedding store would hold.
    """
    # Generation 0 keeps the original digest, so vectors of never re-indexed features (and
    # every expectation computed before re-indexing existed) stay byte for byte the same.
    parts = ("vector", content_key, index) + ((generation,) if generation else ())
    seed = int.from_bytes(_digest(*parts)[:16], "big")
    raw = np.random.default_rng(seed).standard_normal(size)
    unit: list[float] = (raw / np.linalg.norm(raw)).astype(np.float32).tolist()  # floats, in C
    return unit


def poison_vector(vector: list[float], kind: PoisonKind) -> list[float]:
    """A broken copy of ``vector``: one NaN, one infinity, or one value short."""
    bad = list(vector)
    middle = len(bad) // 2
    if kind == "nan":
        bad[middle] = math.nan
    elif kind == "inf":
        bad[middle] = math.inf
    else:
        bad.pop()
    return bad


def feature_id(asset_id: str, modality: str, index: int) -> str:
    """Stable feature id, so re-reading an asset never invents new features."""
    return str(uuid.uuid5(_FEATURE_NAMESPACE, f"{asset_id}/{modality}/{index}"))


def feature_count(modality: str, url: str | None, interval: int) -> int:
    """How many features an asset of this modality will have once DONE."""
    if modality == "video" and url is not None:
        return len(video_spans(url, interval))
    return 1
