"""Backfill cursors, re-index runs, named locks, and the version of each ledger row.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("synced_features") as batch:
        batch.add_column(sa.Column("version", sa.Float()))
    op.create_table(
        "backfills",
        sa.Column("collection_id", sa.String(255), nullable=False),
        sa.Column("next_page", sa.Integer(), nullable=False, server_default="1"),
        sa.Column("total_pages", sa.Integer()),
        sa.Column("assets_listed", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("finished_at", sa.Float()),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("collection_id", name="pk_backfills"),
    )
    op.create_table(
        "reindexes",
        sa.Column("alias", sa.String(255), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("physical", sa.String(255), nullable=False),
        sa.Column("previous", sa.String(255)),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("finished_at", sa.Float()),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("alias", name="pk_reindexes"),
    )
    op.create_table(
        "locks",
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_locks"),
    )


def downgrade() -> None:
    op.drop_table("locks")
    with op.batch_alter_table("synced_features") as batch:
        batch.drop_column("version")
    op.drop_table("reindexes")
    op.drop_table("backfills")
