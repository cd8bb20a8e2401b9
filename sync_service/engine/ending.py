"""How the daemon's work in flight ends when it stops: within what is left of the grace
period, then cancelled, each abandoned task's lease handed back (``engine/scheduler.py``)."""

from __future__ import annotations

import asyncio
import logging
from contextlib import suppress

from sync_service.state.records import Claim
from sync_service.state.store import Store

log = logging.getLogger("sync_service.engine.scheduler")  # its lines are the daemon's


async def finish_in_flight(
    store: Store, pending: dict[asyncio.Task[None], Claim], grace: float
) -> None:
    """Let ``pending`` work end within ``grace`` seconds; cancel and release the rest."""
    if not pending:
        return
    _, still = await asyncio.wait(pending, timeout=max(grace, 0))
    if still:
        log.warning(
            "abandoning work in flight",
            extra={"event": "shutdown_abandon", "tasks": len(still)},
        )
        for task in still:
            task.cancel()
        await asyncio.gather(*still, return_exceptions=True)
    # Work cut short gives its lease back: the next start takes it without waiting.
    for task, claim in pending.items():
        if task.cancelled():
            with suppress(Exception):
                await store.release(claim)
