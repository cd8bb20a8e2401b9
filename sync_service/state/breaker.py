"""State-store queries of the removal breaker: recent asset fetches and whether each answered
404, shared by every replica, per upstream configuration (API URL and namespace).

Part of the state store: :class:`~sync_service.state.store.Store` inherits these.
"""

from __future__ import annotations

import random

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncConnection

from sync_service.state.base import Queries, completes
from sync_service.state.schema import db_now, fetch_outcomes

#: How often a successful fetch also prunes the breaker's table (a 404 always does).
PRUNE_CHANCE = 0.02
#: Outcomes kept per upstream configuration (the breaker reads far fewer).
OUTCOMES_KEPT = 500


async def prune_outcomes(conn: AsyncConnection) -> None:
    """Keep the newest outcomes only (inside the caller's transaction)."""
    newest = select(fetch_outcomes.c.id).order_by(fetch_outcomes.c.id.desc()).limit(OUTCOMES_KEPT)
    await conn.execute(delete(fetch_outcomes).where(fetch_outcomes.c.id.not_in(newest)))


class BreakerQueries(Queries):
    """Mixed into :class:`~sync_service.state.store.Store`, which provides the plumbing."""

    @completes
    async def record_fetch(self, upstream: str, asset_id: str, *, gone: bool) -> None:
        """Note an asset fetch's outcome (a 404 or not) for the removal breaker."""
        async with self._writing() as conn:
            await conn.execute(
                fetch_outcomes.insert().values(
                    upstream=upstream, asset_id=asset_id, gone=int(gone), at=db_now()
                )
            )
            if gone or random.random() < PRUNE_CHANCE:
                await prune_outcomes(conn)

    async def recent_fetch_outcomes(self, upstream: str, window: int) -> list[bool]:
        """The last ``window`` asset fetches under this upstream configuration, by every
        replica, newest first: True where it answered 404."""
        stmt = (
            select(fetch_outcomes.c.gone)
            .where(fetch_outcomes.c.upstream == upstream)
            .order_by(fetch_outcomes.c.id.desc())
            .limit(window)
        )
        async with self.engine.connect() as conn:
            return [bool(r[0]) for r in (await conn.execute(stmt)).all()]
