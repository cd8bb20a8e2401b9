"""Backup and restore: an older Qdrant copy restored under a newer state store converges.

README "Backup and restore" says: back up Qdrant first, then the state store, so a restored
store is never older than the restored Qdrant; then ``verify --repair`` heals what the Qdrant copy
lacks. This test does exactly that with embedded Qdrant and SQLite in tmp_path, against the
emulator over real HTTP: sync some assets, copy the Qdrant folder while no client holds it (the
backup), then change the world (new assets, re-indexed assets: new vectors, payloads and a
replaced feature, and an asset deleted upstream and removed), restore the old copy, and check
that one ``verify --repair`` brings back every point the state store says exists, with the
content upstream serves, and removes the points of the deleted asset that the old copy still
held.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import httpx
from qdrant_client import models

from sync_service.emulator import EmulatorServer
from sync_service.engine.scheduler import Daemon
from sync_service.keep.forget import apply_removal, plan_removal
from sync_service.keep.verify import verify
from sync_service.runtime import Service, open_service
from tests.conftest import API_KEY, local_settings
from tests.support import IN_STEP, compare_points, expected_point, served

COLLECTION = "backup-col"
HEADERS = {"Authorization": f"Bearer {API_KEY}"}


async def _drain(service: Service) -> None:
    daemon = Daemon.from_settings(service.store, service.pipeline, service.settings)
    assert await daemon.run(drain=True) == 0


def _reindex(emulator: EmulatorServer, asset_id: str, mode: str) -> str:
    answer = httpx.post(
        f"{emulator.url}/_emulator/assets/{asset_id}/reindex", json={"mode": mode}, timeout=10
    )
    return str(answer.raise_for_status().json()["task_id"])


def _snapshot(records: list[models.Record]) -> dict[str, tuple[Any, Any]]:
    return {str(r.id): (r.payload, r.vector) for r in records}


def _oracle(
    emulator: EmulatorServer, task_of: dict[str, str], records: list[Any]
) -> dict[str, int]:
    expected = []
    for task_id in task_of.values():
        asset, features = served(emulator.url, API_KEY, task_id)
        expected += [expected_point(task_id, asset, f) for f in features]
    return compare_points(expected, records)


async def test_an_older_qdrant_under_a_newer_state_store_is_repaired(
    tmp_path: Path, emulator: EmulatorServer
) -> None:
    settings = local_settings(
        tmp_path,
        emulator,
        SYNC_DELETE_GUARD=0.5,  # the repair deletes the removed asset's points
        SYNC_LEASE_SECONDS=1.0,  # unknown points older than a lease are not "in flight"
    )
    qdrant_dir, backup_dir = Path(settings.qdrant_path), tmp_path / "qdrant-backup"
    first = emulator.seed(COLLECTION, 4, modality="video", duration=20)  # two points each
    task_of = dict(zip(first["asset_ids"], first["task_ids"], strict=True))

    # 1. Synced, then backed up while no client holds the embedded folder.
    async with open_service(settings) as service:
        await service.store.track(first["task_ids"])
        await _drain(service)
        assert len(await service.sink.scroll_all(COLLECTION)) == 8
    shutil.copytree(qdrant_dir, backup_dir)

    # 2. Life goes on: new assets, re-indexed ones, one deleted upstream and removed.
    later = emulator.seed(COLLECTION, 3, modality="video", duration=20)
    task_of |= dict(zip(later["asset_ids"], later["task_ids"], strict=True))
    changed, replaced, gone = first["asset_ids"][:3]
    task_of[changed] = _reindex(emulator, changed, "all")  # new vectors and payload
    task_of[replaced] = _reindex(emulator, replaced, "features")  # one feature id replaced
    httpx.delete(f"{emulator.url}/assets/{gone}", headers=HEADERS).raise_for_status()
    del task_of[gone]
    async with open_service(settings) as service:
        await service.store.track([*later["task_ids"], task_of[changed], task_of[replaced]])
        await _drain(service)
        await apply_removal(
            service.store, service.sink, await plan_removal(service.store, service.sink, [gone])
        )
        truth = await service.sink.scroll_all(COLLECTION)
        assert _oracle(emulator, task_of, truth) == IN_STEP
        assert len(truth) == 2 * 6
        assert not (await verify(service, sample=10)).drift

    # 3. Disaster: Qdrant comes back from the backup; the state store is the newer one.
    shutil.rmtree(qdrant_dir)
    shutil.copytree(backup_dir, qdrant_dir)
    time.sleep(1.2)  # the restored points were written longer than a lease ago anyway

    async with open_service(settings) as service:
        before = await service.sink.scroll_all(COLLECTION)
        assert _oracle(emulator, task_of, before) != IN_STEP  # the old copy is behind

        report = await verify(service, sample=10, repair=True)
        [check] = report.checks
        found = {kind: n for kind, n in check.counts.items() if n}
        print(f"restore: verify found {found}, repaired {report.repaired}")
        assert report.drift is False and report.after is not None
        # The three new assets and the two features a re-index put in place of others ...
        assert found["missing"] == 2 * 3 + 2
        # ... the replaced features and the removed asset, back from the old copy ...
        assert found["extra"] == 2 + 2
        assert found["differ"] == 2  # ... and the old content of both re-indexed assets.
        assert report.repaired is not None and report.repaired["failed"] == 0

        # Converged: every ledger row has its point with the content upstream serves, the
        # removed asset's points are gone again, and the result is what it was before.
        after = await service.sink.scroll_all(COLLECTION)
        assert _oracle(emulator, task_of, after) == IN_STEP
        ledger = await service.store.ledger()
        assert {row.point_id for row in ledger} == {str(r.id) for r in after}
        assert not [r for r in after if (r.payload or {}).get("asset_id") == gone]
        assert _snapshot(after).keys() == _snapshot(truth).keys()
        assert not (await verify(service, sample=10)).drift
