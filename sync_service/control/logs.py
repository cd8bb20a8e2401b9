"""Logging set-up: one line per event on stderr, as text or JSON (``SYNC_LOG_FORMAT``).

Code logs with a stable event name in ``extra={"event": "task_synced", ...}``; the extra fields
are appended as ``key=value`` (text) or become JSON keys, so logs can be searched by event.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any


def describe_error(exc: BaseException, *, limit: int | None = None) -> str:
    """``Type: message`` for a person; with ``limit``, the message's first line, cut there."""
    text = str(exc).strip()
    if limit is not None:
        text = (text.splitlines() or [""])[0][:limit]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD}


class _Formatter(logging.Formatter):
    """A traceback only at DEBUG (``tracebacks``); otherwise the error's one-line description:
    no traceback reaches a user who did not ask for one (README "Exit codes")."""

    def __init__(self, *, tracebacks: bool = True) -> None:
        super().__init__()
        self.tracebacks = tracebacks

    def failure(self, record: logging.LogRecord) -> str | None:
        if not record.exc_info:
            return None
        if self.tracebacks:
            return self.formatException(record.exc_info)
        error = record.exc_info[1]
        return describe_error(error, limit=300) if error is not None else None


class TextFormatter(_Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
        fields = " ".join(f"{k}={v}" for k, v in _extras(record).items())
        line = f"{stamp}Z {record.levelname:<7} {record.getMessage()}"
        if fields:
            line = f"{line}  {fields}"
        failure = self.failure(record)
        if failure is not None:
            line = f"{line}\n{failure}" if self.tracebacks else f"{line}  error={failure}"
        return line


class JsonFormatter(_Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **_extras(record),
        }
        failure = self.failure(record)
        if failure is not None:
            entry["exception"] = failure
        return json.dumps(entry, default=str)


def configure(level: str = "INFO", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    tracebacks = str(level).upper() == "DEBUG"
    formatter = JsonFormatter if fmt == "json" else TextFormatter
    handler.setFormatter(formatter(tracebacks=tracebacks))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Libraries' warnings (qdrant-client's about an API key over http, deprecations) go through
    # the same handler, so a JSON log stays JSON lines.
    logging.captureWarnings(True)
    # Libraries log every request at INFO; our own events are the story.
    for noisy in ("httpx", "httpcore", "uvicorn.access", "alembic", "aiosqlite"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # APScheduler's warnings are a tick skipped while the last one still runs, or one fired
    # late: both by design (max_instances=1, coalesce), and on a busy machine they came every
    # tick, burying the daemon's own lines. Its errors still show.
    logging.getLogger("apscheduler").setLevel(logging.ERROR)
