"""What a re-sync sends to Qdrant: nothing for unchanged features, the payload alone for a
changed caption, whole points only for new or changed vectors (request economy, issue 6)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx
import pytest

from sync_service.engine.points import PlannedPoint
from tests.integration import test_verify as shared
from tests.integration.test_verify import COLLECTION, Synced

# The synced service of the verify tests (fixtures are looked up by name in this module).
synced, guard, distance = shared.synced, shared.guard, shared.distance


async def test_each_changed_feature_gets_only_the_write_it_needs(
    synced: Synced, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink, service = synced.service.sink, synced.service
    sent: dict[str, list[str]] = {"upsert": [], "payload": []}
    upsert, set_payloads = sink.upsert, sink.set_payloads

    async def spy_upsert(name: str, points: Sequence[PlannedPoint], **kw: Any) -> Any:
        sent["upsert"] += [p.asset_id or "" for p in points]
        return await upsert(name, points, **kw)

    async def spy_payloads(name: str, points: Sequence[PlannedPoint], **kw: Any) -> None:
        sent["payload"] += [p.asset_id or "" for p in points]
        await set_payloads(name, points, **kw)

    monkeypatch.setattr(sink, "upsert", spy_upsert)
    monkeypatch.setattr(sink, "set_payloads", spy_payloads)
    caption, vectors, features, untouched = synced.asset_ids
    for asset_id, mode in ((caption, "payload"), (vectors, "vectors"), (features, "features")):
        httpx.post(
            f"{synced.emulator.url}/_emulator/assets/{asset_id}/reindex", json={"mode": mode}
        ).raise_for_status()
    metrics = service.pipeline.metrics
    skipped_before = metrics.writes_skipped._value.get()
    await service.store.enqueue_assets(synced.asset_ids, collection_id=COLLECTION)
    await synced.drain()

    # 20-second videos: two features per asset. A re-index also changes the asset itself
    # (its updated_at and task), which every feature's payload carries: so the feature the
    # "features" re-index kept gets a payload-only write too, and its new one a whole point.
    assert sorted(sent["payload"]) == sorted([caption, caption, features])
    assert sorted(sent["upsert"]) == sorted([vectors, vectors, features])
    assert untouched not in sent["upsert"] + sent["payload"]
    assert metrics.writes_skipped._value.get() - skipped_before == 2
    assert metrics.payload_writes._value.get() == 3
    assert metrics.removed._value.get() == 1  # the feature the "features" re-index dropped
    assert len(await synced.points()) == 8
