"""Async Mixpeek client: the only module in the project that speaks HTTP to Mixpeek.

:class:`MixpeekClient` holds the endpoints: it validates arguments, builds paths and bodies, and
parses answers into :mod:`~sync_service.upstream.gen_b.models`. Every request goes through
:class:`~sync_service.upstream.http.MixpeekHttp`, which owns retries, deadlines and error mapping.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

import httpx
from pydantic import SecretStr

from sync_service.upstream.admission import LIST, POLL
from sync_service.upstream.errors import MixpeekBadRequest, MixpeekBadResponse
from sync_service.upstream.gen_b.models import (
    Asset,
    AssetFeatures,
    CursorPage,
    Feature,
    IndexResult,
    MixpeekModel,
    Page,
    Task,
)
from sync_service.upstream.headers import base_headers
from sync_service.upstream.http import MixpeekHttp, RequestObserver, RetryPolicy
from sync_service.upstream.outage import Outage
from sync_service.upstream.owner import ClosedOnExit

__all__ = ["MixpeekClient", "RequestObserver", "RetryPolicy"]

log = logging.getLogger(__name__)
M = TypeVar("M", bound=MixpeekModel)

# Gen B named the flag include_vectors; by Dec 2024 it was return_vectors
# (docs/upstream-2024.md §8).
_VECTOR_PARAMS = ("include_vectors", "return_vectors")


def _segment(value: str, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty string, got {value!r}")
    return quote(value, safe="")  # ids come from users: never let one change the route


def _check_url(url: str) -> None:
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise ValueError(f"Mixpeek can only index http(s) URLs, got {url!r}")


def _ids(collection_ids: str | Sequence[str]) -> list[str]:
    # A bare string would otherwise become a list of its characters.
    ids = [collection_ids] if isinstance(collection_ids, str) else list(collection_ids)
    if not ids or not all(isinstance(i, str) and i for i in ids):
        raise ValueError("collection_ids must be one or more non-empty strings")
    return ids


def _object(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise MixpeekBadResponse(f"expected a JSON object, got {type(data).__name__}")
    return data


def _as(model: type[M]) -> Callable[[Any], M]:
    """Parser for one JSON object into ``model`` (a wrong shape is a bad, retryable answer)."""
    return lambda data: model.from_json(_object(data))


def _index_result(data: Any) -> IndexResult:
    result = IndexResult.from_json(_object(data))
    if result.task_id is None and result.asset is None:
        raise MixpeekBadResponse("index answer has neither task_id nor asset_id")
    return result


#: The task the breaker's probe asks for (``upstream/outage.py``): a UUID no one is given.
PROBE_TASK_ID = "00000000-0000-4000-8000-000000000000"


class MixpeekClient(ClosedOnExit):
    """Async client for the Mixpeek API, over one pooled ``httpx.AsyncClient``.

    Use as ``async with MixpeekClient(base_url=..., api_key=...) as client:`` or call
    :meth:`aclose`. Errors are :class:`~sync_service.upstream.errors.MixpeekError` subclasses.
    """

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str | SecretStr | None,
        namespace: str | None = None,
        policy: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        max_in_flight: int | None = None,
        rate_limit_per_minute: float | None = None,
        observer: RequestObserver | None = None,
        timeout: httpx.Timeout | None = None,
        outage: Outage | None = None,
    ) -> None:
        headers, secret = base_headers(api_key)
        if namespace:
            # Gen B scoped tenants with index-id, B' onwards with X-Namespace; send both.
            headers["X-Namespace"] = namespace
            headers["index-id"] = namespace
        self._http = MixpeekHttp(
            base_url=base_url,
            headers=headers,
            secret=secret,
            policy=policy,
            transport=transport,
            max_in_flight=max_in_flight,
            rate_limit_per_minute=rate_limit_per_minute,
            observer=observer,
            timeout=timeout,
            outage=outage,
            # A task no one has, in the form task ids take (an API that parses ids should say
            # 404, not fail): any answer below 500 proves the API, auth and lookup there.
            probe_path=f"/tasks/{PROBE_TASK_ID}",
        )
        self._vector_param = _VECTOR_PARAMS[0]

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    @property
    def outage(self) -> Outage:
        """The breaker this client's calls report to and obey."""
        return self._http.outage

    def __repr__(self) -> str:
        return f"MixpeekClient(base_url={str(self._http.base_url)!r})"

    # -- index -------------------------------------------------------------------------------

    async def index_video_url(
        self,
        url: str,
        collection_id: str,
        *,
        metadata: dict[str, Any] | None = None,
        video_settings: Any = None,
        prevent_duplicate: bool = False,
    ) -> IndexResult:
        """Queue a video URL for indexing (``POST /index/videos/url``)."""
        _check_url(url)
        body = self._index_body(collection_id, metadata, "video_settings", video_settings)
        body.update(url=url, prevent_duplicate=prevent_duplicate)
        return await self._http.call("POST", "/index/videos/url", {}, _index_result, json_body=body)

    async def index_image_url(
        self,
        url: str,
        collection_id: str,
        *,
        metadata: dict[str, Any] | None = None,
        image_settings: Any = None,
        prevent_duplicate: bool = False,
    ) -> IndexResult:
        """Queue an image URL for indexing (``POST /index/images/url``)."""
        _check_url(url)
        body = self._index_body(collection_id, metadata, "image_settings", image_settings)
        body.update(url=url, prevent_duplicate=prevent_duplicate)
        return await self._http.call("POST", "/index/images/url", {}, _index_result, json_body=body)

    async def index_text(
        self,
        text: str,
        collection_id: str,
        *,
        metadata: dict[str, Any] | None = None,
        text_settings: Any = None,
    ) -> IndexResult:
        """Queue a text for indexing (``POST /index/text``)."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError("text to index must be a non-empty string")
        body = self._index_body(collection_id, metadata, "text_settings", text_settings)
        body["text"] = text
        return await self._http.call("POST", "/index/text", {}, _index_result, json_body=body)

    @staticmethod
    def _index_body(
        collection_id: str, metadata: dict[str, Any] | None, key: str, settings: Any
    ) -> dict[str, Any]:
        if not isinstance(collection_id, str) or not collection_id:
            raise ValueError("collection_id must be a non-empty string")
        body: dict[str, Any] = {"collection_id": collection_id}
        if metadata is not None:
            body["metadata"] = metadata
        if settings is not None:
            body[key] = settings
        return body

    # -- reads ------------------------------------------------------------------------------

    async def get_task(self, task_id: str) -> Task:
        """``GET /tasks/{task_id}``."""
        path = {"task_id": _segment(task_id, "task_id")}
        # A poll only says "come back later" most of the time: it waits behind feature fetches.
        return await self._http.call("GET", "/tasks/{task_id}", path, _as(Task), priority=POLL)

    async def get_asset(self, asset_id: str) -> Asset:
        """``GET /assets/{asset_id}``."""
        path = {"asset_id": _segment(asset_id, "asset_id")}
        return await self._http.call("GET", "/assets/{asset_id}", path, _as(Asset))

    async def get_asset_features(self, asset_id: str) -> AssetFeatures:
        """``GET /assets/{asset_id}/features``: the asset and its features by modality."""
        path = {"asset_id": _segment(asset_id, "asset_id")}
        return await self._http.call("GET", "/assets/{asset_id}/features", path, _as(AssetFeatures))

    async def get_feature(self, feature_id: str, *, with_vectors: bool = True) -> Feature:
        """``GET /features/{feature_id}``, with its vectors unless ``with_vectors=False``.

        Gen B wants ``include_vectors=true``, later servers ``return_vectors=true``; an answer
        without vectors is asked once more with the other flag, and the flag that worked is
        remembered so later calls use it first. Still no vectors: the vectorless answer returns.
        """
        segment = _segment(feature_id, "feature_id")
        if not with_vectors:
            return await self._get_feature(segment, None)
        first = self._vector_param
        feature = await self._get_feature(segment, first)
        if feature.vectors:
            return feature
        other = next(p for p in _VECTOR_PARAMS if p != first)
        try:
            retried = await self._get_feature(segment, other)
        except MixpeekBadRequest:  # a server strict about unknown query params
            return feature
        if retried.vectors:
            self._vector_param = other
            return retried
        return feature

    async def _get_feature(self, segment: str, flag: str | None) -> Feature:
        params = {flag: "true"} if flag else None
        path = {"feature_id": segment}
        return await self._http.call(
            "GET", "/features/{feature_id}", path, _as(Feature), params=params
        )

    async def list_assets(
        self,
        collection_ids: str | Sequence[str],
        *,
        page: int = 1,
        page_size: int = 10,
        filters: dict[str, Any] | None = None,
        sort: tuple[str, str] | None = None,
    ) -> Page[Asset]:
        """``POST /assets`` (page/page_size are query parameters even on this POST).

        ``sort`` = (field, "asc" | "desc"), docs/upstream-2024.md §6.
        """
        body: dict[str, Any] = {"collection_ids": _ids(collection_ids)}
        if filters is not None:
            body["filters"] = filters
        if sort is not None:
            body["sort"] = {"field": sort[0], "direction": sort[1]}
        context = {"page": page, "page_size": page_size}
        parse = lambda d: Page[Asset].model_validate(_object(d), context=context)  # noqa: E731
        return await self._http.call(
            "POST", "/assets", {}, parse, params=context, json_body=body, priority=LIST
        )

    async def iter_assets(
        self, collection_ids: str | Sequence[str], *, page_size: int = 100
    ) -> AsyncIterator[Asset]:
        """Every asset of the collections, walking the pages in order."""
        page, previous = 1, None
        while True:
            answer = await self.list_assets(collection_ids, page=page, page_size=page_size)
            ids = [asset.asset_id for asset in answer.results]
            if ids and ids == previous:  # a server ignoring ?page= would loop forever
                log.warning("Mixpeek repeated page %d of assets; stopping the walk", page)
                return
            for asset in answer.results:
                yield asset
            if not answer.has_next:
                return
            page, previous = page + 1, ids

    async def list_features(
        self,
        collection_ids: str | Sequence[str],
        *,
        offset_feature_id: str | None = None,
        page_size: int = 10,
        filters: dict[str, Any] | None = None,
    ) -> CursorPage:
        """``POST /features``, cursor-paginated on ``offset_feature_id``."""
        body: dict[str, Any] = {"collection_ids": _ids(collection_ids)}
        if filters is not None:
            body["filters"] = filters
        params: dict[str, Any] = {"page_size": page_size}
        if offset_feature_id:
            params["offset_feature_id"] = offset_feature_id
        context = {"page_size": page_size}
        parse = lambda d: CursorPage.model_validate(_object(d), context=context)  # noqa: E731
        return await self._http.call("POST", "/features", {}, parse, params=params, json_body=body)

    async def delete_asset(self, asset_id: str) -> None:
        """``DELETE /assets/{asset_id}`` (the body is untyped upstream and ignored)."""
        path = {"asset_id": _segment(asset_id, "asset_id")}
        await self._http.call(
            "DELETE", "/assets/{asset_id}", path, lambda _: None, expect_json=False
        )

    async def delete_feature(self, feature_id: str) -> None:
        """``DELETE /features/{feature_id}`` (the body is ignored)."""
        path = {"feature_id": _segment(feature_id, "feature_id")}
        await self._http.call(
            "DELETE", "/features/{feature_id}", path, lambda _: None, expect_json=False
        )

    async def embed(self, text: str, model: str) -> dict[str, Any]:
        """``POST /features/extractors/embed`` (B' onwards; body as in the later SDKs)."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError("text to embed must be a non-empty string")
        body = {"type": "text", "value": text, "embedding_model": model}
        return await self._http.call(
            "POST", "/features/extractors/embed", {}, _object, json_body=body
        )

    async def healthcheck(self) -> dict[str, Any]:
        """``GET /healthcheck``."""
        return await self._http.call("GET", "/healthcheck", {}, _object)
