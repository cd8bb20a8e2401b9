"""The search the service feeds: a text embedded by the upstream, looked up in Qdrant.

``sync-service query`` runs it; an application runs the same search with a few lines of
qdrant-client (README, "Searching"). It only reads: Qdrant through the sink, the text's vector
through the upstream port, so it works on embedded Qdrant and on a server, through a re-index's
alias, and with any upstream that can embed (``--like`` needs none).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sync_service.engine.points import SparseValues, collection_name, point_id_for
from sync_service.engine.vectors import VectorSpec
from sync_service.qdrant.sink import QdrantSink, QueryVector
from sync_service.settings import Settings
from sync_service.upstream.port import MixpeekBadRequest, MixpeekUnsupported, Upstream

SNIPPET_CHARS = 80


class SearchError(Exception):
    """A search that cannot run, with the one line that says why and what to do."""


@dataclass(frozen=True)
class Query:
    text: str | None = None
    #: Search with this stored point's vector (a point id or a feature id) instead of a text.
    like: str | None = None
    #: A Mixpeek collection id or a Qdrant collection (or alias) name; None: the only one.
    collection: str | None = None
    #: The named vector to search; None: the collection's only or first one.
    vector: str | None = None
    modality: str | None = None
    asset_id: str | None = None
    limit: int = 5


@dataclass(frozen=True)
class Hit:
    rank: int
    score: float
    point_id: str
    modality: str | None
    asset_id: str | None
    url: str | None
    start_time: float | None
    end_time: float | None
    snippet: str
    payload: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        fields = ("rank", "score", "point_id", "modality", "asset_id", "url")
        return {k: getattr(self, k) for k in fields} | {
            "start_time": self.start_time,
            "end_time": self.end_time,
            "snippet": self.snippet,
        }


@dataclass(frozen=True)
class Answer:
    collection: str
    vector: str
    hits: list[Hit]


async def search(sink: QdrantSink, upstream: Upstream, settings: Settings, query: Query) -> Answer:
    """Run ``query``; :class:`SearchError` when it cannot run."""
    if (query.text is None) == (query.like is None):
        raise SearchError("give either a text to search for or --like POINT_ID")
    if query.limit < 1:
        raise SearchError("--limit must be 1 or more")
    name = await resolve_collection(sink, settings, query.collection)
    schema = await sink.schema(name)
    if not schema:
        raise SearchError(f"Qdrant collection {name!r} has no vectors (it may be new)")
    vector_name = query.vector or next(iter(schema))
    if vector_name not in schema:
        known = ", ".join(sorted(schema))
        raise SearchError(
            f"collection {name!r} has no vector named {vector_name!r} (it has: {known})"
        )
    if await sink.count(name) == 0:
        raise SearchError(
            f"collection {name!r} holds no points yet: nothing to search "
            "(`sync-service status` shows what is synced)"
        )
    exclude: list[str] = []
    if query.like is not None:
        vector = await _stored_vector(sink, name, vector_name, query.like)
        exclude = [point_id_for(query.like)]
    else:
        vector = await _embedded(upstream, query.text or "", vector_name)
    problem = _mismatch(vector, schema[vector_name], f"{vector_name!r} in {name!r}")
    if problem is not None:
        raise SearchError(problem)
    match = {k: v for k, v in (("modality", query.modality), ("asset_id", query.asset_id)) if v}
    scored = await sink.search(name, vector_name, vector, query.limit, match=match, exclude=exclude)
    hits = [_hit(rank, point) for rank, point in enumerate(scored, start=1)]
    return Answer(name, vector_name, hits)


async def resolve_collection(sink: QdrantSink, settings: Settings, given: str | None) -> str:
    """The Qdrant collection (or alias) to search: ``given`` as a Qdrant name, else as a Mixpeek
    collection id mapped by ``QDRANT_COLLECTION``; none given: the configured one or the only
    one there is."""
    names = await sink.names()
    if given is not None:
        for candidate in (given, collection_name(settings.qdrant_collection_for(given))):
            if candidate in names:
                return candidate
        raise SearchError(
            f"no Qdrant collection for {given!r} (collections: {', '.join(names) or 'none'})"
        )
    if "{collection_id}" not in settings.qdrant_collection:
        configured = collection_name(settings.qdrant_collection)
        if configured in names:
            return configured
    if len(names) == 1:
        return names[0]
    if not names:
        raise SearchError("Qdrant holds no collection yet: nothing is synced")
    raise SearchError(f"several collections; pick one with --collection ({', '.join(names)})")


def _mismatch(vector: QueryVector, spec: VectorSpec, where: str) -> str | None:
    """Why ``vector`` cannot be searched for in vector ``where`` of shape ``spec``, if so."""
    if isinstance(vector, SparseValues):
        return None if spec.sparse else f"the query vector is sparse but {where} is not"
    rows = [row for row in vector if isinstance(row, list)]
    kind = "multi-dense" if rows else "dense"
    if spec.sparse or bool(rows) != spec.multi:
        return f"the query vector is {kind} but {where} is {spec.describe()}"
    if rows:
        bad = next((len(row) for row in rows if len(row) != spec.size), None)
        if bad is not None:
            return f"the query vector has {bad} dimensions per token but {where} has {spec.size}"
        return None
    if len(vector) != spec.size:
        return f"the query vector has {len(vector)} dimensions but {where} has {spec.size}"
    return None


async def _stored_vector(sink: QdrantSink, name: str, vector_name: str, point: str) -> QueryVector:
    records = await sink.retrieve(name, [point_id_for(point)])
    if not records:
        raise SearchError(f"no point {point!r} in {name!r} (give a point id or a feature id)")
    vectors = records[0].vector
    value: Any = vectors.get(vector_name) if isinstance(vectors, dict) else None
    if isinstance(value, list) and all(isinstance(x, int | float) for x in value):
        return [float(x) for x in value]
    if isinstance(value, list) and all(isinstance(row, list) for row in value):
        return [[float(x) for x in row] for row in value]  # a multivector
    indices, values = getattr(value, "indices", None), getattr(value, "values", None)
    if isinstance(indices, list) and isinstance(values, list):
        return SparseValues(indices, values)
    raise SearchError(f"point {point!r} has no vector {vector_name!r}")


async def _embedded(upstream: Upstream, text: str, vector_name: str) -> QueryVector:
    if not text.strip():
        raise SearchError("the text to search for is empty")
    try:
        vector = await upstream.embed(text, vector_name)
    except MixpeekUnsupported as exc:
        raise SearchError(
            f"{exc}; search by a stored point's vector instead: --like POINT_ID"
        ) from None
    except MixpeekBadRequest as exc:
        raise SearchError(f"Mixpeek cannot embed into {vector_name!r}: {exc.message}") from None
    if isinstance(vector, dict):
        return SparseValues(
            [int(i) for i in vector["indices"]], [float(v) for v in vector["values"]]
        )
    return vector


def _hit(rank: int, point: Any) -> Hit:
    payload: dict[str, Any] = dict(point.payload or {})
    asset = payload.get("asset") if isinstance(payload.get("asset"), dict) else {}
    words = next(
        (payload[k] for k in ("description", "transcription", "text") if _text(payload.get(k))),
        "",
    )
    return Hit(
        rank=rank,
        score=float(point.score),
        point_id=str(point.id),
        modality=payload.get("modality"),
        asset_id=payload.get("asset_id"),
        url=(asset or {}).get("url"),
        start_time=_number(payload.get("start_time")),
        end_time=_number(payload.get("end_time")),
        snippet=_snippet(str(words)),
        payload=payload,
    )


def _text(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _snippet(text: str) -> str:
    flat = re.sub(r"\s+", " ", text).strip()
    return flat if len(flat) <= SNIPPET_CHARS else flat[: SNIPPET_CHARS - 1] + "…"
