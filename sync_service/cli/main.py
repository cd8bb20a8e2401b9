"""The ``sync-service`` command line (docs/contract.md §3). Data goes to stdout, logs to stderr."""

from __future__ import annotations

import json
import logging
import shutil
import sys
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import typer

from sync_service import collector
from sync_service.cli import dlq as cli_dlq
from sync_service.cli import keep as cli_keep
from sync_service.cli import query as cli_query
from sync_service.cli import retry as cli_retry
from sync_service.cli import watch as cli_watch
from sync_service.cli import webhook as cli_webhook
from sync_service.cli.common import (
    EXIT_CONFIG,
    check_ids,
    console_of,
    end_process,
    err,
    fail,
    load_settings,
    out,
    parse_metadata,
    run_async,
)
from sync_service.emulator.command import emulator

if TYPE_CHECKING:
    from sync_service.state.peek import StorePeek
    from sync_service.state.store import Store

# The heavy parts (Qdrant client, SQLAlchemy, the pipeline) are imported inside the commands
# that use them, so `status`, `track` and `--help` start quickly.

T = TypeVar("T")
#: What status reads: counts, task rows, the task's dead letters, the watched collections.
Rows = list[dict[str, Any]]
StatusData = tuple[dict[str, int], Rows, Rows, Rows, Rows]
log = logging.getLogger("sync_service")

app = typer.Typer(
    help="Keeps a Qdrant collection in step with what Mixpeek indexes.",
    no_args_is_help=True,
    add_completion=False,
    # Rich tracebacks print local variables, and locals can hold secrets: never show them.
    pretty_exceptions_enable=False,
    # Plain click output: a usage error ends with one "Error: …" line naming the option (Rich
    # drew a box around it), and --help does not load Rich.
    rich_markup_mode=None,
)


def _version(shown: bool) -> None:
    if shown:
        from sync_service import __version__

        out.print(f"sync-service {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(
        False, "--version", is_eager=True, callback=_version, help="Print the version and exit."
    ),
) -> None:
    """Keeps a Qdrant collection in step with what Mixpeek indexes."""


app.command("emulator", help="Serve the Mixpeek emulator (for trying things and tests).")(emulator)
app.command("backfill", help=cli_watch.BACKFILL_HELP)(cli_watch.backfill)
app.add_typer(cli_watch.watch_app, name="watch")
app.command("forget")(cli_keep.forget)
app.command("verify")(cli_keep.verify)
app.command("reindex")(cli_keep.reindex)
app.command("rebind")(cli_keep.rebind)
app.command("query")(cli_query.query)
app.command("retry")(cli_retry.retry)
app.add_typer(cli_webhook.webhook_app, name="webhook")


