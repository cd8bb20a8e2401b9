"""How ``status`` reads in a terminal: the outages the daemons report, the counts, the tasks.

Many tasks are a table of one line each at any width: every row keeps the whole task id (what
``status <task>`` and ``retry`` take) and the error is cut to fit, where a wrapped table once
took eight lines a task at 80 columns and cut the ids. The asset and collection columns come
when the terminal has room. One task (``status <task>``) is shown field by field, in full.
"""

from __future__ import annotations

from typing import Any

from sync_service.cli.common import out

#: Terminal widths from which the list shows the asset, then the collection too.
ASSET_FROM, COLLECTION_FROM = 130, 170
_COLOUR = {"pending": "yellow", "synced": "green", "failed": "red"}


def print_outages(outages: list[dict[str, Any]]) -> None:
    """What the daemons report now (``engine/availability.py``), one line each."""
    from rich.text import Text

    for o in outages:
        since = str(o["since"])[:19].replace("T", " ") + "Z"
        seen = f" since {since} ({o['owner']}): {o['reason']}; work paused, no attempts spent"
        out.print(Text.assemble((f"{o['what']} unavailable", "red"), seen), highlight=False)


def print_status(
    counts: dict[str, int],
    tasks: list[dict[str, Any]],
    letters: list[dict[str, Any]],
    limit: int,
    *,
    one: bool = False,
) -> None:
    out.print(
        f"[bold]pending[/] {counts['pending']}   [green]synced[/] {counts['synced']}   "
        f"[red]failed[/] {counts['failed']}",
        markup=True,  # numbers only: the one line here with styles in markup
    )
    if one:
        _print_task(tasks[0])
    else:
        _print_tasks(tasks, limit)
    from rich.text import Text

    for letter in letters:
        if "retry" in letter:
            r = letter["retry"]
            why = f"({r['failed_attempts']} attempts): {r['failed_error']}"
            out.print(f"retried after it failed {why}", highlight=False, markup=False)
        else:
            why = f" feature {letter['feature_id']}: {letter['reason']}"
            out.print(Text.assemble(("dead letter", "red"), why), highlight=False)


def _print_tasks(tasks: list[dict[str, Any]], limit: int) -> None:
    if not tasks:
        out.print("no tasks tracked (`submit`, `track`, or `watch` a collection)", style="dim")
        return
    from rich import box
    from rich.table import Table
    from rich.text import Text

    wide, wider = out.width >= ASSET_FROM, out.width >= COLLECTION_FROM
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, expand=True)
    shown = tasks[-limit:]
    # Whole ids even in a narrow terminal: they are what `status <task>` and `retry` take.
    table.add_column("task", no_wrap=True, min_width=max(len(t["task_id"]) for t in shown))
    table.add_column("state", no_wrap=True)
    if wide:
        table.add_column("asset", no_wrap=True)
    if wider:
        table.add_column("collection", no_wrap=True, overflow="ellipsis", max_width=30)
    table.add_column("points", justify="right", no_wrap=True)
    table.add_column("dead", justify="right", no_wrap=True)
    # The error takes what is left (ratio): the columns before it keep their whole width.
    table.add_column("error", no_wrap=True, overflow="ellipsis", ratio=1, min_width=8)
    for t in shown:
        cells: list[str | Text] = [t["task_id"], Text(t["state"], style=_COLOUR[t["state"]])]
        if wide:
            cells.append(t["asset_id"] or "")
        if wider:
            cells.append(t["collection_id"] or "")
        error = " ".join((t["error"] or "").split())  # one line, whatever the error held
        cells += [str(t["features_synced"]), str(t["dead_letters"]), error]
        table.add_row(*cells)
    out.print(table)
    if len(tasks) > limit:
        out.print(f"(showing the newest {limit} of {len(tasks)}; --json lists all)")
    if any(t["error"] for t in shown):
        out.print("(`status <task>` shows a task's whole error)", style="dim")


def _print_task(task: dict[str, Any]) -> None:
    from rich.table import Table
    from rich.text import Text

    fields = Table.grid(padding=(0, 2))
    fields.add_column(style="bold", no_wrap=True)
    fields.add_column(overflow="fold")  # ids and errors whole, folded if they must be
    fields.add_row("task", task["task_id"])
    fields.add_row("state", Text(task["state"], style=_COLOUR[task["state"]]))
    fields.add_row("asset", task["asset_id"] or "")
    fields.add_row("collection", task["collection_id"] or "")
    fields.add_row("points", str(task["features_synced"]))
    fields.add_row("dead letters", str(task["dead_letters"]))
    if task["error"]:
        fields.add_row("error", task["error"])
    out.print(fields)
