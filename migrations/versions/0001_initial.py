"""Initial state store: tasks, synced_features, dead_letters.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "tasks",
        sa.Column("task_id", sa.String(255), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("upstream_status", sa.String(64)),
        sa.Column("asset_id", sa.String(255)),
        sa.Column("collection_id", sa.String(255)),
        sa.Column("qdrant_collection", sa.String(255)),
        sa.Column("error", sa.Text()),
        sa.Column("polls", sa.Integer(), server_default="0", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("next_poll_at", sa.Float(), nullable=False),
        sa.Column("lease_owner", sa.String(255)),
        sa.Column("lease_token", sa.Integer(), server_default="0", nullable=False),
        sa.Column("lease_expires_at", sa.Float()),
        sa.Column("features_synced", sa.Integer(), server_default="0", nullable=False),
        sa.Column("dead_letters", sa.Integer(), server_default="0", nullable=False),
        sa.Column("source", sa.String(16), server_default="track", nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.Column("upstream_done_at", sa.Float()),
        sa.Column("synced_at", sa.Float()),
        sa.PrimaryKeyConstraint("task_id", name="pk_tasks"),
    )
    op.create_index("ix_tasks_state_next_poll_at", "tasks", ["state", "next_poll_at"])

    op.create_table(
        "synced_features",
        sa.Column("feature_id", sa.String(255), nullable=False),
        sa.Column("qdrant_collection", sa.String(255), nullable=False),
        sa.Column("point_id", sa.String(36), nullable=False),
        sa.Column("task_id", sa.String(255), nullable=False),
        sa.Column("asset_id", sa.String(255)),
        sa.Column("modality", sa.String(32)),
        sa.Column("vectors", sa.Text(), nullable=False),
        sa.Column("payload_fp", sa.String(64), nullable=False),
        sa.Column("vectors_fp", sa.String(64), nullable=False),
        sa.Column("synced_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("feature_id", "qdrant_collection", name="pk_synced_features"),
    )
    op.create_index("ix_synced_features_task_id", "synced_features", ["task_id"])
    op.create_index("ix_synced_features_asset_id", "synced_features", ["asset_id"])

    op.create_table(
        "dead_letters",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("task_id", sa.String(255), nullable=False),
        sa.Column("feature_id", sa.String(255)),
        sa.Column("qdrant_collection", sa.String(255)),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("payload_excerpt", sa.Text()),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_dead_letters"),
    )
    op.create_index("ix_dead_letters_task_id", "dead_letters", ["task_id"])


def downgrade() -> None:
    op.drop_table("dead_letters")
    op.drop_table("synced_features")
    op.drop_table("tasks")
