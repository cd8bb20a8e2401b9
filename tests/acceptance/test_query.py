"""``sync-service query`` as a user runs it: real subprocesses against the emulator's library."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sync_service.emulator import EmulatorConfig, EmulatorServer, library
from tests.acceptance.test_cli import cli as run_cli
from tests.conftest import API_KEY


@pytest.fixture(scope="module")
def synced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    """The library's videos and images submitted with the CLI and synced by `run --drain`."""
    root = tmp_path_factory.mktemp("query")
    config = EmulatorConfig(api_key=API_KEY, processing_time=0.2, seed=5)
    with EmulatorServer(config) as emulator:
        env = {
            "MIXPEEK_API_URL": emulator.url,
            "MIXPEEK_API_KEY": API_KEY,
            "QDRANT_PATH": str(root / "qdrant"),
            "QDRANT_COLLECTION": "{collection_id}",
            "DATABASE_URL": f"sqlite:///{root / 'sync.db'}",
            "SYNC_POLL_INTERVAL": "0.1",
            "SYNC_MAX_POLL_INTERVAL": "0.2",
            "EMULATOR_URL": emulator.url,
        }
        media = [f"--video={u}" for u in library.VIDEO_URLS]
        media += [f"--image={u}" for u in library.IMAGE_URLS]
        submitted = cli(root, env, "submit", "--collection-id", "films", *media)
        assert submitted.returncode == 0, submitted.stderr
        drained = cli(root, env, "run", "--drain")
        assert drained.returncode == 0, drained.stderr
        yield root, env


def cli(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI as in test_cli, with a wide terminal so the table's rows stay whole."""
    return run_cli(cwd, *args, COLUMNS="200", **env)


def test_a_text_query_prints_the_right_segment_first(synced: tuple[Path, dict[str, str]]) -> None:
    root, env = synced
    result = cli(root, env, "query", "goalkeeper saves a penalty")
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("│")]
    assert library.video_url("football-final.mp4") in rows[0] and "10-20 s" in rows[0]
    assert "The goalkeeper dives to the left" in rows[0]


def test_json_filters_and_like(synced: tuple[Path, dict[str, str]]) -> None:
    root, env = synced
    result = cli(root, env, "query", "a red panda asleep", "--collection", "films", "--json")
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["collection"] == "films" and answer["vector"] == "multimodal-v1"
    top = answer["hits"][0]
    assert top["url"] == library.image_url("red-panda.jpg") and top["rank"] == 1
    images = json.loads(
        cli(root, env, "query", "lava", "--modality", "image", "--limit", "10", "--json").stdout
    )
    assert {h["modality"] for h in images["hits"]} == {"image"}
    like = json.loads(cli(root, env, "query", "--like", top["point_id"], "--json").stdout)
    assert top["point_id"] not in [h["point_id"] for h in like["hits"]]


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ["x", "--collection", "nope"],
            "error: no Qdrant collection for 'nope' (collections: films)",
        ),
        (["x", "--vector", "clip-v1"], "error: collection 'films' has no vector named 'clip-v1'"),
        ([], "error: give either a TEXT to search for or --like POINT_ID"),
    ],
)
def test_bad_queries_get_one_line(
    synced: tuple[Path, dict[str, str]], args: list[str], line: str
) -> None:
    root, env = synced
    result = cli(root, env, "query", *args)
    assert result.returncode != 0
    assert result.stderr.strip().startswith(line), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_an_upstream_that_cannot_embed(synced: tuple[Path, dict[str, str]]) -> None:
    root, env = synced
    url = f"{env['EMULATOR_URL']}/_emulator/config"
    httpx.patch(url, json={"vector_kind": "random"}).raise_for_status()
    try:
        result = cli(root, env, "query", "lava")
    finally:
        httpx.patch(url, json={"vector_kind": "meaningful"}).raise_for_status()
    assert result.returncode == 1
    assert "error: Mixpeek cannot embed into 'multimodal-v1'" in result.stderr
