"""Every command, driven with hostile arguments and environments, ends with one line that names
what is wrong and a documented exit code (README "Exit codes"), never a traceback or a secret.

The commands are read from the Typer app itself, so a command added later is driven too (and
must be given a hostile case below, or the test that checks the list fails). Each case runs the
real ``python -m sync_service`` as a subprocess, with bytes for argv and environment where the
case needs bytes that are not UTF-8. They run concurrently: each is a fresh interpreter that
spends most of its half second importing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import typer.main

from sync_service.cli.main import app

MIXPEEK_KEY = "sk-HOSTILE-mixpeek-quokka-1234"
QDRANT_KEY = "qk-HOSTILE-qdrant-wombat-5678"
API_TOKEN = "tok-HOSTILE-api-numbat-9012"
PG_PASSWORD = "pw-HOSTILE-bilby"
HOOK = "wh-HOSTILE-secret-dingo-3456"
SECRETS = (
    *(MIXPEEK_KEY, QDRANT_KEY, API_TOKEN, PG_PASSWORD, HOOK),
    *("quokka", "wombat", "numbat", "bilby", "dingo"),
)
#: What a traceback looks like, plain or as rich prints one.
TRACEBACK_MARKS = ("Traceback", 'File "', "Error:\n", "╭─ Traceback", "locals ─")
#: The exit codes a failing command may use: 1 work failed, 2 configuration or arguments,
#: 3 a guard held (README "Exit codes").
DOCUMENTED = {1, 2, 3}
HUGE = "x" * 100_000
DEEP = "[" * 5000 + "]" * 5000
NOT_UTF8 = b"\xff\xfe\x80bad"

Arg = str | bytes
#: Subprocesses at once: each is mostly CPU (imports), and the suite runs four test workers.
WORKERS = max(2, os.cpu_count() or 2)


def leaf_commands() -> list[tuple[str, ...]]:
    """Every command of the app, sub-commands spelled out (``watch add``, ``dlq list``)."""

    def walk(command: object, path: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
        children = getattr(command, "commands", None)
        if children is None:
            yield path
            return
        for name, child in children.items():
            yield from walk(child, (*path, name))

    return sorted(walk(typer.main.get_command(app), ()))


@dataclass(frozen=True)
class Case:
    """One hostile run: the arguments, the environment on top of the base, and what the last
    line of stderr must name."""

    args: tuple[Arg, ...]
    names: str
    env: dict[str, Arg] = field(default_factory=dict)
    codes: frozenset[int] = frozenset({2})
    #: A Typer usage error prints a box (exit 2), which is fine as long as it names the option.
    usage: bool = False

    def __str__(self) -> str:
        shown = [a[:30] if isinstance(a, str) else repr(a[:12]) for a in self.args]
        env = ",".join(f"{k}={v[:20]!r}" for k, v in self.env.items())
        return " ".join(str(s) for s in shown) + (f" [{env}]" if env else "")


# One or more hostile runs per command: bad arguments (empty, huge, deep, not UTF-8, control
# characters) that each command must refuse before any work.
BY_COMMAND: dict[tuple[str, ...], list[Case]] = {
    ("backfill",): [
        Case(("backfill", "--collection-id", ""), "--collection-id"),
        Case(("backfill", "--collection-id", HUGE), "--collection-id"),
        Case(("backfill", "--collection-id", "c", "--page-size", "0"), "--page-size", usage=True),
    ],
    ("demo",): [
        # The demo starts its data folder afresh: under a file, it cannot.
        Case(("demo", "--data-dir", "afile/demo"), "--data-dir"),
    ],
    ("dlq", "drop"): [
        Case(("dlq", "drop"), "--all"),
        Case(("dlq", "drop", HUGE), "ids", usage=True),
    ],
    ("dlq", "list"): [Case(("dlq", "list", "--task-id", NOT_UTF8), "--task-id")],
    ("dlq", "retry"): [
        Case(("dlq", "retry", "1e999"), "ids", usage=True),
        # Past a SQL BIGINT: was an OverflowError out of SQLite
        Case(("dlq", "retry", "9" * 30), "ids", usage=True),
    ],
    ("emulator",): [
        Case(("emulator", "--port", "0", "--fail-rate", "2"), "--fail-rate", usage=True),
        Case(("emulator", "--port", "-5"), "--port", usage=True),
    ],
    ("forget",): [
        Case(("forget", "a\tb"), "asset id"),
        Case(("forget", HUGE), "asset id"),
    ],
    ("migrate",): [
        Case(("migrate",), "DATABASE_URL", env={"DATABASE_URL": "sqlite:////proc/sync.db"}),
    ],
    ("query",): [
        Case(("query",), "--like"),
        Case(("query", "  "), "TEXT"),
        Case(("query", "--like", "p", "--collection", HUGE), "--collection"),
        Case(("query", "q", "--limit", "0"), "--limit", usage=True),
        # Work that fails names the host it could not reach.
        Case(
            ("query", "--like", "p"),
            "QDRANT_URL=http://127.0.0.1:9",
            env={"QDRANT_URL": "http://127.0.0.1:9"},
            codes=frozenset({1}),
        ),
    ],
    ("rebind",): [
        Case(("rebind",), "QDRANT_PATH", env={"QDRANT_PATH": "afile/q"}),
    ],
    ("reindex",): [
        Case(("reindex", "--collection", ""), "--collection"),
        Case(("reindex", "--collection", "c", "--distance", "hamming"), "--distance", usage=True),
    ],
    ("retry",): [
        Case(("retry",), "--failed"),
        Case(("retry", "--failed", "--since", HUGE), "--since"),
        Case(("retry", NOT_UTF8), "argument 2"),
    ],
    ("run",): [
        # The daemon must stop at once on bad configuration, never start.
        Case(("run",), "SYNC_POLL_INTERVAL", env={"SYNC_POLL_INTERVAL": "nan"}),
        Case(
            ("run", "--drain"),
            "SYNC_API_TOKEN",
            env={"SYNC_API_HOST": "0.0.0.0", "SYNC_API_PORT": "8080", "SYNC_API_TOKEN": "short"},
        ),
    ],
    ("status",): [
        Case(("status", "a\nb"), "task id"),
        Case(("status", "--limit", HUGE), "--limit", usage=True),
        Case(("status", "--limit", "-1"), "--limit", usage=True),
        Case(
            ("status",),
            "127.0.0.1",
            env={"DATABASE_URL": f"postgresql://u:{PG_PASSWORD}@127.0.0.1:9/db"},
            codes=frozenset({1}),
        ),
    ],
    ("submit",): [
        Case(("submit", "--collection-id", "c", "--text", "t", "--metadata", DEEP), "--metadata"),
        Case(("submit", "--collection-id", "c", "--metadata", "@afile"), "--text"),
        Case(
            ("submit", "--collection-id", "c", "--text", "t", "--metadata", "@afile/x"),
            "--metadata",
        ),
        # An endless file: was read until memory ran out
        Case(
            ("submit", "--collection-id", "c", "--text", "t", "--metadata", "@/dev/zero"),
            "--metadata",
        ),
        Case(("submit", "--collection-id", "c", "--video", HUGE), "--video"),
        Case(("submit", "--collection-id", "c", "--video", "[/x]"), "--video"),
        Case(("submit", "--collection-id", NOT_UTF8, "--text", "t"), "--collection-id"),
        Case(("submit", "--collection-id", "c", "--text", ""), "--text"),
        Case(
            ("submit", "--collection-id", "c", "--text", "t"),
            "MIXPEEK_API_URL=http://127.0.0.1:9",
            codes=frozenset({1}),
        ),
    ],
    ("track",): [
        Case(("track", ""), "task id"),
        Case(("track", HUGE), "task id"),
        Case(("track", NOT_UTF8), "argument 2"),
    ],
    ("verify",): [
        Case(("verify", "--collection", "a\x01b"), "--collection"),
        Case(("verify", "--sample", "-1"), "--sample", usage=True),
    ],
    ("watch", "add"): [Case(("watch", "add", HUGE), "collection id")],
    ("watch", "list"): [
        Case(("watch", "list"), "DATABASE_URL", env={"DATABASE_URL": "sqlite:///afile/s.db"}),
    ],
    ("watch", "remove"): [Case(("watch", "remove", " "), "collection id")],
    ("webhook", "confirm"): [Case(("webhook", "confirm", HUGE), "collection id")],
    ("webhook", "dismiss"): [Case(("webhook", "dismiss", " "), "collection id")],
    ("webhook", "list"): [
        Case(("webhook", "list"), "MIXPEEK_API_URL=http://127.0.0.1:9", codes=frozenset({1})),
    ],
    ("webhook", "register"): [
        Case(("webhook", "register", "--url", "https://h/w"), "SYNC_WEBHOOK_SECRET"),
        Case(("webhook", "register", "--url", HUGE), "--url", env={"SYNC_WEBHOOK_SECRET": HOOK}),
        Case(
            ("webhook", "register", "--url", "https://h/w", "--events", HUGE),
            "--events",
            env={"SYNC_WEBHOOK_SECRET": HOOK},
        ),
    ],
    ("webhook", "remove"): [Case(("webhook", "remove", ""), "webhook id")],
}

# Hostile environments: each stops any command at settings load, naming the variable.
ENVIRONMENTS: list[tuple[dict[str, Arg], str]] = [
    ({"SYNC_POLL_INTERVAL": ""}, ""),  # empty is unset: no error (checked separately)
    ({"SYNC_POLL_INTERVAL": NOT_UTF8}, "SYNC_POLL_INTERVAL"),
    ({"SYNC_MAX_ATTEMPTS": "9" * 5000}, "SYNC_MAX_ATTEMPTS"),
    ({"SYNC_HTTP_TIMEOUT": "inf"}, "SYNC_HTTP_TIMEOUT"),
    ({"SYNC_LEASE_SECONDS": "-3"}, "SYNC_LEASE_SECONDS"),
    ({"SYNC_API_PORT": "0x50"}, "SYNC_API_PORT"),
    ({"SYNC_VECTOR_SIZES": HUGE}, "SYNC_VECTOR_SIZES"),
    ({"SYNC_WATCH_COLLECTIONS": "a," + HUGE}, "SYNC_WATCH_COLLECTIONS"),
    ({"DATABASE_URL": "sqlite:///afile/sync.db"}, "DATABASE_URL"),
    ({"DATABASE_URL": "sqlite:///."}, "DATABASE_URL"),
    ({"DATABASE_URL": b"sqlite:///\xff.db"}, "DATABASE_URL"),
    ({"DATABASE_URL": f"postgresql://u:{PG_PASSWORD}@/db"}, "DATABASE_URL"),
    ({"DATABASE_URL": "mysql://x/y"}, "DATABASE_URL"),
    ({"QDRANT_PATH": "afile"}, "QDRANT_PATH"),
    ({"QDRANT_PATH": "afile/below"}, "QDRANT_PATH"),
    ({"QDRANT_URL": "qdrant:6333"}, "QDRANT_URL"),
    ({"MIXPEEK_API_URL": HUGE}, "MIXPEEK_API_URL"),
    ({"MIXPEEK_API_KEY": NOT_UTF8}, "MIXPEEK_API_KEY"),
    ({"MIXPEEK_API_KEY": "sk with spaces"}, "MIXPEEK_API_KEY"),
    ({"MIXPEEK_NAMESPACE": HUGE}, "MIXPEEK_NAMESPACE"),
    ({"SYNC_LOG_LEVEL": "LOUD"}, "SYNC_LOG_LEVEL"),
]
#: Commands that get the whole environment matrix (the rest get one environment each, in turn).
#: Every command loads its settings through one function (cli/common.load_settings), so the
#: matrix runs on one; the others get one environment each, in turn, so that together they
#: cover the list again.
MATRIX_COMMANDS: list[tuple[str, ...]] = [("status",)]
#: Commands that do not read the service's settings: the emulator has options of its own.
NO_SETTINGS = {("emulator",)}
#: What the demo sets itself (its own emulator, key, folders): the environment's are unused.
DEMO_SETS = {"MIXPEEK_API_URL", "MIXPEEK_API_KEY", "QDRANT_URL", "QDRANT_PATH", "DATABASE_URL"}


def base_env(root: Path) -> dict[str, Arg]:
    keep = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MIXPEEK_", "QDRANT_", "SYNC_", "DATABASE_URL"))
    }
    return {
        **keep,
        "MIXPEEK_API_URL": "http://127.0.0.1:9",  # nothing listens: no case reaches it
        "MIXPEEK_API_KEY": MIXPEEK_KEY,
        "QDRANT_API_KEY": QDRANT_KEY,
        "SYNC_API_TOKEN": API_TOKEN,
        "QDRANT_PATH": str(root / "qdrant"),
        "DATABASE_URL": f"sqlite:///{root / 'sync.db'}",
        "SYNC_API_PORT": "0",
        "SYNC_HTTP_MAX_ATTEMPTS": "1",
    }


@dataclass
class Outcome:
    case: Case
    code: int | None
    stdout: str
    stderr: str


def run_case(root: Path, case: Case, *, key: str | None = MIXPEEK_KEY) -> Outcome:
    env = {**base_env(root), **case.env}
    if key is None:
        del env["MIXPEEK_API_KEY"]
    argv = [sys.executable.encode(), b"-m", b"sync_service"]
    argv += [a if isinstance(a, bytes) else a.encode() for a in case.args]
    try:
        done = subprocess.run(
            argv,
            env={_b(k): _b(v) for k, v in env.items()},
            cwd=root,
            capture_output=True,
            # Every case fails at once (in about a second on an idle machine); the daemon must
            # never start. The margin is for a loaded machine (a full suite beside others').
            timeout=60,
        )
    except subprocess.TimeoutExpired as exc:
        return Outcome(case, None, "", f"timed out: {exc.stderr!r}")
    return Outcome(case, done.returncode, _text(done.stdout), _text(done.stderr))


def _text(output: bytes) -> str:
    return output.decode("utf-8", errors="replace")


def _b(value: Arg) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def problems(outcome: Outcome) -> list[str]:
    """What is wrong with how the command ended (empty: it ended as documented)."""
    case, found = outcome.case, []
    everything = outcome.stdout + outcome.stderr
    if outcome.code not in case.codes:
        found.append(f"exit {outcome.code}, expected one of {sorted(case.codes)}")
    if outcome.code not in DOCUMENTED:
        found.append(f"exit {outcome.code} is not a documented failure")
    found += [f"traceback ({mark!r})" for mark in TRACEBACK_MARKS if mark in everything]
    found += [f"secret {s[:8]}… printed" for s in SECRETS if s in everything]
    lines = [line for line in outcome.stderr.splitlines() if line.strip()]
    if case.usage:
        if not any(line.startswith("Usage:") for line in lines) or case.names not in everything:
            found.append(f"not a usage error naming {case.names!r}")
    else:
        last = lines[-1] if lines else ""
        if not last.startswith(("error: ", "configuration error: ")):
            found.append(f"last line is not one error line: {last[:200]!r}")
        if case.names not in last:
            found.append(f"the error line does not name {case.names!r}: {last[:200]!r}")
        if len(last) > 1000:
            found.append(f"the error line is {len(last)} characters long")
        errors = [line for line in lines if line.startswith(("error: ", "configuration error: "))]
        if len(errors) != 1:
            found.append(f"{len(errors)} error lines")
    return found


def run_all(root: Path, cases: list[Case]) -> dict[str, list[str]]:
    (root / "afile").write_text("a file where a folder or a database is expected")
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        outcomes = list(pool.map(lambda c: run_case(root, c), cases))
    report = {}
    for outcome in outcomes:
        wrong = problems(outcome)
        if wrong:
            report[str(outcome.case)] = [*wrong, *outcome.stderr.strip().splitlines()[-4:]]
    return report


def test_every_command_has_hostile_cases() -> None:
    """A new command must say how it meets hostile input (add it to BY_COMMAND)."""
    assert sorted(BY_COMMAND) == leaf_commands()


def test_hostile_arguments_get_one_line_and_a_documented_exit_code(tmp_path: Path) -> None:
    cases = [case for command in leaf_commands() for case in BY_COMMAND[command]]
    assert run_all(tmp_path, cases) == {}


def test_hostile_environments_stop_every_command_at_settings_load(tmp_path: Path) -> None:
    """The whole matrix on the commands that matter most, and one environment on each of the
    others in turn (every command loads the settings the same way)."""
    hostile = [(env, names) for env, names in ENVIRONMENTS if names]
    cases = [Case(args, names, env=env) for args in MATRIX_COMMANDS for env, names in hostile]
    covered = {args[:1] for args in MATRIX_COMMANDS} | NO_SETTINGS
    others = [c for c in leaf_commands() if c not in covered]
    for index, command in enumerate(others):
        applies = [
            (env, names)
            for env, names in hostile[index:] + hostile[:index]
            if command != ("demo",) or not set(env) & DEMO_SETS
        ]
        env, names = applies[0]
        cases.append(Case((*command, *_minimal_arguments(command)), names, env=env))
    assert run_all(tmp_path, cases) == {}


def _minimal_arguments(command: tuple[str, ...]) -> tuple[str, ...]:
    """Arguments that make ``command`` well-formed, so only the environment is hostile."""
    needs = {
        ("backfill",): ("--collection-id", "c"),
        ("dlq", "drop"): ("1",),
        ("dlq", "retry"): ("1",),
        ("forget",): ("asset-1",),
        ("query",): ("--like", "p"),
        ("reindex",): ("--collection", "c"),
        ("retry",): ("--failed",),
        ("submit",): ("--collection-id", "c", "--text", "t"),
        ("track",): ("t-1",),
        ("watch", "add"): ("c",),
        ("watch", "remove"): ("c",),
        ("webhook", "confirm"): ("c",),
        ("webhook", "dismiss"): ("c",),
        ("webhook", "register"): ("--url", "https://h/w"),
        ("webhook", "remove"): ("w",),
    }
    return needs.get(command, ())


#: Commands that call Mixpeek, and forms of commands that do not (README "Exit codes").
CALL_MIXPEEK = [
    ("submit", "--collection-id", "c", "--text", "t"),
    ("run", "--drain"),
    ("backfill", "--collection-id", "c"),
    ("backfill", "--collection-id", "c", "--dry-run"),
    ("verify",),
    ("reindex", "--collection", "c"),
    ("query", "a text to embed"),
]
NO_MIXPEEK = [
    ("status",),
    ("track", "t-1"),
    ("query", "--like", "p"),
    ("verify", "--sample", "0"),
]


def test_a_missing_mixpeek_key_stops_only_the_commands_that_call_mixpeek(tmp_path: Path) -> None:
    calling, other = tmp_path / "calling", tmp_path / "other"
    calling.mkdir(), other.mkdir()
    line = "MIXPEEK_API_KEY: not set, and this command calls Mixpeek"
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        refused = list(pool.map(lambda a: run_case(calling, Case(a, line), key=None), CALL_MIXPEEK))
        allowed = list(pool.map(lambda a: run_case(other, Case(a, ""), key=None), NO_MIXPEEK))
    for outcome in refused:
        assert problems(outcome) == [], (outcome.case, outcome.stderr)
        assert outcome.stderr.startswith(f"configuration error: {line}"), outcome.stderr
    # Caught when the settings load, before any work: no state store was even created.
    assert sorted(p.name for p in calling.iterdir()) == []
    for outcome in allowed:
        assert "MIXPEEK_API_KEY" not in outcome.stdout + outcome.stderr, outcome
        assert not any(mark in outcome.stderr for mark in TRACEBACK_MARKS), outcome.stderr


def test_ids_are_printed_as_they_are(tmp_path: Path) -> None:
    """Rich markup and emoji codes in data (an id is anything upstream or a user chose) are
    printed as text: "[/x]" once made `status` raise, ":smile:" became an emoji."""
    ids = ("[/x]", "[bold]b", ":smile:")
    tracked = run_case(tmp_path, Case(("track", *ids), ""))
    assert tracked.code == 0, tracked.stderr
    shown = run_case(tmp_path, Case(("status",), ""))
    assert shown.code == 0, shown.stderr
    assert all(i in shown.stdout for i in ids), shown.stdout
