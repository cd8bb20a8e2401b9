"""Listing assets from the emulator as a watcher does, over real HTTP.

Filters and sort on timestamps, the knobs that make a listing unfaithful (``ignore_filters``)
or cut short (``list_fail_page``), and the control routes that create, change and delete
assets as another client would.
"""

from __future__ import annotations

import itertools
import statistics
import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
import typer
from typer.testing import CliRunner

from sync_service.emulator import EmulatorConfig, EmulatorServer
from sync_service.emulator import server as server_module
from sync_service.emulator.command import emulator as emulator_command
from tests.conftest import API_KEY
from tests.support import ok

CONTROL = "/_emulator"


def since(stamp: Any, operator: str = "gte") -> dict[str, Any]:
    """The filter of a changed-since listing: ``updated_at <operator> stamp``."""
    return {"AND": [{"key": "updated_at", "operator": operator, "value": stamp}]}


def listing(
    http: httpx.Client,
    collection: str,
    filters: dict[str, Any] | None = None,
    sort: dict[str, str] | None = None,
    page: int = 1,
    page_size: int = 100,
) -> httpx.Response:
    body: dict[str, Any] = {"collection_ids": [collection]}
    if filters is not None:
        body["filters"] = filters
    if sort is not None:
        body["sort"] = sort
    return http.post("/assets", params={"page": page, "page_size": page_size}, json=body)


def ids(http: httpx.Client, collection: str, **query: Any) -> list[str]:
    """Asset ids of every page of a listing, in order."""
    found: list[str] = []
    page = 1
    while True:
        body = ok(listing(http, collection, page=page, **query))
        found += [asset["asset_id"] for asset in body["results"]]
        if body["pagination"]["next_page"] is None:
            return found
        page += 1


def updated(http: httpx.Client, asset_id: str) -> str:
    return str(ok(http.get(f"/assets/{asset_id}"))["updated_at"])


def change(http: httpx.Client, asset_id: str, **metadata: Any) -> dict[str, Any]:
    answer: dict[str, Any] = ok(
        http.patch(f"{CONTROL}/assets/{asset_id}", json={"metadata": metadata})
    )
    return answer


def parse(stamp: str) -> datetime:
    moment = datetime.fromisoformat(stamp)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def staggered(
    emulator: EmulatorServer, http: httpx.Client, count: int
) -> tuple[list[str], list[str]]:
    """``count`` assets whose updated_at grow in an order unlike their creation order.

    Returns (ids in update order, their updated_at)."""
    seeded = emulator.seed("col", count)["asset_ids"]
    emulator.seed("other", 2)  # another collection, never listed
    order = seeded[1::2] + seeded[0::2]  # odd ones first, then even ones
    for n, asset_id in enumerate(order):
        change(http, asset_id, n=n)
    return order, [updated(http, asset_id) for asset_id in order]


# -- filters and sort ---------------------------------------------------------------------


def test_filters_on_updated_at(emulator: EmulatorServer, http: httpx.Client) -> None:
    order, stamps = staggered(emulator, http, 5)
    assert stamps == sorted(stamps, key=parse) and len(set(stamps)) == 5
    asc = {"field": "updated_at", "direction": "asc"}
    assert ids(http, "col", filters=since(stamps[2]), sort=asc) == order[2:]
    assert ids(http, "col", filters=since(stamps[2], "gt"), sort=asc) == order[3:]
    assert ids(http, "col", filters=since(stamps[2], "lt"), sort=asc) == order[:2]
    assert ids(http, "col", filters=since(stamps[2], "lte"), sort=asc) == order[:3]
    window = {"AND": [since(stamps[1])["AND"][0], since(stamps[3], "lt")["AND"][0]]}
    assert ids(http, "col", filters=window, sort=asc) == order[1:3]
    nested = {
        "AND": [
            {"OR": [since(stamps[0], "lte"), since(stamps[4])]},
            {"key": "metadata.n", "operator": "ne", "value": 0},
        ]
    }
    assert ids(http, "col", filters=nested, sort=asc) == [order[4]]
    # created_at too: the seed made them all before the first change.
    created = {"AND": [{"key": "created_at", "operator": "gt", "value": stamps[0]}]}
    assert ids(http, "col", filters=created) == []


def test_naive_zulu_and_offset_values_compare_equal(
    emulator: EmulatorServer, http: httpx.Client
) -> None:
    order, stamps = staggered(emulator, http, 4)
    stamp = stamps[2]
    assert "Z" not in stamp and "+" not in stamp  # assets carry naive UTC timestamps
    moment = parse(stamp)
    east = moment.astimezone(timezone(timedelta(hours=2))).isoformat()  # same instant, +02:00
    asc = {"field": "updated_at", "direction": "asc"}
    for value in (stamp, stamp + "Z", moment.isoformat(), east):
        assert ids(http, "col", filters=since(value), sort=asc) == order[2:], value
        exact = {"AND": [{"key": "updated_at", "operator": "eq", "value": value}]}
        assert ids(http, "col", filters=exact) == [order[2]], value
    # Coarser values are instants too: the whole second holds the asset.
    second = moment.replace(microsecond=0)
    assert order[2] in ids(http, "col", filters=since(second.strftime("%Y-%m-%dT%H:%M:%SZ")))
    # Not a date-time: compared as the plain values (no match), never a crash.
    not_dates: list[Any] = ["yesterday", 5, None, ["2020-01-01"]]
    for odd in not_dates:
        assert ok(listing(http, "col", filters=since(odd)))["pagination"]["total"] == 0


