"""What every command of the CLI shares: the consoles, settings loading, one-line failures."""

from __future__ import annotations

import sys
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar, cast

import typer

from sync_service.control import logs

# httpx imports its own command-line client whenever click, rich and pygments are installed
# (uvicorn brings click, typer rich): ~40 ms of every command that calls Mixpeek, for a CLI this
# process never runs. None in sys.modules makes that import fail, and httpx then defines the
# stand-in it has for a missing CLI (the `httpx` console script, its own process, is unaffected).
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress

    from sync_service.settings import Settings

# Settings (pydantic-settings) and the progress bar are imported where they are used, so
# `--help` never loads them.

T = TypeVar("T")


class LazyConsole:
    """A rich ``Console`` made on first use: rich takes ~13 ms to import, which a command that
    prints nothing on the console (`run`, whose output is its log) need not pay."""

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._made: Console | None = None

    @property
    def console(self) -> Console:
        if self._made is None:
            from rich.console import Console

            self._made = Console(**self._options)
        return self._made

    def __getattr__(self, name: str) -> Any:
        return getattr(self.console, name)


def console_of(lazy: Console) -> Console:
    """The real console behind ``out`` or ``err`` (for rich APIs that keep one)."""
    return lazy.console if isinstance(lazy, LazyConsole) else lazy


# No markup or emoji codes: what the consoles print holds ids, URLs, paths and upstream text,
# and "[/x]" in a task id made rich raise (a traceback) while ":smile:" became an emoji.
# Styles are given explicitly (rich.text.Text, or markup=True on text the service wrote).
out = cast("Console", LazyConsole(markup=False, emoji=False))
# One message, one line, whatever the width.
err = cast("Console", LazyConsole(stderr=True, soft_wrap=True, markup=False, emoji=False))

#: The exit codes every command uses (README "Exit codes"; cli/failures.py says which is which).
EXIT_FAILED = 1  # work that failed
EXIT_CONFIG = 2  # bad configuration or arguments
EXIT_HELD = 3  # a guard held: nothing destructive happened

#: The longest id a command takes (task, asset, collection): Qdrant's limit for a name, and
#: far more than any Mixpeek id; a 100 kB "id" would be stored and sent in every URL.
MAX_ID_LENGTH = 255


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    say_error(message)
    raise typer.Exit(code)


def say_error(message: str) -> None:
    from rich.text import Text

    err.print(Text.assemble(("error:", "red"), " ", message), highlight=False)


#: The settings the command loaded, so that a failure can name the host it concerns.
loaded: list[Settings] = []


def load_settings(*, calls_mixpeek: bool = False) -> Settings:
    """Settings from the environment and .env; a bad value stops here with exit code 2, and
    so does a missing MIXPEEK_API_KEY when the command (``calls_mixpeek``) calls Mixpeek."""
    from pydantic import ValidationError

    from sync_service.settings import Settings, describe_validation_error

    try:
        settings = Settings()
    except ValidationError as exc:
        for line in describe_validation_error(exc):
            err.print(f"configuration error: {line}", highlight=False)
        raise typer.Exit(EXIT_CONFIG) from None
    except (UnicodeDecodeError, OSError) as exc:  # reading .env (the environment is checked)
        reason = "not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else exc.strerror
        err.print(f"configuration error: .env: cannot read it ({reason})", highlight=False)
        raise typer.Exit(EXIT_CONFIG) from None
    if calls_mixpeek and settings.mixpeek_api_key is None:
        err.print(
            "configuration error: MIXPEEK_API_KEY: not set, and this command calls Mixpeek "
            "(set it in the environment or .env; the emulator takes any value unless started "
            "with --api-key)",
            highlight=False,
        )
        raise typer.Exit(EXIT_CONFIG)
    logs.configure(settings.log_level, settings.log_format)
    loaded[:] = [settings]
    return settings


