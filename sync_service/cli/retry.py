"""``sync-service retry``: give failed tasks and asset jobs another go.

Registered on the main ``sync-service`` app by ``cli/main.py``.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

import typer

from sync_service.cli.common import (
    EXIT_CONFIG,
    EXIT_FAILED,
    check_ids,
    err,
    fail,
    load_settings,
    out,
    run_async,
)

_RELATIVE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd])")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(value: str) -> tuple[float | None, float | None]:
    """``--since``: (an instant, or None) and (seconds ago, or None); ValueError if neither.

    An ISO 8601 time (naive is UTC), or a duration ago such as ``90s``, ``30m``, ``2h``, ``1d``.
    """
    from sync_service.settings import brief

    text = value.strip()
    relative = _RELATIVE.fullmatch(text.lower())
    if relative:
        return None, float(relative.group(1)) * _SECONDS[relative.group(2)]
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"--since {brief(value)}: expected an ISO 8601 time (2026-12-06T10:00:00Z) or a "
            "duration ago (90s, 30m, 2h, 1d)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp(), None


def retry(
    task_ids: list[str] = typer.Argument(None, help="Failed task ids (or asset-job ids)."),
    failed: bool = typer.Option(False, "--failed", help="Every failed task and asset job."),
    since: str | None = typer.Option(
        None, "--since", help="Only work that failed since then: ISO 8601 time, or 30m, 2h, 1d."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only list what would be re-queued."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object on stdout, for scripts."),
) -> None:
    """Re-queue failed work with fresh attempts (status TASK_ID keeps the failure it had)."""
    ids = [t.strip() for t in task_ids or [] if t.strip()]
    if not ids and not failed:
        fail("name the failed TASK_IDs to retry, or pass --failed for all of them", EXIT_CONFIG)
    if ids and failed:
        fail("give TASK_IDs or --failed, not both", EXIT_CONFIG)
    ids = check_ids("task id", ids) if ids else []
    try:
        instant, ago = parse_since(since) if since is not None else (None, None)
    except ValueError as exc:
        fail(str(exc), EXIT_CONFIG)
    settings = load_settings()
    from sync_service.state.retries import Requeued
    from sync_service.state.store import open_store

    async def main() -> Requeued:
        async with open_store(settings) as store:
            cutoff = instant if ago is None else await store.now() - ago
            return await store.requeue_failed(ids, since=cutoff, dry_run=dry_run)

    result = run_async(main())
    if as_json:
        body = {"dry_run": dry_run, "requeued": result.task_ids, "skipped": result.skipped}
        out.print_json(json.dumps(body))
    else:
        for task_id in result.task_ids:
            out.print(task_id, highlight=False)
        for task_id, why in result.skipped.items():
            err.print(f"skipped {task_id}: {why}", highlight=False)
        verb = "would re-queue" if dry_run else "re-queued"
        err.print(f"{verb} {len(result.task_ids)} failed task(s)", highlight=False)
    if ids and not result.task_ids:
        raise typer.Exit(EXIT_FAILED)
