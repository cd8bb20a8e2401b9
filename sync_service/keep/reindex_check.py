"""Re-index step 5: check a filled collection before the alias may be swapped to it.

The check passes when the collection holds exactly the points the fill planned (not far fewer
than the collection it replaces) and a random sample of them matches what upstream served.
"""

from __future__ import annotations

from sync_service.keep.reindex_fill import Written
from sync_service.keep.verify import same_vectors
from sync_service.qdrant.sink import synced_payload
from sync_service.runtime import Service
from sync_service.settings import Distance


async def check_fill(
    service: Service, current: str, physical: str, fill: Written, distance: Distance
) -> tuple[str, bool]:
    """Whether ``physical`` holds exactly the planned points, and the sample as planned."""
    sink, guard = service.sink, service.settings.delete_guard
    held = set(await sink.point_ids(physical))
    # Points a crashed fill wrote for features gone upstream since: no ledger would know them.
    await sink.delete_points(physical, sorted(held - fill.expected))
    count, before = await sink.count(physical), await sink.count(current)
    if before and (before - count) / before > guard:
        # Upstream 404ing most assets is likelier a wrong key or namespace than a mass deletion.
        return f"{count} point(s) where {current} has {before}: over SYNC_DELETE_GUARD", False
    if count != len(fill.expected):
        lost = sorted(fill.expected - held)[:3]
        return f"{count} point(s), {len(fill.expected)} planned (lost e.g. {lost})", False
    ids = [p.point_id for p in fill.sample]
    records = {str(r.id): r for r in await sink.retrieve(physical, ids)} if ids else {}
    cosine = distance is Distance.cosine
    wrong = [
        p.point_id
        for p in fill.sample
        if (r := records.get(p.point_id)) is None
        or synced_payload(r) != p.payload
        or not same_vectors(p.vectors, r.vector, cosine=cosine)
    ]
    if wrong:
        return f"{len(wrong)} of {len(ids)} sampled point(s) differ: {wrong[:3]}", False
    return f"{count} point(s) as planned; {len(ids)} sampled point(s) match upstream", True
