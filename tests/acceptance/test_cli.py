"""The command line as a user meets it: help, bad input, bad configuration, a refused key."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sync_service.emulator import EmulatorServer, library
from tests.conftest import API_KEY

SUBMIT = ["submit", "--collection-id", "c", "--text", "x"]
COMMANDS = [
    "run",
    "track",
    "submit",
    "status",
    "migrate",
    "emulator",
    "demo",
    "backfill",
    "forget",
    "verify",
    "reindex",
    "query",
]


def clean_env(**env: str) -> dict[str, str]:
    """This process's environment without the service's settings, plus ``env``."""
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MIXPEEK_", "QDRANT_", "SYNC_", "DATABASE_URL"))
    }
    return {**base, **env}


def cli(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sync_service", *args],
        cwd=cwd,
        env=clean_env(**{"SYNC_API_PORT": "0", **env}),  # the API off unless a test asks
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(tmp_path: Path, command: str) -> None:
    result = cli(tmp_path, command, "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage" in result.stdout and command in result.stdout


@pytest.mark.parametrize(
    ("env", "line"),
    [
        (
            {"SYNC_POLL_INTERVAL": "-1"},
            "configuration error: SYNC_POLL_INTERVAL: Input should be greater than 0 (got '-1')",
        ),
        (
            {"DATABASE_URL": "sqlite://"},
            "configuration error: DATABASE_URL: needs a file path, e.g. sqlite:///./data/sync.db",
        ),
    ],
)
def test_a_bad_setting_stops_before_touching_anything(
    tmp_path: Path, env: dict[str, str], line: str
) -> None:
    result = cli(tmp_path, "status", **env)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [line]
    assert not (tmp_path / "data").exists()  # no state store, no Qdrant folder


def test_track_is_idempotent_and_status_reports_it(tmp_path: Path) -> None:
    assert "tracking 2 new task(s); 0 already tracked" in cli(tmp_path, "track", "a", "b").stderr
    assert "tracking 1 new task(s); 1 already tracked" in cli(tmp_path, "track", "b", "c").stderr
    status = json.loads(cli(tmp_path, "status", "--json").stdout)
    assert status["counts"] == {"pending": 3, "synced": 0, "failed": 0}
    assert [t["task_id"] for t in status["tasks"]] == ["a", "b", "c"]
    missing = cli(tmp_path, "status", "zzz")
    assert missing.returncode == 1 and "not tracked" in missing.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["--video", "ftp://example.com/a.mp4"],
        ["--image", "file:///etc/passwd"],
        ["--video", "example.com/no-scheme.mp4"],
        ["--text", "   "],
        [],
    ],
)
def test_submit_refuses_bad_input_before_calling_upstream(tmp_path: Path, args: list[str]) -> None:
    result = cli(
        tmp_path,
        "submit",
        "--collection-id",
        "c",
        *args,
        MIXPEEK_API_URL="http://127.0.0.1:9",  # nothing listens there
        MIXPEEK_API_KEY="k",
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr


def test_submit_rejects_metadata_that_is_not_a_json_object(tmp_path: Path) -> None:
    result = cli(tmp_path, *SUBMIT, "--metadata", "[1]", MIXPEEK_API_KEY="k")
    assert result.returncode == 2 and "--metadata must be a JSON object" in result.stderr


def test_a_refused_key_stops_the_daemon_and_never_prints_the_key(
    tmp_path: Path, emulator: EmulatorServer
) -> None:
    cli(tmp_path, "track", "some-task")
    wrong = "sk-wrong-SECRET-0000"
    result = cli(
        tmp_path,
        "run",
        "--drain",
        MIXPEEK_API_URL=emulator.url,
        MIXPEEK_API_KEY=wrong,
        SYNC_POLL_INTERVAL="0.2",
    )
    assert result.returncode == 1
    assert "refused the API key" in result.stderr
    assert wrong not in result.stderr + result.stdout
    assert API_KEY not in result.stderr + result.stdout
    status = json.loads(cli(tmp_path, "status", "--json").stdout)
    assert status["counts"]["pending"] == 1  # nothing was marked failed because of our key


def test_demo_runs_twice_with_the_same_result(tmp_path: Path) -> None:
    outputs = []
    for _ in range(2):
        result = cli(tmp_path, "demo")
        assert result.returncode == 0, result.stderr[-2000:]
        outputs.append(result.stdout)
    for out in outputs:
        assert "14/14" in out
        assert "Qdrant collection demo: 24 points (image 3, text 3, video 18)" in out
        assert "multimodal-v1 (dense[1408])" in out
        for text, _video, _segment in library.QUERIES:  # the hits are checked in test_search
            assert f"query {text!r} in demo (multimodal-v1)" in out
    first, second = (out[out.index("query '") :] for out in outputs)
    assert first == second  # the same hits, scores and order on every run


def test_only_migrate_and_run_change_the_schema(tmp_path: Path) -> None:
    """A newer CLI run once against an older store reads it, never migrates it under the
    replicas still running the older release; `migrate` and `run` do."""
    import asyncio

    from sync_service.state.migrate import HEAD, REVISIONS, run_alembic
    from sync_service.state.store import Store

    url = f"sqlite:///{tmp_path / 'sync.db'}"
    env = {"DATABASE_URL": url, "QDRANT_PATH": str(tmp_path / "q"), "MIXPEEK_API_KEY": "k"}

    async def revision(downgrade_to: str | None = None) -> str | None:
        store = Store.open(url)
        try:
            if downgrade_to is not None:
                async with store.engine.begin() as conn:
                    await conn.run_sync(run_alembic, "downgrade", downgrade_to)
            return await store.revision()
        finally:
            await store.close()

    assert cli(tmp_path, "migrate", **env).returncode == 0
    assert asyncio.run(revision(REVISIONS[-2])) == REVISIONS[-2]
    for args, extra in ((("status",), {}), (("run", "--drain"), {"SYNC_AUTO_MIGRATE": "false"})):
        result = cli(tmp_path, *args, **env, **extra)
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip() == (
            f"error: the state store's schema {REVISIONS[-2]} is older than this sync-service "
            f"({HEAD}): run `sync-service migrate` (or start `sync-service run`) first"
        )
        assert asyncio.run(revision()) == REVISIONS[-2]
    assert cli(tmp_path, "run", "--drain", **env).returncode == 0
    assert asyncio.run(revision()) == HEAD


def test_a_state_store_feeds_one_qdrant_until_rebound(tmp_path: Path) -> None:
    """The split brain: two daemons on one state store, each with its own Qdrant."""
    store = {"DATABASE_URL": f"sqlite:///{tmp_path / 'sync.db'}", "MIXPEEK_API_KEY": "k"}
    first, second = str(tmp_path / "qdrant-a"), str(tmp_path / "qdrant-b")
    assert cli(tmp_path, "run", "--drain", QDRANT_PATH=first, **store).returncode == 0
    refused = cli(tmp_path, "run", "--drain", QDRANT_PATH=second, **store)
    assert refused.returncode == 2
    assert refused.stderr.strip() == (
        f"error: this state store feeds the Qdrant at QDRANT_PATH={first}, but this process "
        f"points at QDRANT_PATH={second}: fix the setting, or run `sync-service rebind` to make "
        "the new one its Qdrant"
    )
    assert not Path(second).exists()  # refused before the folder was even made
    rebound = cli(tmp_path, "rebind", QDRANT_PATH=second, **store)
    assert rebound.returncode == 0, rebound.stderr
    assert f"the state store now feeds QDRANT_PATH={second} (it fed QDRANT_PATH={first})" in (
        rebound.stderr
    )
    assert "verify --repair" in rebound.stderr
    assert cli(tmp_path, "run", "--drain", QDRANT_PATH=second, **store).returncode == 0
    assert cli(tmp_path, "run", "--drain", QDRANT_PATH=first, **store).returncode == 2
    # Another deployment (its own state store) may share the Qdrant: each marks it.
    other = {**store, "DATABASE_URL": f"sqlite:///{tmp_path / 'other.db'}"}
    assert cli(tmp_path, "run", "--drain", QDRANT_PATH=second, **other).returncode == 0


@pytest.mark.parametrize(
    ("args", "env", "line"),
    [
        (
            ["submit", "--collection-id", " ", "--text", "x"],
            {},
            "--collection-id must not be empty",
        ),
        (
            [
                "submit",
                "--collection-id",
                "c",
                "--text",
                "x",
                "--metadata",
                "[" * 5000 + "]" * 5000,
            ],
            {},
            "--metadata nests 5000 levels deep (at most 32)",
        ),
        (
            [*SUBMIT, "--metadata", "@missing.json"],
            {},
            "--metadata 'missing.json': cannot read it (No such file or directory)",
        ),
        (["status"], {"QDRANT_PATH": "afile"}, "QDRANT_PATH: is a file; embedded Qdrant keeps"),
        (
            ["status"],
            {"DATABASE_URL": "sqlite:////proc/no/such/sync.db"},
            "error: DATABASE_URL: cannot make the folder '/proc/no/such' (No such file or "
            "directory)",
        ),
    ],
)
def test_hostile_input_gets_one_line_and_no_traceback(
    tmp_path: Path, args: list[str], env: dict[str, str], line: str
) -> None:
    (tmp_path / "afile").write_text("not a folder")
    base = {"MIXPEEK_API_KEY": "k", "DATABASE_URL": f"sqlite:///{tmp_path / 's.db'}"}
    result = cli(tmp_path, *args, **{**base, **env})
    assert result.returncode in (1, 2)
    assert "Traceback" not in result.stderr and line in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_version_and_metadata_from_a_file(tmp_path: Path) -> None:
    from sync_service import __version__

    shown = cli(tmp_path, "--version")
    assert shown.returncode == 0 and shown.stdout.strip() == f"sync-service {__version__}"
    from sync_service.cli.common import parse_metadata

    (tmp_path / "meta.json").write_text('{"team": "video", "note": "[[[not nesting]]]"}')
    assert parse_metadata(f"@{tmp_path / 'meta.json'}") == {
        "team": "video",
        "note": "[[[not nesting]]]",
    }


def test_an_unreachable_mixpeek_is_not_a_refusal(tmp_path: Path) -> None:
    result = cli(
        tmp_path,
        *SUBMIT,
        MIXPEEK_API_URL="http://127.0.0.1:9",
        MIXPEEK_API_KEY="k",
        SYNC_HTTP_MAX_ATTEMPTS="1",
        DATABASE_URL=f"sqlite:///{tmp_path / 's.db'}",
    )
    assert result.returncode == 1
    assert result.stderr.startswith(
        "error: cannot reach Mixpeek (MIXPEEK_API_URL=http://127.0.0.1:9)"
    )
    assert "refused" not in result.stderr.split(":")[0]
