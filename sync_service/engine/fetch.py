"""Fetch from upstream what the pipeline records about a task's asset: a DONE one with every
feature's full JSON (vectors included), or the reason a FAILED one failed.

The pipeline syncs what :func:`fetch_asset` returns; ``verify`` and ``reindex`` compare or
rebuild from it too (through ``Pipeline.fetch_asset``, so they see what the daemon syncs).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sync_service.engine.points import Rejected, excerpt
from sync_service.upstream.errors import MixpeekError, MixpeekNotFound
from sync_service.upstream.gen_b.models import Task, TaskOutcome, classify_status

if TYPE_CHECKING:  # loads aiohttp: not before there is work
    from sync_service.upstream.gen_b.client import MixpeekClient


@dataclass(frozen=True)
class FetchedAsset:
    """A DONE task's asset with every feature's full JSON (vectors included when served)."""

    asset: Mapping[str, Any]
    collection_id: str
    features: list[Mapping[str, Any]]
    vanished: list[Rejected]
    #: Every feature id the asset lists upstream (fetched or not), minus those that 404ed.
    upstream_ids: frozenset[str]


async def fetch_asset(
    client: MixpeekClient, asset_id: str, *, only_if_done: bool = False
) -> FetchedAsset:
    """The asset, its features of every modality, and each feature with its vectors.

    ``only_if_done``: an asset that is not DONE upstream comes back without its features
    (an asset job polling a processing asset must not download every vector each time).
    """
    grouped = await client.get_asset_features(asset_id)
    listed = grouped.all_features()
    if only_if_done and classify_asset(grouped.asset.raw) is not TaskOutcome.SUCCEEDED:
        listed = []
    # The client bounds the requests in flight; gathering them all keeps that pool full.
    answers = await asyncio.gather(
        *(client.get_feature(f.feature_id) for f in listed), return_exceptions=True
    )
    features: list[Mapping[str, Any]] = []
    vanished: list[Rejected] = []
    for summary, answer in zip(listed, answers, strict=True):
        if isinstance(answer, MixpeekNotFound):
            vanished.append(
                Rejected(
                    summary.feature_id, "feature vanished upstream (404)", excerpt(summary.raw)
                )
            )
        elif isinstance(answer, BaseException):
            raise answer
        else:
            # The full feature wins; fields only the listing carried are kept.
            features.append({**summary.raw, **answer.raw})
    asset = grouped.asset.raw
    collection_id = (
        grouped.asset.collection_id
        or next((f.get("collection_id") for f in features if f.get("collection_id")), None)
        or "default"
    )
    gone = {r.feature_id for r in vanished}
    upstream = frozenset(f.feature_id for f in listed if f.feature_id not in gone)
    return FetchedAsset(asset, str(collection_id), features, vanished, upstream)


def classify_asset(asset: Mapping[str, Any]) -> TaskOutcome:
    """An asset's status classified; an asset that states none counts as DONE."""
    status = asset.get("status")
    return classify_status(str(status)) if status else TaskOutcome.SUCCEEDED


async def upstream_error(client: MixpeekClient, task: Task) -> str:
    """The asset's ``error`` (Gen B keeps the reason there, not on the task)."""
    reason = f"failed upstream (status {task.status})"
    if not task.asset_id:
        return reason
    try:
        asset = await client.get_asset(task.asset_id)
    except MixpeekError:
        return reason
    return f"{reason}: {asset.error}" if asset.error else reason
