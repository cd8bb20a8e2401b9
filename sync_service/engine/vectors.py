"""Vectors as the service checks them: the kinds a Qdrant collection holds under a name
(:class:`VectorSpec`), and :func:`check_vectors`, which accepts a feature's vectors or says in
one line why not (the reason a dead letter carries).

Pure functions, like ``points.py`` which re-exports them: no I/O.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sync_service.upstream.port import VectorShape

#: The largest finite float32, 3.4028234663852886e38 (numpy's finfo(float32).max).
_FLOAT32_MAX: float = struct.unpack("<f", b"\xff\xff\x7f\x7f")[0]


@dataclass(frozen=True)
class VectorSpec:
    """What a collection holds under one vector name: dense with ``size``, sparse, or
    multi-dense (a list of ``size``-d vectors, compared by MAX_SIM)."""

    size: int | None
    sparse: bool = False
    multi: bool = False
    #: The distance upstream declares for it ("cosine", "dot", "euclid", "manhattan"); None:
    #: the collection's. Not compared: a collection read back from Qdrant is the same shape.
    distance: str | None = field(default=None, compare=False)

    def describe(self) -> str:
        if self.sparse:
            return "sparse"
        return f"multi_dense[{self.size}]" if self.multi else f"dense[{self.size}]"

    @classmethod
    def of(cls, shape: VectorShape) -> VectorSpec:
        """The spec of a vector name upstream declares."""
        if shape.kind == "sparse":
            return cls(size=None, sparse=True, distance=shape.distance)
        return cls(size=shape.size, multi=shape.kind == "multi_dense", distance=shape.distance)


@dataclass(frozen=True)
class SparseValues:
    indices: list[int]
    values: list[float]


#: Dense floats, multi-dense (one list of floats per token or patch), or sparse.
Vector = list[float] | list[list[float]] | SparseValues


def is_multi(vector: Vector) -> bool:
    """Whether ``vector`` is multi-dense (a list of lists)."""
    return isinstance(vector, list) and bool(vector) and isinstance(vector[0], list)


def width(vector: Vector) -> int:
    if isinstance(vector, SparseValues):
        return len(vector.values)
    if vector and isinstance(vector[0], list):
        return len(vector[0])
    return len(vector)


def float_count(vector: Vector) -> int:
    if isinstance(vector, SparseValues):
        return len(vector.values) * 2
    if vector and isinstance(vector[0], list):
        return sum(len(row) for row in vector if isinstance(row, list))
    return len(vector)


def check_vectors(
    raw: Any, known: Mapping[str, VectorSpec], sizes: Mapping[str, int] | None = None
) -> tuple[dict[str, Vector], str | None]:
    """Validate a feature's ``vectors`` object; returns (vectors, None) or ({}, reason).

    ``sizes`` (``SYNC_VECTOR_SIZES``) only words the reason of a length mismatch.
    """
    if not isinstance(raw, Mapping) or not raw:
        return {}, "feature has no vectors"
    vectors: dict[str, Vector] = {}
    for name, value in raw.items():
        if not isinstance(name, str) or not name:
            return {}, "vector with an empty name"
        vector: Vector | None
        if isinstance(value, Mapping):
            vector, problem = _check_sparse(name, value)
        elif isinstance(value, list) and value and isinstance(value[0], list):
            vector, problem = _check_multi(name, value)
        else:
            vector, problem = _check_dense(name, value)
        if problem is not None or vector is None:
            return {}, problem or f"vector {name!r} is unusable"
        expected = known.get(name)
        if expected is not None:
            mismatch = _mismatch(name, vector, expected, (sizes or {}).get(name))
            if mismatch is not None:
                return {}, mismatch
        vectors[name] = vector
    return vectors, None


_PLAIN_NUMBERS = frozenset((float, int))


def _check_dense(name: str, value: Any) -> tuple[list[float] | None, str | None]:
    if not isinstance(value, list) or not value:
        return None, f"vector {name!r} is not a non-empty list of numbers"
    # set(map(type, …)) runs in C; the per-item check is only for the rare odd list.
    if not _PLAIN_NUMBERS.issuperset(map(type, value)) and any(
        isinstance(x, bool) or not isinstance(x, int | float) for x in value
    ):
        return None, f"vector {name!r} holds a value that is not a number"
    # Loops in C without numpy: the daemon's loop must not import it (Qdrant's client loads it
    # in a thread at start, and the import stalled every request in flight for 30-50 ms).
    # One pass decides the usual vector: magnitudes summing within float32's range are each
    # finite and in range (NaN compares false, inf exceeds it); 29 us instead of 74 for 1408
    # values. Only a vector failing that (or one of huge values) takes the exact check.
    try:
        finite = sum(map(abs, value)) <= _FLOAT32_MAX or (
            all(map(math.isfinite, value)) and max(map(abs, value)) <= _FLOAT32_MAX
        )
    except OverflowError:  # an integer past any float
        finite = False
    if not finite:
        return (
            None,
            f"vector {name!r} holds a value that is not finite in float32 (NaN, inf or too large)",
        )
    return value, None


def _check_multi(name: str, value: list[Any]) -> tuple[list[list[float]] | None, str | None]:
    """A multi-dense vector: a non-empty list of dense vectors, all of one length."""
    rows: list[list[float]] = []
    for row in value:
        checked, problem = _check_dense(name, row)
        if problem is not None or checked is None:
            return None, f"multi-dense {problem or f'vector {name!r} is unusable'}"
        rows.append(checked)
    if len({len(row) for row in rows}) != 1:
        return None, f"multi-dense vector {name!r} mixes vectors of different lengths"
    return rows, None


def _check_sparse(name: str, value: Mapping[str, Any]) -> tuple[SparseValues | None, str | None]:
    indices, values = value.get("indices"), value.get("values")
    if not isinstance(indices, list) or not isinstance(values, list) or len(indices) != len(values):
        return None, f"sparse vector {name!r} needs 'indices' and 'values' lists of equal length"
    if any(isinstance(i, bool) or not isinstance(i, int) or i < 0 for i in indices):
        return None, f"sparse vector {name!r} has an index that is not a non-negative integer"
    if len(set(indices)) != len(indices):
        return None, f"sparse vector {name!r} repeats an index"
    if any(
        isinstance(x, bool)
        or not isinstance(x, int | float)
        or not math.isfinite(x)
        or abs(x) > _FLOAT32_MAX
        for x in values
    ):
        return None, f"sparse vector {name!r} holds a value that is not finite in float32"
    return SparseValues(indices=list(indices), values=[float(x) for x in values]), None


def _mismatch(
    name: str, vector: Vector, expected: VectorSpec, configured: int | None = None
) -> str | None:
    sparse = isinstance(vector, SparseValues)
    multi = is_multi(vector)
    if sparse != expected.sparse or multi != expected.multi:
        kind = "sparse" if sparse else "multi-dense" if multi else "dense"
        return f"vector {name!r} is {kind} but the collection holds it as {expected.describe()}"
    if not expected.sparse and width(vector) != expected.size:
        reason = (
            f"vector {name!r} has length {width(vector)} but the collection expects {expected.size}"
        )
        if configured == expected.size:
            return f"{reason} (SYNC_VECTOR_SIZES {name}={configured})"
        if configured is not None:  # a collection created before the setting, or by another
            return (
                f"{reason} (SYNC_VECTOR_SIZES says {name}={configured}; "
                "`sync-service reindex` rebuilds the collection with it)"
            )
        return reason
    return None
