"""Webhook events received, for de-duplication across replicas and for the collection
deletions a person must confirm.

Additive: code at 0005 reads and writes this schema unchanged (``schema_compatible_from`` stays).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "webhook_events",
        sa.Column("event_id", sa.String(255), nullable=False),
        sa.Column("event_type", sa.String(100), nullable=False),
        sa.Column("namespace", sa.String(255)),
        sa.Column("collection_id", sa.String(255)),
        sa.Column("collection_name", sa.String(255)),
        sa.Column("object_id", sa.String(255)),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("target", sa.String(255)),
        sa.Column("outcome", sa.String(32)),
        sa.Column("owner", sa.String(255)),
        sa.Column("lease_expires_at", sa.Float()),
        sa.Column("received_at", sa.Float(), nullable=False),
        sa.Column("processed_at", sa.Float()),
        sa.PrimaryKeyConstraint("event_id", name="pk_webhook_events"),
    )
    op.create_index(
        "ix_webhook_events_state_received_at", "webhook_events", ["state", "received_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_webhook_events_state_received_at", table_name="webhook_events")
    op.drop_table("webhook_events")
