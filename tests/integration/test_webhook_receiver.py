"""The webhook receiver on the control API, in process, over a real SQLite state store: it
answers before a slow write ends (and the write still lands), delivery bursts share one write,
and a write that fails is refused (503) or, when already answered, counted lost."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from sqlalchemy.exc import OperationalError

from sync_service.control.metrics import Metrics
from sync_service.control.webhooks import PATH
from sync_service.state.store import Store
from sync_service.state.webhooks import WebhookEvent

SECRET = "receiver-SECRET-0123456789"
TOKEN = "control-token-0123456789"


class GatedStore(Store):
    """The real store, with its webhook writes held until the test opens the gate."""

    gate: asyncio.Event
    writes: list[int]
    fail: bool

    async def receive_webhooks(self, events: Sequence[WebhookEvent]) -> list[bool]:
        await self.gate.wait()
        self.writes.append(len(events))
        if self.fail:
            raise OperationalError("INSERT", {}, Exception("database is locked"))
        return await super().receive_webhooks(events)


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[tuple[GatedStore, httpx.AsyncClient, Metrics]]:
    from sync_service.control.api import create_api

    store = cast("GatedStore", GatedStore.open(f"sqlite:///{tmp_path / 'sync.db'}"))
    store.gate, store.writes, store.fail = asyncio.Event(), [], False
    await store.migrate()
    metrics, woken = Metrics(), []
    app = create_api(
        store=store,
        upstream=cast("Any", None),
        sink=cast("Any", None),
        metrics=metrics,
        token=TOKEN,
        webhook_secret=SECRET,
        on_webhook=lambda: woken.append(1),
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
        yield store, http, metrics
    await store.close()


def event(n: int) -> dict[str, Any]:
    return {"event_id": f"evt_{n}", "event_type": "object.deleted", "subject": {"type": "object"}}


async def deliver(http: httpx.AsyncClient, body: dict[str, Any]) -> httpx.Response:
    return await http.post(PATH, json=body, headers={"X-Mixpeek-Secret": SECRET})


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def test_a_slow_write_is_answered_first_and_still_lands(stack: Any) -> None:
    store, http, metrics = stack
    # Held writes: every delivery is answered anyway ("accepted"), none waits for the store.
    answers = await asyncio.gather(*(deliver(http, event(n)) for n in range(20)))
    assert {(a.status_code, a.json()["status"]) for a in answers} == {(202, "accepted")}
    assert store.writes == []
    store.gate.set()
    for _ in range(200):
        if await store.queued_webhooks() == 20:
            break
        await asyncio.sleep(0.01)
    assert await store.queued_webhooks() == 20
    # The deliveries waiting together went in one or two transactions, not twenty.
    assert sum(store.writes) == 20 and len(store.writes) <= 2
    assert sample(metrics, "sync_webhook_events_received_total", event_type="object.deleted",
                  outcome="queued") == 20  # fmt: skip
    # Now writes are quick: a repeat is told apart.
    again = await deliver(http, event(3))
    assert (again.status_code, again.json()["status"]) == (200, "duplicate")
    assert sample(metrics, "sync_webhook_deduplicated_total") == 1


async def test_a_failed_write_is_refused_or_counted_lost(stack: Any) -> None:
    store, http, metrics = stack
    store.fail = True
    answered = await deliver(http, event(1))  # held past the answer, then fails
    assert answered.json()["status"] == "accepted"
    store.gate.set()
    refused = await deliver(http, event(2))  # fails before the answer is due
    assert refused.status_code == 503
    for _ in range(100):
        if sample(metrics, "sync_webhook_events_received_total", event_type="object.deleted",
                  outcome="lost"):  # fmt: skip
            break
        await asyncio.sleep(0.01)
    assert sample(metrics, "sync_webhook_events_received_total", event_type="object.deleted",
                  outcome="lost") == 1  # fmt: skip
    store.fail = False
    assert (await deliver(http, event(2))).json()["status"] == "queued"


async def test_the_secret_not_the_token_opens_the_route(stack: Any) -> None:
    store, http, metrics = stack
    store.gate.set()
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    assert (await http.post(PATH, json=event(1), headers=bearer)).status_code == 401
    wrong = {"X-Mixpeek-Secret": SECRET + "x", **bearer}
    assert (await http.post(PATH, json=event(1), headers=wrong)).status_code == 401
    assert (await http.get("/watch", headers={"X-Mixpeek-Secret": SECRET})).status_code == 401
    assert await store.queued_webhooks() == 0
    assert sample(metrics, "sync_webhook_rejected_total", reason="secret") == 2
    assert (await deliver(http, event(1))).status_code == 202
