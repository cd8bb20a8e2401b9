"""Which Qdrant a state store feeds: recorded on first use, checked by every process after.

Two daemons on one state store but different ``QDRANT_URL``/``QDRANT_PATH`` would split the work
between two Qdrants, each half-filled while ``status`` says all is synced. So the store records
its target (the server URL or the embedded folder) and an id it also writes into that Qdrant;
a process pointed elsewhere refuses with one line saying both, until ``sync-service rebind``.
"""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from sync_service.qdrant.faults import SinkUnavailable
from sync_service.settings import Settings

if TYPE_CHECKING:  # Qdrant's client and SQLAlchemy: loaded by the callers when they need them
    from sync_service.qdrant.sink import QdrantSink
    from sync_service.state.store import Store

log = logging.getLogger(__name__)

REBIND_MEANS = (
    "the state store's ledger describes the points of the Qdrant it fed before; run "
    "`sync-service verify --repair` (or `sync-service backfill` for watched collections) to "
    "bring the new one in step"
)


class TargetMismatch(Exception):
    """This process points at another Qdrant than the state store feeds (one line; exit 2)."""


def describe_target(settings: Settings) -> str:
    """The Qdrant the settings point at, as the store records it."""
    if settings.qdrant_url:
        return "url " + settings.qdrant_url.strip().rstrip("/")
    return "path " + str(Path(settings.qdrant_path).expanduser().resolve())


def _shown(target: str) -> str:
    kind, _, where = target.partition(" ")
    return f"{'QDRANT_URL' if kind == 'url' else 'QDRANT_PATH'}={where}"


async def check_target(store: Store, settings: Settings) -> None:
    """Record the target on first use, else refuse another one (before Qdrant is opened)."""
    target = describe_target(settings)
    fresh = {"qdrant_target": target, "qdrant_target_id": str(uuid.uuid4())}
    await store.set_info(fresh, only_if_unset=True)
    recorded = await store.info("qdrant_target")
    if recorded != target:
        raise TargetMismatch(
            f"this state store feeds the Qdrant at {_shown(recorded or '?')}, but this process "
            f"points at {_shown(target)}: fix the setting, or run `sync-service rebind` to make "
            "the new one its Qdrant"
        )


async def check_mark(store: Store, sink: QdrantSink, settings: Settings) -> None:
    """Check that the Qdrant carries this store's mark: mark it on first use; refuse one that
    lacks it once the store has synced (another Qdrant at the same address, or a wiped one).
    A Qdrant that does not answer is checked at the next start: the daemon waits for it as
    for any outage."""
    store_id = await store.info("qdrant_target_id")
    if store_id is None:
        return
    try:
        if await sink.has_mark(store_id):
            return
        if not await store.has_synced():
            await sink.mark(store_id)
            return
    except SinkUnavailable as exc:
        log.warning(
            "Qdrant's mark could not be checked (%s): it is checked at the next start",
            exc,
            extra={"event": "qdrant_mark_unchecked"},
        )
        return
    raise TargetMismatch(
        f"the Qdrant at {_shown(describe_target(settings))} does not carry this state "
        f"store's mark (id {store_id[:8]}): it is not the Qdrant the store fed, or it was "
        "wiped; run `sync-service rebind`, then `sync-service verify --repair`"
    )


async def rebind(store: Store, sink: QdrantSink, settings: Settings) -> tuple[str | None, str]:
    """Make the Qdrant the settings point at this store's: (the old target, the new one)."""
    target = describe_target(settings)
    before = await store.info("qdrant_target")
    store_id = await store.info("qdrant_target_id") or str(uuid.uuid4())
    await store.set_info({"qdrant_target": target, "qdrant_target_id": store_id})
    await sink.mark(store_id)
    return (None if before is None else _shown(before)), _shown(target)
