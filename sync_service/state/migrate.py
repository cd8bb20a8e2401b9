"""The state store's migrations: Alembic, run on an open connection."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # HEAD is read by status's SQLite peek, which does without SQLAlchemy
    from sqlalchemy.engine import Connection

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"
#: The newest revision in ``MIGRATIONS_DIR`` (a test checks it against Alembic's own head):
#: a store at it needs no migration, so Alembic is not even loaded.
HEAD = "0004"


def alembic_config(connection: Connection | None = None) -> Any:
    """Alembic's configuration for the top-level ``migrations/`` folder."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


def run_alembic(connection: Connection, action: str, revision: str) -> None:
    from alembic import command

    getattr(command, action)(alembic_config(connection), revision)
