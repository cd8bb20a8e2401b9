"""``sync-service demo``: the whole loop on a laptop with no servers and no Mixpeek account.

Starts the emulator on a free loopback port, submits a small library of videos, images and
texts on distinct subjects, syncs them into embedded Qdrant with a progress bar, shows what
landed, and ends with three text queries whose top hits are the right segments.
Everything lives under ``--data-dir`` (default ``./data/demo``), which the demo starts afresh,
so running it twice gives the same result.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from sync_service.cli.common import EXIT_CONFIG, err
from sync_service.cli.query import print_hits
from sync_service.control import logs
from sync_service.emulator import EmulatorConfig, EmulatorServer, library
from sync_service.engine.scheduler import Daemon
from sync_service.runtime import Service, open_service
from sync_service.search import Answer, Query, search
from sync_service.settings import Settings, describe_validation_error
from sync_service.upstream.port import Submission

COLLECTION = "demo"
DEMO_KEY = "demo-key"
#: Media whose content the emulator knows (emulator/library.py): the queries can be checked.
VIDEOS = library.VIDEO_URLS
IMAGES = library.IMAGE_URLS
TEXTS = library.TEXTS
QUERIES = [text for text, _video, _segment in library.QUERIES]


def run_demo(root: Path, console: Console) -> int:
    """The demo in ``root``, an empty folder (the command starts it afresh)."""
    logs.configure("WARNING")
    config = EmulatorConfig(api_key=DEMO_KEY, processing_time=3.0, seed=7)
    with EmulatorServer(config) as emulator:
        # markup=True: the CLI's consoles print text as it is; what is put in is escaped.
        console.print(f"[bold]Mixpeek emulator[/] listening on {escape(emulator.url)}", markup=True)
        try:
            # The demo's own choices; the environment's SYNC_ tuning knobs still apply.
            settings = Settings(
                mixpeek_api_url=emulator.url,
                mixpeek_api_key=DEMO_KEY,
                qdrant_url=None,
                qdrant_path=root / "qdrant",
                qdrant_collection="{collection_id}",
                database_url=f"sqlite:///{root / 'sync.db'}",
                poll_interval=0.5,
                max_poll_interval=1.0,
            )
        except ValidationError as exc:
            for line in describe_validation_error(exc):
                err.print(f"configuration error: {line}", highlight=False)
            return EXIT_CONFIG
        return asyncio.run(_demo(settings, console))


async def _demo(settings: Settings, console: Console) -> int:
    async with open_service(settings) as service:
        task_ids = await _submit(service)
        console.print(
            f"Submitted {len(VIDEOS)} videos, {len(IMAGES)} images and {len(TEXTS)} texts "
            f"to collection [bold]{COLLECTION}[/]; syncing into embedded Qdrant at "
            f"{escape(str(settings.qdrant_path))}",
            markup=True,
        )
        await _sync_with_progress(service, len(task_ids), console)
        await _show_landed(service, console)
        await _show_queries(service, console)
        counts = await service.store.counts()
    return 0 if counts["synced"] == len(task_ids) else 1


async def _submit(service: Service) -> list[str]:
    meta = {"demo": True}
    items = [
        *(Submission("video", u, COLLECTION, meta) for u in VIDEOS),
        *(Submission("image", u, COLLECTION, meta) for u in IMAGES),
        *(Submission("text", t, COLLECTION, meta) for t in TEXTS),
    ]
    task_ids = [t for item in items if (t := await service.upstream.submit(item))]
    await service.store.track(task_ids, source="submit")
    return task_ids


async def _sync_with_progress(service: Service, total: int, console: Console) -> None:
    settings = service.settings
    daemon = Daemon.from_settings(service.store, service.pipeline, settings)
    columns = (TextColumn("syncing"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        bar = progress.add_task("sync", total=total)
        run = asyncio.create_task(daemon.run(drain=True))
        while not run.done():
            counts = await service.store.counts()
            progress.update(bar, completed=counts["synced"] + counts["failed"])
            await asyncio.sleep(0.2)
        counts = await service.store.counts()
        progress.update(bar, completed=counts["synced"] + counts["failed"])
        await run


async def _show_landed(service: Service, console: Console) -> None:
    tasks = await service.store.list_tasks()
    ledger = await service.store.synced_features()
    by_task: dict[str, Counter[str]] = {}
    for row in ledger:
        by_task.setdefault(row["task_id"], Counter())[row["modality"] or "?"] += 1
    table = Table("task", "state", "asset", "points by modality", title="What landed")
    for task in tasks:
        mix = ", ".join(f"{m}: {n}" for m, n in sorted(by_task.get(task["task_id"], {}).items()))
        table.add_row(
            task["task_id"][:8] + "…",
            task["state"],
            (task["asset_id"] or "")[:8] + "…",
            mix or task["error"] or "",
        )
    console.print(table)
    collection = tasks[0]["qdrant_collection"] if tasks else COLLECTION
    schema = await service.sink.schema(collection)
    vectors = ", ".join(f"{name} ({spec.describe()})" for name, spec in schema.items())
    total = await service.sink.count(collection)
    modalities = Counter(row["modality"] for row in ledger)
    console.print(
        f"Qdrant collection [bold]{escape(collection)}[/]: {total} points "
        f"({escape(', '.join(f'{m} {n}' for m, n in sorted(modalities.items())))}); "
        f"named vectors: {escape(vectors)}",
        markup=True,
    )


async def _show_queries(service: Service, console: Console) -> list[Answer]:
    """The demo's text queries, each answered from Qdrant with its table of hits."""
    answers = []
    for text in QUERIES:
        answer = await search(
            service.sink, service.upstream, service.settings, Query(text, collection=COLLECTION)
        )
        console.print()
        print_hits(answer, console, title=f"query {text!r}")
        answers.append(answer)
    return answers
