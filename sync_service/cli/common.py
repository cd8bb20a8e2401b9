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
