"""``sync-service dlq list|retry|drop``: the dead letters, features set aside with a reason.

Registered on the main ``sync-service`` app by ``main.py``.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import typer

from sync_service.cli.common import EXIT_CONFIG, check_ids, err, fail, load_settings, out, run_async

#: The largest id a row can have (a SQL BIGINT); a larger one is an argument error, not a crash.
MAX_ROW_ID = 2**63 - 1

dlq = typer.Typer(
    help="Dead letters: features set aside, to list, retry or drop.", no_args_is_help=True
)


@dlq.command("list")
def dlq_list(
    task_id: str | None = typer.Option(None, "--task-id", help="Only this task's dead letters."),
    as_json: bool = typer.Option(False, "--json", help="A JSON array on stdout."),
) -> None:
    """List dead letters, oldest first."""
    settings = load_settings()
    if task_id is not None:
        (task_id,) = check_ids("--task-id", [task_id])
    from sync_service.state.store import open_store

    async def main() -> list[dict[str, Any]]:
        async with open_store(settings) as store:
            return await store.dead_letters(task_id)

    letters = run_async(main())
    if as_json:
        sys.stdout.write(json.dumps(letters) + "\n")
        return
    from rich.table import Table

    table = Table("id", "task", "feature", "collection", "reason")
    for d in letters:
        table.add_row(
            str(d["id"]),
            d["task_id"],
            d["feature_id"] or "(whole task)",
            d["qdrant_collection"] or "",
            d["reason"],
        )
    out.print(table)
    err.print(f"{len(letters)} dead letter(s)")


@dlq.command("retry")
def dlq_retry(
    ids: list[int] = typer.Argument(
        None, min=1, max=MAX_ROW_ID, help="Dead letter ids (see `dlq list`)."
    ),
    all_: bool = typer.Option(False, "--all", help="Retry every dead letter."),
) -> None:
    """Sync the dead letters' tasks again (after their cause was fixed); `run` picks them up."""
    settings = load_settings()
    from sync_service.state.store import open_store

    async def main() -> tuple[set[str], list[int]]:
        async with open_store(settings) as store:
            wanted = [d["id"] for d in await store.dead_letters()] if all_ else list(ids or [])
            tasks: set[str] = set()
            missing = []
            for letter in wanted:
                task_id = await store.retry_dead_letter(letter)
                if task_id is None:
                    missing.append(letter)
                else:
                    tasks.add(task_id)
            return tasks, missing

    if not ids and not all_:
        fail("give dead letter ids or --all", EXIT_CONFIG)
    tasks, missing = run_async(main())
    err.print(f"{len(tasks)} task(s) pending again; `sync-service run` will sync them")
    if missing:
        fail(f"no dead letter with id {', '.join(map(str, missing))}")


@dlq.command("drop")
def dlq_drop(
    ids: list[int] = typer.Argument(
        None, min=1, max=MAX_ROW_ID, help="Dead letter ids (see `dlq list`)."
    ),
    all_: bool = typer.Option(False, "--all", help="Drop every dead letter."),
) -> None:
    """Forget dead letters for good (their features stay out of Qdrant)."""
    settings = load_settings()
    from sync_service.state.store import open_store

    async def main() -> tuple[int, list[int]]:
        async with open_store(settings) as store:
            wanted = [d["id"] for d in await store.dead_letters()] if all_ else list(ids or [])
            missing = [letter for letter in wanted if not await store.drop_dead_letter(letter)]
            return len(wanted) - len(missing), missing

    if not ids and not all_:
        fail("give dead letter ids or --all", EXIT_CONFIG)
    dropped, missing = run_async(main())
    err.print(f"dropped {dropped} dead letter(s)")
    if missing:
        fail(f"no dead letter with id {', '.join(map(str, missing))}")