def test_sort_is_chronological_stable_and_pages_cleanly(
    emulator: EmulatorServer, http: httpx.Client
) -> None:
    order, _ = staggered(emulator, http, 25)
    asc = ids(http, "col", sort={"field": "updated_at", "direction": "asc"}, page_size=10)
    desc = ids(http, "col", sort={"field": "updated_at", "direction": "desc"}, page_size=10)
    assert asc == order and desc == order[::-1]
    # Ties (every asset is a video) follow asset_id, so pages never overlap or skip.
    by_modality = ids(http, "col", sort={"field": "modality", "direction": "asc"}, page_size=7)
    assert by_modality == sorted(order)
    reverse = ids(http, "col", sort={"field": "modality", "direction": "desc"}, page_size=7)
    assert reverse == sorted(order, reverse=True)
    # Date-time strings of mixed forms sort (and filter) as instants, not as text.
    a, b, c = order[:3]
    change(http, a, when="2026-01-01T10:00:00+02:00")  # 08:00 UTC
    change(http, b, when="2026-01-01T09:00:00Z")
    change(http, c, when="2026-01-01T08:30:00")
    when = ids(http, "col", sort={"field": "metadata.when", "direction": "asc"})
    assert when[:3] == [a, c, b]
    later = {"AND": [{"key": "metadata.when", "operator": "gt", "value": "2026-01-01T08:15Z"}]}
    assert sorted(ids(http, "col", filters=later)) == sorted([b, c])


# -- knobs ----------------------------------------------------------------------------------


def test_ignore_filters_keeps_sort(emulator: EmulatorServer, http: httpx.Client) -> None:
    order, _ = staggered(emulator, http, 6)
    nothing = since("2999-01-01T00:00:00")
    desc = {"field": "updated_at", "direction": "desc"}
    assert ids(http, "col", filters=nothing, sort=desc) == []
    assert ok(httpx.patch(f"{emulator.url}{CONTROL}/config", json={"ignore_filters": True}))
    assert ids(http, "col", filters=nothing, sort=desc) == order[::-1]
    emulator.update_config(ignore_filters=False)
    assert ids(http, "col", filters=nothing, sort=desc) == []


def test_list_fail_page_fails_that_page_every_time(
    emulator: EmulatorServer, http: httpx.Client
) -> None:
    emulator.seed("col", 25)
    bad = httpx.patch(f"{emulator.url}{CONTROL}/config", json={"list_fail_page": 0})
    assert bad.status_code == 422
    ok(httpx.patch(f"{emulator.url}{CONTROL}/config", json={"list_fail_page": 3}))
    emulator.state.stats.reset()
    for page in (1, 2):
        assert len(ok(listing(http, "col", page=page, page_size=10))["results"]) == 10
    for _ in range(3):  # retries never get through
        failed = listing(http, "col", page=3, page_size=10)
        assert failed.status_code == 500
        assert failed.json()["error"]["type"] == "InternalServerError"
    counted = emulator.state.stats.snapshot()["requests"]["POST /assets"]
    assert counted == {"200": 2, "500": 3}
    emulator.update_config(list_fail_page=None)
    assert len(ok(listing(http, "col", page=3, page_size=10))["results"]) == 5


def test_command_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[EmulatorConfig] = []
    monkeypatch.setattr(server_module, "serve", lambda config, *a, **k: seen.append(config))
    app = typer.Typer()
    app.command()(emulator_command)
    result = CliRunner().invoke(app, ["--ignore-filters", "--list-fail-page", "3"])
    assert result.exit_code == 0, result.output
    assert seen[0].ignore_filters is True and seen[0].list_fail_page == 3
    assert CliRunner().invoke(app, ["--list-fail-page", "0"]).exit_code == 2


# -- upstream changes -----------------------------------------------------------------------


def test_seed_stamps_updated_at_now(emulator: EmulatorServer, http: httpx.Client) -> None:
    before = datetime.now(UTC)
    (asset_id,) = emulator.seed("col", 1)["asset_ids"]
    after = datetime.now(UTC)
    asset = ok(http.get(f"/assets/{asset_id}"))
    assert asset["status"] == "DONE"
    slack = timedelta(milliseconds=50)  # the emulator's wall clock is the host's, give or take
    assert before - slack <= parse(asset["updated_at"]) <= after + slack
    assert asset["created_at"] == asset["updated_at"]


