"""CLI commands that keep Qdrant in step with Mixpeek: forget, verify, reindex, rebind.

Registered on the main ``sync-service`` app by ``cli.py``.
"""

from __future__ import annotations

from typing import Any

import typer

from sync_service.choices import Distance
from sync_service.cli.common import (
    EXIT_CONFIG,
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


def forget(
    asset_ids: list[str] = typer.Argument(..., help="Mixpeek asset ids."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only show what would be deleted."),
    force: bool = typer.Option(False, "--force", help="Delete even past SYNC_DELETE_GUARD."),
) -> None:
    """Remove assets' points from Qdrant (and from the state store's ledger)."""
    settings = load_settings()  # Qdrant and the ledger only: Mixpeek is not asked
    ids = check_ids("asset id", asset_ids)
    from sync_service.keep.forget import DeleteGuardError, apply_removal, check_guard, plan_removal
    from sync_service.runtime import open_service

    async def main() -> dict[str, Any]:
        async with open_service(settings) as service:
            removal = await plan_removal(service.store, service.sink, ids)
            plan = {c: removal.count(c) for c in removal.collections}
            if dry_run:
                return {"dry_run": True, "would_delete": plan}
            await check_guard(service.sink, plan, settings.delete_guard, force=force)
            deleted = await apply_removal(service.store, service.sink, removal)
            return {"dry_run": False, "deleted": deleted, "by_collection": plan}

    try:
        result = run_async(main())
    except DeleteGuardError as exc:
        fail(str(exc), EXIT_HELD)
    if result["dry_run"]:
        plan = result["would_delete"]
        if not plan:
            out.print("nothing to delete: no point of these assets is known")
        for collection, n in plan.items():
            out.print(f"would delete {n} point(s) from {collection}")
        return
    err.print(f"deleted {result['deleted']} point(s) of {len(ids)} asset(s)")


def verify(
    collection: list[str] = typer.Option(
        [], "--collection", help="Qdrant collection (alias) to check (repeatable; default all)."
    ),
    sample: int = typer.Option(
        20,
        "--sample",
        min=0,
        help="Assets per collection to compare with upstream (vectors and payload).",
    ),
    repair: bool = typer.Option(False, "--repair", help="Fix the drift found, then check again."),
    force: bool = typer.Option(False, "--force", help="Repair even past SYNC_DELETE_GUARD."),
) -> None:
    """Compare the state store, Qdrant and a sample of upstream; exit 1 on drift, 3 when the
    delete guard held a repair."""
    # Without a sample or a repair, only the ledger and Qdrant are compared.
    settings = load_settings(calls_mixpeek=sample > 0 or repair)
    names = check_ids("--collection", collection) if any(c.strip() for c in collection) else []
    from sync_service.keep.forget import DeleteGuardError
    from sync_service.keep.verify import VerifyReport
    from sync_service.keep.verify import verify as run_verify
    from sync_service.runtime import open_service

    bar = progress_bar()
    job = bar.add_task("verify", total=None, detail="")

    def show(stage: str, done: int, total: int) -> None:
        bar.update(job, description=stage, completed=done, total=total or None, detail="")

    async def main() -> VerifyReport:
        async with open_service(settings) as service:
            return await run_verify(
                service,
                collections=names or None,
                sample=sample,
                repair=repair,
                force=force,
                on_progress=show,
            )

    try:
        with bar:
            report = run_async(main())
    except DeleteGuardError as exc:
        fail(str(exc), EXIT_HELD)
    except ValueError as exc:  # e.g. a collection nobody knows
        fail(str(exc), EXIT_CONFIG)
    for line in report.summary_lines():
        out.print(line, highlight=False, markup=False)
    raise typer.Exit(EXIT_FAILED if report.drift else 0)


def reindex(
    collection: str = typer.Option(..., "--collection", help="The collection (alias) to rebuild."),
    distance: Distance | None = typer.Option(
        None, "--distance", help="Distance of the new build (default: SYNC_DISTANCE)."
    ),
    rollback: bool = typer.Option(
        False, "--rollback", help="Point the alias back at the build the last re-index replaced."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Rebuild a collection behind its alias from upstream, check it, swap atomically; exit 3
    when the new build failed its check (the alias still serves the old one)."""
    settings = load_settings(calls_mixpeek=not rollback)  # a rollback only moves the alias
    (collection,) = check_ids("--collection", [collection])
    if rollback and distance is not None:
        fail("--rollback takes no --distance", EXIT_CONFIG)
    from sync_service.keep import reindex as rx
    from sync_service.runtime import open_service

    bar = progress_bar(enabled=progress and not rollback)
    job = bar.add_task("reindex", total=None, detail="")

    def show(stage: str, done: int, total: int) -> None:
        bar.update(job, description=stage, completed=done, total=total or None)

    async def main() -> list[str]:
        async with open_service(settings) as service:
            if rollback:
                previous = await rx.rollback(service, collection)
                return [f"{collection} -> {previous} (rolled back)"]
            report = await rx.reindex(service, collection, distance=distance, on_progress=show)
            return report.summary_lines()

    try:
        with bar:
            lines = run_async(main())
    except rx.ReindexError as exc:
        fail(str(exc), EXIT_HELD if exc.held else EXIT_FAILED)
    for line in lines:
        out.print(line, highlight=False, markup=False)


def rebind() -> None:
    """Make the Qdrant the settings point at (QDRANT_URL/QDRANT_PATH) the state store's own."""
    settings = load_settings()
    from sync_service.keep.binding import REBIND_MEANS
    from sync_service.keep.binding import rebind as do_rebind
    from sync_service.qdrant.sink import QdrantSink
    from sync_service.state.store import open_store

    async def main() -> tuple[str | None, str]:
        async with open_store(settings) as store:
            sink = QdrantSink.from_settings(settings)
            try:
                return await do_rebind(store, sink, settings)
            finally:
                await sink.close()

    before, after = run_async(main())
    if before == after:
        err.print(f"the state store already feeds {after}; its mark is written there")
        return
    err.print(f"the state store now feeds {after} (it fed {before or 'none yet'})")
    err.print(f"next: {REBIND_MEANS}", highlight=False)
