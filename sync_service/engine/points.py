"""Feature + asset → Qdrant point (docs/contract.md §4), and the checks that keep bad items out.

Pure functions over the upstream JSON as it was served: no I/O, no clocks. A feature that cannot
become a valid point is *rejected* with a reason (it becomes a dead letter); it never stops the
other features of its asset.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from array import array
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Any, cast

from sync_service.engine.vectors import (
    SparseValues,
    Vector,
    VectorSpec,
    check_vectors,
    float_count,
    is_multi,
    width,
)
from sync_service.upstream.port import AssetContent, VectorShape

__all__ = [
    "Plan",
    "PlannedPoint",
    "Rejected",
    "SparseValues",
    "Vector",
    "VectorSpec",
    "check_vectors",
    "collection_name",
    "excerpt",
    "payload_fingerprint",
    "plan_content",
    "plan_points",
    "point_id_for",
]

FEATURE_NAMESPACE_PREFIX = "mixpeek://feature/"
# Qdrant refuses these in a collection name (and control characters).
_FORBIDDEN_IN_COLLECTION = re.compile(r'[<>:"/\\|?*\x00-\x1f\x7f]')
# A float in Qdrant's JSON body costs about this many bytes ("-0.0123456789,").
_BYTES_PER_FLOAT = 14
_EXCERPT_CHARS = 500


@dataclass(frozen=True)
class PlannedPoint:
    """One point ready for Qdrant, with what the ledger needs to remember about it."""

    point_id: str
    feature_id: str
    asset_id: str | None
    modality: str | None
    vectors: dict[str, Vector]
    payload: dict[str, Any]
    payload_fp: str
    vectors_fp: str
    approx_bytes: int

    def vector_sizes(self) -> dict[str, int]:
        """Per name: a dense vector's length, a sparse one's entries, a multi-dense one's
        dimensions (of each of its vectors)."""
        return {name: width(v) for name, v in self.vectors.items()}


@dataclass(frozen=True)
class Rejected:
    """A feature set aside, with the reason an operator will read."""

    feature_id: str | None
    reason: str
    payload_excerpt: str


@dataclass
class Plan:
    points: list[PlannedPoint] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    #: Vector names the collection does not have yet, with the configured spec
    #: (``SYNC_VECTOR_SIZES``) or else the one taken from the data.
    new_vectors: dict[str, VectorSpec] = field(default_factory=dict)


def point_id_for(feature_id: str) -> str:
    """The feature id itself when it is a UUID (canonical form), else a uuid5 of it.

    Never random: every retry of the same feature must land on the same point.
    """
    try:
        return str(uuid.UUID(feature_id))
    except (ValueError, AttributeError, TypeError):
        return str(uuid.uuid5(uuid.NAMESPACE_URL, FEATURE_NAMESPACE_PREFIX + str(feature_id)))


def collection_name(name: str) -> str:
    """Replace the characters Qdrant refuses in a collection name with ``_``."""
    cleaned = _FORBIDDEN_IN_COLLECTION.sub("_", name).strip()
    if cleaned in ("", ".", ".."):
        cleaned = cleaned.replace(".", "_") or "_"
    return cleaned[:255]


def build_payload(
    feature: Mapping[str, Any], asset: Mapping[str, Any], task_id: str
) -> dict[str, Any]:
    """Every field of the feature except ``vectors``, plus ``task_id`` and the ``asset`` object."""
    payload = {key: value for key, value in feature.items() if key != "vectors"}
    payload["asset_id"] = feature.get("asset_id") or asset.get("asset_id")
    payload["collection_id"] = feature.get("collection_id") or asset.get("collection_id")
    payload["modality"] = feature.get("modality") or asset.get("modality")
    payload["task_id"] = task_id
    payload["asset"] = dict(asset)
    return payload


def plan_points(
    features: Sequence[Mapping[str, Any]],
    asset: Mapping[str, Any],
    task_id: str,
    schema: Mapping[str, VectorSpec],
    sizes: Mapping[str, int] | None = None,
    declared: Mapping[str, VectorShape] | None = None,
) -> Plan:
    """Map each feature to a point, rejecting those that would be invalid in ``schema``.

    ``schema`` is the collection's vector names (empty for a collection not created yet). A
    vector name it lacks is planned as a new one: as upstream ``declared`` it (v1's vector
    indexes: kind, size, distance), else dense of the size ``sizes`` configures for it
    (``SYNC_VECTOR_SIZES``), so no vector of another length can set the collection's shape;
    a name ``sizes`` does not list is sized by the most common length among this plan's vectors
    of that name, so a few malformed vectors cannot set it either. A name ``schema`` has keeps
    the collection's spec, whatever ``sizes`` says (``reindex`` rebuilds a collection).
    """
    sizes = sizes or {}
    plan = Plan()
    plan.new_vectors = _new_vector_specs(features, schema, sizes)
    for name, shape in (declared or {}).items():
        if name in plan.new_vectors:  # upstream's word beats a guess from the data
            plan.new_vectors[name] = VectorSpec.of(shape)
    known = {**schema, **plan.new_vectors}
    seen_ids: set[str] = set()
    for feature in features:
        outcome = _plan_one(feature, asset, task_id, known, sizes)
        if isinstance(outcome, Rejected):
            plan.rejected.append(outcome)
        elif outcome.point_id in seen_ids:
            # Two features mapping to one point: keep the first, never silently overwrite it.
            plan.rejected.append(_reject(feature, "duplicate feature_id in one asset"))
        else:
            seen_ids.add(outcome.point_id)
            plan.points.append(outcome)
    used = {name for point in plan.points for name in point.vectors}
    plan.new_vectors = {n: spec for n, spec in plan.new_vectors.items() if n in used}
    return plan


def plan_content(
    content: AssetContent,
    task_id: str,
    schema: Mapping[str, VectorSpec],
    sizes: Mapping[str, int] | None = None,
) -> Plan:
    """:func:`plan_points` for an asset's content as the upstream served it."""
    features = [f.data for f in content.features]
    return plan_points(features, content.asset.data, task_id, schema, sizes, content.declared)


