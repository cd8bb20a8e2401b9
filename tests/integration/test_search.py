"""Search over what the service synced: the emulator's library, embedded Qdrant, real HTTP.

A regression in mapping, vector names or payload shows here as a search that finds the wrong
thing: every feature must be found first by a query made of its own words (recall@1 = 1.0), in
every named vector, and the demo's queries must find their segments.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import cast

import pytest
from rich.console import Console

from sync_service.cli import demo
from sync_service.emulator import EmulatorConfig, EmulatorServer, library
from sync_service.engine.points import VectorSpec
from sync_service.engine.scheduler import Daemon
from sync_service.runtime import Service, open_service
from sync_service.search import Query, SearchError, search
from sync_service.settings import Settings
from sync_service.upstream.port import Upstream
from tests.conftest import API_KEY, local_settings
from tests.qdrant_server import QdrantStandIn

VECTORS = {"multimodal-v1": 1408, "clip-v1": 512}


@pytest.fixture(scope="module")
def library_emulator() -> AsyncIterator[EmulatorServer]:
    config = EmulatorConfig(
        api_key=API_KEY, processing_time=0.2, seed=3, extra_vectors={"clip-v1": 512}
    )
    with EmulatorServer(config) as server:
        yield server


@pytest.fixture
async def synced(tmp_path: Path, library_emulator: EmulatorServer) -> AsyncIterator[Service]:
    settings = local_settings(tmp_path, library_emulator, QDRANT_COLLECTION="{collection_id}")
    async for service in _synced(settings):
        yield service


async def _synced(settings: Settings) -> AsyncIterator[Service]:
    async with open_service(settings) as service:
        task_ids = await demo._submit(service)
        daemon = Daemon.from_settings(service.store, service.pipeline, service.settings)
        assert await asyncio.wait_for(daemon.run(drain=True), 60) == 0
        assert (await service.store.counts())["synced"] == len(task_ids)
        yield service


async def ask(service: Service, **query: object) -> list[tuple[str | None, float | None]]:
    answer = await search(service.sink, service.upstream, service.settings, Query(**query))  # type: ignore[arg-type]
    return [(hit.url, hit.start_time) for hit in answer.hits]


async def test_the_demo_queries_find_their_segment_first(synced: Service) -> None:
    console = Console(file=io.StringIO(), width=250)
    answers = await demo._show_queries(synced, console)
    for answer, (_text, video, segment) in zip(answers, library.QUERIES, strict=True):
        top = answer.hits[0]
        assert (top.url, top.start_time) == (library.video_url(video), segment * 10.0)
        assert top.score > 0.3 > answer.hits[1].score * 1.5
    printed = console.file.getvalue()  # type: ignore[attr-defined]
    assert "Hands knead and stretch the sourdough dough" in printed


@pytest.mark.parametrize("vector", sorted(VECTORS))
async def test_every_feature_is_found_first_by_its_own_words(synced: Service, vector: str) -> None:
    points = await synced.sink.scroll_all(demo.COLLECTION)
    assert len(points) == 24
    misses = []
    for point in points:
        payload = point.payload or {}
        words = " ".join(
            str(payload[k]) for k in ("description", "transcription", "text") if payload.get(k)
        )
        answer = await search(
            synced.sink,
            synced.upstream,
            synced.settings,
            Query(words, collection=demo.COLLECTION, vector=vector, limit=1),
        )
        if answer.hits[0].point_id != str(point.id):
            misses.append(words)
    assert misses == []  # recall@1 = 1.0


async def test_filters_narrow_the_hits(synced: Service) -> None:
    images = await search(
        synced.sink,
        synced.upstream,
        synced.settings,
        Query("a red panda", modality="image", limit=10),
    )
    assert len(images.hits) == 3 and {h.modality for h in images.hits} == {"image"}
    assert images.hits[0].url == library.image_url("red-panda.jpg")
    volcano = library.video_url("volcano-eruption.mp4")
    asset_id = next(h.asset_id for h in (await _all(synced)) if h.url == volcano)
    only = await search(
        synced.sink, synced.upstream, synced.settings, Query("sourdough", asset_id=asset_id)
    )
    assert {h.url for h in only.hits} == {volcano} and len(only.hits) == 2


async def _all(service: Service) -> list:  # type: ignore[type-arg]
    answer = await search(
        service.sink, service.upstream, service.settings, Query("anything", limit=100)
    )
    return answer.hits


async def test_like_searches_with_a_stored_points_vector(synced: Service) -> None:
    first = (await search(synced.sink, synced.upstream, synced.settings, Query("lava"))).hits[0]
    like = await search(
        synced.sink, synced.upstream, synced.settings, Query(like=first.point_id, limit=3)
    )
    assert first.point_id not in {h.point_id for h in like.hits}
    assert len(like.hits) == 3


async def test_through_an_alias(synced: Service) -> None:
    physical = await synced.sink.alias_target(demo.COLLECTION)
    assert physical is not None
    await synced.sink.point_alias("demo-live", physical)
    answer = await search(
        synced.sink,
        synced.upstream,
        synced.settings,
        Query("goalkeeper saves a penalty", collection="demo-live"),
    )
    assert answer.collection == "demo-live"
    assert answer.hits[0].url == library.video_url("football-final.mp4")


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (Query("x", collection="nope"), "no Qdrant collection for 'nope' (collections: demo)"),
        (Query("x", vector="nope"), "collection 'demo' has no vector named 'nope' (it has: "),
        (Query(like="not-a-point"), "no point 'not-a-point' in 'demo'"),
        (Query(), "give either a text to search for or --like POINT_ID"),
    ],
)
async def test_clear_errors(synced: Service, query: Query, message: str) -> None:
    with pytest.raises(SearchError) as caught:
        await search(synced.sink, synced.upstream, synced.settings, query)
    assert message in str(caught.value)


async def test_an_empty_collection_says_so(synced: Service) -> None:
    await synced.sink.ensure_vectors("empty", {"multimodal-v1": VectorSpec(size=1408)})
    with pytest.raises(SearchError, match="collection 'empty' holds no points yet"):
        await search(synced.sink, synced.upstream, synced.settings, Query("x", collection="empty"))
    with pytest.raises(SearchError, match="several collections; pick one with --collection"):
        await search(synced.sink, synced.upstream, synced.settings, Query("x"))


async def test_an_upstream_that_cannot_embed_says_so(
    synced: Service, library_emulator: EmulatorServer
) -> None:
    library_emulator.state.config = library_emulator.state.config.patched({"vector_kind": "random"})
    try:
        with pytest.raises(SearchError, match="Mixpeek cannot embed into 'multimodal-v1'"):
            await search(synced.sink, synced.upstream, synced.settings, Query("lava"))
    finally:
        library_emulator.state.config = library_emulator.state.config.patched(
            {"vector_kind": "meaningful"}
        )


async def test_on_a_qdrant_server_with_filters(
    tmp_path: Path, library_emulator: EmulatorServer
) -> None:
    """The server code path (REST, through the stand-in): same hits, filters applied there."""
    with QdrantStandIn() as qdrant:
        settings = local_settings(
            tmp_path, library_emulator, QDRANT_URL=qdrant.url, QDRANT_COLLECTION="{collection_id}"
        )
        async for service in _synced(settings):
            for text, video, segment in library.QUERIES:
                hits = await ask(service, text=text, modality="video")
                assert hits[0] == (library.video_url(video), segment * 10.0)
            assert any(r["path"].endswith("/points/query") for r in qdrant.requests())


class _Embeds:
    """An upstream that embeds every text into ``vector`` (only ``embed`` is reached)."""

    def __init__(self, vector: object) -> None:
        self.vector = vector

    async def embed(self, text: str, vector_name: str) -> object:
        return self.vector


@pytest.mark.parametrize(
    ("vector", "message"),
    [
        (
            [[0.1] * 1408, [0.2] * 1408],
            "is multi-dense but 'multimodal-v1' in 'demo' is dense[1408]",
        ),
        ({"indices": [1], "values": [0.5]}, "is sparse but 'multimodal-v1' in 'demo' is not"),
        ([0.1] * 3, "has 3 dimensions but 'multimodal-v1' in 'demo' has 1408"),
    ],
)
async def test_a_query_vector_of_the_wrong_shape_says_which(
    synced: Service, vector: object, message: str
) -> None:
    upstream = cast("Upstream", _Embeds(vector))
    with pytest.raises(SearchError) as caught:
        await search(synced.sink, upstream, synced.settings, Query("lava"))
    assert message in str(caught.value)
