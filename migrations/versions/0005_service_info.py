"""What the state store knows about itself: which Qdrant it feeds, and from which code
revision on its schema can be used (a newer schema an older sync-service may still run on);
and the history of failed work that was retried.

Additive: code at 0004 reads and writes this schema unchanged, so ``compatible_from`` is 0004.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    info = op.create_table(
        "service_info",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text(), nullable=False),
    )
    # The oldest code revision that can run on this schema. Every migration sets it: to its
    # own revision when older code cannot use the schema, else it leaves it where it was.
    op.bulk_insert(info, [{"key": "schema_compatible_from", "value": "0004"}])
    op.create_table(
        "task_history",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("task_id", sa.String(255), nullable=False),
        sa.Column("failed_error", sa.Text()),
        sa.Column("failed_attempts", sa.Integer(), nullable=False),
        sa.Column("failed_at", sa.Float(), nullable=False),
        sa.Column("retried_at", sa.Float(), nullable=False),
    )
    op.create_index("ix_task_history_task_id", "task_history", ["task_id"])


def downgrade() -> None:
    op.drop_index("ix_task_history_task_id", table_name="task_history")
    op.drop_table("task_history")
    op.drop_table("service_info")
