"""How a command ends when something goes wrong: one line naming the setting, argument, path
or host, and a documented exit code (README "Exit codes", docs/contract.md §3).

The codes, the same for every command:

- 0: done;
- 1: work that failed (Mixpeek, Qdrant or the state store, after retries; drift that
  ``verify`` found);
- 2: bad configuration or arguments (also a state store that feeds another Qdrant, or whose
  schema this binary cannot use: each is fixed by a setting or a command, not by retrying);
- 3: a guard held (the delete guard held a sweep, a ``forget`` or a repair; a re-index failed
  its check and was not swapped in): nothing destructive happened.

A traceback reaches the user only with ``SYNC_LOG_LEVEL=DEBUG``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import NoReturn

from sync_service.cli.common import EXIT_CONFIG, EXIT_FAILED, loaded, say_error

# The settings (pydantic) and what the failures name are imported where needed: `--help`
# loads none of them.


def run_cli(app: Callable[[], object]) -> None:
    """Run the Typer ``app`` with the failures above mapped to one line each."""
    problem = _undecodable_argument(sys.argv[1:])
    if problem is not None:
        _die(problem, EXIT_CONFIG)
    try:
        app()
    except (OSError, TimeoutError) as exc:
        # The state store or the Qdrant folder cannot be reached: one line, not a traceback.
        if isinstance(exc, OSError) and exc.filename:  # a path: the setting that named it
            where = "(check DATABASE_URL and QDRANT_PATH)"
            _die(f"cannot use {str(exc.filename)!r}: {exc.strerror} {where}")
        # Which one the error does not say: name where each is looked for.
        hosts = ", ".join(_where(part) for part in ("store", "qdrant", "mixpeek"))
        _die(f"cannot reach a service the command needs ({hosts}): {_first_line(exc)}")
    except RuntimeError as exc:
        if "already accessed by another instance" not in str(exc):
            _unexpected(exc)
        _die(
            "the embedded Qdrant folder (QDRANT_PATH) is in use by another sync-service "
            "process; stop it, or use a Qdrant server (QDRANT_URL)"
        )
    except Exception as exc:
        _known(exc)


def _known(exc: Exception) -> NoReturn:
    from sync_service.keep.binding import TargetMismatch
    from sync_service.settings import SettingUnusable
    from sync_service.state.migrate import SchemaMismatch

    if isinstance(exc, SchemaMismatch | TargetMismatch | SettingUnusable):
        _die(str(exc), EXIT_CONFIG)  # configuration, not failed work
    from sqlalchemy.exc import SQLAlchemyError

    from sync_service.qdrant.faults import SinkUnavailable
    from sync_service.upstream.port import MixpeekError

    if isinstance(exc, SQLAlchemyError):
        _die(f"the state store ({_where('store')}) failed: {_first_line(exc)}")
    if isinstance(exc, SinkUnavailable):
        _die(f"Qdrant ({_where('qdrant')}) failed: {_first_line(exc)}")
    if isinstance(exc, MixpeekError):  # its text never holds the key (redacted)
        _die(f"Mixpeek ({_where('mixpeek')}) failed: {_first_line(exc)}")
    _unexpected(exc)


def _where(part: str) -> str:
    """The setting that names ``part``'s host or path, with its value when no secret."""
    if not loaded:
        return {"store": "DATABASE_URL", "qdrant": "QDRANT_URL/QDRANT_PATH"}.get(
            part, "MIXPEEK_API_URL"
        )
    settings = loaded[0]
    if part == "mixpeek":
        return f"MIXPEEK_API_URL={settings.mixpeek_api_url}"
    if part == "qdrant":
        if settings.qdrant_url:
            return f"QDRANT_URL={settings.qdrant_url}"
        return f"QDRANT_PATH={settings.qdrant_path}"
    # DATABASE_URL is a secret as a whole (a password); its host and database are not.
    from sqlalchemy.engine import make_url

    url = make_url(settings.database_url.get_secret_value())
    shown = url.set(password=None, query={}).render_as_string(hide_password=True)
    return f"DATABASE_URL={shown}"


def _unexpected(exc: BaseException) -> NoReturn:
    """A failure nothing above names: a bug. One line, unless the log level asks for more."""
    if os.environ.get("SYNC_LOG_LEVEL", "").strip().upper() == "DEBUG":
        raise exc
    _die(
        f"unexpected {type(exc).__name__}: {_first_line(exc)} (a bug: please report it; "
        "SYNC_LOG_LEVEL=DEBUG shows where it happened)"
    )


def _undecodable_argument(args: list[str]) -> str | None:
    """The first argument that is not UTF-8 (Python passes its bytes on as lone surrogates,
    which fail far away: in SQLite, an HTTP request, a file name), named by its option."""
    for index, arg in enumerate(args):
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            option, _, value = arg.partition("=") if arg.startswith("--") else ("", "", arg)
            if not option and index > 0 and args[index - 1].startswith("-"):
                option = args[index - 1]
            from sync_service.settings import brief

            named = f"{option} " if option else f"argument {index + 1} "
            return f"{named}{brief(value)}: not valid UTF-8 text"
    return None


def _die(message: str, code: int = EXIT_FAILED) -> NoReturn:
    say_error(message)
    raise SystemExit(code)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines() or [type(exc).__name__])[0][:300]
