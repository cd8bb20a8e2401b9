"""Mirroring whole collections: the watch set and pass state, the assets listings saw, the
shared removal breaker, and each ledger row's Mixpeek collection. Replaces ``backfills``.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "mirrors",
        sa.Column("collection_id", sa.String(255), nullable=False),
        sa.Column("watched", sa.Integer(), server_default="0", nullable=False),
        sa.Column("source", sa.String(16)),
        sa.Column("added_at", sa.Float(), nullable=False),
        sa.Column("watermark", sa.Float()),
        sa.Column("watermark_moved_at", sa.Float()),
        sa.Column("watermark_settled", sa.Float()),
        sa.Column("incremental_due_at", sa.Float()),
        sa.Column("full_due_at", sa.Float()),
        sa.Column("last_incremental_at", sa.Float()),
        sa.Column("last_full_at", sa.Float()),
        sa.Column("pass_no", sa.Integer(), server_default="0", nullable=False),
        sa.Column("pass_step", sa.String(16)),
        sa.Column("pass_next_page", sa.Integer(), server_default="1", nullable=False),
        sa.Column("pass_total_pages", sa.Integer()),
        sa.Column("pass_listed", sa.Integer(), server_default="0", nullable=False),
        sa.Column("pass_started_at", sa.Float()),
        sa.Column("pass_requeue_all", sa.Integer(), server_default="0", nullable=False),
        sa.Column("pass_force", sa.Integer(), server_default="0", nullable=False),
        sa.Column("pass_no_sweep", sa.Integer(), server_default="0", nullable=False),
        sa.Column("pass_watermark", sa.Float()),
        sa.Column("held_points", sa.Integer()),
        sa.Column("held_total", sa.Integer()),
        sa.Column("held_assets", sa.Text()),
        sa.Column("held_at", sa.Float()),
        sa.Column("filter_ignored", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_error", sa.Text()),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("collection_id", name="pk_mirrors"),
    )
    op.create_table(
        "mirror_assets",
        sa.Column("collection_id", sa.String(255), nullable=False),
        sa.Column("asset_id", sa.String(255), nullable=False),
        sa.Column("updated_at", sa.String(64)),
        sa.Column("seen_pass", sa.Integer(), server_default="0", nullable=False),
        sa.Column("gone", sa.Integer(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("collection_id", "asset_id", name="pk_mirror_assets"),
    )
    op.create_table(
        "fetch_outcomes",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("upstream", sa.String(64), nullable=False),
        sa.Column("asset_id", sa.String(255)),
        sa.Column("gone", sa.Integer(), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_fetch_outcomes"),
    )
    op.create_index("ix_fetch_outcomes_upstream_id", "fetch_outcomes", ["upstream", "id"])
    op.create_index("ix_tasks_asset_id", "tasks", ["asset_id"])
    with op.batch_alter_table("synced_features") as batch:
        batch.add_column(sa.Column("collection_id", sa.String(255)))
        batch.create_index("ix_synced_features_collection_id", ["collection_id"])
    # Rows written before this revision: their task knows the Mixpeek collection.
    op.execute(
        "UPDATE synced_features SET collection_id = (SELECT tasks.collection_id FROM tasks "
        "WHERE tasks.task_id = synced_features.task_id)"
    )
    op.drop_table("backfills")


def downgrade() -> None:
    op.create_table(
        "backfills",
        sa.Column("collection_id", sa.String(255), nullable=False),
        sa.Column("next_page", sa.Integer(), server_default="1", nullable=False),
        sa.Column("total_pages", sa.Integer()),
        sa.Column("assets_listed", sa.Integer(), server_default="0", nullable=False),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("finished_at", sa.Float()),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("collection_id", name="pk_backfills"),
    )
    with op.batch_alter_table("synced_features") as batch:
        batch.drop_index("ix_synced_features_collection_id")
        batch.drop_column("collection_id")
    op.drop_index("ix_tasks_asset_id", "tasks")
    op.drop_table("fetch_outcomes")
    op.drop_table("mirror_assets")
    op.drop_table("mirrors")
