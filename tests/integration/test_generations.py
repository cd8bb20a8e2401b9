"""A Qdrant collection holds one Mixpeek API generation, and a v1 one gets the payload indexes
of the v1 mapping (embedded Qdrant)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from qdrant_client import AsyncQdrantClient, models

from sync_service.engine.points import VectorSpec, plan_points
from sync_service.qdrant.faults import BadInput
from sync_service.qdrant.sink import QdrantSink

SPEC = {"d": VectorSpec(size=2)}


@pytest.fixture
async def sink(tmp_path: Path) -> AsyncIterator[QdrantSink]:
    made = QdrantSink(AsyncQdrantClient(path=str(tmp_path / "q")))
    yield made
    await made.close()


async def test_a_v1_collection_records_its_generation_and_its_indexes(
    sink: QdrantSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    indexed: dict[str, Any] = {}
    create = sink.client.create_payload_index

    async def spy(collection: str, field: str, **kw: Any) -> Any:
        indexed[field] = kw["field_schema"]
        return await create(collection, field, **kw)

    monkeypatch.setattr(sink.client, "create_payload_index", spy)
    await sink.ensure_vectors("clips", SPEC, "v1")
    keyword, when = models.PayloadSchemaType.KEYWORD, models.PayloadSchemaType.DATETIME
    assert indexed == {
        "asset_id": keyword,
        "collection_id": keyword,
        "modality": keyword,
        "task_id": keyword,
        "document_id": keyword,
        "namespace_id": keyword,
        "root_object_id": keyword,
        "source_object_id": keyword,
        "mixpeek_updated_at": when,
    }
    assert (await sink.client.get_collection("clips")).config.metadata == {"mixpeek_api": "v1"}
    await sink.check_generation("clips", "v1")
    with pytest.raises(BadInput) as refused:
        await sink.check_generation("clips", "2024")
    assert str(refused.value).startswith(
        "Qdrant collection 'clips' holds Mixpeek v1 points and these are Mixpeek 2024 ones"
    )

    indexed.clear()
    await sink.ensure_vectors("media", SPEC, "2024")  # the service's own indexes only
    assert set(indexed) == {"asset_id", "collection_id", "modality", "task_id"}


async def test_a_collection_made_before_the_mark_is_known_by_its_points(
    sink: QdrantSink,
) -> None:
    await sink.ensure_vectors("old", SPEC)  # as an earlier release made it: no generation
    await sink.check_generation("old", "v1")  # empty: either may write
    plan = plan_points([{"feature_id": "f1", "vectors": {"d": [1.0, 0.0]}}], {}, "t", SPEC)
    await sink.upsert("old", plan.points, version=1.0)
    await sink.check_generation("old", "2024")
    with pytest.raises(BadInput, match="holds Mixpeek 2024 points and these are Mixpeek v1"):
        await sink.check_generation("old", "v1")
