"""The built-in feature extractors and the vector indexes each declares.

Names and sizes as Mixpeek's extractor pages give them (``{extractor}_{version}_{output}``).
A collection's ``/features`` and ``vector_indexes`` are read from here, so a client that reads
names per collection (as it must) sees exactly the vectors its documents carry.

``hybrid_extractor_v1`` is the emulator's own (no published extractor declares them): a dense,
a sparse and a multi-dense index (``VectorIndex.type`` ``dense | sparse | multi_dense``), so a
client's handling of all three kinds is tested end to end.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from sync_service.emulator.responses import ApiError


class Index(NamedTuple):
    output: str  # the extractor's output name: the vector name's last part
    dimensions: int  # a sparse index's: its vocabulary (the hashed terms' range)
    meaning: str  # which texts of a document it embeds: "all", "speech", "text", "visual"
    model: str
    kind: str = "dense"  # "dense", "sparse" or "multi_dense" (one vector per token)


class Extractor(NamedTuple):
    name: str
    version: str
    inputs: tuple[str, ...]  # blob types it reads, in order of preference
    indexes: tuple[Index, ...]
    segments_video: bool  # one document per segment of a video (position: start/end time)


CATALOG: dict[str, Extractor] = {
    e.name + "_" + e.version: e
    for e in (
        Extractor(
            "multimodal_extractor",
            "v1",
            ("video", "image", "text", "string"),
            (
                Index("multimodal_embedding", 1408, "all", "google/vertex-multimodal"),
                Index("transcription_embedding", 1024, "speech", "intfloat/multilingual-e5"),
            ),
            True,
        ),
        Extractor(
            "text_extractor",
            "v1",
            ("text", "string"),
            (Index("embedding", 1024, "text", "intfloat/multilingual-e5-large-instruct"),),
            False,
        ),
        Extractor(
            "image_extractor",
            "v1",
            ("image",),
            (Index("embedding", 768, "visual", "google/siglip"),),
            False,
        ),
        Extractor(
            "hybrid_extractor",
            "v1",
            ("video", "image", "text", "string"),
            (
                Index("dense_embedding", 1024, "all", "intfloat/multilingual-e5"),
                Index("sparse_embedding", 1 << 20, "all", "naver/splade-v3", "sparse"),
                Index(
                    "late_interaction_embedding",
                    128,
                    "all",
                    "colbert-ir/colbertv2.0",
                    "multi_dense",
                ),
            ),
            True,
        ),
    )
}


def resolve(spec: dict[str, Any]) -> Extractor:
    """The extractor a collection's ``feature_extractor`` names (400 for an unknown one)."""
    name = str(spec.get("feature_extractor_name") or "")
    version = str(spec.get("version") or "v1")
    key = name if name in CATALOG else f"{name}_{version}"
    if key not in CATALOG:
        known = ", ".join(sorted(CATALOG))
        raise ApiError(400, f"Unknown feature extractor {name!r} (known: {known})")
    return CATALOG[key]


def extractor_id(extractor: Extractor) -> str:
    return f"{extractor.name}_{extractor.version}"


def vector_name(extractor: Extractor, index: Index) -> str:
    return f"{extractor_id(extractor)}_{index.output}"


def sizes(extractor: Extractor, overrides: dict[str, int]) -> dict[str, int]:
    """Vector name to dimensions, the primary (first) index first."""
    named = {vector_name(extractor, i): i.dimensions for i in extractor.indexes}
    return {name: overrides.get(name, size) for name, size in named.items()}


def features_view(extractor: Extractor, overrides: dict[str, int]) -> list[dict[str, Any]]:
    """``DescribeCollectionFeaturesResponse.features``."""
    out = []
    for position, index in enumerate(extractor.indexes):
        name = vector_name(extractor, index)
        out.append(
            {
                "feature_address": f"mixpeek://{extractor.name}@{extractor.version}/{index.output}",
                "feature_extractor_name": extractor.name,
                "version": extractor.version,
                "vector_index": {
                    "name": name,
                    "description": f"{index.output} vectors of {extractor.name}",
                    "dimensions": _shown(index, overrides.get(name, index.dimensions)),
                    "type": index.kind,
                    "distance": "cosine",
                    "datatype": "float32",
                    "inference_service_id": index.model,
                },
                "primary": position == 0,
            }
        )
    return out


def vector_indexes_view(extractor: Extractor, overrides: dict[str, int]) -> list[dict[str, Any]]:
    """``CollectionResponse.vector_indexes``: untyped items, ``size`` rather than dimensions."""
    named = sizes(extractor, overrides)
    return [
        {
            "name": vector_name(extractor, i),
            "size": _shown(i, named[vector_name(extractor, i)]),
            "distance": "cosine",
            "type": i.kind,
        }
        for i in extractor.indexes
    ]


def _shown(index: Index, size: int) -> int | None:
    return None if index.kind == "sparse" else size  # a sparse index has no fixed dimensions


def find_index(name: str, overrides: dict[str, int]) -> tuple[Index, int] | None:
    """The index of any extractor whose vector is named ``name``, with its size."""
    for extractor in CATALOG.values():
        for index in extractor.indexes:
            if vector_name(extractor, index) == name:
                return index, overrides.get(name, index.dimensions)
    return None
