"""``verify`` over real HTTP to the emulator, embedded Qdrant and SQLite, all in tmp_path.

Each test syncs a few seeded assets through the real daemon, damages Qdrant or upstream in one
known way, and checks that verify names the damage, that ``repair`` undoes it, and that the
result matches what the emulator serves (the independent oracle of ``tests/support.py``).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from qdrant_client import models

from sync_service.emulator import EmulatorServer
from sync_service.engine.points import SparseValues
from sync_service.engine.scheduler import Daemon
from sync_service.keep.forget import DeleteGuardError, apply_removal, plan_removal
from sync_service.keep.verify import VerifyReport, same_vectors, verify
from sync_service.qdrant.sink import SinkUnavailable
from sync_service.runtime import Service, open_service
from tests.conftest import API_KEY, local_settings
from tests.support import IN_STEP, compare_points, expected_point, served

COLLECTION = "verify-col"
ASSETS = 4
HEADERS = {"Authorization": f"Bearer {API_KEY}"}


class Synced:
    """A service whose ledger and Qdrant hold ``ASSETS`` synced assets."""

    def __init__(self, service: Service, emulator: EmulatorServer, seeded: dict[str, Any]):
        self.service, self.emulator = service, emulator
        self.asset_ids: list[str] = seeded["asset_ids"]
        self.task_ids: list[str] = seeded["task_ids"]

    async def drain(self) -> None:
        settings = self.service.settings
        daemon = Daemon.from_settings(self.service.store, self.service.pipeline, settings)
        assert await daemon.run(drain=True) == 0

    async def points(self, asset_id: str | None = None) -> list[models.Record]:
        records = await self.service.sink.scroll_all(COLLECTION)
        return [
            r for r in records if asset_id is None or (r.payload or {}).get("asset_id") == asset_id
        ]

    def oracle(self, task_ids: dict[str, str], records: list[models.Record]) -> dict[str, int]:
        """Compare ``records`` with what the emulator serves for each asset → its task id."""
        expected = []
        for task_id in task_ids.values():
            asset, features = served(self.emulator.url, API_KEY, task_id)
            expected += [expected_point(task_id, asset, f) for f in features]
        return compare_points(expected, records)


@pytest.fixture
def guard() -> float:
    return 0.5  # the repair tests delete 3 of 8 points; the guard test sets its own


@pytest.fixture
def distance() -> str:
    return "cosine"


@pytest.fixture
async def synced(
    tmp_path: Path, emulator: EmulatorServer, guard: float, distance: str
) -> AsyncIterator[Synced]:
    settings = local_settings(
        tmp_path,
        emulator,
        SYNC_DELETE_GUARD=guard,
        # Unknown points written within a lease of now count as in flight, not as extras.
        SYNC_LEASE_SECONDS=1.0,
        SYNC_DISTANCE=distance,
    )
    # 20 s videos: two segments, so two points per asset and eight in all.
    seeded = emulator.seed(COLLECTION, ASSETS, modality="video", duration=20)
    async with open_service(settings) as service:
        await service.store.track(seeded["task_ids"])
        state = Synced(service, emulator, seeded)
        await state.drain()
        assert len(await state.points()) == 2 * ASSETS
        yield state


def counts(report: VerifyReport, after: bool = False) -> dict[str, int]:
    [check] = report.after if after and report.after is not None else report.checks
    return {kind: n for kind, n in check.counts.items() if n}


async def test_a_clean_sync_has_no_drift(synced: Synced) -> None:
    progress: list[tuple[str, int, int]] = []
    report = await verify(synced.service, on_progress=lambda *p: progress.append(p))
    [check] = report.checks
    assert not report.drift and counts(report) == {}
    assert (check.points, check.ledger_rows, len(check.sampled)) == (8, 8, ASSETS)
    assert (f"{COLLECTION}: points", 8, 8) in progress
    assert (f"{COLLECTION}: sample", ASSETS, ASSETS) in progress
    lines = report.summary_lines()
    assert "drift: no" in lines and any("in step" in line for line in lines)
    with pytest.raises(ValueError, match="unknown collection"):
        await verify(synced.service, collections=["no-such-collection"])


async def test_a_point_deleted_in_qdrant_is_missing(synced: Synced) -> None:
    victim = (await synced.points(synced.asset_ids[0]))[0]
    await synced.service.sink.delete_points(COLLECTION, [str(victim.id)])
    report = await verify(synced.service, collections=[COLLECTION])
    assert report.drift
    assert counts(report) == {"missing": 1, "not_synced": 1}
    assert report.checks[0].examples["missing"] == [str(victim.id)]


async def test_a_point_the_ledger_does_not_know_is_extra(synced: Synced) -> None:
    stranger = await _upsert_stranger(synced)
    report = await verify(synced.service)
    assert counts(report) == {"extra": 1}
    assert report.checks[0].examples["extra"] == [stranger]


async def test_an_overwritten_payload_differs(synced: Synced) -> None:
    victim = (await synced.points(synced.asset_ids[1]))[0]
    await synced.service.sink.client.set_payload(
        COLLECTION, {"description": "tampered"}, points=[str(victim.id)], wait=True
    )
    report = await verify(synced.service)
    assert counts(report) == {"differ": 1, "payload_differs": 1}


@pytest.mark.parametrize("distance", ["cosine", "dot"])
async def test_changed_vector_values_differ_in_the_sample_and_are_repaired(
    synced: Synced, distance: str
) -> None:
    assert not (await verify(synced.service, sample=ASSETS)).drift  # no false alarm either way
    victim = (await synced.points(synced.asset_ids[3]))[0]
    stored: dict[str, list[float]] = victim.vector  # type: ignore[assignment]  # dense only
    bent: dict[str, Any] = {name: [-x for x in values] for name, values in stored.items()}
    await synced.service.sink.client.update_vectors(
        COLLECTION, [models.PointVectors(id=victim.id, vector=bent)], wait=True
    )
    # Same names and sizes: only the comparison with upstream can see new values.
    report = await verify(synced.service, sample=ASSETS, repair=True)
    assert counts(report) == {"vectors_differ": 1}
    assert not report.drift and report.repaired is not None
    assert report.repaired["re-synced assets"] == 1


async def test_an_asset_deleted_upstream_is_gone(synced: Synced) -> None:
    _delete_upstream(synced, synced.asset_ids[2])
    report = await verify(synced.service, sample=ASSETS)
    assert counts(report) == {"gone": 1}
    assert report.checks[0].examples["gone"] == [synced.asset_ids[2]]


async def test_repair_fixes_every_kind_and_a_second_verify_is_clean(synced: Synced) -> None:
    service, sink = synced.service, synced.service.sink
    missing = (await synced.points(synced.asset_ids[0]))[0]
    await sink.delete_points(COLLECTION, [str(missing.id)])
    tampered = (await synced.points(synced.asset_ids[1]))[0]
    await sink.client.set_payload(
        COLLECTION, {"description": "tampered"}, points=[str(tampered.id)], wait=True
    )
    stranger = await _upsert_stranger(synced)
    _delete_upstream(synced, synced.asset_ids[2])

    report = await verify(service, sample=ASSETS, repair=True)
    assert counts(report) == {
        "missing": 1,
        "not_synced": 1,
        "differ": 1,
        "payload_differs": 1,
        "extra": 1,
        "gone": 1,
    }
    # The stranger and the gone asset's two points deleted; two assets re-synced.
    assert report.repaired == {
        "deleted points": 3,
        "re-synced assets": 2,
        "failed": 0,
        "left pending": 0,
    }
    assert counts(report, after=True) == {} and not report.drift
    assert any(line.startswith("repair: ") for line in report.summary_lines())

    again = await verify(service, sample=ASSETS)
    assert not again.drift and again.checks[0].points == again.checks[0].ledger_rows == 6
    records = await synced.points()
    assert stranger not in {str(r.id) for r in records}
    assert await service.store.ledger(asset_id=synced.asset_ids[2]) == []
    alive = dict(zip(synced.asset_ids, synced.task_ids, strict=True))
    del alive[synced.asset_ids[2]]
    assert synced.oracle(alive, records) == IN_STEP


@pytest.mark.parametrize("guard", [0.1])
async def test_the_delete_guard_refuses_a_large_repair_unless_forced(synced: Synced) -> None:
    service = synced.service
    missing = (await synced.points(synced.asset_ids[0]))[0]
    await service.sink.delete_points(COLLECTION, [str(missing.id)])
    _delete_upstream(synced, synced.asset_ids[3])  # two of seven points: over 10 %

    with pytest.raises(DeleteGuardError, match="SYNC_DELETE_GUARD"):
        await verify(service, sample=ASSETS, repair=True)
    # Refused means nothing changed: no deletion, and no re-sync either.
    assert len(await synced.points()) == 7
    assert await service.store.asset_job_counts(source="repair") == {
        "pending": 0,
        "synced": 0,
        "failed": 0,
    }
    assert counts(await verify(service, sample=ASSETS)) == {
        "missing": 1,
        "not_synced": 1,
        "gone": 1,
    }

    forced = await verify(service, sample=ASSETS, repair=True, force=True)
    assert forced.repaired is not None and forced.repaired["deleted points"] == 2
    assert not forced.drift and len(await synced.points()) == 6


@pytest.mark.parametrize(
    ("mode", "found"),
    [
        # The asset object in every payload changes too (its task_id and updated_at).
        ("vectors", {"payload_differs": 2, "vectors_differ": 2}),
        ("payload", {"payload_differs": 2}),
        ("features", {"payload_differs": 1, "not_synced": 1, "stale": 1}),
    ],
)
async def test_a_reindexed_asset_is_drift_in_the_sample_and_is_repaired(
    synced: Synced, mode: str, found: dict[str, int]
) -> None:
    asset_id = synced.asset_ids[0]
    answer = httpx.post(
        f"{synced.emulator.url}/_emulator/assets/{asset_id}/reindex",
        json={"mode": mode},
        timeout=10,
    )
    if answer.status_code in (404, 405):
        pytest.skip("the emulator has no re-index control route yet")
    task_id = answer.raise_for_status().json()["task_id"]
    _wait_done(synced, asset_id)

    report = await verify(synced.service, sample=ASSETS, repair=True)
    # The ledger still matches Qdrant: only the comparison with upstream sees the change.
    assert counts(report) == found
    assert report.repaired == {
        "deleted points": 0,
        "re-synced assets": 1,
        "failed": 0,
        "left pending": 0,
    }
    assert not report.drift
    records = await synced.points(asset_id)
    assert synced.oracle({asset_id: task_id}, records) == IN_STEP
    assert not (await verify(synced.service, sample=ASSETS)).drift


def test_vectors_are_compared_as_qdrant_stores_them() -> None:
    dense = [3.0, 4.0]
    assert same_vectors({"v": dense}, {"v": [0.6, 0.8]}, cosine=True)
    assert not same_vectors({"v": dense}, {"v": [0.6, 0.8]}, cosine=False)
    assert same_vectors({"v": dense}, {"v": [3.0, 4.0000001]}, cosine=False)
    assert not same_vectors({"v": dense}, {"w": [0.6, 0.8]}, cosine=True)
    sparse = SparseValues(indices=[7, 2], values=[0.5, 0.25])
    reordered = models.SparseVector(indices=[2, 7], values=[0.25, 0.5])
    assert same_vectors({"s": sparse}, {"s": reordered}, cosine=True)  # never normalised
    changed = models.SparseVector(indices=[2, 7], values=[0.25, 0.4])
    assert not same_vectors({"s": sparse}, {"s": changed}, cosine=True)
    assert not same_vectors({"s": sparse}, {"s": [0.25, 0.5]}, cosine=True)


async def _upsert_stranger(synced: Synced) -> str:
    """A point in the collection that no sync wrote (same vector names, unknown asset)."""
    schema = await synced.service.sink.schema(COLLECTION)
    point_id = str(uuid.uuid4())
    vectors = {name: [0.1] * (spec.size or 1) for name, spec in schema.items() if not spec.sparse}
    point = models.PointStruct(id=point_id, vector=vectors, payload={"asset_id": "stranger"})
    await synced.service.sink.client.upsert(COLLECTION, [point], wait=True)
    return point_id


def _delete_upstream(synced: Synced, asset_id: str) -> None:
    httpx.delete(
        f"{synced.emulator.url}/assets/{asset_id}", headers=HEADERS, timeout=10
    ).raise_for_status()


def _wait_done(synced: Synced, asset_id: str) -> None:
    """A re-index serves its content at once but the asset is DONE only after processing."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        asset = httpx.get(f"{synced.emulator.url}/assets/{asset_id}", headers=HEADERS).json()
        if asset["status"] == "DONE":
            return
        time.sleep(0.05)
    raise AssertionError(f"asset {asset_id} did not become DONE again")


