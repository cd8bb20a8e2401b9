"""The November-2024 API behind the upstream port: :class:`GenBUpstream`.

It turns the port's calls into this API's requests (through :class:`MixpeekClient`) and its
answers into the port's models. What is particular to this API lives here: an asset's content is
its features grouped by modality, each fetched again for its vectors; the changed-since filter is
an ``updated_at gte`` filter in upstream's own naive-UTC form; a failed task's reason is on its
asset.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sync_service.upstream.errors import (
    MixpeekError,
    MixpeekNotFound,
    MixpeekUnsupported,
)
from sync_service.upstream.gen_b import models
from sync_service.upstream.gen_b.client import MixpeekClient
from sync_service.upstream.owner import ClientOwner, read_embedding
from sync_service.upstream.port import (
    Asset,
    AssetContent,
    AssetPage,
    Embedding,
    Feature,
    ListOrder,
    Submission,
    TaskOutcome,
    TaskState,
    WebhookSubscription,
    classify_status,
)

__all__ = ["GenBUpstream", "asset_from", "changed_since_filter"]

_SORTS: dict[ListOrder, tuple[str, str]] = {
    ListOrder.CREATED: ("created_at", "asc"),
    ListOrder.CHANGED: ("updated_at", "asc"),
    ListOrder.NEWEST_CHANGE: ("updated_at", "desc"),
}
_STAMP_CHARS = 64  # a stamp is compared and stored, never parsed: bound what a server sends


log = logging.getLogger("sync_service.upstream")

#: How often an asset is read when listed features are not found (see ``fetch_content``), and
#: the pause before the second read (doubled before the third).
CONTENT_READS, REREAD_PAUSE = 3, 0.2


class GenBUpstream(ClientOwner):
    """:class:`~sync_service.upstream.port.Upstream` over the 2024 API's :class:`MixpeekClient`."""

    client: MixpeekClient

    def __init__(self, client: MixpeekClient) -> None:
        self.client = client
        self.outage = client.outage

    async def get_task(self, task_id: str) -> TaskState:
        task = await self.client.get_task(task_id)
        return TaskState(task.task_id, task.status, task.outcome, task.asset_id)

    async def failure_reason(self, task: TaskState) -> str | None:
        # This API keeps the reason on the asset, not on the task.
        if not task.asset_id:
            return None
        try:
            asset = await self.client.get_asset(task.asset_id)
        except MixpeekError:
            return None
        return str(asset.error) if asset.error else None

    async def get_asset(self, asset_id: str) -> Asset:
        return asset_from(await self.client.get_asset(asset_id))

    async def fetch_content(self, asset_id: str, *, only_if_done: bool = False) -> AssetContent:
        """The asset and each listed feature. A feature listed and then not found (404) most
        often means the asset changed while it was read (re-processed, a feature replaced):
        it is read again, up to ``CONTENT_READS`` times, a moment apart, before the ones still
        missing are reported vanished (dead letters). Under churn, a dead letter per replaced
        feature otherwise stood until the asset's next sync. A read again asks only for the
        features not fetched yet."""
        fetched: dict[str, dict[str, Any]] = {}  # feature id -> its full JSON, across reads
        content = await self._read_content(asset_id, only_if_done, fetched)
        for read in range(2, CONTENT_READS + 1):
            if not content.vanished:
                break
            log.debug(
                "asset %s: %d listed feature(s) not found; reading it again",
                asset_id,
                len(content.vanished),
                extra={"event": "asset_reread", "asset_id": asset_id, "read": read},
            )
            await asyncio.sleep(REREAD_PAUSE * (read - 1))
            content = await self._read_content(asset_id, only_if_done, fetched)
        return content

    async def _read_content(
        self, asset_id: str, only_if_done: bool, fetched: dict[str, dict[str, Any]]
    ) -> AssetContent:
        grouped = await self.client.get_asset_features(asset_id)
        asset = asset_from(grouped.asset)
        listed = grouped.all_features()
        if only_if_done and asset.outcome is not TaskOutcome.SUCCEEDED:
            listed = []
        wanted = [f.feature_id for f in listed if f.feature_id not in fetched]
        # The client bounds the requests in flight; gathering them all keeps that pool full.
        answers = await asyncio.gather(
            *(self.client.get_feature(feature_id) for feature_id in wanted),
            return_exceptions=True,
        )
        for feature_id, answer in zip(wanted, answers, strict=True):
            if isinstance(answer, BaseException) and not isinstance(answer, MixpeekNotFound):
                raise answer
            if not isinstance(answer, BaseException):
                fetched[feature_id] = answer.raw
        features: list[Feature] = []
        vanished: list[Feature] = []
        for summary in listed:
            if (full := fetched.get(summary.feature_id)) is None:
                vanished.append(Feature(summary.feature_id, summary.raw))
            else:
                # The full feature wins; fields only the listing carried are kept.
                features.append(Feature(summary.feature_id, {**summary.raw, **full}))
        collection_id = (
            asset.collection_id
            or next(
                (f.data["collection_id"] for f in features if f.data.get("collection_id")), None
            )
            or "default"
        )
        gone = {f.feature_id for f in vanished}
        upstream = frozenset(f.feature_id for f in listed if f.feature_id not in gone)
        return AssetContent(asset, str(collection_id), features, vanished, upstream)

    async def list_assets(
        self,
        collection_id: str,
        *,
        order: ListOrder,
        page: int = 1,
        page_size: int = 100,
        changed_since: float | None = None,
        resume: str | None = None,
    ) -> AssetPage:
        del resume  # 2024 pages are numbered: any page is asked for directly
        answer = await self.client.list_assets(
            collection_id,
            page=page,
            page_size=page_size,
            filters=None if changed_since is None else changed_since_filter(changed_since),
            sort=_SORTS[order],
        )
        return AssetPage(
            [asset_from(a) for a in answer.results],
            answer.has_next,
            total=answer.total,
            total_pages=answer.total_pages,
        )

    async def delete_asset(self, asset_id: str) -> None:
        await self.client.delete_asset(asset_id)

    async def embed(self, text: str, vector_name: str) -> Embedding:
        # The November-2024 API had no embedding route; B' added it (docs/upstream-2024.md §8).
        return await read_embedding(
            self.client.embed(text, vector_name),
            api="Mixpeek API",
            route="POST /features/extractors/embed",
        )

    async def submit(self, item: Submission) -> str | None:
        metadata = dict(item.metadata) if item.metadata is not None else None
        result: models.IndexResult
        if item.kind == "text":
            result = await self.client.index_text(
                item.content, item.collection_id, metadata=metadata
            )
        else:
            index = (
                self.client.index_video_url if item.kind == "video" else self.client.index_image_url
            )
            result = await index(
                item.content,
                item.collection_id,
                metadata=metadata,
                prevent_duplicate=item.prevent_duplicate,
            )
        return result.task_id

    async def submit_all(self, items: Sequence[Submission]) -> AsyncIterator[str]:
        for item in items:  # one call per item: this API has no batches
            if task_id := await self.submit(item):
                yield task_id

    # -- webhooks: the 2024 API has none --------------------------------------------------

    async def namespace_ids(self) -> frozenset[str]:
        return frozenset()  # no webhook names one

    async def save_webhook(
        self,
        name: str,  # noqa: ARG002
        url: str,  # noqa: ARG002
        event_types: tuple[str, ...],  # noqa: ARG002
        headers: Mapping[str, str],  # noqa: ARG002
    ) -> tuple[WebhookSubscription, bool]:
        raise MixpeekUnsupported(_NO_WEBHOOKS)

    async def list_webhooks(self) -> list[WebhookSubscription]:
        raise MixpeekUnsupported(_NO_WEBHOOKS)

    async def delete_webhook(self, webhook_id: str) -> None:  # noqa: ARG002
        raise MixpeekUnsupported(_NO_WEBHOOKS)


_NO_WEBHOOKS = "the 2024 Mixpeek API has no webhooks (MIXPEEK_API_VERSION=v1 has)"


def asset_from(asset: models.Asset) -> Asset:
    """The port's asset from this API's ``AssetResponse``."""
    raw_stamp = asset.raw.get("updated_at")
    return Asset(
        asset_id=asset.asset_id,
        collection_id=asset.collection_id,
        status=asset.status,
        # An asset that states no status counts as finished.
        outcome=classify_status(asset.status) if asset.status else TaskOutcome.SUCCEEDED,
        stamp=None if raw_stamp is None else str(raw_stamp)[:_STAMP_CHARS],
        changed_at=_epoch(asset.updated_at),
        error=str(asset.error) if asset.error else None,
        task_id=asset.task_id,
        data=asset.raw,
    )


def _epoch(when: datetime | None) -> float | None:
    if when is None:
        return None
    if when.tzinfo is None:  # naive is UTC ("MongoDB datetime format")
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def changed_since_filter(epoch: float) -> dict[str, Any]:
    """``updated_at gte`` in the form upstream serves its own timestamps (naive UTC, µs)."""
    value = datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")
    return {"AND": [{"key": "updated_at", "operator": "gte", "value": value}]}
