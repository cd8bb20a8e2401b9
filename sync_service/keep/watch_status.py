"""What ``status``, ``watch list`` and ``GET /watch`` show of each watched collection.

Apart from the passes (``watch.py``) on purpose: ``status`` must start without loading Qdrant's
client, which the passes need.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # status reads a SQLite store without SQLAlchemy (state/peek.py)
    from sync_service.state.peek import StorePeek
    from sync_service.state.store import Store


async def watch_view(store: Store | StorePeek) -> list[dict[str, Any]]:
    """Each watched collection (and any other with a pass under way or a held sweep), as
    ``status``, ``watch list`` and the control API show it."""
    now = await store.now()
    known = await store.assets_known()
    # Collections a webhook says were deleted, held until a person confirms.
    deleted = await store.deleted_upstream()
    rows = []
    for m in await store.mirrors():
        if not (m.watched or m.pass_step or m.held_at is not None or m.collection_id in deleted):
            continue
        step = m.pass_step
        if step == "listing":
            total = f" of {m.pass_total_pages}" if m.pass_total_pages else ""
            step = f"full: listing page {m.pass_next_page}{total}"
        elif step is not None:
            step = "full: sweeping"
        rows.append(
            {
                "collection_id": m.collection_id,
                "watched": m.watched,
                "source": m.source,
                "last_incremental_ago": _age(now, m.last_incremental_at),
                "last_full_ago": _age(now, m.last_full_at),
                "lag_seconds": _age(now, m.watermark),
                "assets_known": known.get(m.collection_id, 0),
                "pass": step,
                "held_sweep": None
                if m.held_at is None
                else {
                    "points": m.held_points,
                    "total": m.held_total,
                    "assets": m.held_assets,
                    "held_ago": _age(now, m.held_at),
                },
                "filter_ignored": m.filter_ignored,
                "last_error": m.last_error,
                "deleted_upstream": _deleted(now, deleted.get(m.collection_id)),
            }
        )
    listed = {r["collection_id"] for r in rows}
    for collection_id in sorted(set(deleted) - listed):  # known from the ledger only
        rows.append(
            dict.fromkeys(_KEYS)
            | {
                "collection_id": collection_id,
                "watched": False,
                "assets_known": known.get(collection_id, 0),
                "filter_ignored": False,
                "deleted_upstream": _deleted(now, deleted[collection_id]),
            }
        )
    return rows


_KEYS = (
    "collection_id",
    "watched",
    "source",
    "last_incremental_ago",
    "last_full_ago",
    "lag_seconds",
    "assets_known",
    "pass",
    "held_sweep",
    "filter_ignored",
    "last_error",
    "deleted_upstream",
)


def _deleted(now: float, held: dict[str, Any] | None) -> dict[str, Any] | None:
    if held is None:
        return None
    return {"event_id": held["event_id"], "held_ago": _age(now, held["received_at"])}


def _age(now: float, then: float | None) -> float | None:
    return None if then is None else round(max(now - then, 0.0), 1)
