"""Vectors that carry meaning: a text embedded by feature hashing, deterministically.

Mixpeek embeds what a feature shows and says; the emulator stands in with the oldest trick of
text retrieval: each word and word pair of the text (lower-cased, stop words dropped) adds a
signed unit to one dimension picked by its hash. Two texts sharing words then have a positive
cosine, texts about different things a cosine near zero, so a search over the synced points
finds the right segment. Each vector name hashes with its own salt: every named vector is its
own space, and in each of them items about the same thing are near each other. A feature's
vector adds a little seeded noise, so no two features are identical.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from functools import lru_cache
from typing import Any

import numpy as np

#: Weight of a word pair against a single word: pairs make phrases count, words still match.
BIGRAM_WEIGHT = 0.5
#: Norm of a feature's noise against its unit text vector.
NOISE = 0.05

_STOP_WORDS = """
a about above after again all am an and any are as at be because been before being below
between both but by can could did do does doing down during each few for from further
had has have having he her here hers him his how i if in into is it its itself just let
lets me more most my no nor not now of off on once only or other our ours out over own
same she should so some such than that the their theirs them then there these they this
those through to too under until up very was we were what when where which while who
whom why will with would you your yours
"""
STOP_WORDS = frozenset(_STOP_WORDS.split())
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def terms(text: str) -> list[tuple[str, float]]:
    """The weighted terms of ``text``: its words and adjacent word pairs, stop words dropped."""
    words = [w.replace("'", "") for w in _WORD.findall(text.lower())]
    words = [w for w in words if w not in STOP_WORDS]
    pairs = [f"{a} {b}" for a, b in itertools.pairwise(words)]
    return [(w, 1.0) for w in words] + [(p, BIGRAM_WEIGHT) for p in pairs]


def _slot(name: str, term: str, size: int) -> tuple[int, float]:
    digest = hashlib.blake2b(f"{name}\x1f{term}".encode(), digest_size=9).digest()
    return int.from_bytes(digest[:8], "big") % size, 1.0 if digest[8] & 1 else -1.0


@lru_cache(maxsize=4096)
def _hashed(text: str, size: int, name: str) -> np.ndarray:
    vector = np.zeros(size, dtype=np.float64)
    for term, weight in terms(text):
        index, sign = _slot(name, term, size)
        vector[index] += sign * weight
    vector.setflags(write=False)  # cached: shared by every caller
    return vector


def _noise(seed_text: str, size: int) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(seed_text.encode()).digest()[:16], "big")
    raw = np.random.default_rng(seed).standard_normal(size)
    unit: np.ndarray = raw / np.linalg.norm(raw)
    return unit


def _as_floats(vector: np.ndarray) -> list[float]:
    # float32 turned into Python floats (tolist does, in C): JSON round-trips them to exactly
    # what Qdrant holds.
    unit: list[float] = (vector / np.linalg.norm(vector)).astype(np.float32).tolist()
    return unit


def embed_text(text: str, size: int, name: str) -> list[float]:
    """The unit ``size``-d vector of ``text`` in vector space ``name`` (a query's vector).

    A text with no word left (empty, only stop words) has no meaning to hash: it gets a
    seeded vector of its own, near nothing.
    """
    hashed = _hashed(text, size, name)
    if not hashed.any():
        return _as_floats(_noise(f"empty\x1f{name}\x1f{text}", size))
    return _as_floats(hashed / np.linalg.norm(hashed))


def feature_embedding(text: str, seed: str, size: int, name: str) -> list[float]:
    """A feature's vector: its text's, plus noise seeded by ``seed`` (the feature's identity)."""
    hashed = _hashed(text, size, name)
    noise = _noise(f"{seed}\x1f{name}", size)
    if not hashed.any():
        return _as_floats(noise)
    return _as_floats(hashed / np.linalg.norm(hashed) + NOISE * noise)


def sparse_embedding(text: str, name: str, space: int) -> dict[str, list[Any]]:
    """``text``'s sparse vector in vector space ``name``: one entry per hashed term (a SPLADE-like
    bag of weighted words and pairs), indices below ``space``, ascending."""
    weights: dict[int, float] = {}
    for term, weight in terms(text):
        index, _sign = _slot(name, term, space)
        weights[index] = weights.get(index, 0.0) + weight
    indices = sorted(weights)
    return {"indices": indices, "values": [float(weights[i]) for i in indices]}


def multi_embedding(
    text: str, seed: str, size: int, name: str, most: int = 16
) -> list[list[float]]:
    """``text``'s multi-dense vector (late interaction): one unit vector per word, at most
    ``most`` of them; a text with no word left gets one seeded vector."""
    words = [term for term, weight in terms(text) if weight == 1.0][:most]
    if not words:
        return [_as_floats(_noise(f"{seed}\x1f{name}", size))]
    return [feature_embedding(word, f"{seed}\x1f{i}", size, name) for i, word in enumerate(words)]