@app.command()
def run(
    drain: bool = typer.Option(
        False, "--drain", help="Exit 0 once no tracked task is pending (cron, CI, tests)."
    ),
) -> None:
    """Run the daemon: poll tracked tasks and sync them into Qdrant until SIGTERM/SIGINT."""
    collector.hold()  # until the daemon starts (collector.py); every early exit ends the process
    settings = load_settings(calls_mixpeek=True)
    problem = settings.api_exposure_problem()
    if problem is not None:
        err.print(f"configuration error: {problem}", highlight=False)
        raise typer.Exit(EXIT_CONFIG)
    # A drain with nothing to do (nor watches to add) makes its clients only if work turns up.
    lazy = drain and not settings.watch_collections
    if lazy:
        # A SQLite store with nothing to do is told without loading SQLAlchemy (engine/idle.py);
        # with the control API on, the daemon starts and serves it even so.
        from sync_service.engine.idle import drained_at_once
        from sync_service.keep.binding import describe_target

        url = settings.database_url.get_secret_value()
        drained = run_async(drained_at_once(url, describe_target(settings)))
        if drained and settings.api_port == 0:
            raise typer.Exit(0)
        lazy = drained is not False  # False: work is waiting
    from sync_service.upstream.connect import probe_version_early

    probe = None if lazy else probe_version_early(settings)  # out while the client loads
    from sync_service.control.server import ControlApiError, serve_control_api
    from sync_service.runtime import open_service

    async def main() -> int:
        async with (
            open_service(
                settings,
                migrate=settings.auto_migrate,
                defer_when_idle=lazy,
                overlap_sink=True,
                upstream_first=not lazy,  # it calls Mixpeek at once
                version_probe=probe,
            ) as service,
            serve_control_api(service),
        ):
            # Already imported when open_service went upstream first.
            from sync_service.engine.scheduler import Daemon

            daemon = Daemon.from_settings(service.store, service.pipeline, settings, watch=True)
            service.stop_on_failure(daemon.abort)
            if daemon.webhooks is not None:  # the receiver's events are applied at once
                service.on_webhook = daemon.webhooks.wake
            if settings.watch_collections:
                added = await service.store.watch_add(settings.watch_collections, source="env")
                if added:
                    log.info(
                        "watching %s",
                        ", ".join(added),
                        extra={"event": "watch_added", "collections": added},
                    )
            # Start-up is over: what it made lives as long as the process, and is frozen (a
            # full collection walked it again and again, pausing every request in flight);
            # Qdrant's client, imported in a thread at the first write, is frozen when loaded.
            collector.release()
            try:
                return await daemon.run(drain=drain)
            finally:  # the control API, stopping next, keeps to what is left of the grace
                service.stop_deadline = daemon.deadline

    try:
        code = run_async(main())
    except ControlApiError as exc:
        fail(str(exc))
    end_process(code)


@app.command()
def track(task_ids: list[str] = typer.Argument(..., help="Mixpeek task ids.")) -> None:
    """Start tracking existing Mixpeek tasks (tracking one twice is a no-op)."""
    settings = load_settings()
    ids = check_ids("task id", task_ids)
    from sync_service.state.store import open_store

    async def main() -> int:
        async with open_store(settings) as store:
            return await store.track(ids)

    new = run_async(main())
    err.print(f"tracking {new} new task(s); {len(ids) - new} already tracked")


@app.command()
def submit(
    collection_id: str = typer.Option(..., "--collection-id", help="Mixpeek collection id."),
    video: list[str] = typer.Option([], "--video", help="A video URL (repeatable)."),
    image: list[str] = typer.Option([], "--image", help="An image URL (repeatable)."),
    text: list[str] = typer.Option([], "--text", help="A text to index (repeatable)."),
    metadata: str | None = typer.Option(
        None, "--metadata", help="JSON object kept with each item, or @FILE holding one."
    ),
    prevent_duplicate: bool = typer.Option(
        False, "--prevent-duplicate", help="Let Mixpeek return the existing asset for a known URL."
    ),
) -> None:
    """Index videos, images or texts with Mixpeek, then track their tasks. Prints task ids."""
    settings = load_settings(calls_mixpeek=True)
    if not collection_id.strip():
        fail("--collection-id must not be empty", EXIT_CONFIG)
    (collection_id,) = check_ids("--collection-id", [collection_id])
    if not (video or image or text):
        fail("give at least one --video URL, --image URL or --text TEXT", EXIT_CONFIG)
    from sync_service.settings import brief

    for flag, urls in (("--video", video), ("--image", image)):
        for url in urls:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                fail(
                    f"{flag} {brief(url)}: only http:// and https:// URLs can be indexed",
                    EXIT_CONFIG,
                )
    if any(not t.strip() for t in text):
        fail("--text must not be empty", EXIT_CONFIG)
    meta = parse_metadata(metadata)
    from sync_service.state.store import open_store
    from sync_service.upstream.connect import open_upstream
    from sync_service.upstream.port import MixpeekError, Submission

    items = [
        *(Submission("video", u, collection_id, meta, prevent_duplicate) for u in video),
        *(Submission("image", u, collection_id, meta, prevent_duplicate) for u in image),
        *(Submission("text", t, collection_id, meta) for t in text),
    ]

    async def main() -> list[str]:
        submitted: list[str] = []
        async with open_store(settings) as store, open_upstream(settings) as upstream:
            # Together: on v1 every item bound for one bucket goes in one batch (one task).
            async for task_id in upstream.submit_all(items):
                # Tracked one by one: a failure half-way loses none already submitted.
                await store.track([task_id], source="submit")
                submitted.append(task_id)
        return submitted

    try:
        task_ids = run_async(main())
    except MixpeekError as exc:
        from sync_service.upstream.port import MixpeekTransportError

        if isinstance(exc, MixpeekTransportError):  # no answer: nothing was refused
            fail(f"cannot reach Mixpeek (MIXPEEK_API_URL={settings.mixpeek_api_url}): {exc}")
        fail(f"Mixpeek refused the submission: {exc}")
    for task_id in task_ids:
        out.print(task_id, highlight=False)
    err.print(f"submitted and tracking {len(task_ids)} task(s)")


