"""The state store on SQLite and PostgreSQL: migrations, claims, leases, fencing, recording."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from sync_service.state.listings import Listed
from sync_service.state.records import DeadLetter, SyncedFeature, SyncResult
from sync_service.state.schema import metadata
from sync_service.state.store import LeaseLost, Store


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    s = Store.open(database_url)
    await s.migrate()
    yield s
    await s.close()


def ledger_row(feature_id: str, fp: str = "p") -> SyncedFeature:
    return SyncedFeature(
        feature_id,
        f"00000000-0000-4000-8000-{feature_id:0>12}",
        "asset-1",
        "video",
        {"multimodal-v1": 1408},
        fp,
        "v",
    )


async def test_migrations_are_idempotent_and_match_the_declared_schema(store: Store) -> None:
    await store.migrate()
    async with store.engine.connect() as conn:
        diff = await conn.run_sync(
            lambda c: compare_metadata(MigrationContext.configure(c), metadata)
        )
    assert diff == []


async def test_track_is_idempotent(store: Store) -> None:
    assert await store.track(["a", "b", "a"]) == 2
    assert await store.track(["b", "c"]) == 1
    assert await store.counts() == {"pending": 3, "synced": 0, "failed": 0}
    assert [t["task_id"] for t in await store.list_tasks()] == ["a", "b", "c"]


async def test_concurrent_claimers_never_share_a_task(database_url: str, store: Store) -> None:
    ids = [f"t{i:03}" for i in range(60)]
    await store.track(ids)
    others = [Store.open(database_url) for _ in range(3)]
    try:
        claims = await asyncio.gather(
            *(s.claim_due(f"w{i}", 25, 30) for i, s in enumerate([store, *others]))
        )
    finally:
        for s in others:
            await s.close()
    claimed = [c.task_id for batch in claims for c in batch]
    assert len(claimed) == len(set(claimed)) == 60


async def test_a_task_is_not_due_before_its_poll_time(store: Store) -> None:
    await store.track(["a"])
    (claim,) = await store.claim_due("w", 10, 30)
    await store.reschedule(claim, upstream_status="PROCESSING", delay=60)
    assert await store.claim_due("w", 10, 30) == []
    (row,) = await store.list_tasks()
    assert row["polls"] == 1 and row["upstream_status"] == "PROCESSING"


async def test_a_claim_says_when_a_poll_last_saw_the_task_running(store: Store) -> None:
    await store.track(["a"])
    (first,) = await store.claim_due("w", 10, 30)
    assert first.polled_at is None  # never polled
    await store.reschedule(first, upstream_status="PROCESSING", delay=0)
    (second,) = await store.claim_due("w", 10, 30)
    assert second.polled_at is not None
    assert first.created_at <= second.polled_at <= second.claimed_at
    # A failed poll or a release is not a poll that saw it running: the time stays.
    await store.retry_later(second, error="503", delay=0, max_attempts=3)
    (third,) = await store.claim_due("w", 10, 30)
    await store.release(third)
    (fourth,) = await store.claim_due("w", 10, 30)
    assert fourth.polled_at == second.polled_at


async def test_an_expired_lease_is_reclaimed_and_the_old_holder_is_fenced(store: Store) -> None:
    await store.track(["a"])
    (old,) = await store.claim_due("stalled", 10, lease_seconds=0.05)
    assert await store.claim_due("other", 10, 30) == []  # still leased
    await asyncio.sleep(0.1)
    (new,) = await store.claim_due("other", 10, 30)
    assert new.token == old.token + 1
    result = SyncResult("DONE", "asset-1", "c", "c", [ledger_row("1")])
    with pytest.raises(LeaseLost):
        await store.mark_synced(old, result)
    with pytest.raises(LeaseLost):
        await store.mark_failed(old, "late")
    assert await store.synced_features() == []  # the stale write left nothing behind
    await store.mark_synced(new, result)
    assert (await store.counts())["synced"] == 1


async def test_heartbeat_keeps_a_lease(store: Store) -> None:
    await store.track(["a"])
    (claim,) = await store.claim_due("w", 10, lease_seconds=0.2)
    assert await store.extend_leases("w", [claim], 30) == 1
    await asyncio.sleep(0.3)
    assert await store.claim_due("other", 10, 30) == []


async def test_synced_records_ledger_and_dead_letters_and_a_redo_does_not_double(
    store: Store,
) -> None:
    await store.track(["a"])
    (claim,) = await store.claim_due("w", 10, 30)
    letters = [DeadLetter("vector 'v' holds NaN", "f3", "{}")]
    result = SyncResult(
        "DONE", "asset-1", "col", "col", [ledger_row("1"), ledger_row("2")], letters
    )
    await store.mark_synced(claim, result)
    (row,) = await store.list_tasks("a")
    assert (row["state"], row["features_synced"], row["dead_letters"]) == ("synced", 2, 1)
    assert row["lease_owner"] is None and row["synced_at"] is not None

    # A redo of the same task (e.g. after a crash before the first commit was seen).
    await store.track(["b"])
    (claim_b,) = await store.claim_due("w", 10, 30)
    redo = SyncResult("DONE", "asset-1", "col", "col", [ledger_row("1", fp="changed")], letters)
    await store.mark_synced(claim_b, redo)
    ledger = await store.synced_features()
    assert [(r["feature_id"], r["payload_fp"]) for r in ledger] == [("1", "changed"), ("2", "p")]
    assert len(await store.dead_letters("a")) == 1 and len(await store.dead_letters()) == 2


async def test_a_second_sync_of_a_task_replaces_its_dead_letters(store: Store) -> None:
    # The claim carries the task's dead-letter count: the earlier letters are cleared only
    # when there are some, and never kept beside the new ones.
    await store.enqueue_assets(["a"], collection_id="col")
    (first,) = await store.claim_due("w", 10, 30)
    assert first.dead_letters == 0
    letters = [DeadLetter("vector 'v' holds NaN", "f3", "{}")]
    await store.mark_synced(
        first, SyncResult("DONE", "a", "col", "col", [ledger_row("1")], letters)
    )
    await store.enqueue_assets(["a"], collection_id="col")  # synced again, e.g. a new backfill
    (second,) = await store.claim_due("w", 10, 30)
    assert second.dead_letters == 1
    two = [DeadLetter("vector 'v' holds inf", "f4", "{}"), DeadLetter("no vectors", "f5", "{}")]
    await store.mark_synced(second, SyncResult("DONE", "a", "col", "col", [ledger_row("1")], two))
    assert sorted(d["feature_id"] for d in await store.dead_letters("asset:a")) == ["f4", "f5"]
    await store.enqueue_assets(["a"], collection_id="col")
    (third,) = await store.claim_due("w", 10, 30)
    assert third.dead_letters == 2
    await store.mark_synced(third, SyncResult("DONE", "a", "col", "col", [ledger_row("1")]))
    assert await store.dead_letters("asset:a") == []
    (row,) = await store.list_tasks("asset:a")
    assert row["dead_letters"] == 0


async def test_attempts_are_bounded(store: Store) -> None:
    await store.track(["a"])
    for attempt in range(1, 4):
        (claim,) = await store.claim_due("w", 10, 30)
        gave_up = await store.retry_later(claim, error="503", delay=0, max_attempts=3)
        assert gave_up == (attempt == 3)
    (row,) = await store.list_tasks("a")
    assert row["state"] == "failed" and row["attempts"] == 2
    assert row["error"] == "gave up after 3 attempts: 503"


async def test_asset_jobs_are_queued_once_and_requeued_when_finished(store: Store) -> None:
    assert await store.enqueue_assets(["a", "b"], collection_id="col") == 2
    # Pending jobs are left alone (no reset of their schedule).
    assert await store.enqueue_assets(["a"], collection_id="col") == 0
    claims = await store.claim_due("w", 10, 30)
    assert {c.task_id for c in claims} == {"asset:a", "asset:b"}
    assert {c.asset_id for c in claims} == {"a", "b"}
    for claim in claims:
        await store.mark_failed(claim, "x")
    # A finished job is made pending again: a new backfill run re-syncs the asset.
    assert await store.enqueue_assets(["a", "b"], collection_id="col") == 2
    assert await store.asset_job_counts(["col"]) == {"pending": 2, "synced": 0, "failed": 0}


async def test_a_full_pass_resumes_at_its_cursor_and_a_finished_one_starts_over(
    store: Store,
) -> None:
    first = await store.begin_full_pass("col")
    assert (first.pass_no, first.pass_step, first.pass_next_page) == (1, "listing", 1)
    queued = await store.record_page(
        "col", [Listed("a", "t1"), Listed("b", "t1")], pass_no=1, next_page=2, total_pages=3
    )
    assert queued == ["a", "b"]
    resumed = await store.begin_full_pass("col")
    assert (resumed.pass_no, resumed.pass_next_page, resumed.pass_listed) == (1, 2, 2)
    await store.start_sweep("col")
    await store.finish_full_pass("col", next_in=3600, watermark=None, held=False)
    again = await store.begin_full_pass("col")
    assert (again.pass_no, again.pass_step, again.pass_next_page) == (2, "listing", 1)


async def test_a_page_queues_new_and_changed_assets_only(store: Store) -> None:
    await store.record_page("col", [Listed("a", "t1"), Listed("b", "t1")], pass_no=None)
    for claim in await store.claim_due("w", 10, 30):
        await store.mark_failed(claim, "x")
    listed = [Listed("a", "t1"), Listed("b", "t2"), Listed("c", "t1"), Listed("d", "t1", True)]
    # a unchanged, b changed, c and d new (d FAILED upstream: its job says so in ``status``).
    assert sorted(await store.record_page("col", listed, pass_no=None)) == ["b", "c", "d"]
    # ``requeue_all`` (backfill) queues every asset.
    for claim in await store.claim_due("w", 10, 30):
        await store.mark_failed(claim, "x")
    queued = await store.record_page("col", listed, pass_no=None, requeue_all=True)
    assert sorted(queued) == ["a", "b", "c", "d"]


async def test_sweep_candidates_are_known_assets_this_pass_did_not_list(store: Store) -> None:
    await store.begin_full_pass("col")
    await store.record_page("col", [Listed("a", "t"), Listed("b", "t")], pass_no=1, next_page=2)
    await store.finish_full_pass("col", next_in=0, watermark=None, held=False)
    second = await store.begin_full_pass("col")
    await store.record_page("col", [Listed("a", "t")], pass_no=second.pass_no, next_page=2)
    assert await store.sweep_candidates("col", second.pass_no) == ["b"]
    # Marked gone before the removal: still a candidate until its row is forgotten.
    await store.mark_gone("col", ["b"])
    assert await store.gone_assets("col") == ["b"]
    assert await store.sweep_candidates("col", second.pass_no) == ["b"]
    await store.forget_mirror_assets("col", ["b"])
    assert await store.sweep_candidates("col", second.pass_no) == []


async def test_the_watch_set_and_due_passes(store: Store) -> None:
    assert await store.watch_add(["x", "y"], source="cli") == ["x", "y"]
    assert await store.watch_add(["x"], source="env") == []
    # No watermark yet: a full pass comes first.
    assert sorted(await store.due_mirrors()) == [("x", "full"), ("y", "full")]
    await store.begin_full_pass("x")
    await store.record_page("x", [Listed("a", "t")], pass_no=1, next_page=2, watermark=100.0)
    await store.start_sweep("x")
    await store.finish_full_pass("x", next_in=3600, watermark=None, held=False)
    mirror = await store.mirror("x")
    assert mirror is not None and mirror.watermark == 100.0
    assert ("x", "incremental") in await store.due_mirrors()
    await store.finish_incremental("x", next_in=3600)
    assert [d for d in await store.due_mirrors() if d[0] == "x"] == []
    assert await store.watch_remove(["y", "z"]) == ["y"]
    assert [m.collection_id for m in await store.mirrors(watched_only=True)] == ["x"]


async def test_the_removal_breaker_sees_every_replicas_fetches(store: Store) -> None:
    await store.track(["t1"])
    (claim,) = await store.claim_due("w", 10, 30)
    await store.mark_synced(claim, SyncResult("DONE", "a1", "col", "col", upstream="u1"))
    await store.record_fetch("u1", "a2", gone=True)
    await store.record_fetch("u1", "a3", gone=True)
    await store.record_fetch("u2", "a4", gone=False)  # another upstream's evidence
    assert await store.recent_fetch_outcomes("u1", 50) == [True, True, False]
    assert await store.recent_fetch_outcomes("u1", 2) == [True, True]
    assert await store.recent_fetch_outcomes("u2", 50) == [False]


async def test_reindex_runs_are_recorded_per_alias(store: Store) -> None:
    assert await store.reindex("docs") is None
    run = await store.save_reindex(
        "docs", state="filling", physical="docs__v2", previous="docs__v1"
    )
    assert (run.state, run.physical, run.previous, run.finished_at) == (
        "filling",
        "docs__v2",
        "docs__v1",
        None,
    )
    done = await store.save_reindex(
        "docs", state="swapped", physical="docs__v2", previous="docs__v1"
    )
    assert done.state == "swapped" and done.finished_at is not None
    assert done.started_at == run.started_at


async def test_the_newest_write_owns_a_ledger_row_whatever_order_they_record_in(
    store: Store,
) -> None:
    await store.track(["old", "new"])
    claims = {c.task_id: c for c in await store.claim_due("w", 10, 30)}
    newer = SyncResult("DONE", "asset-1", "c", "c", [ledger_row("1", fp="new")], version=200.0)
    older = SyncResult("DONE", "asset-1", "c", "c", [ledger_row("1", fp="old")], version=100.0)
    await store.mark_synced(claims["new"], newer)
    await store.mark_synced(claims["old"], older)  # recorded last, written first
    [row] = await store.ledger(collection="c")
    assert (row.payload_fp, row.task_id) == ("new", "new")


async def test_unchanged_features_keep_their_ledger_rows(store: Store) -> None:
    await store.track(["t1", "t2"])
    claims = {c.task_id: c for c in await store.claim_due("w", 10, 30)}
    first = SyncResult("DONE", "a", "c", "c", [ledger_row("1"), ledger_row("2")], version=1.0)
    await store.mark_synced(claims["t1"], first)
    again = SyncResult(
        "DONE", "a", "c", "c", [ledger_row("1", fp="x"), ledger_row("2", fp="y")],
        version=2.0, written=frozenset({"2"}),
    )  # fmt: skip
    await store.mark_synced(claims["t2"], again)
    rows = {r.feature_id: (r.payload_fp, r.task_id) for r in await store.ledger(collection="c")}
    assert rows == {"1": ("p", "t1"), "2": ("y", "t2")}


async def test_a_requeued_asset_job_starts_a_new_run(store: Store) -> None:
    await store.enqueue_assets(["a"], collection_id="col")
    [claim] = await store.claim_due("w", 10, 30)
    await store.reschedule(claim, upstream_status="PROCESSING", delay=0)
    [claim] = await store.claim_due("w", 10, 30)
    assert claim.polls == 1
    await store.mark_failed(claim, "x")
    await asyncio.sleep(0.05)
    await store.enqueue_assets(["a"], collection_id="col")
    [again] = await store.claim_due("w", 10, 30)
    # Its timeout and poll backoff count from the new run, not from the first one.
    assert again.polls == 0 and again.created_at > claim.created_at
    assert again.upstream_done_at is None


async def test_a_named_lock_is_held_by_one_owner_until_released_or_expired(store: Store) -> None:
    assert await store.acquire_lock("reindex:docs", "a", 30)
    assert not await store.acquire_lock("reindex:docs", "b", 30)
    assert await store.acquire_lock("reindex:docs", "a", 30)  # its owner renews it
    await store.release_lock("reindex:docs", "b")  # not b's to release
    assert not await store.acquire_lock("reindex:docs", "b", 30)
    await store.release_lock("reindex:docs", "a")
    assert await store.acquire_lock("reindex:docs", "b", 0.2)
    await asyncio.sleep(0.3)
    assert await store.acquire_lock("reindex:docs", "a", 30)  # b's expired


async def test_writes_cancelled_at_any_moment_leave_the_store_writable(store: Store) -> None:
    """A caller cancelled mid-write (a stopping daemon's work, a webhook batch past its
    time) once stranded a SQLite transaction: an INSERT ... RETURNING cut off between its
    step and its fetch held the write lock on a connection the pool had discarded, and every
    later write waited (1 in 15 cancellations here, before ``@completes``)."""
    rng = random.Random(3)
    for i in range(200):
        write = asyncio.ensure_future(store.acquire_lock("x", f"owner-{i}", 0.001))
        await asyncio.sleep(rng.random() * 0.003)
        write.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await write
        assert await asyncio.wait_for(store.acquire_lock(f"y{i}", "me", 30), 5)
