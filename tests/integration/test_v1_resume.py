"""A v1 full listing resumed by another process: the pass's resume token rebuilds the cursor
walk at page N (one page re-listed, or as many as the object held back spans) instead of
walking from page 1, and serves the same page, each asset with its whole document set.
A token that does not fit is ignored: the walk starts from page 1, as it did before tokens."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import httpx
import pytest

from sync_service.settings import Settings
from sync_service.upstream.connect import open_upstream
from sync_service.upstream.port import AssetPage, ListOrder
from tests.conftest import API_KEY
from tests.upstreams import Mixpeek, open_mixpeek

SIZE = 3  # documents a page: objects of 2 and of 10 documents straddle pages


@pytest.fixture
def mixpeek() -> Iterator[Mixpeek]:
    with open_mixpeek("v1", processing_time=0.1, seed=11) as upstream:
        for duration in (20, 20, 20, 100, 20, 20, 20):  # 2 documents each, one of 10
            body = {"collection": upstream.collection, "count": 1, "duration": duration}
            httpx.post(f"{upstream.url}/_emulator/seed", json=body).raise_for_status()
        yield upstream


def settings(mixpeek: Mixpeek) -> Settings:
    return Settings(MIXPEEK_API_URL=mixpeek.url, MIXPEEK_API_KEY=API_KEY, **mixpeek.env)  # type: ignore[arg-type]


def shape(page: AssetPage) -> list[tuple[str, frozenset[str] | None]]:
    return [(a.asset_id, a.feature_ids) for a in page.assets]


async def read_all(mixpeek: Mixpeek) -> list[AssetPage]:
    """Every page of a full listing, read in turn by one process."""
    pages: list[AssetPage] = []
    async with open_upstream(settings(mixpeek)) as upstream:
        while not pages or pages[-1].has_next:
            pages.append(
                await upstream.list_assets(
                    mixpeek.collection,
                    order=ListOrder.CREATED,
                    page=len(pages) + 1,
                    page_size=SIZE,
                )
            )
    return pages


async def resumed(mixpeek: Mixpeek, number: int, token: str | None) -> tuple[AssetPage, int]:
    """Page ``number`` read by a process that starts there; and the listings it made."""
    before = mixpeek.listings()
    async with open_upstream(settings(mixpeek)) as upstream:
        page = await upstream.list_assets(
            mixpeek.collection,
            order=ListOrder.CREATED,
            page=number,
            page_size=SIZE,
            resume=token,
        )
    return page, mixpeek.listings() - before


async def test_every_page_is_served_alike_from_its_token_in_fewer_requests(
    mixpeek: Mixpeek,
) -> None:
    pages = await read_all(mixpeek)
    assert len(pages) == 8  # 22 documents, 3 a page
    listed = [a for p in pages for a in shape(p)]
    assert len(listed) == 7 and all(features for _, features in listed)
    assert sorted(len(f or ()) for _, f in listed) == [2, 2, 2, 2, 2, 2, 10]
    spent = []
    for number in range(2, len(pages) + 1):
        page, requests = await resumed(mixpeek, number, pages[number - 2].resume)
        assert shape(page) == shape(pages[number - 1]), number
        assert page.has_next == pages[number - 1].has_next
        assert page.resume == pages[number - 1].resume
        spent.append(requests)
    # At most the pages the 10-document object spans (4 of 3) and the page itself; walking
    # from page 1 would list `number` pages.
    assert max(spent) <= 5 and sum(spent) < sum(range(2, len(pages) + 1)) / 2, spent


@pytest.mark.parametrize(
    "spoil",
    [
        lambda t: None,  # none kept (a pass begun by an older release)
        lambda t: t.replace('"page": 5', '"page": 4'),  # another page's
        lambda t: t.replace(f'"size": {SIZE}', '"size": 50'),  # another page size's
        lambda t: "not json",
        lambda t: json.dumps({**json.loads(t), "from": [5, "bm90LWEtY3Vyc29y", None]}),
    ],
    ids=["none", "other-page", "other-size", "garbage", "cursor-refused"],
)
async def test_a_token_that_does_not_fit_walks_from_page_1(
    mixpeek: Mixpeek, spoil: Callable[[str], str | None]
) -> None:
    pages = await read_all(mixpeek)
    token = pages[3].resume  # the token of page 5
    assert token is not None and '"page": 5' in token
    page, requests = await resumed(mixpeek, 5, spoil(token))
    assert shape(page) == shape(pages[4])
    assert requests >= 5  # pages 1 to 5 (and the refused cursor, when there was one)
