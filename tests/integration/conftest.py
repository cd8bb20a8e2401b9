"""Fixtures of the integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sync_service.state.store import Store


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    """A migrated SQLite store of this test's own. Modules that run against both databases
    (``database_url``) define their own ``store``, which takes precedence."""
    s = Store.open(f"sqlite:///{tmp_path / 'sync.db'}")
    await s.migrate()
    yield s
    await s.close()
