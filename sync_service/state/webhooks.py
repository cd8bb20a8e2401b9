"""State-store queries for webhook events: receiving (de-duplicated on ``event_id``), claiming
and finishing them, the passes they request, and the collection deletions they hold.

Part of the state store: :class:`~sync_service.state.store.Store` inherits these. The event id
is the table's primary key, so every replica de-duplicates against the same rows; events are
claimed with a lease as tasks are (one ``UPDATE … RETURNING``; ``SKIP LOCKED`` on PostgreSQL),
so each is applied by one replica, and one that dies has its events taken over.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, delete, exists, select, update
from sqlalchemy.sql.dml import Update
from sqlalchemy.sql.elements import ColumnElement

from sync_service.state.base import Queries, completes
from sync_service.state.ledger import db_time, queue_asset_jobs
from sync_service.state.schema import (
    db_now,
    mirror_assets,
    mirrors,
    synced_features,
    webhook_events,
)

QUEUED, CLAIMED, DONE, HELD = "queued", "claimed", "done", "held"
CONFIRMED, DISMISSED = "confirmed", "dismissed"
#: The outcome of an event that made a collection's incremental pass due.
PASS_REQUESTED = "pass_requested"


@dataclass(frozen=True)
class WebhookEvent:
    """What the service keeps of one event: its id, type, and the entities it names."""

    event_id: str
    event_type: str
    namespace: str | None = None
    collection_id: str | None = None
    collection_name: str | None = None
    object_id: str | None = None

    @classmethod
    def from_row(cls, row: Any) -> WebhookEvent:
        return cls(
            row.event_id,
            row.event_type,
            row.namespace,
            row.collection_id,
            row.collection_name,
            row.object_id,
        )


@dataclass(frozen=True)
class Applied:
    """What became of one claimed event: its final ``state``, ``outcome`` and the watched
    collection it concerned (``target``)."""

    state: str
    outcome: str
    target: str | None = None


class WebhookQueries(Queries):
    """Mixed into :class:`~sync_service.state.store.Store`, which provides the plumbing."""

    @completes
    async def receive_webhooks(self, events: Sequence[WebhookEvent]) -> list[bool]:
        """Queue the events whose ids were not seen before (by any replica), in one
        transaction; for each, whether it is new (a repeat within ``events`` is not)."""
        rows: dict[str, dict[str, Any]] = {}
        for event in events:  # the first of the same id is the one queued
            rows.setdefault(
                event.event_id,
                {
                    "event_id": event.event_id,
                    "event_type": event.event_type,
                    "namespace": event.namespace,
                    "collection_id": event.collection_id,
                    "collection_name": event.collection_name,
                    "object_id": event.object_id,
                    "state": QUEUED,
                },
            )
        if not rows:
            return []
        async with self._writing() as conn:
            now = await db_time(conn)
            stmt = (
                self._insert(webhook_events)
                .on_conflict_do_nothing()
                .returning(webhook_events.c.event_id)
            )
            ordered = [rows[k] | {"received_at": now} for k in sorted(rows)]
            new = {str(r[0]) for r in (await conn.execute(stmt, ordered)).all()}
        answers = []
        for event in events:
            answers.append(event.event_id in new)
            new.discard(event.event_id)  # a second delivery in the same batch is a duplicate
        return answers

    @completes
    async def claim_webhooks(
        self, owner: str, limit: int, lease_seconds: float
    ) -> list[WebhookEvent]:
        """Lease up to ``limit`` queued events (or claimed ones whose lease ran out), oldest
        first."""
        free = (webhook_events.c.state == QUEUED) | (
            (webhook_events.c.state == CLAIMED) & (webhook_events.c.lease_expires_at < db_now())
        )
        due = (
            select(webhook_events.c.event_id)
            .where(free)
            .order_by(webhook_events.c.received_at)
            .limit(limit)
        )
        if self.dialect == "postgresql":
            due = due.with_for_update(skip_locked=True)
        stmt = (
            update(webhook_events)
            .where(webhook_events.c.event_id.in_(due.scalar_subquery()))
            .values(state=CLAIMED, owner=owner, lease_expires_at=db_now() + lease_seconds)
            .returning(*webhook_events.c)
        )
        async with self._writing() as conn:
            rows = (await conn.execute(stmt)).all()
        return sorted((WebhookEvent.from_row(r) for r in rows), key=lambda e: e.event_id)

    @completes
    async def finish_webhooks(self, owner: str, applied: Mapping[str, Applied]) -> None:
        """Record what became of claimed events (only those this owner still holds)."""
        async with self._writing() as conn:
            for event_id in sorted(applied):
                result = applied[event_id]
                await conn.execute(
                    _still_held(event_id, owner).values(
                        state=result.state,
                        outcome=result.outcome,
                        target=result.target,
                        lease_expires_at=None,
                        processed_at=db_now(),
                    )
                )

    @completes
    async def release_webhooks(self, owner: str, event_ids: Iterable[str]) -> None:
        """Hand claimed events back (their work failed): the next claim takes them again."""
        ids = sorted(set(event_ids))
        if not ids:
            return
        async with self._writing() as conn:
            await conn.execute(
                update(webhook_events)
                .where(
                    webhook_events.c.event_id.in_(ids),
                    webhook_events.c.owner == owner,
                    webhook_events.c.state == CLAIMED,
                )
                .values(state=QUEUED, owner=None, lease_expires_at=None)
            )

    async def queued_webhooks(self) -> int:
        """Events waiting to be applied (queued, or claimed by a process that died)."""
        stmt = select(webhook_events.c.event_id).where(
            webhook_events.c.state.in_([QUEUED, CLAIMED])
        )
        async with self.engine.connect() as conn:
            return len((await conn.execute(stmt)).all())

    @completes
    async def prune_webhooks(self, retention: float) -> int:
        """Forget the ids of events applied over ``retention`` seconds ago (held deletions stay
        until a person decides)."""
        async with self._writing() as conn:
            result = await conn.execute(
                delete(webhook_events).where(
                    webhook_events.c.state.in_([DONE, CONFIRMED, DISMISSED]),
                    webhook_events.c.received_at < db_now() - retention,
                )
            )
        return int(getattr(result, "rowcount", 0) or 0)

    # -- what events do -------------------------------------------------------------------

    @completes
    async def request_passes(self, owner: str, targets: Mapping[str, str]) -> list[str]:
        """Make the incremental passes of the watched collections the claimed events name
        (event id → collection) due now, and record the events, in one transaction: a pass
        that ends meanwhile sees them and keeps the due time (``finish_incremental``,
        ``finish_full_pass``). Returns the collections watched; the other events are
        recorded as ignored."""
        ids = sorted(set(targets.values()))
        if not ids:
            return []
        async with self._writing() as conn:
            rows = await conn.execute(
                update(mirrors)
                .where(mirrors.c.collection_id.in_(ids), mirrors.c.watched == 1)
                .values(incremental_due_at=db_now())
                .returning(mirrors.c.collection_id)
            )
            watched = sorted(str(r[0]) for r in rows.all())
            for event_id in sorted(targets):
                target = targets[event_id]
                applied = target in watched
                await conn.execute(
                    _still_held(event_id, owner).values(
                        state=DONE,
                        outcome=PASS_REQUESTED if applied else "ignored_unwatched",
                        target=target if applied else None,
                        lease_expires_at=None,
                        processed_at=db_now(),
                    )
                )
        return watched

    async def object_assets(self, object_id: str) -> list[tuple[str, str]]:
        """(collection id, asset id) of every asset of v1 object ``object_id`` the ledger or a
        listing knows (a v1 asset id is ``{collection_id}/{object_id}``)."""
        suffix = f"/{object_id}"
        in_ledger = select(synced_features.c.collection_id, synced_features.c.asset_id).where(
            synced_features.c.asset_id.endswith(suffix, autoescape=True)
        )
        listed = select(mirror_assets.c.collection_id, mirror_assets.c.asset_id).where(
            mirror_assets.c.asset_id.endswith(suffix, autoescape=True),
            mirror_assets.c.gone == 0,
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(in_ledger.union(listed))).all()
        return sorted({(str(c or a.rpartition("/")[0]), str(a)) for c, a in rows})

    @completes
    async def reconcile_assets(self, assets: Sequence[tuple[str, str]]) -> list[str]:
        """Queue an asset job for each (collection, asset): the job reads what upstream still
        serves and removes what it no longer does. Returns the assets queued."""
        queued: list[str] = []
        async with self._writing() as conn:
            for collection_id in sorted({c for c, _ in assets}):
                ids = [a for c, a in assets if c == collection_id]
                queued += await queue_asset_jobs(
                    conn, self._insert, ids, collection_id=collection_id, source="webhook"
                )
        return queued

    async def known_collections(self, collection_ids: Sequence[str]) -> list[str]:
        """Of these Mixpeek collections, those the watch set or the ledger knows."""
        ids = sorted(set(collection_ids))
        if not ids:
            return []
        watched = select(mirrors.c.collection_id).where(mirrors.c.collection_id.in_(ids))
        synced = select(synced_features.c.collection_id).where(
            synced_features.c.collection_id.in_(ids)
        )
        async with self.engine.connect() as conn:
            return sorted(str(r[0]) for r in (await conn.execute(watched.union(synced))).all())

    async def deleted_upstream(self) -> dict[str, dict[str, Any]]:
        """Collections a ``collection.deleted`` event says are gone, held for a person:
        collection id → the first such event (``event_id``, ``received_at``)."""
        stmt = (
            select(
                webhook_events.c.target,
                webhook_events.c.event_id,
                webhook_events.c.received_at,
            )
            .where(webhook_events.c.state == HELD)
            .order_by(webhook_events.c.received_at, webhook_events.c.event_id)
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        held: dict[str, dict[str, Any]] = {}
        for target, event_id, received_at in rows:
            held.setdefault(str(target), {"event_id": event_id, "received_at": received_at})
        return held

    @completes
    async def settle_deletion(self, collection_id: str, *, confirmed: bool) -> int:
        """A person confirmed (or dismissed) the held deletion of a collection."""
        async with self._writing() as conn:
            result = await conn.execute(
                update(webhook_events)
                .where(webhook_events.c.state == HELD, webhook_events.c.target == collection_id)
                .values(state=CONFIRMED if confirmed else DISMISSED, processed_at=db_now())
            )
        return int(getattr(result, "rowcount", 0) or 0)


def requested_since(collection_id: Any, began: Any) -> ColumnElement[bool]:
    """SQL: an event made ``collection_id``'s pass due after ``began`` (database clock)."""
    return exists().where(
        and_(
            webhook_events.c.target == collection_id,
            webhook_events.c.outcome == PASS_REQUESTED,
            webhook_events.c.processed_at >= began,
        )
    )


def _still_held(event_id: str, owner: str) -> Update:
    """An update of a claimed event, which does nothing once another replica took it over."""
    return update(webhook_events).where(
        webhook_events.c.event_id == event_id,
        webhook_events.c.owner == owner,
        webhook_events.c.state == CLAIMED,
    )
