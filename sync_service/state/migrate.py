"""The state store's migrations: Alembic, run on an open connection."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # HEAD is read by status's SQLite peek, which does without SQLAlchemy
    from sqlalchemy.engine import Connection

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"
#: The newest revision in ``MIGRATIONS_DIR`` (a test checks it against Alembic's own head):
#: a store at it needs no migration, so Alembic is not even loaded.
HEAD = "0007"


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


#: Every revision this code knows, oldest first (file names ``NNNN_….py``).
REVISIONS = tuple(
    sorted(
        path.name[:4] for path in (MIGRATIONS_DIR / "versions").glob("[0-9][0-9][0-9][0-9]_*.py")
    )
)


class SchemaMismatch(Exception):
    """This sync-service cannot use the state store's schema as it is (one line; exit 2)."""


def needs_migration(revision: str | None, compatible_from: str | None, *, may: bool) -> bool:
    """Whether to migrate a store at ``revision`` now; :class:`SchemaMismatch` when this code
    cannot use it.

    An empty store is created by any command (there is no older replica to break). A store at
    an older revision is migrated only by a command that ``may`` (``migrate``, and ``run``
    unless ``SYNC_AUTO_MIGRATE=false``): other commands only read the schema. A newer schema
    is used as it is when its ``compatible_from`` says this code is recent enough (additive
    migrations), and is never migrated down.
    """
    if revision is None:
        return True
    if revision == HEAD:
        return False
    if revision in REVISIONS:
        if may:
            return True
        raise SchemaMismatch(
            f"the state store's schema {revision} is older than this sync-service ({HEAD}): "
            "run `sync-service migrate` (or start `sync-service run`) first"
        )
    if compatible_from is not None and compatible_from in REVISIONS:
        return False  # newer, but additive since a revision this code has
    raise SchemaMismatch(
        f"state store schema {revision} is newer than this sync-service ({HEAD}): upgrade it"
    )