def _new_vector_specs(
    features: Sequence[Mapping[str, Any]],
    schema: Mapping[str, VectorSpec],
    sizes: Mapping[str, int],
) -> dict[str, VectorSpec]:
    """Specs for the vector names ``schema`` lacks: dense of the configured size, else sparse,
    or dense (multi-dense for a list of lists) of the most common length."""
    lengths: dict[str, Counter[int]] = {}
    sparse: set[str] = set()
    multi: set[str] = set()
    configured: dict[str, VectorSpec] = {}
    for feature in features:
        vectors = feature.get("vectors")
        if not isinstance(vectors, Mapping):
            continue
        for name, value in vectors.items():
            if not isinstance(name, str) or name in schema:
                continue
            if name in sizes:
                configured[name] = VectorSpec(size=sizes[name])
            elif isinstance(value, Mapping):
                sparse.add(name)
            elif isinstance(value, list) and value and isinstance(value[0], list):
                multi.add(name)
                lengths.setdefault(name, Counter())[len(value[0])] += 1
            elif isinstance(value, list) and value:
                # Counter keeps first-seen order, and most_common() is stable: ties go to it.
                lengths.setdefault(name, Counter())[len(value)] += 1
    specs = {
        name: VectorSpec(size=c.most_common(1)[0][0], multi=name in multi)
        for name, c in lengths.items()
    }
    specs.update({name: VectorSpec(size=None, sparse=True) for name in sparse - set(specs)})
    return {**specs, **configured}


def _plan_one(
    feature: Mapping[str, Any],
    asset: Mapping[str, Any],
    task_id: str,
    known: Mapping[str, VectorSpec],
    sizes: Mapping[str, int],
) -> PlannedPoint | Rejected:
    feature_id = feature.get("feature_id")
    if not isinstance(feature_id, str) or not feature_id:
        return _reject(feature, "feature has no feature_id")
    vectors, problem = check_vectors(feature.get("vectors"), known, sizes)
    if problem is not None:
        return _reject(feature, problem)
    payload = build_payload(feature, asset, task_id)
    try:
        payload_json = _canonical_json(payload)
    except (TypeError, ValueError) as exc:
        return _reject(feature, f"payload is not valid JSON for Qdrant: {exc}")
    vectors_fp = _vectors_fingerprint(vectors)
    floats = sum(float_count(v) for v in vectors.values())
    return PlannedPoint(
        point_id=point_id_for(feature_id),
        feature_id=feature_id,
        asset_id=payload["asset_id"],
        modality=payload["modality"],
        vectors=vectors,
        payload=payload,
        payload_fp=_sha256(payload_json),
        vectors_fp=vectors_fp,
        approx_bytes=len(payload_json) + floats * _BYTES_PER_FLOAT + 64,
    )


def payload_fingerprint(payload: Mapping[str, Any]) -> str:
    """The ledger's ``payload_fp`` of a payload (``verify`` recomputes it from Qdrant)."""
    return _sha256(_canonical_json(payload))


def _canonical_json(payload: Mapping[str, Any]) -> str:
    return json.dumps(payload, sort_keys=True, allow_nan=False, separators=(",", ":"))


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _vectors_fingerprint(vectors: Mapping[str, Vector]) -> str:
    """The vectors as Qdrant stores them (float32; sparse indices as int64), not the JSON
    spelling of their numbers: the bytes numpy's ``asarray(..., float32).tobytes()`` gives,
    in the standard library's C arrays (numpy stays out of the daemon's loop: vectors.py)."""
    digest = hashlib.sha256()
    for name in sorted(vectors):
        vector = vectors[name]
        digest.update(name.encode() + b"\0")
        if isinstance(vector, SparseValues):
            digest.update(_int64s(vector.indices))
            digest.update(_float32s(vector.values))
        elif is_multi(vector):
            digest.update(_float32s(chain.from_iterable(cast("list[list[float]]", vector))))
        else:
            digest.update(_float32s(cast("list[float]", vector)))
    return digest.hexdigest()


def _float32s(values: Iterable[float]) -> bytes:
    return array("f", values).tobytes()  # native byte order, as numpy's


def _int64s(values: Iterable[int]) -> bytes:
    return array("q", values).tobytes()


def _reject(feature: Mapping[str, Any], reason: str) -> Rejected:
    feature_id = feature.get("feature_id")
    return Rejected(
        feature_id=feature_id if isinstance(feature_id, str) else None,
        reason=reason,
        payload_excerpt=excerpt(feature),
    )


def excerpt(value: Any) -> str:
    """A short, readable JSON excerpt of an upstream item for a dead letter (vectors elided)."""
    if isinstance(value, Mapping) and isinstance(value.get("vectors"), Mapping):
        value = {**value, "vectors": dict.fromkeys(value["vectors"], "…")}
    text = json.dumps(value, default=str, sort_keys=True, ensure_ascii=False)
    return text if len(text) <= _EXCERPT_CHARS else text[: _EXCERPT_CHARS - 1] + "…"
