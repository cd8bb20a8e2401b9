"""A full pass's resume token: where another process rebuilds a v1 listing's cursor walk.

Additive: code at 0006 reads and writes this schema unchanged (``schema_compatible_from``
stays). Such code moves a pass's page without its token; the token names the page it leads
to, so a stale one is ignored.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("mirrors") as batch:
        batch.add_column(sa.Column("pass_resume", sa.Text()))


def downgrade() -> None:
    with op.batch_alter_table("mirrors") as batch:
        batch.drop_column("pass_resume")
