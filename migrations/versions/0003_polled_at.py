"""When a poll last saw each task still running (the learned poll schedule's evidence).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("polled_at", sa.Float()))


def downgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("polled_at")
