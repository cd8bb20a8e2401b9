"""What `status` reads about outages: each process reports Mixpeek's and Qdrant's apart."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import pytest

from sync_service.control.metrics import Metrics
from sync_service.engine.availability import OutageReports, qdrant_health
from sync_service.state.records import OUTAGE_FRESH, outage_key
from sync_service.state.store import Store


class MixpeekDown:
    """What OutageReports reads of Mixpeek's breaker."""

    what = "Mixpeek"

    def __init__(self) -> None:
        self.since: datetime | None = datetime.now(UTC)
        self.reason: str | None = "GET /v1/health: connection refused"

    def describe(self) -> str:
        return "Mixpeek unavailable"

    def unavailable_for(self) -> float:
        return 1.0


async def _settled(reports: OutageReports) -> None:
    """The reports are written in the background, each after the one before it."""
    await asyncio.gather(*reports._last.values())


async def test_qdrant_and_mixpeek_outages_are_reported_apart_and_cleared(store: Store) -> None:
    reports = OutageReports(store, "host-1")
    qdrant = qdrant_health()
    qdrant.on_change(reports.report)
    qdrant.failed(ConnectionError("Qdrant at http://q:6333: connection refused"))
    mixpeek = MixpeekDown()
    reports.report(mixpeek)
    await _settled(reports)
    shown = {o["what"]: o for o in await store.outages()}
    assert set(shown) == {"Qdrant", "Mixpeek"}
    assert shown["Qdrant"]["owner"] == "host-1"
    assert "connection refused" in shown["Qdrant"]["reason"]
    assert qdrant.describe().startswith("Qdrant unavailable since ")

    qdrant.answered()  # its report goes; Mixpeek's stays
    await _settled(reports)
    assert [o["what"] for o in await store.outages()] == ["Mixpeek"]
    assert qdrant.describe() == "Qdrant available" and qdrant.since is None

    qdrant.failed(ConnectionError("timed out"))
    await reports.close()  # the process stops: it no longer reports either
    assert await store.outages() == []


async def test_a_failed_probe_refreshes_the_report_and_the_metrics_follow(store: Store) -> None:
    reports = OutageReports(store, "host-1")
    metrics = Metrics()
    qdrant = qdrant_health()
    metrics.watch_qdrant(qdrant)
    qdrant.on_change(reports.report)
    qdrant.failed(ConnectionError("connection refused"))
    await _settled(reports)
    [first] = await store.outages()
    assert metrics.qdrant_up._value.get() == 0
    assert metrics.qdrant_down_since._value.get() == pytest.approx(qdrant.since.timestamp())  # type: ignore[union-attr]

    async def still_down() -> None:
        raise ConnectionError("503 Service Unavailable")

    qdrant._next_probe = 0  # the probe is due
    assert await qdrant.holding(still_down) is True
    await _settled(reports)
    [again] = await store.outages()
    assert again["reported"] > first["reported"] and again["since"] == first["since"]
    assert again["reason"] == "503 Service Unavailable"

    async def answers() -> None:
        pass

    qdrant._next_probe = 0
    assert await qdrant.holding(answers) is False  # on trial: work goes through
    qdrant.answered()  # a write landed
    await _settled(reports)
    assert await store.outages() == []
    assert metrics.qdrant_up._value.get() == 1 and metrics.qdrant_down_since._value.get() == 0


async def test_a_report_slower_than_the_clear_after_it_does_not_land_after_it(
    store: Store,
) -> None:
    """On PostgreSQL two writes race; the clear that follows a report waits for it, so
    `status` never shows an outage that has ended."""
    reports = OutageReports(store, "host-1")
    real = store.report_outage
    gate = asyncio.Event()

    async def slow_report(*args: object) -> None:
        await gate.wait()
        await real(*args)  # type: ignore[arg-type]

    store.report_outage = slow_report  # type: ignore[method-assign]
    qdrant = qdrant_health()
    qdrant.on_change(reports.report)
    qdrant.failed(ConnectionError("refused"))
    qdrant.answered()  # the clear is asked for while the report still waits
    await asyncio.sleep(0.05)
    gate.set()
    await _settled(reports)
    assert await store.outages() == []


async def test_a_report_after_close_is_not_written_and_close_clears_each(store: Store) -> None:
    reports = OutageReports(store, "host-1")
    qdrant = qdrant_health()
    qdrant.on_change(reports.report)
    qdrant.failed(ConnectionError("refused"))
    mixpeek = MixpeekDown()
    reports.report(mixpeek)
    closing = asyncio.ensure_future(reports.close())
    reports.report(MixpeekDown())  # e.g. a probe that ends while the daemon stops
    await closing
    assert await store.outages() == []


async def test_the_reports_of_a_process_killed_mid_outage_go_at_the_next_report(
    store: Store,
) -> None:
    """A process killed (SIGKILL) during an outage never clears its report; `status` ignores it
    after two minutes, and the next report any process writes deletes it once it is 20 min old."""
    since = datetime.now(UTC)
    await store.report_outage("killed-long-ago", "Qdrant", since, "refused")
    await store.report_outage("killed-lately", "Qdrant", since, "refused")
    old = outage_key("killed-long-ago", "Qdrant")
    report = json.loads(await store.info(old) or "{}")
    report["reported"] -= 10 * OUTAGE_FRESH + 1
    await store.set_info({old: json.dumps(report)})
    assert [o["owner"] for o in await store.outages()] == ["killed-lately"]  # ignored...
    await store.report_outage("alive", "Mixpeek", since, "timed out")
    assert await store.info(old) is None  # ...and now gone
    assert {o["owner"] for o in await store.outages()} == {"killed-lately", "alive"}