def test_change_moves_updated_at_into_a_changed_since_listing(
    emulator: EmulatorServer, http: httpx.Client
) -> None:
    quiet, asset_id = emulator.seed("col", 2)["asset_ids"]
    first = updated(http, asset_id)
    watermark = max(updated(http, quiet), first)  # what a watcher last saw
    just_before = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")  # the client's clock
    answer = change(http, asset_id, author="ann", tags=["x"])
    assert answer["metadata"] == {"author": "ann", "tags": ["x"]}
    assert parse(answer["updated_at"]) > parse(first)
    assert ids(http, "col", filters=since(watermark, "gt")) == [asset_id]
    assert asset_id in ids(http, "col", filters=since(just_before))
    features = ok(http.get(f"/assets/{asset_id}/features"))["features"]["video"]
    assert features and all(f["metadata"] == answer["metadata"] for f in features)
    # A second change merges and moves updated_at again.
    again = change(http, asset_id, author="bob")
    assert again["metadata"] == {"author": "bob", "tags": ["x"]}
    assert parse(again["updated_at"]) > parse(answer["updated_at"])
    missing = http.patch(f"{CONTROL}/assets/nope", json={"metadata": {}})
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "NotFoundError"
    extra = http.patch(f"{CONTROL}/assets/{asset_id}", json={"metadata": {}, "x": 1})
    assert extra.status_code == 422


def test_every_change_moves_updated_at_even_on_a_frozen_clock() -> None:
    frozen = 5000.0
    config = EmulatorConfig(api_key=API_KEY, processing_time=0.0)
    with EmulatorServer(config, clock=lambda: frozen) as server:
        headers = {"Authorization": f"Bearer {API_KEY}"}
        with httpx.Client(base_url=server.url, headers=headers) as http:
            (asset_id,) = server.seed("col", 1)["asset_ids"]
            stamps = [updated(http, asset_id)]
            for n in range(3):
                assert server.change_asset(asset_id, {"n": n})["metadata"]["n"] == n
                stamps.append(updated(http, asset_id))
            ok(http.patch(f"/assets/{asset_id}", json={"metadata": {"m": 1}}))  # client PATCH
            stamps.append(updated(http, asset_id))
            server.reindex(asset_id)
            stamps.append(updated(http, asset_id))
            moments = [parse(stamp) for stamp in stamps]
            assert all(a < b for a, b in itertools.pairwise(moments)), stamps
            assert ids(http, "col", filters=since(stamps[-2], "gt")) == [asset_id]


def test_delete_routes(emulator: EmulatorServer, http: httpx.Client) -> None:
    seeded = emulator.seed("col", 5)["asset_ids"]
    gone = seeded[0]
    feature_ids = [
        f["feature_id"] for f in ok(http.get(f"/assets/{gone}/features"))["features"]["video"]
    ]
    assert ok(http.delete(f"{CONTROL}/assets/{gone}")) == {"deleted": 1}
    assert http.get(f"/assets/{gone}").status_code == 404
    assert http.get(f"/assets/{gone}/features").status_code == 404
    assert feature_ids and all(http.get(f"/features/{f}").status_code == 404 for f in feature_ids)
    assert http.delete(f"{CONTROL}/assets/{gone}").status_code == 404
    assert ids(http, "col") == seeded[1:]
    bulk = {"asset_ids": [seeded[1], "unknown", seeded[2], seeded[1], gone]}
    assert ok(http.post(f"{CONTROL}/assets/delete", json=bulk)) == {"deleted": 2}
    assert ids(http, "col") == seeded[3:]
    assert emulator.delete_assets([seeded[3]]) == 1
    assert ok(listing(http, "col"))["pagination"]["total"] == 1
    assert all(http.get(f"/assets/{a}").status_code == 404 for a in seeded[:4])
    changed = ids(http, "col", filters=since("2000-01-01T00:00:00"))
    assert changed == [seeded[4]]


# -- timing ---------------------------------------------------------------------------------


def test_page_timing_on_10000_assets(emulator: EmulatorServer, http: httpx.Client) -> None:
    started = time.perf_counter()
    emulator.seed("big", 10_000)
    print(f"\nseeding 10,000 assets: {time.perf_counter() - started:.2f} s")
    asc = {"field": "updated_at", "direction": "asc"}
    queries: dict[str, dict[str, Any]] = {
        "plain": {},
        "sorted by updated_at": {"sort": asc},
        "changed since (all match), sorted": {"filters": since("2000-01-01T00:00:00"), "sort": asc},
        "changed since (none match), sorted": {
            "filters": since("2999-01-01T00:00:00"),
            "sort": asc,
        },
    }
    for name, query in queries.items():
        times = []
        for page in (1, 50, 100, 1, 50, 100, 2, 3, 4, 5):
            started = time.perf_counter()
            body = ok(listing(http, "big", page=page, **query))
            times.append((time.perf_counter() - started) * 1000)
        assert body["pagination"]["total"] in (0, 10_000)
        median, worst = statistics.median(times), max(times)
        print(f"POST /assets, page of 100, {name}: median {median:.1f} ms, max {worst:.1f} ms")
