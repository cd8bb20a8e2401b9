"""The emulated Gen B Mixpeek API (spec §3, endpoints #1-#15 and #20-#22)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from fastapi import APIRouter, Query, Request, Response

from sync_service.emulator import content, query
from sync_service.emulator.embedding import embed_text
from sync_service.emulator.records import Asset, Feature, Task
from sync_service.emulator.responses import ApiError, json_response
from sync_service.emulator.schemas import (
    AssetPatch,
    EmbedRequest,
    FeaturePut,
    IndexImageUrl,
    IndexText,
    IndexVideoUrl,
    ListRequest,
    SearchRequest,
)
from sync_service.emulator.state import EmulatorState

MODALITY_KEYS = ("video", "image", "text", "audio")
T = TypeVar("T")


def _as_is(item: dict[str, Any]) -> dict[str, Any]:
    return item


def _page_body(
    request: Request,
    items: Sequence[T],
    page: int,
    page_size: int,
    render: Callable[[T], dict[str, Any]],
) -> dict[str, Any]:
    """Page-style pagination: ``next_page``/``previous_page`` are full URLs, as upstream sent.

    Only the requested page is rendered: a listing pages through thousands of items.
    """
    total = len(items)
    pages = query.total_pages(total, page_size)

    def url(number: int) -> str:
        return str(request.url.include_query_params(page=number, page_size=page_size))

    start = (page - 1) * page_size
    return {
        "results": [render(item) for item in items[start : start + page_size]],
        "pagination": {
            "total": total,
            "page": page,
            "page_size": page_size,
            "total_pages": pages,
            "next_page": url(page + 1) if page < pages else None,
            "previous_page": url(page - 1) if page > 1 else None,
        },
    }


def add_routes(router: APIRouter, state: EmulatorState) -> None:
    """Register all Mixpeek routes on ``router``, bound to ``state``.

    Auth and faults live in the app's middleware. Pass the app's own router (not
    ``include_router``): the middleware finds route templates by walking plain routes.

    Handlers are ``async`` on purpose: they then all run on the event loop, one at a time,
    so the in-memory state needs no locking (sync handlers would run in a thread pool).
    """

    def task_or_404(task_id: str) -> Task:
        task = state.tasks.get(task_id)
        if task is None:
            raise ApiError(404, f"Task {task_id} not found")
        return task

    def asset_or_404(asset_id: str) -> Asset:
        asset = state.assets.get(asset_id)
        if asset is None:
            raise ApiError(404, f"Asset {asset_id} not found")
        return asset

    def feature_or_404(feature_id: str) -> Feature:
        feature = state.features.get(feature_id)
        if feature is None:
            raise ApiError(404, f"Feature {feature_id} not found")
        return feature

    def queued(result: Task | Asset, message: str) -> Response:
        if isinstance(result, Asset):  # prevent_duplicate hit: the original asset, as upstream
            return json_response(state.asset_view(result))
        return json_response({"message": message, "task_id": result.task_id})

    # -- indexing -------------------------------------------------------------------------

    @router.post("/index/videos/url")
    async def index_video(body: IndexVideoUrl) -> Response:
        settings = [s.model_dump() for s in body.video_settings or []]
        interval = body.video_settings[0].interval_sec if body.video_settings else None
        result = state.submit(
            "video",
            body.collection_id,
            url=body.url,
            metadata=body.metadata,
            interval=interval,
            settings=settings,
            prevent_duplicate=body.prevent_duplicate,
        )
        return queued(result, "Video URL processing queued")

    @router.post("/index/images/url")
    async def index_image(body: IndexImageUrl) -> Response:
        result = state.submit(
            "image",
            body.collection_id,
            url=body.url,
            metadata=body.metadata,
            settings=body.image_settings,
            prevent_duplicate=body.prevent_duplicate,
        )
        return queued(result, "Image URL processing queued")

    @router.post("/index/text")
    async def index_text(body: IndexText) -> Response:
        result = state.submit(
            "text",
            body.collection_id,
            text=body.text,
            metadata=body.metadata,
            settings=body.text_settings,
        )
        return queued(result, "Text processing queued")

    # -- tasks ----------------------------------------------------------------------------

    @router.get("/tasks/{task_id}")
    async def get_task(task_id: str) -> Response:
        task = task_or_404(task_id)
        return json_response(
            {"asset_id": task.asset_id, "task_id": task.task_id, "status": state.task_status(task)}
        )

    @router.delete("/tasks/{task_id}")
    async def cancel_task(task_id: str) -> Response:
        state.cancel(task_or_404(task_id))
        return json_response({"message": f"Task {task_id} has been successfully canceled"})

    # -- assets ---------------------------------------------------------------------------

    @router.get("/assets/{asset_id}")
    async def get_asset(asset_id: str) -> Response:
        return json_response(state.asset_view(asset_or_404(asset_id)))

    @router.get("/assets/{asset_id}/features")
    async def get_asset_features(asset_id: str) -> Response:
        asset = asset_or_404(asset_id)
        grouped: dict[str, list[dict[str, Any]]] = {key: [] for key in MODALITY_KEYS}
        for feature in state.features_of(asset_id):
            grouped[feature.doc["modality"]].append(state.feature_view(feature))
        return json_response({"asset": state.asset_view(asset), "features": grouped})

    def select_assets(body: ListRequest, filters: dict[str, Any] | None) -> list[Asset]:
        """The assets a listing returns, in order; filters and sort read the records, so only
        the page served needs views. Without a sort: creation order."""
        wanted = set(body.collection_ids)
        assets = [a for a in state.assets.values() if a.collection_id in wanted]
        if filters:
            keep = query.compile_filters(filters, state.asset_getter)
            assets = [a for a in assets if keep(a)]
        if body.sort is not None:
            get = state.asset_getter(body.sort.field)
            descending = body.sort.direction == "desc"
            # asset_id breaks ties (seeded assets share timestamps), so pages are stable.
            assets = query.sort_items(assets, get, descending, tiebreak=lambda a: a.asset_id)
        return assets

    @router.post("/assets")
    async def list_assets(
        request: Request,
        body: ListRequest,
        page: int = Query(1, ge=1),
        page_size: int = Query(10, ge=1, le=100),
    ) -> Response:
        config = state.config
        if page == config.list_fail_page:  # retries included: a listing cut short on page N
            raise ApiError(500, f"Emulated failure listing page {page}")
        filters = None if config.ignore_filters else body.filters
        assets = select_assets(body, filters)
        return json_response(_page_body(request, assets, page, page_size, state.asset_view))

    @router.post("/assets/search")
    async def search_assets(
        request: Request,
        body: SearchRequest,
        page: int = Query(1, ge=1),
        page_size: int = Query(10, ge=1, le=100),
    ) -> Response:
        fields = None if body.query.key == "*" else list(body.query.key)
        hits = [
            doc
            for doc in map(state.asset_view, select_assets(body, body.filters))
            if query.search_hit(
                doc | {"text": state.assets[doc["asset_id"]].text}, fields, body.query.value
            )
        ]
        return json_response(_page_body(request, hits, page, page_size, _as_is))

    def update_asset(asset_id: str, body: AssetPatch, *, replace: bool) -> Response:
        asset = asset_or_404(asset_id)
        if body.metadata is not None:
            state.update_asset(
                asset, body.metadata, replace=replace, propagate=body.propagate_features
            )
        return json_response(state.asset_view(asset))

    @router.patch("/assets/{asset_id}")
    async def patch_asset(asset_id: str, body: AssetPatch) -> Response:
        return update_asset(asset_id, body, replace=False)

    @router.put("/assets/{asset_id}")
    async def put_asset(asset_id: str, body: AssetPatch) -> Response:
        return update_asset(asset_id, body, replace=True)

    @router.delete("/assets/{asset_id}")
    async def delete_asset(asset_id: str) -> Response:
        asset_or_404(asset_id)
        state.delete_asset(asset_id)
        return json_response({"message": f"Asset {asset_id} deleted"})

    # -- features -------------------------------------------------------------------------

    @router.get("/features/{feature_id}")
    async def get_feature(
        feature_id: str, include_vectors: bool = False, return_vectors: bool = False
    ) -> Response:
        feature = feature_or_404(feature_id)
        mode = state.config.vectors_param
        # Gen B knew only include_vectors; later generations renamed it return_vectors.
        with_vectors = (include_vectors and mode != "return_vectors") or (
            return_vectors and mode != "include_vectors"
        )
        if with_vectors:
            state.stats.vector_fetch(feature_id)
        return json_response(state.feature_view(feature, with_vectors))

    @router.post("/features")
    async def list_features(
        request: Request,
        body: ListRequest,
        offset_feature_id: str | None = None,
        page_size: int = Query(10, ge=1, le=100),
    ) -> Response:
        wanted = set(body.collection_ids)
        keep = query.compile_filters(body.filters, query.path_getter)
        # dict order is creation order, which is the stable order the cursor walks.
        matching = [
            f for f in state.features.values() if f.doc["collection_id"] in wanted and keep(f.doc)
        ]
        remaining = matching
        if offset_feature_id is not None:
            cursor = state.feature_seq(offset_feature_id)
            if cursor is None:
                raise ApiError(400, f"Unknown offset_feature_id {offset_feature_id}")
            remaining = [f for f in matching if f.seq > cursor]
        page = remaining[:page_size]
        next_page = None
        if len(remaining) > page_size:
            last = page[-1].doc["feature_id"]
            next_page = str(
                request.url.include_query_params(offset_feature_id=last, page_size=page_size)
            )
        pagination = {
            "total": len(matching),
            "page_size": page_size,
            "total_pages": query.total_pages(len(matching), page_size),
            "current_page": (len(matching) - len(remaining)) // page_size + 1,
            "next_page": next_page,
            "previous_page": None,
        }
        results = [state.feature_view(f) for f in page]
        return json_response({"results": results, "pagination": pagination})

    @router.put("/features/{feature_id}")
    async def put_feature(feature_id: str, body: FeaturePut) -> Response:
        feature = feature_or_404(feature_id)
        feature.doc["metadata"] = dict(body.metadata)
        return json_response(state.feature_view(feature))

    @router.delete("/features/{feature_id}")
    async def delete_feature(feature_id: str) -> Response:
        feature_or_404(feature_id)
        del state.features[feature_id]
        return json_response({"message": f"Feature {feature_id} deleted"})

    # -- collections ----------------------------------------------------------------------

    @router.post("/features/extractors/embed")
    async def embed(body: EmbedRequest) -> Response:
        sizes = state.config.vector_sizes()
        name = body.vector or content.VECTOR_NAME
        if name not in sizes:
            known = ", ".join(sorted(sizes))
            raise ApiError(400, f"unknown embedding model {name!r}; this server has: {known}")
        if state.config.vector_kind == "random":
            raise ApiError(
                400, "this server's vectors are random (vector_kind=random): no embedding"
            )
        started = time.perf_counter()
        vector = embed_text(body.value, sizes[name], name)
        return json_response({"embedding": vector, "elapsed_time": time.perf_counter() - started})

    @router.get("/collections")
    async def list_collections(
        request: Request, page: int = Query(1, ge=1), page_size: int = Query(10, ge=1, le=100)
    ) -> Response:
        docs = [state.collection_view(c) for c in state.collections]
        return json_response(_page_body(request, docs, page, page_size, _as_is))

    @router.delete("/collections/{collection_id}")
    async def delete_collection(collection_id: str) -> Response:
        if collection_id not in state.collections:
            raise ApiError(404, f"Collection {collection_id} not found")
        state.delete_collection(collection_id)
        return json_response({"message": f"Collection {collection_id} deleted"})
