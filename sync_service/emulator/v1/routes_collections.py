"""Collections, their features and their documents (list with cursor paging, get, delete).

Listing accepts every placement the published API shows: ``limit``/``offset`` in the query
or the body (the query wins), ``cursor`` in either, ``return_vectors`` and
``return_presigned_urls`` (older ``return_url``) in either: one ``true`` enables.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from sync_service.emulator import query
from sync_service.emulator.embedding import embed_text, multi_embedding, sparse_embedding
from sync_service.emulator.responses import ApiError, json_response
from sync_service.emulator.schemas import EmbedRequest
from sync_service.emulator.v1 import documents, extractors, listing, views
from sync_service.emulator.v1.api import namespace
from sync_service.emulator.v1.model import Collection, Document
from sync_service.emulator.v1.store import V1State


class CreateCollection(BaseModel):
    model_config = ConfigDict(extra="allow")
    collection_name: str = Field(min_length=1, max_length=100)
    description: str | None = None
    source: dict[str, Any]
    feature_extractor: dict[str, Any]


class ListDocuments(BaseModel):
    model_config = ConfigDict(extra="allow")
    filters: dict[str, Any] | None = None
    sort: dict[str, Any] | None = None
    search: str | None = None
    cursor: str | None = None
    limit: int | None = Field(default=None, ge=1, le=1000)
    offset: int | None = Field(default=None, ge=0, le=10_000)
    return_vectors: bool = False
    return_vector_names: bool = False
    return_presigned_urls: bool = False
    return_url: bool = False
    include_total: bool = False
    select: list[str] | None = None


def _selected(doc: dict[str, Any], select: list[str] | None) -> dict[str, Any]:
    if not select:
        return doc
    keep = {path.split(".")[0] for path in select} | {"document_id"}
    return {k: v for k, v in doc.items() if k in keep}


def add_collection_routes(router: APIRouter, state: V1State) -> None:
    def render(doc: Document, vectors: bool = False, names: bool = False) -> dict[str, Any]:
        extractor = state.extractor(state.collections[doc.collection_id])
        return documents.render(
            doc, extractor, state.zulu, state.config, with_vectors=vectors, with_names=names
        )

    def collection(request: Request, ident: str) -> Collection:
        return state.collection_of(namespace(state, request), ident)

    @router.post("/v1/collections")
    async def create_collection(request: Request, body: CreateCollection) -> Response:
        ns = namespace(state, request)
        source = body.source
        bucket_ids = source.get("bucket_ids") or (
            [source["bucket_id"]] if source.get("bucket_id") else []  # older docs: singular
        )
        if source.get("type", "bucket") != "bucket" or not bucket_ids:
            raise ApiError(400, "The emulator supports bucket sources: source.bucket_ids")
        col = state.create_collection(
            ns, body.collection_name, body.description, list(bucket_ids), body.feature_extractor
        )
        return json_response(views.collection(state, col))

    @router.get("/v1/collections/{ident}")
    async def get_collection(request: Request, ident: str) -> Response:
        return json_response(views.collection(state, collection(request, ident)))

    @router.delete("/v1/collections/{ident}")
    async def delete_collection(request: Request, ident: str) -> Response:
        state.delete_collection(collection(request, ident))
        return json_response({"message": f"Collection {ident} deleted", "success": True})

    @router.post("/v1/collections/list")
    async def list_collections(request: Request, limit: int = 10, offset: int = 0) -> Response:
        ns = namespace(state, request)
        items = [
            views.collection(state, c)
            for c in state.collections.values()
            if c.namespace_id == ns.namespace_id
        ]
        return json_response(views.page(items[offset : offset + limit], len(items), limit, offset))

    @router.get("/v1/collections/{ident}/features")
    async def features(request: Request, ident: str) -> Response:
        extractor = state.extractor(collection(request, ident))
        dims = state.config.vector_dimensions
        return json_response({"features": extractors.features_view(extractor, dims)})

    @router.post("/v1/features/extractors/embed")
    async def embed(body: EmbedRequest) -> Response:
        """The v1 SDK's "extract embeddings": a text in the vector space of an index name,
        embedded as the documents' vectors are (so a query finds the right document)."""
        name = body.vector_index or body.embedding_model or body.vector_name or ""
        found = extractors.find_index(name, state.config.vector_dimensions)
        if found is None:
            raise ApiError(400, f"Unknown vector index {name!r}")
        index, size = found
        if index.kind == "dense" and state.config.vector_kind == "random":
            raise ApiError(400, "this server's vectors are random (vector_kind=random)")
        started = time.perf_counter()
        vector: Any
        if index.kind == "sparse":
            vector = sparse_embedding(body.value, name, size)
        elif index.kind == "multi_dense":
            vector = multi_embedding(body.value, "query", size, name)
        else:
            vector = embed_text(body.value, size, name)
        return json_response({"embedding": vector, "elapsed_time": time.perf_counter() - started})

    @router.post("/v1/collections/{ident}/documents/list")
    async def list_documents(
        request: Request,
        ident: str,
        body: ListDocuments | None = None,
        limit: int | None = Query(None, ge=1, le=1000),
        offset: int | None = Query(None, ge=0, le=10_000),
        cursor: str | None = None,
        include_total: bool = False,
        return_vectors: bool = False,
        return_vector_names: bool = False,
    ) -> Response:
        # return_presigned_urls is accepted and ignored: emulated blobs have no presigned URLs.
        col = collection(request, ident)
        req = body or ListDocuments()
        size = limit or req.limit or 10
        start = offset if offset is not None else (req.offset or 0)
        vectors = return_vectors or req.return_vectors
        names = return_vector_names or req.return_vector_names
        ignore = state.config.ignore_filters
        match = listing.compile_filters(None if ignore else req.filters)
        docs = [
            (d.seq, render(d))
            for d in state.documents.values()
            if d.collection_id == col.collection_id
        ]
        docs = [(s, d) for s, d in docs if match(d)]
        if req.search:
            docs = [(s, d) for s, d in docs if query.search_hit(d, None, req.search)]
        chunk, next_cursor, page = listing.paginate(
            docs, req.sort, size, start, cursor or req.cursor
        )
        if page == state.config.list_fail_page:  # retries included: a listing cut short
            raise ApiError(500, f"Emulated failure listing page {page}")
        results = [
            _selected(render(state.documents[d["document_id"]], vectors, names), req.select)
            if vectors or names
            else _selected(d, req.select)
            for _, d in chunk
        ]
        total = len(docs) if include_total or req.include_total else None
        pagination = {
            "total": total,
            "page": None,
            "page_size": size,
            "total_pages": None if total is None else query.total_pages(total, size),
            "next_page": None,
            "previous_page": None,
            "next_cursor": next_cursor,
        }
        stats = None if total is None else {"total_documents": total}
        return json_response(
            {
                "results": results,
                "pagination": pagination,
                "total_documents": total,
                "stats": stats,
                "has_more": next_cursor is not None,
            }
        )

    def document(col: Collection, document_id: str) -> Document:
        doc = state.documents.get(document_id)
        if doc is None or doc.collection_id != col.collection_id:
            raise ApiError(404, f"Document {document_id} not found")
        return doc

    @router.get("/v1/collections/{ident}/documents/{document_id}")
    async def get_document(
        request: Request,
        ident: str,
        document_id: str,
        return_vectors: bool = False,
        return_vector_names: bool = False,
    ) -> Response:
        doc = document(collection(request, ident), document_id)
        return json_response(render(doc, return_vectors, return_vector_names))

    @router.delete("/v1/collections/{ident}/documents/{document_id}")
    async def delete_document(request: Request, ident: str, document_id: str) -> Response:
        state.delete_documents([document(collection(request, ident), document_id).document_id])
        return json_response({"message": f"Document {document_id} deleted", "success": True})

    @router.get("/v1/objects/{object_id}/documents")
    async def object_documents(
        request: Request,
        object_id: str,
        collection_ids: str | None = None,
        return_vectors: bool = False,
    ) -> Response:
        ns = namespace(state, request)
        wanted = {c.strip() for c in collection_ids.split(",")} if collection_ids else None
        docs = [
            d
            for d in sorted(state.documents.values(), key=lambda d: d.seq)
            if d.object_id == object_id
            and d.namespace_id == ns.namespace_id
            and (wanted is None or d.collection_id in wanted)
        ]
        if not docs and object_id not in state.objects:
            raise ApiError(404, f"Object {object_id} not found")
        results = [render(d, return_vectors) for d in docs]
        return json_response(
            {"object_id": object_id, "results": results, "total_count": len(results)}
        )
