"""The v1 API's calls, over the shared :class:`~sync_service.upstream.http.MixpeekHttp`.

Retries, deadlines, the request pool, the breaker and error mapping are the shared plumbing's
(both 422 forms, FastAPI's ``detail`` list and the ``{"error": {...}}`` envelope, are read by
``errors.py``); this module only builds paths and bodies and parses answers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import SecretStr

from sync_service.upstream.admission import LIST, POLL
from sync_service.upstream.headers import v1_headers
from sync_service.upstream.http import MixpeekHttp, RequestObserver, RetryPolicy
from sync_service.upstream.outage import Outage
from sync_service.upstream.v1.models import Batch, DocumentPage, Task, as_object, results
from sync_service.upstream.version_probe import HEALTH

__all__ = ["HEALTH", "V1Client"]


def _segment(value: str, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty string, got {value!r}")
    return quote(value, safe="")  # ids come from users: never let one change the route


class V1Client:
    """The v1 endpoints the sync uses. ``namespace`` (id or name) goes in ``X-Namespace`` on
    every call: harmless where the API does not want it (tasks), required everywhere else."""

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
        outage: Outage | None = None,
    ) -> None:
        headers, secret = v1_headers(api_key, namespace)
        self.namespace = namespace
        self.http = MixpeekHttp(
            base_url=base_url,
            headers=headers,
            secret=secret,
            policy=policy,
            transport=transport,
            max_in_flight=max_in_flight,
            rate_limit_per_minute=rate_limit_per_minute,
            observer=observer,
            outage=outage,
            probe_path=HEALTH,
        )

    @property
    def outage(self) -> Outage:
        return self.http.outage

    async def aclose(self) -> None:
        await self.http.aclose()

    def __repr__(self) -> str:
        return f"V1Client(base_url={str(self.http.base_url)!r})"

    # -- tasks and batches ------------------------------------------------------------------

    async def get_task(self, task_id: str) -> Task:
        path = {"task_id": _segment(task_id, "task_id")}
        return await self.http.call(
            "GET", "/v1/tasks/{task_id}", path, Task.from_json, priority=POLL
        )

    async def get_batch(self, bucket_id: str, batch_id: str) -> Batch:
        path = {"bucket": _segment(bucket_id, "bucket_id"), "batch": _segment(batch_id, "batch_id")}
        return await self.http.call(
            "GET", "/v1/buckets/{bucket}/batches/{batch}", path, Batch.from_json
        )

    async def create_object(self, bucket_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        path = {"bucket": _segment(bucket_id, "bucket_id")}
        return await self.http.call(
            "POST", "/v1/buckets/{bucket}/objects", path, as_object, json_body=dict(body)
        )

    async def get_object(self, bucket_id: str, object_id: str) -> dict[str, Any]:
        path = {"bucket": _segment(bucket_id, "bucket_id"), "obj": _segment(object_id, "object_id")}
        return await self.http.call("GET", "/v1/buckets/{bucket}/objects/{obj}", path, as_object)

    async def create_batch(self, bucket_id: str, object_ids: list[str]) -> Batch:
        path = {"bucket": _segment(bucket_id, "bucket_id")}
        body = {"object_ids": object_ids}  # only object_ids: batch_name is not in the spec
        return await self.http.call(
            "POST", "/v1/buckets/{bucket}/batches", path, Batch.from_json, json_body=body
        )

    async def submit_batch(self, bucket_id: str, batch_id: str) -> Task:
        path = {"bucket": _segment(bucket_id, "bucket_id"), "batch": _segment(batch_id, "batch_id")}
        return await self.http.call(
            "POST", "/v1/buckets/{bucket}/batches/{batch}/submit", path, Task.from_json
        )

    # -- collections and documents ------------------------------------------------------------

    async def get_collection(self, collection_id: str) -> dict[str, Any]:
        path = {"col": _segment(collection_id, "collection_id")}
        return await self.http.call("GET", "/v1/collections/{col}", path, as_object)

    async def collection_features(self, collection_id: str) -> dict[str, Any]:
        path = {"col": _segment(collection_id, "collection_id")}
        return await self.http.call("GET", "/v1/collections/{col}/features", path, as_object)

    async def list_documents(
        self,
        collection_id: str,
        *,
        limit: int,
        cursor: str | None = None,
        filters: dict[str, Any] | None = None,
        sort: tuple[str, str] | None = None,
        return_vectors: bool = False,
        priority: int = LIST,
    ) -> DocumentPage:
        """One page of ``POST /v1/collections/{id}/documents/list``.

        ``limit`` goes in the query and the body (servers read either); the rest in the body.
        """
        limit = max(1, min(limit, 1000))
        body: dict[str, Any] = {"limit": limit, "return_vectors": return_vectors}
        if cursor:
            body["cursor"] = cursor
        if filters is not None:
            body["filters"] = filters
        if sort is not None:
            body["sort"] = {"field": sort[0], "direction": sort[1]}
        path = {"col": _segment(collection_id, "collection_id")}
        return await self.http.call(
            "POST",
            "/v1/collections/{col}/documents/list",
            path,
            DocumentPage.from_json,
            params={"limit": limit},
            json_body=body,
            priority=priority,
        )

    async def delete_document(self, collection_id: str, document_id: str) -> None:
        path = {
            "col": _segment(collection_id, "collection_id"),
            "doc": _segment(document_id, "document_id"),
        }
        await self.http.call(
            "DELETE", "/v1/collections/{col}/documents/{doc}", path, lambda _: None,
            expect_json=False,
        )  # fmt: skip

    # -- webhooks (organization-wide: X-Namespace is sent, and ignored) -----------------------

    async def list_webhooks(self) -> list[dict[str, Any]]:
        """Every webhook of the organization, following the offset pages."""
        hooks: list[dict[str, Any]] = []
        while True:
            page = await self.http.call(
                "POST",
                "/v1/organizations/webhooks/list",
                {},
                as_object,
                params={"limit": 100, "offset": len(hooks)},
                json_body={},
            )
            results = page.get("results")
            batch = [h for h in results if isinstance(h, dict)] if isinstance(results, list) else []
            hooks += batch
            total = page.get("total")
            if not batch or (isinstance(total, int) and len(hooks) >= total):
                return hooks

    async def create_webhook(self, body: Mapping[str, Any]) -> dict[str, Any]:
        # The trailing slash is the OpenAPI's path (the docs' example has none).
        return await self.http.call(
            "POST", "/v1/organizations/webhooks/", {}, as_object, json_body=dict(body)
        )

    async def replace_webhook(self, webhook_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        path = {"hook": _segment(webhook_id, "webhook_id")}
        return await self.http.call(
            "PUT", "/v1/organizations/webhooks/{hook}", path, as_object, json_body=dict(body)
        )

    async def delete_webhook(self, webhook_id: str) -> None:
        path = {"hook": _segment(webhook_id, "webhook_id")}
        await self.http.call(
            "DELETE", "/v1/organizations/webhooks/{hook}", path, lambda _: None,
            expect_json=False,
        )  # fmt: skip

    async def get_namespace(self, namespace: str) -> dict[str, Any]:
        path = {"ns": _segment(namespace, "namespace")}
        return await self.http.call("GET", "/v1/namespaces/{ns}", path, as_object)

    async def health(self) -> None:
        """``GET /v1/health``; a typed error when it does not answer 2xx."""
        await self.http.call("GET", HEALTH, {}, lambda _: None, expect_json=False)

    # -- work intake and embedding (tasks expired, batches by id, the embedding route) ---------

    async def get_bucket(self, bucket_id: str) -> dict[str, Any]:
        path = {"bucket": _segment(bucket_id, "bucket_id")}
        return await self.http.call("GET", "/v1/buckets/{bucket}", path, as_object)

    async def list_buckets(self, *, offset: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        """One page of ``POST /v1/buckets/list`` (``offset``/``limit`` in the query and body)."""
        paging = {"offset": offset, "limit": limit}
        return await self.http.call(
            "POST", "/v1/buckets/list", {}, results, params=paging, json_body=paging
        )

    async def list_batches(
        self, bucket_id: str, *, offset: int = 0, limit: int = 100
    ) -> list[Batch]:
        """One page of ``POST /v1/buckets/{b}/batches/list``, newest last as served."""
        path = {"bucket": _segment(bucket_id, "bucket_id")}
        paging = {"offset": offset, "limit": limit}
        return await self.http.call(
            "POST",
            "/v1/buckets/{bucket}/batches/list",
            path,
            lambda data: [Batch.from_json(b) for b in results(data)],
            params=paging,
            json_body=paging,
        )

    async def embed(self, text: str, vector_name: str) -> dict[str, Any]:
        """``POST /v1/features/extractors/embed``: the v1 SDK's "extract embeddings" route,
        naming the vector index both ways the SDKs did (``vector_index``, ``embedding_model``)."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError("text to embed must be a non-empty string")
        body = {
            "type": "text",
            "value": text,
            "vector_index": vector_name,
            "embedding_model": vector_name,
        }
        return await self.http.call(
            "POST", "/v1/features/extractors/embed", {}, as_object, json_body=body
        )
