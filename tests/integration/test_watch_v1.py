"""Watch passes over a v1 collection, in process, over real HTTP to the v1 emulator: what v1
adds to mirroring (README "Mixpeek v1"). An incremental pass lists only the changed documents;
documents deleted from an object that keeps others (no event, no new ``updated_at``) and
re-processing without stable ids leave no stale point after the next full pass; an object
deleted without ``cascade`` keeps its documents, so its points stay."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from sync_service.engine.scheduler import Daemon
from sync_service.keep.watch import Mirroring
from sync_service.runtime import Service, open_service
from tests.conftest import local_settings
from tests.support import IN_STEP, compare_points
from tests.upstreams import COLLECTION, Mixpeek, MixpeekV1, open_mixpeek


@pytest.fixture
def mixpeek() -> Iterator[Mixpeek]:
    with open_mixpeek("v1", processing_time=0.1, seed=7) as upstream:
        yield upstream


@pytest.fixture
async def service(tmp_path: Path, mixpeek: Mixpeek) -> AsyncIterator[Service]:
    settings = local_settings(tmp_path, mixpeek.server, SYNC_WATCH_OVERLAP=0, **mixpeek.env)  # type: ignore[arg-type]
    async with open_service(settings) as svc:
        yield svc


async def drain(svc: Service) -> None:
    daemon = Daemon.from_settings(svc.store, svc.pipeline, svc.settings)
    assert await asyncio.wait_for(daemon.run(drain=True), 60) == 0


async def in_step(svc: Service, mixpeek: Mixpeek, assets: list[str]) -> dict[str, int]:
    return compare_points(mixpeek.expected(assets), await svc.sink.scroll_all(COLLECTION))


async def test_an_incremental_pass_lists_only_the_changed_documents(
    service: Service, mixpeek: Mixpeek
) -> None:
    # 40 documents, four pages of ten; one seed call stamps its documents alike, so the last
    # object comes alone (the newest stamp, which quiet passes list again, is its own).
    assets = mixpeek.seed(19) + mixpeek.seed(1)
    m = Mirroring(service.settings, service.store, service.upstream, service.sink, page_size=10)
    full = await m.full(mixpeek.collection)
    assert (full.listed, len(full.queued)) == (20, 20)
    await drain(service)

    before = mixpeek.listings()
    quiet = await m.incremental(mixpeek.collection)
    assert mixpeek.listings() - before == 1 and quiet.queued == [] and not quiet.fell_back

    mixpeek.change(assets[7], "payload")
    before = mixpeek.listings()
    busy = await m.incremental(mixpeek.collection)
    # One request and four documents (the changed object's, and the newest object's, at the
    # watermark), not the collection's 40: an ignored filter would list four pages and fall
    # back to a full pass.
    assert mixpeek.listings() - before == 1
    assert (busy.listed, busy.queued, busy.fell_back) == (2, [assets[7]], False)
    await drain(service)
    assert await in_step(service, mixpeek, assets) == IN_STEP


async def test_documents_gone_from_an_object_that_keeps_others_leave_no_stale_point(
    service: Service, mixpeek: Mixpeek
) -> None:
    assets = mixpeek.seed(6)
    m = Mirroring(service.settings, service.store, service.upstream, service.sink, page_size=5)
    await m.full(mixpeek.collection)
    await drain(service)
    obj = assets[0].partition("/")[2]
    old = [d["document_id"] for d in mixpeek.documents(obj)]

    # Re-processed without stable ids: new documents beside the old ones, both listed, so
    # both are mirrored (Mixpeek keeps duplicates; the mirror copies them).
    mixpeek.patch(document_ids="random")
    httpx.post(f"{mixpeek.url}/_emulator/objects/{obj}/reprocess").raise_for_status()
    assert (await m.incremental(mixpeek.collection)).queued == [assets[0]]
    await drain(service)
    assert len(mixpeek.documents(obj)) == 4
    assert await in_step(service, mixpeek, assets) == IN_STEP

    # The old ones deleted (no event, no document changes): the next full pass finds the
    # points it holds that upstream no longer lists, and the re-sync removes them.
    httpx.post(
        f"{mixpeek.url}/_emulator/documents/delete", json={"document_ids": old}
    ).raise_for_status()
    assert (await m.incremental(mixpeek.collection)).queued == []
    full = await m.full(mixpeek.collection)
    assert full.queued == [assets[0]] and full.gone == []
    await drain(service)
    assert await in_step(service, mixpeek, assets) == IN_STEP
    assert (await m.full(mixpeek.collection)).queued == []  # and then it is quiet


async def test_an_object_deleted_with_or_without_cascade(
    service: Service, mixpeek: Mixpeek
) -> None:
    assets = mixpeek.seed(10)
    m = Mirroring(service.settings, service.store, service.upstream, service.sink)
    await m.full(mixpeek.collection)
    await drain(service)
    assert isinstance(mixpeek, MixpeekV1)
    bucket, http = mixpeek.bucket, mixpeek.http
    kept, cascaded = (a.partition("/")[2] for a in assets[:2])
    # Without cascade Mixpeek keeps the documents (a GUESS, the emulator's default): they
    # are still listed, so their points stay.
    assert http.delete(f"/v1/buckets/{bucket}/objects/{kept}").status_code == 204
    assert http.delete(f"/v1/buckets/{bucket}/objects/{cascaded}?cascade=true").is_success
    full = await m.full(mixpeek.collection)
    assert full.gone == [assets[1]]
    await drain(service)
    assert await in_step(service, mixpeek, [a for a in assets if a != assets[1]]) == IN_STEP