@app.command()
def status(
    task_id: str | None = typer.Argument(None, help="Show only this task."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object on stdout, for scripts."),
    limit: int = typer.Option(
        50, "--limit", min=1, help="Tasks shown in the table (JSON shows all)."
    ),
) -> None:
    """What is pending, synced and failed."""
    settings = load_settings()
    if task_id is not None:
        (task_id,) = check_ids("task id", [task_id])

    async def read(store: Store | StorePeek) -> StatusData:
        rows = await store.list_tasks(task_id)
        letters = await store.dead_letters(task_id) if task_id else []
        # The failures retries cleared are listed after the dead letters.
        letters += [{"retry": r} for r in await store.task_history(task_id)] if task_id else []
        watched = await cli_watch.watch_rows(store) if task_id is None else []
        return await store.counts(), rows, letters, watched, await store.outages()

    async def main() -> StatusData:
        # A SQLite store at the newest schema is read without loading SQLAlchemy; else (and
        # on any SQLite error) the store is opened as by every command.
        from sync_service.state.peek import peek_sqlite

        peeked = await peek_sqlite(settings.database_url.get_secret_value(), read)
        if peeked is not None:
            return peeked
        from sync_service.state.store import open_store

        async with open_store(settings) as store:
            return await read(store)

    counts, rows, letters, watched, outages = run_async(main())
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
    if task_id is not None:
        tasks[0]["retries"] = [x["retry"] for x in letters if "retry" in x]
    if as_json:
        shown = {"counts": counts, "tasks": tasks, "watch": watched, "outages": outages}
        sys.stdout.write(json.dumps(shown) + "\n")
        return
    from sync_service.cli.status_view import print_outages, print_status

    print_outages(outages)
    print_status(counts, tasks, letters, limit, one=task_id is not None)
    cli_watch.print_watch_table(watched)


app.add_typer(cli_dlq.dlq, name="dlq")  # here, after `status`: the help lists in this order


@app.command()
def migrate() -> None:
    """Bring the state store's schema to the newest migration."""
    settings = load_settings()
    from sync_service.state.store import open_store

    async def main() -> None:
        async with open_store(settings, migrate=True):
            pass

    run_async(main())
    err.print("state store schema is up to date")


@app.command()
def demo(
    data_dir: str = typer.Option(
        "./data/demo", "--data-dir", help="Where the demo keeps its state."
    ),
    api: str = typer.Option(
        "2024",
        "--api",
        help="The Mixpeek API the emulator serves and the service speaks: 2024 or v1.",
    ),
) -> None:
    """The whole loop on embedded defaults against the built-in emulator, then a query."""
    if api not in ("2024", "v1"):
        fail(f"--api {api!r}: expected 2024 or v1", EXIT_CONFIG)
    from pathlib import Path

    root = Path(data_dir)
    # Started afresh here, before the demo's libraries load (seconds): a folder that cannot
    # be made is one line at once.
    try:
        if root.exists():
            shutil.rmtree(root)
        root.mkdir(parents=True)
    except OSError as exc:
        fail(f"--data-dir {str(root)!r}: cannot start it afresh ({exc.strerror})", EXIT_CONFIG)
    from sync_service.cli.demo import run_demo

    raise typer.Exit(run_demo(root, console_of(out), "v1" if api == "v1" else "2024"))


def main() -> None:
    from sync_service.cli.failures import run_cli

    run_cli(app)
