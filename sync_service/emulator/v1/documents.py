"""What an object becomes in a collection, and how a document is rendered.

Content reuses the 2024 emulator's: a video's segments (scripted scenes for the library's
media, else made up from the URL's hash), an image's description, a text as given; vectors are
the meaningful ones of ``emulator.embedding`` (hashed words per vector name), so a text query
finds the right segment in every named vector.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable
from typing import Any

from sync_service.emulator import content, library
from sync_service.emulator.embedding import feature_embedding, multi_embedding, sparse_embedding
from sync_service.emulator.v1.config import V1Config
from sync_service.emulator.v1.extractors import Extractor, extractor_id, sizes, vector_name
from sync_service.emulator.v1.model import Blob, Collection, Document, StoredObject

Extracted = tuple[str, dict[str, Any], dict[str, str]]  # modality, fields, meaning per kind
_MIME = {"video": "video/mp4", "image": "image/jpeg", "text": "text/plain"}


def _blob_for(extractor: Extractor, obj: StoredObject) -> Blob | None:
    for kind in extractor.inputs:
        for blob in obj.blobs:
            if blob.type == kind:
                return blob
    return None


def _url(blob: Blob) -> str:
    return blob.data if isinstance(blob.data, str) else str(blob.data)


def extract(extractor: Extractor, obj: StoredObject, interval: int) -> list[Extracted]:
    """One entry per document the extractor makes of ``obj``, in position order.

    Nothing when the object has no blob the extractor reads (a text extractor on a video).
    """
    blob = _blob_for(extractor, obj)
    if blob is None:
        return []
    if blob.type == "video" and extractor.segments_video:
        url = _url(blob)
        step = library.INTERVAL if library.video_scenes(url) is not None else interval
        out: list[Extracted] = []
        for i, (start, end) in enumerate(content.video_spans(url, interval)):
            texts = content.video_segment_texts(url, i)
            fields = {
                "start_time": start,
                "end_time": end,
                "interval_sec": step,
                "description": texts["description"],
                "transcription": texts["transcription"],
                "ocr_text": texts["text"],
                "thumbnail_url": f"s3://mixpeek-emulator/{obj.object_id}/thumb_{i}.jpg",
            }
            meaning = {
                "all": "\n".join(texts.values()),
                "speech": texts["transcription"],
                "text": texts["transcription"],
                "visual": texts["description"],
            }
            out.append(("video", fields, meaning))
        return out
    if blob.type == "image":
        texts = content.image_texts(_url(blob))
        fields = {"description": texts["description"], "ocr_text": texts["text"]}
        fields["thumbnail_url"] = f"s3://mixpeek-emulator/{obj.object_id}/thumb_0.jpg"
        visual = texts["description"]
        meaning = {"all": f"{visual}\n{texts['text']}", "speech": visual, "text": visual}
        return [("image", fields, meaning | {"visual": visual})]
    text = _url(blob) if blob.type in ("text", "string") else ""
    kinds = ("all", "speech", "text", "visual")
    return [("text", {"text": text}, dict.fromkeys(kinds, text))]


def source_url(extractor: Extractor, obj: StoredObject) -> str | None:
    """The URL of the blob the extractor reads (None for a text given as a value)."""
    blob = _blob_for(extractor, obj)
    if blob is None or blob.type in ("text", "string") or not isinstance(blob.data, str):
        return None
    return blob.data if blob.data.startswith(("http://", "https://", "s3://")) else None


def deterministic_id(obj: StoredObject, collection: Collection, position: int) -> str:
    """Mixpeek's formula in spirit: hash(source object, extractor, collection, position)."""
    ext = str(collection.extractor["feature_extractor_id"])
    parts = (obj.object_id, ext, collection.collection_id, str(position))
    return "doc_" + hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:24]


def vectors(extractor: Extractor, doc: Document, config: V1Config) -> dict[str, Any]:
    """Every named vector of ``doc``: its meaning embedded, or seeded noise. Sparse indexes
    give ``{"indices", "values"}``, multi-dense ones a list of vectors (one per word)."""
    out: dict[str, Any] = {}
    named = sizes(extractor, config.vector_dimensions)
    for index in extractor.indexes:
        name = vector_name(extractor, index)
        seed = f"{doc.document_id}\x1f{doc.generation}"
        text = doc.meaning[index.meaning]
        if index.kind == "sparse":  # a bag of words: meaningful whatever vector_kind says
            out[name] = sparse_embedding(text, name, named[name])
        elif index.kind == "multi_dense":
            out[name] = multi_embedding(text, seed, named[name], name)
        elif config.vector_kind == "meaningful":
            out[name] = feature_embedding(text, seed, named[name], name)
        else:
            key = f"{doc.document_id}\x1f{name}"
            out[name] = content.feature_vector(key, 0, named[name], doc.generation)
    return out


def render(
    doc: Document,
    extractor: Extractor,
    stamp: Callable[[float], str],
    config: V1Config,
    *,
    with_vectors: bool = False,
    with_names: bool = False,
) -> dict[str, Any]:
    """The ``DocumentResponse`` body: root fields, ``document_blobs``, ``_internal``, and the
    vectors where ``config.vector_placement`` puts them."""
    created, updated = stamp(doc.created), stamp(doc.updated)
    ext_id = extractor_id(extractor)
    body: dict[str, Any] = {"document_id": doc.document_id, "collection_id": doc.collection_id}
    body.update(copy.deepcopy(doc.fields))
    thumbnail = doc.fields.get("thumbnail_url")
    blobs = []
    if isinstance(thumbnail, str):
        blobs.append({"field": "thumbnail", "role": "thumbnail", "type": "image", "url": thumbnail})
    body["document_blobs"] = blobs
    body["_internal"] = {
        "internal_id": doc.document_id,
        "document_id": doc.document_id,
        "namespace_id": doc.namespace_id,
        "collection_id": doc.collection_id,
        "modality": doc.modality,
        "mime_type": _MIME.get(doc.modality, "application/octet-stream"),
        "created_at": created,
        "updated_at": updated,
        "lineage": {
            "source_type": "bucket",
            "root_object_id": doc.object_id,
            "root_bucket_id": doc.bucket_id,
            "source_object_id": doc.object_id,
            "path": f"{doc.bucket_id}/{doc.collection_id}",
            "chain": [
                {
                    "collection_id": doc.collection_id,
                    "feature_extractor_id": ext_id,
                    "timestamp": updated,
                }
            ],
        },
        "metadata": {"ingestion_status": "COMPLETED"},
        "processing": {"source_url": doc.source_url},
    }
    if with_names:
        body["_vectors"] = list(sizes(extractor, config.vector_dimensions))
    if with_vectors:
        named = vectors(extractor, doc, config)
        if config.vector_placement == "root":
            body.update(named)
        elif config.vector_placement == "vectors":
            body["vectors"] = named
        else:
            body["vector"] = next(iter(named.values()))
    return body
