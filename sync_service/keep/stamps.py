"""Upstream's timestamps as watch mode reads and sends them.

``updated_at`` is kept exactly as served (what tells a changed asset apart) and read as an
instant for the watermark; Mixpeek serves naive timestamps ("MongoDB datetime format"), read as
UTC, and the filters send the same form back.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sync_service.upstream.gen_b.models import Asset


def stamp(asset: Asset) -> str | None:
    """The asset's ``updated_at`` exactly as served: what tells a changed asset apart."""
    raw = asset.raw.get("updated_at")
    return None if raw is None else str(raw)[:64]


def epoch(asset: Asset) -> float | None:
    """The asset's ``updated_at`` in epoch seconds (a naive timestamp is taken as UTC)."""
    when = asset.updated_at
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def newest(stamps: Sequence[float | None]) -> float | None:
    known = [s for s in stamps if s is not None]
    return max(known) if known else None


def changed_since(epoch: float) -> dict[str, Any]:
    return {"AND": [{"key": "updated_at", "operator": "gte", "value": iso(epoch)}]}


def iso(epoch: float) -> str:
    """A filter value in the form upstream serves its own timestamps (naive UTC, µs)."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")