def check_ids(what: str, values: list[str]) -> list[str]:
    """The ids a command was given, stripped, in order, without repeats; exit 2 (naming
    ``what``) when none is left, or one is too long or holds a control character."""
    from sync_service.settings import brief

    ids = list(dict.fromkeys(v.strip() for v in values if v.strip()))
    if not ids:
        fail(f"no {what} given", EXIT_CONFIG)
    for value in ids:
        if len(value) > MAX_ID_LENGTH:
            fail(
                f"{what} {brief(value, 40)}: too long ({len(value)} characters, at most "
                f"{MAX_ID_LENGTH})",
                EXIT_CONFIG,
            )
        if any(ord(c) < 32 or ord(c) == 127 for c in value):
            fail(f"{what} {brief(value)}: holds a control character", EXIT_CONFIG)
    return ids


def end_process(code: int) -> NoReturn:
    """Exit with ``code`` once the daemon has closed its parts, without the interpreter's
    teardown and even if a library left a non-daemon thread running.

    The teardown frees the heap object by object (Qdrant's client and its points, SQLAlchemy,
    the HTTP clients): 40-50 ms of a `run --drain` that synced a hundred tasks, which the
    kernel does at once. ``atexit`` handlers still run (logging's flush, a coverage tool's
    save). A leftover thread (a state store connection that was never closed keeps aiosqlite's
    worker alive) would keep the process up after the daemon stopped, and a CronJob's
    `run --drain` would never end: the threads are named in the log, then the process exits
    anyway."""
    import atexit
    import logging
    import os
    import sys
    import threading

    main = threading.main_thread()
    left = [t.name for t in threading.enumerate() if t is not main and not t.daemon]
    if left:
        logging.getLogger(__name__).warning(
            "exiting with threads still running: %s",
            ", ".join(left),
            extra={"event": "exit_with_threads", "threads": left},
        )
    atexit._run_exitfuncs()  # logging.shutdown among them
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    import asyncio  # not at module level: `--help` needs no event loop

    return asyncio.run(coro)


def progress_bar(*, enabled: bool = True) -> Progress:
    """The progress bar of long commands, on stderr (stdout stays for data)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        console=console_of(err),
        disable=not enabled,
        transient=False,
    )


#: How deep ``--metadata`` may nest: Mixpeek keeps it as a document, and Python's JSON reader
#: would hit its recursion limit near 1,000 levels with a traceback.
MAX_METADATA_DEPTH = 32
#: The most ``--metadata @FILE`` reads: metadata travels with every item, and @/dev/zero (or
#: a video given by mistake) must not be read until memory runs out.
MAX_METADATA_BYTES = 1024 * 1024


def parse_metadata(text: str | None) -> dict[str, Any] | None:
    """``--metadata``: a JSON object, inline or ``@file``; a bad one is one line, exit 2."""
    if text is None:
        return None
    import json
    from pathlib import Path

    if text.startswith("@"):
        path = Path(text[1:]).expanduser()
        try:
            with path.open("rb") as file:
                data = file.read(MAX_METADATA_BYTES + 1)
            text = data.decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            fail(f"--metadata {str(path)!r}: cannot read it ({reason})", EXIT_CONFIG)
        if len(data) > MAX_METADATA_BYTES:
            fail(f"--metadata {str(path)!r}: larger than {MAX_METADATA_BYTES} bytes", EXIT_CONFIG)
    deepest = _nesting(text)  # before parsing: a deep document must not reach the JSON reader
    if deepest > MAX_METADATA_DEPTH:
        fail(f"--metadata nests {deepest} levels deep (at most {MAX_METADATA_DEPTH})", EXIT_CONFIG)
    try:
        value = json.loads(text)
        json.dumps(value, allow_nan=False)  # NaN, Infinity and 1e400 parse but cannot be sent
    except ValueError as exc:
        fail(f"--metadata is not valid JSON: {exc}", EXIT_CONFIG)
    if not isinstance(value, dict):
        fail("--metadata must be a JSON object", EXIT_CONFIG)
    return value


def _nesting(text: str) -> int:
    """How deep the JSON text's arrays and objects nest (brackets inside strings do not count)."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            escaped, in_string = (False, True) if escaped else (char == "\\", char != '"')
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest
