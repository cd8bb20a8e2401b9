"""The ``sync-service`` command line (design.md §3). Data goes to stdout, logs to stderr."""

from __future__ import annotations

import gc
import json
import logging
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar
from urllib.parse import urlsplit

import typer
from rich.table import Table

from sync_service.cli import keep as cli_keep
from sync_service.cli import watch as cli_watch
from sync_service.cli.common import err, fail, load_settings, out, run_async
from sync_service.emulator.command import emulator

if TYPE_CHECKING:
    from sync_service.upstream.gen_b.models import IndexResult

# The heavy parts (Qdrant client, SQLAlchemy, the pipeline) are imported inside the commands
# that use them, so `status`, `track` and `--help` start quickly.

T = TypeVar("T")
log = logging.getLogger("sync_service")

app = typer.Typer(
    help="Keeps a Qdrant collection in step with what Mixpeek indexes.",
    no_args_is_help=True,
    add_completion=False,
    # Rich tracebacks print local variables, and locals can hold secrets: never show them.
    pretty_exceptions_enable=False,
)
app.command("emulator", help="Serve the Mixpeek emulator (for trying things out and tests).")(
    emulator
)
app.command("backfill", help=cli_watch.BACKFILL_HELP)(cli_watch.backfill)
app.add_typer(cli_watch.watch_app, name="watch")
app.command("forget")(cli_keep.forget)
app.command("verify")(cli_keep.verify)
app.command("reindex")(cli_keep.reindex)


@app.command()
def run(
    drain: bool = typer.Option(
        False, "--drain", help="Exit 0 once no tracked task is pending (cron, CI, tests)."
    ),
) -> None:
    """Run the daemon: poll tracked tasks and sync them into Qdrant until SIGTERM/SIGINT."""
    settings = load_settings()
    problem = settings.api_exposure_problem()
    if problem is not None:
        err.print(f"configuration error: {problem}", highlight=False, markup=False)
        raise typer.Exit(2)
    from sync_service.engine.scheduler import Daemon
    from sync_service.runtime import ControlApiError, open_service, serve_control_api

    async def main() -> int:
        async with open_service(settings) as service, serve_control_api(service) as url:
            if url is not None:
                log.info("control API listening", extra={"event": "api_started", "url": url})
            daemon = Daemon.from_settings(service.store, service.pipeline, settings, watch=True)
            if settings.watch_collections:
                added = await service.store.watch_add(settings.watch_collections, source="env")
                if added:
                    log.info(
                        "watching %s",
                        ", ".join(added),
                        extra={"event": "watch_added", "collections": added},
                    )
            # Everything made so far (the libraries' modules, schemas, clients) lives as long
            # as the process: frozen, a full collection no longer walks it (pauses of 70-90 ms
            # stalled every request in flight). Young garbage is freed first; a full collection
            gc.collect(1)  # here found none the imports' own had left, and cost 50-70 ms
            gc.freeze()
            return await daemon.run(drain=drain)

    try:
        code = run_async(main())
    except ControlApiError as exc:
        fail(str(exc))
    raise typer.Exit(code)


@app.command()
def track(task_ids: list[str] = typer.Argument(..., help="Mixpeek task ids.")) -> None:
    """Start tracking existing Mixpeek tasks (tracking one twice is a no-op)."""
    settings = load_settings()
    ids = [t.strip() for t in task_ids if t.strip()]
    if not ids:
        fail("no task id given", 2)
    from sync_service.state.store import open_store

    async def main() -> int:
        async with open_store(settings) as store:
            return await store.track(ids)

    new = run_async(main())
    err.print(f"tracking {new} new task(s); {len(set(ids)) - new} already tracked")


@app.command()
def submit(
    collection_id: str = typer.Option(..., "--collection-id", help="Mixpeek collection id."),
    video: list[str] = typer.Option([], "--video", help="A video URL (repeatable)."),
    image: list[str] = typer.Option([], "--image", help="An image URL (repeatable)."),
    text: list[str] = typer.Option([], "--text", help="A text to index (repeatable)."),
    metadata: str | None = typer.Option(
        None, "--metadata", help="JSON object kept with each item."
    ),
    prevent_duplicate: bool = typer.Option(
        False, "--prevent-duplicate", help="Let Mixpeek return the existing asset for a known URL."
    ),
) -> None:
    """Index videos, images or texts with Mixpeek, then track their tasks. Prints task ids."""
    settings = load_settings()
    if not (video or image or text):
        fail("give at least one --video URL, --image URL or --text TEXT", 2)
    for flag, urls in (("--video", video), ("--image", image)):
        for url in urls:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                fail(f"{flag} {url!r}: only http:// and https:// URLs can be indexed", 2)
    if any(not t.strip() for t in text):
        fail("--text must not be empty", 2)
    meta = _parse_metadata(metadata)
    from sync_service.runtime import mixpeek_client
    from sync_service.state.store import open_store
    from sync_service.upstream.errors import MixpeekError

    async def main() -> list[str]:
        submitted: list[str] = []
        async with open_store(settings) as store, mixpeek_client(settings) as client:
            jobs: list[tuple[Callable[..., Awaitable[IndexResult]], str]] = [
                (client.index_video_url, u) for u in video
            ]
            jobs += [(client.index_image_url, u) for u in image]
            for index, item in jobs:
                result = await index(
                    item, collection_id, metadata=meta, prevent_duplicate=prevent_duplicate
                )
                if result.task_id:
                    # Tracked one by one: a failure half-way loses none already submitted.
                    await store.track([result.task_id], source="submit")
                    submitted.append(result.task_id)
            for body in text:
                result = await client.index_text(body, collection_id, metadata=meta)
                if result.task_id:
                    await store.track([result.task_id], source="submit")
                    submitted.append(result.task_id)
        return submitted

    try:
        task_ids = run_async(main())
    except MixpeekError as exc:
        fail(f"Mixpeek refused the submission: {exc}")
    for task_id in task_ids:
        out.print(task_id, highlight=False)
    err.print(f"submitted and tracking {len(task_ids)} task(s)")


@app.command()
def status(
    task_id: str | None = typer.Argument(None, help="Show only this task."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object on stdout, for scripts."),
    limit: int = typer.Option(50, "--limit", help="Tasks shown in the table (JSON shows all)."),
) -> None:
    """What is pending, synced and failed."""
    settings = load_settings()
    from sync_service.state.store import open_store

    async def main() -> tuple[
        dict[str, int], list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]
    ]:
        async with open_store(settings) as store:
            rows = await store.list_tasks(task_id)
            letters = await store.dead_letters(task_id) if task_id else []
            watched = await cli_watch.watch_rows(store) if task_id is None else []
            return await store.counts(), rows, letters, watched

    counts, rows, letters, watched = run_async(main())
    if task_id is not None and not rows:
        fail(f"task {task_id} is not tracked")
    tasks = [
        {
            "task_id": r["task_id"],
            "state": r["state"],
            "asset_id": r["asset_id"],
            "collection_id": r["collection_id"],
            "features_synced": r["features_synced"],
            "error": r["error"],
            "dead_letters": r["dead_letters"],
        }
        for r in rows
    ]
    if as_json:
        sys.stdout.write(json.dumps({"counts": counts, "tasks": tasks, "watch": watched}) + "\n")
        return
    _print_status(counts, tasks, letters, limit)
    cli_watch.print_watch_table(watched)


dlq = typer.Typer(
    help="Dead letters: features set aside, to list, retry or drop.", no_args_is_help=True
)
app.add_typer(dlq, name="dlq")


@dlq.command("list")
def dlq_list(
    task_id: str | None = typer.Option(None, "--task-id", help="Only this task's dead letters."),
    as_json: bool = typer.Option(False, "--json", help="A JSON array on stdout."),
) -> None:
    """List dead letters, oldest first."""
    settings = load_settings()
    from sync_service.state.store import open_store

    async def main() -> list[dict[str, Any]]:
        async with open_store(settings) as store:
            return await store.dead_letters(task_id)

    letters = run_async(main())
    if as_json:
        sys.stdout.write(json.dumps(letters) + "\n")
        return
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
    ids: list[int] = typer.Argument(None, help="Dead letter ids (see `dlq list`)."),
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
        fail("give dead letter ids or --all", 2)
    tasks, missing = run_async(main())
    err.print(f"{len(tasks)} task(s) pending again; `sync-service run` will sync them")
    if missing:
        fail(f"no dead letter with id {', '.join(map(str, missing))}")


