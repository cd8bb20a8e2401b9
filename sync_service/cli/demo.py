"""``sync-service demo``: the whole loop on a laptop with no servers and no Mixpeek account.

Starts the emulator on a free loopback port, submits a small library of videos, images and
texts on distinct subjects, syncs them into embedded Qdrant with a progress bar, shows what
landed, and ends with three text queries whose top hits are the right segments.
Everything lives under ``--data-dir`` (default ``./data/demo``), which the demo starts afresh,
so running it twice gives the same result. ``--api v1`` tells the same story through Mixpeek's
v1 API: the v1 emulator, a bucket and a multimodal collection made as a user would, the items
submitted as one batch, its documents synced.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Literal

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

if TYPE_CHECKING:
    from sync_service.emulator.v1.server import V1EmulatorServer

COLLECTION = "demo"
DEMO_KEY = "demo-key"
#: Media whose content the emulator knows (emulator/library.py): the queries can be checked.
VIDEOS = library.VIDEO_URLS
IMAGES = library.IMAGE_URLS
TEXTS = library.TEXTS
QUERIES = [text for text, _video, _segment in library.QUERIES]


def run_demo(root: Path, console: Console, api: Literal["2024", "v1"] = "2024") -> int:
    """The demo in ``root``, an empty folder (the command starts it afresh)."""
    logs.configure("WARNING")
    emulator: EmulatorServer | V1EmulatorServer
    if api == "v1":
        from sync_service.emulator.v1.config import V1Config
        from sync_service.emulator.v1.server import V1EmulatorServer

        emulator = V1EmulatorServer(V1Config(api_key=DEMO_KEY, processing_time=3.0, seed=7))
    else:
        emulator = EmulatorServer(EmulatorConfig(api_key=DEMO_KEY, processing_time=3.0, seed=7))
    with emulator:
        # markup=True: the CLI's consoles print text as it is; what is put in is escaped.
        shown = "Mixpeek emulator" + (" (v1 API)" if api == "v1" else "")
        console.print(f"[bold]{shown}[/] listening on {escape(emulator.url)}", markup=True)
        if api == "v1":
            assert isinstance(emulator, V1EmulatorServer)
            _v1_collection(emulator, console)
        try:
            # The demo's own choices; the environment's SYNC_ tuning knobs still apply. On v1
            # the Qdrant collection is named as on 2024 ("demo"), not after the col_… id.
            settings = Settings(
                mixpeek_api_url=emulator.url,
                mixpeek_api_key=DEMO_KEY,
                mixpeek_api_version=api,
                mixpeek_namespace="default" if api == "v1" else None,
                qdrant_url=None,
                qdrant_path=root / "qdrant",
                qdrant_collection=COLLECTION if api == "v1" else "{collection_id}",
                database_url=f"sqlite:///{root / 'sync.db'}",
                poll_interval=0.5,
                max_poll_interval=1.0,
            )
        except ValidationError as exc:
            for line in describe_validation_error(exc):
                err.print(f"configuration error: {line}", highlight=False)
            return EXIT_CONFIG
        return asyncio.run(_demo(settings, console))


def _v1_collection(emulator: V1EmulatorServer, console: Console) -> None:
    """What a v1 user has before syncing: a bucket of media and a collection over it."""
    kinds = ("video", "image", "text")
    schema = {"properties": {kind: {"type": kind} for kind in kinds}}
    body = {"bucket_name": "demo-media", "bucket_schema": schema}
    bucket = emulator.call("/v1/buckets", body, api_key=DEMO_KEY)["bucket_id"]
    body = {
        "collection_name": COLLECTION,
        "source": {"type": "bucket", "bucket_ids": [bucket]},
        "feature_extractor": {"feature_extractor_name": "multimodal_extractor", "version": "v1"},
    }
    made = emulator.call("/v1/collections", body, api_key=DEMO_KEY)
    console.print(
        f"Bucket {escape(bucket)} and collection [bold]{COLLECTION}[/] "
        f"({escape(str(made['collection_id']))}, multimodal_extractor_v1) made",
        markup=True,
    )


async def _demo(settings: Settings, console: Console) -> int:
    async with open_service(settings) as service:
        task_ids = await _submit(service)
        console.print(
            f"Submitted {len(VIDEOS)} videos, {len(IMAGES)} images and {len(TEXTS)} texts "
            f"to collection [bold]{COLLECTION}[/] ({len(task_ids)} task(s)); syncing into "
            f"embedded Qdrant at {escape(str(settings.qdrant_path))}",
            markup=True,
        )
        # One synced unit per item: a 2024 task each, or on v1 the batch's task and an asset
        # job for each of its other objects.
        items = len(VIDEOS) + len(IMAGES) + len(TEXTS)
        await _sync_with_progress(service, items, console)
        await _show_landed(service, console)
        await _show_queries(service, console)
        counts = await service.store.counts()
    return 0 if counts["synced"] == items else 1


async def _submit(service: Service) -> list[str]:
    meta = {"demo": True}
    items = [
        *(Submission("video", u, COLLECTION, meta) for u in VIDEOS),
        *(Submission("image", u, COLLECTION, meta) for u in IMAGES),
        *(Submission("text", t, COLLECTION, meta) for t in TEXTS),
    ]
    task_ids = [t async for t in service.upstream.submit_all(items)]
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
            _short(task["task_id"]),
            task["state"],
            _short(task["asset_id"] or ""),
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


def _short(ident: str) -> str:
    """An id cut to what tells it apart: a UUID's head, a v1 asset's object id."""
    ident = ident.removeprefix("asset:").rpartition("/")[2]
    return ident if len(ident) <= 16 else ident[:8] + "…"
