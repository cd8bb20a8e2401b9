"""The state store's tables, declared once for SQLAlchemy Core and for Alembic.

Times are stored as epoch seconds (float) taken from the *database's* clock (see ``db_now``), so
several replicas on different machines agree on when a lease expires.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Column, Float, Index, Integer, MetaData, String, Table, Text
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    }
)

#: One row per tracked Mixpeek task. ``state`` is exactly pending | synced | failed.
tasks = Table(
    "tasks",
    metadata,
    Column("task_id", String(255), primary_key=True),
    Column("state", String(16), nullable=False),
    Column("upstream_status", String(64)),
    Column("asset_id", String(255)),
    Column("collection_id", String(255)),
    Column("qdrant_collection", String(255)),
    Column("error", Text),
    # polls: status checks while not finished; attempts: consecutive failed processing runs.
    Column("polls", Integer, nullable=False, server_default="0"),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_poll_at", Float, nullable=False),
    Column("lease_owner", String(255)),
    # Fencing token: bumped on every claim, so a worker that lost its lease cannot record.
    Column("lease_token", Integer, nullable=False, server_default="0"),
    Column("lease_expires_at", Float),
    Column("features_synced", Integer, nullable=False, server_default="0"),
    Column("dead_letters", Integer, nullable=False, server_default="0"),
    Column("source", String(16), nullable=False, server_default="track"),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("upstream_done_at", Float),
    Column("synced_at", Float),
    # When a poll last saw it still running (only ``reschedule`` sets it): poll_schedule.py.
    Column("polled_at", Float),
)
Index("ix_tasks_state_next_poll_at", tasks.c.state, tasks.c.next_poll_at)
Index("ix_tasks_asset_id", tasks.c.asset_id)
#: The column values that hand a task's lease back.
RELEASED: dict[str, Any] = {"lease_owner": None, "lease_expires_at": None}

#: One row per feature whose point landed in Qdrant (the ledger).
synced_features = Table(
    "synced_features",
    metadata,
    Column("feature_id", String(255), primary_key=True),
    Column("qdrant_collection", String(255), primary_key=True),
    Column("point_id", String(36), nullable=False),
    Column("task_id", String(255), nullable=False),
    Column("asset_id", String(255)),
    # The Mixpeek collection (several may share one Qdrant collection): what a sweep compares.
    Column("collection_id", String(255)),
    Column("modality", String(32)),
    Column("vectors", Text, nullable=False),  # JSON {"name": size, ...}
    Column("payload_fp", String(64), nullable=False),
    Column("vectors_fp", String(64), nullable=False),
    Column("synced_at", Float, nullable=False),
    # The version (claim time) of the write that put this content in Qdrant: like the point's
    # ``_sync_version``, a row is only replaced by a newer write, so the two agree whatever
    # order concurrent writers finish in.
    Column("version", Float),
)
Index("ix_synced_features_task_id", synced_features.c.task_id)
Index("ix_synced_features_asset_id", synced_features.c.asset_id)
Index("ix_synced_features_collection_id", synced_features.c.collection_id)

#: Features (or whole tasks) set aside with a reason, for the operator to list and retry.
dead_letters = Table(
    "dead_letters",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("task_id", String(255), nullable=False),
    Column("feature_id", String(255)),
    Column("qdrant_collection", String(255)),
    Column("reason", Text, nullable=False),
    Column("payload_excerpt", Text),
    Column("created_at", Float, nullable=False),
)
Index("ix_dead_letters_task_id", dead_letters.c.task_id)

#: Mixpeek collections mirrored by full and incremental passes (watch mode and ``backfill``):
#: whether the watch set holds it, its watermark, when each pass is due, and the full pass in
#: progress (its number, its next page, its step), so a restart or another replica resumes it.
mirrors = Table(
    "mirrors",
    metadata,
    Column("collection_id", String(255), primary_key=True),
    Column("watched", Integer, nullable=False, server_default="0"),
    Column("source", String(16)),  # env | cli | api: who added it to the watch set
    Column("added_at", Float, nullable=False),
    # The newest upstream ``updated_at`` seen (epoch seconds, upstream's clock).
    Column("watermark", Float),
    # When the watermark last moved (database clock), and the watermark once an incremental
    # pass that started a whole overlap window after that move has listed over the window: no
    # late write can still appear below it, so a quiet collection stops re-listing the window.
    Column("watermark_moved_at", Float),
    Column("watermark_settled", Float),
    Column("incremental_due_at", Float),
    Column("full_due_at", Float),
    Column("last_incremental_at", Float),
    Column("last_full_at", Float),
    Column("pass_no", Integer, nullable=False, server_default="0"),
    Column("pass_step", String(16)),  # None (no full pass running) | listing | sweeping
    Column("pass_next_page", Integer, nullable=False, server_default="1"),
    # The listing's token for that page (``AssetPage.resume``: v1's cursor walk), if any.
    Column("pass_resume", Text),
    Column("pass_total_pages", Integer),
    Column("pass_listed", Integer, nullable=False, server_default="0"),
    Column("pass_started_at", Float),
    Column("pass_requeue_all", Integer, nullable=False, server_default="0"),
    Column("pass_force", Integer, nullable=False, server_default="0"),
    Column("pass_no_sweep", Integer, nullable=False, server_default="0"),
    # The newest ``updated_at`` upstream had when the full pass began: the watermark it leaves
    # (not the newest it listed: a change on a page already listed would fall below that).
    Column("pass_watermark", Float),
    # A sweep the delete guard held: how many points it would have removed, out of how many.
    Column("held_points", Integer),
    Column("held_total", Integer),
    Column("held_assets", Text),  # JSON list of asset ids
    Column("held_at", Float),
    Column("filter_ignored", Integer, nullable=False, server_default="0"),
    Column("last_error", Text),
    Column("updated_at", Float, nullable=False),
)

#: Every asset a listing saw, per collection: the ``updated_at`` it had (to tell changed from
#: unchanged), the full pass that last saw it, and ``gone`` once a sweep confirmed it deleted
#: upstream (the row goes when its points have gone: a killed sweep finishes the removal).
mirror_assets = Table(
    "mirror_assets",
    metadata,
    Column("collection_id", String(255), primary_key=True),
    Column("asset_id", String(255), primary_key=True),
    Column("updated_at", String(64)),
    Column("seen_pass", Integer, nullable=False, server_default="0"),
    Column("gone", Integer, nullable=False, server_default="0"),
)

#: Recent asset fetches and whether each answered 404: the removal breaker's evidence, shared
#: by every replica. ``upstream`` fingerprints the API URL and namespace, so evidence gathered
#: under another configuration (the right one, before a bad change) does not dilute it.
fetch_outcomes = Table(
    "fetch_outcomes",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("upstream", String(64), nullable=False),
    Column("asset_id", String(255)),
    Column("gone", Integer, nullable=False),
    Column("at", Float, nullable=False),
)
Index("ix_fetch_outcomes_upstream_id", fetch_outcomes.c.upstream, fetch_outcomes.c.id)

#: Re-index runs per alias: the physical collection being filled or serving, and the one it
#: replaced (kept for ``--rollback``).
reindexes = Table(
    "reindexes",
    metadata,
    Column("alias", String(255), primary_key=True),
    # filling | check_failed | catching_up | swapped | rolling_back | rolled_back
    Column("state", String(16), nullable=False),
    Column("physical", String(255), nullable=False),
    Column("previous", String(255)),
    Column("started_at", Float, nullable=False),
    Column("finished_at", Float),
    Column("updated_at", Float, nullable=False),
)

#: Named locks with an expiry (database clock): e.g. one ``reindex`` per alias at a time. A
#: holder that dies loses its lock when it expires; a live one renews it.
locks = Table(
    "locks",
    metadata,
    Column("name", String(255), primary_key=True),
    Column("owner", String(255), nullable=False),
    Column("expires_at", Float, nullable=False),
)


#: What the store knows about itself, by key: ``schema_compatible_from`` (the oldest code
#: revision that can use this schema), ``qdrant_target`` and ``qdrant_target_id`` (the Qdrant
#: it feeds, and the id the service wrote there).
service_info = Table(
    "service_info",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)


#: Failed work a person re-queued (``sync-service retry``): the failure each retry cleared.
task_history = Table(
    "task_history",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("task_id", String(255), nullable=False),
    Column("failed_error", Text),
    Column("failed_attempts", Integer, nullable=False),
    Column("failed_at", Float, nullable=False),
    Column("retried_at", Float, nullable=False),
)
Index("ix_task_history_task_id", task_history.c.task_id)


#: Webhook events received (README "Webhooks"): the event id is the primary key, so every
#: replica de-duplicates against the same rows. ``state`` is queued | claimed | done (applied or
#: ignored, ``outcome`` says which) | held (a collection deletion waiting for a person) |
#: confirmed | dismissed. Rows are pruned after ``SYNC_WEBHOOK_RETENTION``, held ones never.
webhook_events = Table(
    "webhook_events",
    metadata,
    Column("event_id", String(255), primary_key=True),
    Column("event_type", String(100), nullable=False),
    Column("namespace", String(255)),
    Column("collection_id", String(255)),
    Column("collection_name", String(255)),
    Column("object_id", String(255)),
    Column("state", String(16), nullable=False),
    #: The watched collection the event was applied to (its id as the watch set names it).
    Column("target", String(255)),
    Column("outcome", String(32)),
    Column("owner", String(255)),
    Column("lease_expires_at", Float),
    Column("received_at", Float, nullable=False),
    Column("processed_at", Float),
)
Index("ix_webhook_events_state_received_at", webhook_events.c.state, webhook_events.c.received_at)


class db_now(FunctionElement[float]):
    """The database server's current time in epoch seconds (sub-second precision)."""

    type = Float()
    inherit_cache = True


@compiles(db_now, "sqlite")
def _db_now_sqlite(_element: db_now, _compiler: SQLCompiler, **_kw: Any) -> str:
    return "((julianday('now') - 2440587.5) * 86400.0)"


@compiles(db_now, "postgresql")
def _db_now_postgresql(_element: db_now, _compiler: SQLCompiler, **_kw: Any) -> str:
    # clock_timestamp(), not now(): now() is frozen at the start of the transaction.
    return "CAST(extract(epoch FROM clock_timestamp()) AS double precision)"
