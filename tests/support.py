"""Test oracle: what Qdrant must hold, computed independently from what the emulator serves.

This restates docs/contract.md §4 on purpose instead of calling the product's mapping code, so a bug
in ``points.py`` cannot hide itself.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import numpy as np


def point_id(feature_id: str) -> str:
    try:
        return str(uuid.UUID(feature_id))
    except ValueError:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, "mixpeek://feature/" + feature_id))


def served(
    base_url: str, api_key: str, task_id: str
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The asset and its features (with vectors) as the emulator serves them now."""
    headers = {"Authorization": f"Bearer {api_key}"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=10) as http:
        task = http.get(f"/tasks/{task_id}").raise_for_status().json()
        grouped = http.get(f"/assets/{task['asset_id']}/features").raise_for_status().json()
        features = []
        for modality_list in grouped["features"].values():
            for listed in modality_list:
                full = (
                    http.get(
                        f"/features/{listed['feature_id']}", params={"include_vectors": "true"}
                    )
                    .raise_for_status()
                    .json()
                )
                features.append({**listed, **full})
    return grouped["asset"], features


def expected_point(task_id: str, asset: dict[str, Any], feature: dict[str, Any]) -> dict[str, Any]:
    payload = {k: v for k, v in feature.items() if k != "vectors"}
    payload.update(
        asset_id=feature.get("asset_id") or asset["asset_id"],
        collection_id=feature.get("collection_id") or asset["collection_id"],
        modality=feature.get("modality") or asset["modality"],
        task_id=task_id,
        asset=asset,
    )
    return {
        "id": point_id(feature["feature_id"]),
        "vectors": feature["vectors"],
        "payload": payload,
    }


#: What :func:`compare_points` answers when Qdrant holds exactly the expected points.
IN_STEP = {"lost": 0, "extra": 0, "wrong": 0, "duplicated": 0}


def compare_points(expected: list[dict[str, Any]], records: list[Any]) -> dict[str, int]:
    """Compare Qdrant records with the expected points: counts of lost, extra, wrong points."""
    by_id = {str(r.id): r for r in records}
    want = {e["id"]: e for e in expected}
    lost = [i for i in want if i not in by_id]
    extra = [i for i in by_id if i not in want]
    wrong = []
    for point_id_, e in want.items():
        record = by_id.get(point_id_)
        if record is None:
            continue
        payload = dict(record.payload or {})
        # The write's version (the claim's database time) is the sink's own field: present,
        # numeric, not compared with upstream.
        if not isinstance(payload.pop("_sync_version", None), float):
            wrong.append(point_id_)
            continue
        if payload != e["payload"] or set(record.vector) != set(e["vectors"]):
            wrong.append(point_id_)
            continue
        for name, values in e["vectors"].items():
            stored = np.asarray(record.vector[name], dtype=np.float64)
            sent = np.asarray(values, dtype=np.float32).astype(np.float64)
            # Cosine collections store the vector normalised; the emulator's are unit length.
            sent = sent / np.linalg.norm(sent)
            if stored.shape != sent.shape or not np.allclose(stored, sent, atol=1e-6):
                wrong.append(point_id_)
                break
    return {
        "lost": len(lost),
        "extra": len(extra),
        "wrong": len(wrong),
        "duplicated": len(records) - len(by_id),
    }


def ok(response: httpx.Response) -> Any:
    """The JSON of a 200 answer (else the test fails with the body)."""
    assert response.status_code == 200, response.text
    return response.json()
