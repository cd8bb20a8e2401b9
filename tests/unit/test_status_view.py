"""`status` in a terminal: one line per task at any width, whole ids, the error cut to fit."""

from __future__ import annotations

import io
import re
from typing import Any

import pytest
from rich.console import Console

from sync_service.cli import status_view

COUNTS = {"pending": 1, "synced": 1, "failed": 1}
ERROR = "Qdrant answered 502: <html>\n<body>Bad gateway</body>\n</html> " * 3


def _task(n: int, state: str, error: str | None = None) -> dict[str, Any]:
    return {
        "task_id": f"{n:08d}-bd2b-4728-8e9e-24f56379294a",
        "state": state,
        "asset_id": f"a{n:07d}-308b-4d8b-874e-0490ce60ae0d",
        "collection_id": "films-of-the-week",
        "features_synced": 12 * n,
        "error": error,
        "dead_letters": n,
    }


TASKS = [_task(1, "synced"), _task(2, "pending", ERROR), _task(3, "failed", "gone (404)")]
TASKS[2]["task_id"] = "asset:" + TASKS[2]["task_id"]  # a watched asset's job: a longer id


def _shown(monkeypatch: pytest.MonkeyPatch, width: int, **kwargs: Any) -> list[str]:
    text = io.StringIO()
    console = Console(file=text, width=width, color_system=None, markup=False, emoji=False)
    monkeypatch.setattr(status_view, "out", console)
    tasks = kwargs.pop("tasks", TASKS)
    status_view.print_status(COUNTS, tasks, kwargs.pop("letters", []), 20, **kwargs)
    return text.getvalue().splitlines()


@pytest.mark.parametrize("width", [60, 80, 100, 140, 200])
def test_each_task_is_one_line_with_its_whole_id(
    monkeypatch: pytest.MonkeyPatch, width: int
) -> None:
    lines = _shown(monkeypatch, width)
    assert all(len(line.rstrip()) <= width for line in lines)
    for task in TASKS:
        [line] = [x for x in lines if task["task_id"] in x]  # whole, on exactly one line
        if width >= 70:  # below, the columns after the id are cut to fit
            assert task["state"] in line and f" {task['dead_letters']} " in line
    assert (TASKS[0]["asset_id"] in "\n".join(lines)) == (width >= status_view.ASSET_FROM)
    assert ("films-of-the-week" in "\n".join(lines)) == (width >= status_view.COLLECTION_FROM)
    [pending] = [x for x in lines if TASKS[1]["task_id"] in x]
    if width >= 80:  # the error takes what the other columns leave, cut to fit
        assert "Qdrant a" in pending and pending.rstrip().endswith("…")
    if width >= 100:
        assert "Qdrant answered 502: <html> " in pending  # its lines joined
    assert "`status <task>` shows a task's whole error" in lines[-1]


def test_one_task_is_shown_field_by_field_with_its_whole_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    retry = {"retry": {"failed_attempts": 3, "failed_error": "timed out"}}
    lines = _shown(monkeypatch, 80, tasks=[TASKS[1]], letters=[retry], one=True)
    text = "\n".join(lines)
    assert " ".join(text.split()).count(" ".join(ERROR.split())) == 1  # all of it
    assert "<body>Bad" in text  # its lines kept (folded at the width, not cut)
    assert TASKS[1]["task_id"] in text and TASKS[1]["asset_id"] in text
    assert re.search(r"^collection +films-of-the-week", text, re.MULTILINE)
    assert lines[-1] == "retried after it failed (3 attempts): timed out"


def test_no_tasks_says_how_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    lines = _shown(monkeypatch, 80, tasks=[])
    assert lines[-1].startswith("no tasks tracked")