@dlq.command("drop")
def dlq_drop(
    ids: list[int] = typer.Argument(None, help="Dead letter ids (see `dlq list`)."),
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
        fail("give dead letter ids or --all", 2)
    dropped, missing = run_async(main())
    err.print(f"dropped {dropped} dead letter(s)")
    if missing:
        fail(f"no dead letter with id {', '.join(map(str, missing))}")


@app.command()
def migrate() -> None:
    """Bring the state store's schema to the newest migration."""
    settings = load_settings()
    from sync_service.state.store import open_store

    async def main() -> None:
        async with open_store(settings):
            pass

    run_async(main())
    err.print("state store schema is up to date")


@app.command()
def demo(
    data_dir: str = typer.Option(
        "./data/demo", "--data-dir", help="Where the demo keeps its state."
    ),
) -> None:
    """The whole loop on embedded defaults against the built-in emulator, then a query."""
    from sync_service.cli.demo import run_demo

    raise typer.Exit(run_demo(data_dir, out))


def _parse_metadata(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
        json.dumps(value, allow_nan=False)  # NaN, Infinity and 1e400 parse but cannot be sent
    except ValueError as exc:
        fail(f"--metadata is not valid JSON: {exc}", 2)
    if not isinstance(value, dict):
        fail("--metadata must be a JSON object", 2)
    return value


def _print_status(
    counts: dict[str, int],
    tasks: list[dict[str, Any]],
    letters: list[dict[str, Any]],
    limit: int,
) -> None:
    out.print(
        f"[bold]pending[/] {counts['pending']}   [green]synced[/] {counts['synced']}   "
        f"[red]failed[/] {counts['failed']}"
    )
    table = Table("task", "state", "asset", "collection", "points", "dead letters", "error")
    colour = {"pending": "yellow", "synced": "green", "failed": "red"}
    for t in tasks[-limit:]:
        table.add_row(
            t["task_id"],
            f"[{colour[t['state']]}]{t['state']}[/]",
            t["asset_id"] or "",
            t["collection_id"] or "",
            str(t["features_synced"]),
            str(t["dead_letters"]),
            t["error"] or "",
        )
    out.print(table)
    if len(tasks) > limit:
        out.print(f"(showing the newest {limit} of {len(tasks)}; --json lists all)")
    for letter in letters:
        out.print(f"[red]dead letter[/] feature {letter['feature_id']}: {letter['reason']}")


def main() -> None:
    try:
        app()
    except (OSError, TimeoutError) as exc:
        # The state store or the Qdrant folder cannot be reached: one line, not a traceback.
        _die(f"cannot reach a service the command needs: {_first_line(exc)}")
    except RuntimeError as exc:
        if "already accessed by another instance" not in str(exc):
            raise
        _die(
            "the embedded Qdrant folder (QDRANT_PATH) is in use by another sync-service "
            "process; stop it, or use a Qdrant server (QDRANT_URL)"
        )
    except Exception as exc:
        from sqlalchemy.exc import SQLAlchemyError

        from sync_service.qdrant.sink import SinkUnavailable
        from sync_service.upstream.errors import MixpeekError

        if isinstance(exc, SQLAlchemyError):
            _die(f"the state store (DATABASE_URL) failed: {_first_line(exc)}")
        if isinstance(exc, SinkUnavailable):
            _die(f"Qdrant failed: {_first_line(exc)}")
        if isinstance(exc, MixpeekError):  # its text never holds the key (redacted)
            _die(f"Mixpeek failed: {_first_line(exc)}")
        raise


def _die(message: str) -> NoReturn:
    err.print(f"[red]error:[/red] {message}", highlight=False)
    raise SystemExit(1)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines() or [type(exc).__name__])[0][:300]
