"""Run a state-store write to its end, through a cancellation and a short store outage."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sync_service.state.store import STORE_ERRORS

log = logging.getLogger(__name__)
T = TypeVar("T")


async def persist(step: Callable[[], Awaitable[T]], *, patience: float = 30.0) -> T:
    """Run a state-store write to its end: through a cancellation, and through a short outage.

    Cancelling a commit half-way would leave the connection in doubt, so shutdown waits for the
    write and then lets the cancellation continue. A store that is briefly unreachable (a
    restart) is retried with backoff for ``patience`` seconds: the work is done and its points
    are in Qdrant; waiting beats redoing it after the lease expires. The write is fenced by the
    lease token, so it is refused if another worker took the task meanwhile.
    """
    delay = 0.2
    deadline = time.monotonic() + patience
    while True:
        future = asyncio.ensure_future(step())
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await future
            raise
        except STORE_ERRORS as exc:
            if time.monotonic() + delay > deadline:
                raise
            log.warning(
                "state store unavailable, retrying the write: %s",
                (str(exc).splitlines() or [type(exc).__name__])[0][:200],
                extra={"event": "store_unavailable"},
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