async def test_a_forget_cut_short_leaves_extras_that_repair_deletes(
    synced: Synced, monkeypatch: pytest.MonkeyPatch
) -> None:
    """forget drops the ledger rows first: a crash before the Qdrant delete leaves extras (which
    repair deletes), never rows for missing points (which repair would re-sync back)."""
    sink, store, gone = synced.service.sink, synced.service.store, synced.asset_ids[0]

    async def qdrant_down(name: str, ids: object) -> None:
        raise SinkUnavailable("Qdrant unreachable")

    removal = await plan_removal(store, sink, [gone])
    monkeypatch.setattr(sink, "delete_points", qdrant_down)
    with pytest.raises(SinkUnavailable):
        await apply_removal(store, sink, removal)
    monkeypatch.undo()
    assert len(await synced.points(gone)) == 2 and not await store.ledger(asset_id=gone)

    # Right away they may be a running daemon's writes not recorded yet: left alone.
    report = await verify(synced.service, collections=[COLLECTION], sample=0, repair=True)
    assert counts(report) == {} and report.checks[0].in_flight == 2
    assert len(await synced.points(gone)) == 2
    await asyncio.sleep(1.2)  # older than a lease: no writer can still record them
    report = await verify(synced.service, collections=[COLLECTION], sample=0, repair=True)
    assert counts(report) == {"extra": 2}
    assert not report.drift and await synced.points(gone) == []


async def test_an_unknown_point_of_a_known_asset_is_resynced_not_deleted(synced: Synced) -> None:
    """E.g. a feature a re-index's fill wrote that no ledger row describes yet: still upstream,
    so the repair re-syncs its asset (which records it) instead of deleting it."""
    store, asset_id = synced.service.store, synced.asset_ids[1]
    row = (await store.ledger(asset_id=asset_id))[0]
    await store.forget_features(COLLECTION, [row.feature_id])
    await asyncio.sleep(1.2)  # older than a lease
    report = await verify(synced.service, collections=[COLLECTION], sample=0, repair=True)
    assert counts(report) == {"extra": 1} and not report.drift
    assert report.repaired is not None and report.repaired["deleted points"] == 0
    assert row.point_id in {str(p.id) for p in await synced.points(asset_id)}
    assert row.feature_id in {r.feature_id for r in await store.ledger(asset_id=asset_id)}
