"""CLI commands that mirror whole collections: ``backfill`` (one full pass and sweep, for a
person or a CronJob) and ``watch add|remove|list`` (the daemon's watch set).

Registered on the main ``sync-service`` app by ``cli.py``.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import typer

from sync_service.cli.common import (
    EXIT_FAILED,
    EXIT_HELD,
    check_ids,
    err,
    fail,
    load_settings,
    out,
    progress_bar,
    run_async,
)

if TYPE_CHECKING:
    from sync_service.keep.backfill import Progress
    from sync_service.keep.watch import PassReport
    from sync_service.state.store import Store

T = TypeVar("T")

_EMBEDDED_LOCKED = "already accessed by another instance"

# One line per paragraph or exit code: the help keeps line breaks and wraps the rest itself.
BACKFILL_HELP = (
    "Sync every asset of Mixpeek collections: one full listing (every asset queued and "
    "synced), then a sweep that removes the assets deleted upstream. Resumable; safe beside "
    "`run` and its replicas.\n\n"
    "Exit codes:\n"
    "0: the pass completed (assets FAILED upstream are normal data, reported as "
    '"failed upstream: N", their ids in `status`)\n'
    "1: work could not be done because of errors (Mixpeek, Qdrant or the state store, after "
    "retries)\n"
    "2: bad usage or configuration\n"
    "3: the delete guard held a sweep (nothing deleted; `--dry-run` lists what would go, "
    "`--force` removes it)"
)


def backfill(
    collection_id: list[str] = typer.Option(
        ..., "--collection-id", help="Mixpeek collection id (repeatable)."
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Change nothing: print what would be queued and deleted."
    ),
    force: bool = typer.Option(
        False, "--force", help="Sweep even past SYNC_DELETE_GUARD (clears a held sweep)."
    ),
    no_sweep: bool = typer.Option(False, "--no-sweep", help="List and sync; delete nothing."),
    page_size: int = typer.Option(100, "--page-size", min=1, max=100, help="Assets per page."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    settings = load_settings(calls_mixpeek=True)  # it lists the collections
    ids = check_ids("--collection-id", collection_id)
    if dry_run:
        _dry_run(ids, page_size)
        return
    from sync_service.engine.scheduler import Daemon, worker_name
    from sync_service.keep import backfill as bf
    from sync_service.keep.watch import Mirroring
    from sync_service.runtime import open_service
    from sync_service.state.store import open_store
    from sync_service.upstream.connect import open_upstream

    started = time.monotonic()
    bar = progress_bar(enabled=progress)
    job = bar.add_task("backfill", total=None, detail="listing…")

    def show(state: bf.Progress) -> None:
        rate = state.finished / max(time.monotonic() - started, 1e-9)
        total = state.expected if state.expected is not None else state.listed
        waiting = f"waiting for the pass of {state.waiting_for}  " if state.waiting_for else ""
        bar.update(
            job,
            total=max(total, state.finished) or None,
            completed=state.finished,
            detail=f"{waiting}listed {state.listed}  synced {state.synced}  "
            f"failed {state.failed}  {rate:.1f} assets/s",
        )

    options: dict[str, Any] = {"force": force, "sweep": not no_sweep, "on_progress": show}

    async def with_daemon() -> tuple[bf.Progress, bool]:
        async with open_service(settings) as service:
            daemon = Daemon.from_settings(service.store, service.pipeline, settings)
            mirroring = Mirroring(
                settings,
                service.store,
                service.upstream,
                service.sink,
                service.metrics,
                on_queued=daemon._kick,
                page_size=page_size,
            )
            state = await bf.backfill(
                mirroring,
                daemon,
                ids,
                owner=daemon.owner,
                lease_seconds=settings.lease_seconds,
                **options,
            )
            return state, daemon.fatal is not None

    async def queue_only() -> bf.Progress:
        # A running daemon holds the embedded Qdrant: list and queue; it syncs and sweeps.
        async with open_store(settings) as store, open_upstream(settings) as upstream:
            mirroring = Mirroring(settings, store, upstream, None, page_size=page_size)
            return await bf.backfill(
                mirroring,
                None,
                ids,
                owner=worker_name(),
                lease_seconds=settings.lease_seconds,
                defer_sweep=True,
                **options,
            )

    with bar:
        try:
            state, fatal = run_async(with_daemon())
            queued = False
        except RuntimeError as exc:
            if _EMBEDDED_LOCKED not in str(exc):
                raise
            state, fatal, queued = run_async(queue_only()), False, True
    seconds = time.monotonic() - started
    for cid, reason in state.pass_errors.items():
        err.print(f"{cid}: the pass could not complete: {reason}", highlight=False, markup=False)
    if queued and not state.pass_errors:
        err.print(
            f"queued {state.listed} asset(s) from {len(ids)} collection(s); the running daemon "
            "(which holds the embedded Qdrant) syncs them and sweeps deletions: see "
            "`sync-service status`"
        )
        raise typer.Exit(0)
    _report(state, seconds)
    raise typer.Exit(EXIT_FAILED if fatal else state.exit_code)


backfill.__doc__ = BACKFILL_HELP


def _report(state: Progress, seconds: float) -> None:
    if state.stalled:
        err.print(
            f"no asset finished syncing for 5 minutes (is Qdrant or Mixpeek down? see the "
            f"log): stopped waiting; {state.pending} asset(s) stay queued for a daemon or the "
            "next backfill"
        )
    for report in state.passes:
        if report.listed == 0 and not report.gone:
            err.print(
                f"{report.collection_id}: Mixpeek lists no asset in this collection (is the id "
                "right? MIXPEEK_NAMESPACE?)",
                highlight=False,
                markup=False,
            )
        if report.gone and report.held is None:
            err.print(
                f"{report.collection_id}: removed {len(report.gone)} asset(s) deleted upstream "
                f"({report.removed_points} point(s))"
            )
    for cid, held in state.held.items():
        err.print(
            f"{cid}: sweep held by the delete guard: {len(held.assets)} asset(s) gone upstream "
            f"would delete {held.points} of {held.total} points ({held.share:.0%}); nothing "
            f"deleted. Check them with --dry-run, then run with --force",
            highlight=False,
            markup=False,
        )
    for asset_id, error in state.errors[:20]:
        err.print(f"failed: asset {asset_id}: {error}", highlight=False, markup=False)
    err.print(
        f"backfill: {state.listed} asset(s) listed, {state.synced} synced, "
        f"{state.failed} failed (failed upstream: {len(state.failed_upstream)}), "
        f"{state.pending} pending, in {seconds:.1f}s "
        f"({state.finished / max(seconds, 1e-9):.1f} assets/s)",
        highlight=False,
    )


def _dry_run(ids: list[str], page_size: int) -> None:
    settings = load_settings(calls_mixpeek=True)
    from sync_service.keep.watch import Mirroring
    from sync_service.runtime import open_service

    async def main() -> list[PassReport]:
        async with open_service(settings) as service:
            mirroring = Mirroring(
                settings, service.store, service.upstream, service.sink, page_size=page_size
            )
            return [await mirroring.preview(cid) for cid in ids]

    try:
        reports = run_async(main())
    except RuntimeError as exc:
        if _EMBEDDED_LOCKED not in str(exc):
            raise
        fail(
            "--dry-run reads Qdrant, whose embedded folder (QDRANT_PATH) a running daemon "
            "holds: stop it first, or use a Qdrant server (QDRANT_URL)"
        )
    held = False
    for r in reports:
        verdict = ""
        if r.held is not None:
            held = True
            verdict = (
                f" ({r.held.points} of {r.held.total} points, {r.held.share:.0%}: over "
                f"SYNC_DELETE_GUARD={settings.delete_guard:.0%}, so held unless --force)"
            )
        elif r.gone:
            verdict = f" ({r.removed_points} point(s))"
        # Plain lines (no wrapping): scripts read them.
        lines = [
            f"{r.collection_id}: {r.listed} listed; would queue {len(r.queued)} asset(s); "
            f"failed upstream: {len(r.failed_upstream)}; would delete {len(r.gone)} "
            f"asset(s){verdict}",
            *(f"  queue  {asset_id}" for asset_id in r.queued),
            *(f"  delete {asset_id}" for asset_id in r.gone),
        ]
        sys.stdout.write("\n".join(lines) + "\n")
    raise typer.Exit(EXIT_HELD if held else 0)


watch_app = typer.Typer(
    help="The collections the daemon mirrors by itself (shared by every replica).",
    no_args_is_help=True,
)


@watch_app.command("add")
def watch_add(
    collection_ids: list[str] = typer.Argument(..., help="Mixpeek collection ids."),
) -> None:
    """Watch collections: the daemon lists them and syncs new, changed and deleted assets."""
    ids = _ids(collection_ids)
    added = _with_store(lambda store: store.watch_add(ids, source="cli"))
    err.print(f"watching {len(added)} new collection(s); {len(ids) - len(added)} already watched")


@watch_app.command("remove")
def watch_remove(
    collection_ids: list[str] = typer.Argument(..., help="Mixpeek collection ids."),
) -> None:
    """Stop watching collections (their points stay in Qdrant)."""
    ids = _ids(collection_ids)
    removed = _with_store(lambda store: store.watch_remove(ids))
    unknown = sorted(set(ids) - set(removed))
    err.print(f"stopped watching {len(removed)} collection(s)")
    if unknown:
        err.print(f"not watched: {', '.join(unknown)}", highlight=False, markup=False)


def _with_store(action: Callable[[Store], Awaitable[T]]) -> T:
    """Run one state-store action with the configured store."""
    settings = load_settings()
    from sync_service.state.store import open_store

    async def main() -> T:
        async with open_store(settings) as store:
            return await action(store)

    return run_async(main())


@watch_app.command("list")
def watch_list(
    as_json: bool = typer.Option(False, "--json", help="A JSON array on stdout."),
) -> None:
    """The watched collections and the state of their passes."""
    rows = _with_store(watch_rows)
    if as_json:
        sys.stdout.write(json.dumps(rows) + "\n")
        return
    print_watch_table(rows)
    if not rows:
        err.print("no collection is watched: `sync-service watch add C` or SYNC_WATCH_COLLECTIONS")


async def watch_rows(store: Any) -> list[dict[str, Any]]:
    """The watched collections as ``status`` and the control API show them."""
    from sync_service.keep.watch_status import watch_view

    return await watch_view(store)


def print_watch_table(rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    from rich.table import Table

    table = Table("collection", "last incremental", "last full", "lag", "assets", "pass", "note")
    for r in rows:
        table.add_row(
            r["collection_id"],
            _ago(r["last_incremental_ago"]),
            _ago(r["last_full_ago"]),
            "-" if r["lag_seconds"] is None else f"{r['lag_seconds']:.0f}s",
            str(r["assets_known"]),
            r["pass"] or "idle",
            _note(r),
        )
    out.print(table)


def _note(row: dict[str, Any]) -> str:
    notes = []
    held = row.get("held_sweep")
    if held:
        notes.append(
            f"sweep held: {len(held['assets'])} asset(s), {held['points']} of {held['total']} "
            "points (backfill --force)"
        )
    deleted = row.get("deleted_upstream")
    if deleted:
        cid = row["collection_id"]
        notes.append(
            f"deleted upstream (webhook event {deleted['event_id']}): points kept until "
            f"`webhook confirm {cid}` (or `webhook dismiss {cid}`)"
        )
    if row.get("filter_ignored"):
        notes.append("upstream ignores the filter: full listings")
    if row.get("last_error"):
        notes.append(f"error: {row['last_error']}")
    return "; ".join(notes)


def _ago(seconds: float | None) -> str:
    return "never" if seconds is None else f"{seconds:.0f}s ago"


def _ids(values: list[str]) -> list[str]:
    return check_ids("collection id", values)
