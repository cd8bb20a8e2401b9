"""Webhook events in the state store, on SQLite and PostgreSQL: de-duplication shared by
every replica, claims no two replicas share, the passes events request (not pushed back by a
pass that ends meanwhile), and the collection deletions held for a person."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from sync_service.state.listings import Listed
from sync_service.state.store import Store
from sync_service.state.webhooks import DONE, HELD, Applied, WebhookEvent


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    s = Store.open(database_url)
    await s.migrate()
    yield s
    await s.close()


async def mirrored(store: Store, collection_id: str) -> None:
    """A watched collection after its first full pass: nothing due for an hour."""
    await store.watch_add([collection_id], source="cli")
    await store.begin_full_pass(collection_id)
    await store.finish_full_pass(
        collection_id, next_in=3600, watermark=1.0, held=None, incremental_in=3600
    )


def written(n: int, collection: str = "col_a") -> WebhookEvent:
    return WebhookEvent(f"evt_{n}", "collection.documents.written", "ns_1", collection)


async def test_every_replica_agrees_on_duplicates(database_url: str, store: Store) -> None:
    other = Store.open(database_url)  # a second replica's connection pool
    try:
        assert await store.receive_webhooks([written(1), written(2), written(1)]) == [
            True,
            True,
            False,
        ]
        # Both replicas receive the same delivery at once: exactly one queues it.
        answers = await asyncio.gather(
            store.receive_webhooks([written(3)]), other.receive_webhooks([written(3)])
        )
        assert sorted(a[0] for a in answers) == [False, True]
        assert await other.receive_webhooks([written(2)]) == [False]
        assert await store.queued_webhooks() == 3
    finally:
        await other.close()


async def test_concurrent_appliers_never_share_an_event(database_url: str, store: Store) -> None:
    await store.receive_webhooks([written(n) for n in range(90)])
    others = [Store.open(database_url) for _ in range(2)]
    try:
        claims = await asyncio.gather(
            *(s.claim_webhooks(f"w{i}", 40, 30) for i, s in enumerate([store, *others]))
        )
    finally:
        for s in others:
            await s.close()
    ids = [e.event_id for claim in claims for e in claim]
    assert len(ids) == len(set(ids)) == 90
    # A claim held by a live replica is not taken again; released ones are.
    assert await store.claim_webhooks("w9", 100, 30) == []
    await store.release_webhooks("w0", [e.event_id for e in claims[0]])
    again = await store.claim_webhooks("w9", 100, 30)
    assert {e.event_id for e in again} == {e.event_id for e in claims[0]}
    # Finishing is fenced by the owner: w0 gave its events up, so it records nothing.
    await store.finish_webhooks("w0", {again[0].event_id: Applied(DONE, "late")})
    await store.finish_webhooks("w9", {e.event_id: Applied(DONE, "x") for e in again})
    assert await store.queued_webhooks() == 90 - len(again)


async def test_a_requested_pass_survives_a_pass_that_ends_meanwhile(store: Store) -> None:
    await mirrored(store, "col_a")
    assert await store.due_mirrors() == []
    began = await store.now()  # a pass starts...
    await store.receive_webhooks([written(1), written(2, "col_unwatched")])
    events = await store.claim_webhooks("w", 10, 30)
    targets = {e.event_id: str(e.collection_id) for e in events}
    assert await store.request_passes("w", targets) == ["col_a"]
    assert dict(await store.due_mirrors()) == {"col_a": "incremental"}
    # ...and ends after the event made it due: the next one is still due now.
    await store.finish_incremental("col_a", next_in=3600, began=began)
    assert dict(await store.due_mirrors()) == {"col_a": "incremental"}
    # A pass that began after the request pushes it back as usual.
    await store.finish_incremental("col_a", next_in=3600, began=await store.now())
    assert await store.due_mirrors() == []
    assert await store.queued_webhooks() == 0


async def test_object_assets_and_held_deletions(store: Store) -> None:
    await store.watch_add(["col_a"], source="cli")
    listed = [Listed("col_a/obj_1", "s"), Listed("col_a/obj_10", "s"), Listed("col_a/xobj_1", "s")]
    await store.record_page("col_a", listed, pass_no=None)
    # obj_1's assets only: "_" is a LIKE wildcard, and obj_10 only starts the same.
    assert await store.object_assets("obj_1") == [("col_a", "col_a/obj_1")]
    assert await store.object_assets("obj_%") == []
    # The listing queued its job already: a pending job is not queued twice.
    assert await store.reconcile_assets([("col_a", "col_a/obj_1")]) == []
    assert await store.reconcile_assets([("col_b", "col_b/obj_1")]) == ["col_b/obj_1"]
    assert await store.known_collections(["col_a", "col_b"]) == ["col_a"]

    await store.receive_webhooks([WebhookEvent("evt_d", "collection.deleted", "ns_1", "col_a")])
    (event,) = await store.claim_webhooks("w", 10, 30)
    await store.finish_webhooks("w", {event.event_id: Applied(HELD, "held", "col_a")})
    held = await store.deleted_upstream()
    assert list(held) == ["col_a"] and held["col_a"]["event_id"] == "evt_d"
    await store.prune_webhooks(0.0)  # held rows are never pruned
    assert list(await store.deleted_upstream()) == ["col_a"]
    assert await store.settle_deletion("col_a", confirmed=False) == 1
    assert await store.deleted_upstream() == {}
    assert await store.prune_webhooks(0.0) == 1


async def test_a_restart_with_shorter_intervals_brings_the_incremental_pass_forward(
    store: Store,
) -> None:
    """After only a full pass (no incremental one yet), a restart with a shorter incremental
    interval makes it due from the full pass's end, not an hour later."""
    await mirrored(store, "col_a")
    assert await store.due_mirrors() == []
    await store.reconcile_intervals(0.001, 3600)
    assert dict(await store.due_mirrors()) == {"col_a": "incremental"}
