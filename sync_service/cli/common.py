"""What every command of the CLI shares: the consoles, settings loading, one-line failures."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import typer
from rich.console import Console

from sync_service.control import logs

if TYPE_CHECKING:
    from rich.progress import Progress

    from sync_service.settings import Settings

# Settings (pydantic-settings) and the progress bar are imported where they are used, so
# `--help` never loads them.

T = TypeVar("T")

out = Console()
err = Console(stderr=True, soft_wrap=True)  # one message, one line, whatever the width


def fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(code)


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment and .env; a bad value stops here with exit code 2."""
    from pydantic import ValidationError

    from sync_service.settings import Settings, describe_validation_error

    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        for line in describe_validation_error(exc):
            err.print(f"configuration error: {line}", highlight=False, markup=False)
        raise typer.Exit(2) from None
    logs.configure(settings.log_level, settings.log_format)
    return settings


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
        console=err,
        disable=not enabled,
        transient=False,
    )


#: How deep ``--metadata`` may nest: Mixpeek keeps it as a document, and Python's JSON reader
#: would hit its recursion limit near 1,000 levels with a traceback.
MAX_METADATA_DEPTH = 32


def parse_metadata(text: str | None) -> dict[str, Any] | None:
    """``--metadata``: a JSON object, inline or ``@file``; a bad one is one line, exit 2."""
    if text is None:
        return None
    import json
    from pathlib import Path

    if text.startswith("@"):
        path = Path(text[1:]).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            fail(f"--metadata {str(path)!r}: cannot read it ({reason})", 2)
    deepest = _nesting(text)  # before parsing: a deep document must not reach the JSON reader
    if deepest > MAX_METADATA_DEPTH:
        fail(f"--metadata nests {deepest} levels deep (at most {MAX_METADATA_DEPTH})", 2)
    try:
        value = json.loads(text)
        json.dumps(value, allow_nan=False)  # NaN, Infinity and 1e400 parse but cannot be sent
    except ValueError as exc:
        fail(f"--metadata is not valid JSON: {exc}", 2)
    if not isinstance(value, dict):
        fail("--metadata must be a JSON object", 2)
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
