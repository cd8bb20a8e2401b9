"""``sync-service query``: search what the service synced, by text or by a stored point.

Registered on the main ``sync-service`` app by ``cli/main.py``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import typer

from sync_service.cli.common import EXIT_CONFIG, check_ids, err, fail, load_settings, out, run_async

if TYPE_CHECKING:
    from rich.console import Console

    from sync_service.search import Answer


def query(
    text: str | None = typer.Argument(None, help="What to search for (embedded by Mixpeek)."),
    collection: str | None = typer.Option(
        None,
        "--collection",
        help="Mixpeek collection id or Qdrant collection name (default: the only one).",
    ),
    vector: str | None = typer.Option(
        None, "--vector", help="Named vector to search (default: the collection's first)."
    ),
    modality: str | None = typer.Option(
        None, "--modality", help="Only points of this modality (video, image, text...)."
    ),
    asset_id: str | None = typer.Option(None, "--asset", help="Only points of this asset."),
    limit: int = typer.Option(5, "--limit", min=1, max=1000, help="Hits to show."),
    like: str | None = typer.Option(
        None,
        "--like",
        help="Search with this stored point's vector (point or feature id) instead of a text.",
    ),
    as_json: bool = typer.Option(False, "--json", help="One JSON object on stdout, for scripts."),
) -> None:
    """Search the Qdrant collection the service fills, and print the best hits."""
    # A text is embedded by Mixpeek; --like reads a stored point's vector from Qdrant.
    settings = load_settings(calls_mixpeek=text is not None)
    if (text is None) == (like is None):
        fail("give either a TEXT to search for or --like POINT_ID", EXIT_CONFIG)
    if text is not None and not text.strip():
        fail("TEXT must not be empty", EXIT_CONFIG)
    for option, value in (
        ("--collection", collection),
        ("--vector", vector),
        ("--modality", modality),
        ("--asset", asset_id),
        ("--like", like),
    ):
        if value is not None:
            check_ids(option, [value])
    from sync_service.qdrant.sink import QdrantSink
    from sync_service.search import Query, SearchError, search
    from sync_service.upstream.connect import open_upstream

    wanted = Query(text, like, collection, vector, modality, asset_id, limit)

    async def main() -> Answer:
        sink = QdrantSink.from_settings(settings)
        try:
            async with open_upstream(settings) as upstream:
                return await search(sink, upstream, settings, wanted)
        finally:
            await sink.close()

    try:
        answer = run_async(main())
    except SearchError as exc:
        fail(str(exc))
    if as_json:
        body = {
            "collection": answer.collection,
            "vector": answer.vector,
            "query": text if like is None else {"like": like},
            "hits": [hit.as_json() for hit in answer.hits],
        }
        out.print_json(json.dumps(body))
        return
    print_hits(answer, out, title=f"{text!r}" if like is None else f"like point {like}")
    if not answer.hits:
        err.print("no point matches the filters", highlight=False)


def print_hits(answer: Answer, console: Console, *, title: str) -> None:
    """The hits as a table: rank, score, modality, asset URL, segment, snippet."""
    from rich.table import Table

    table = Table(title=f"{title} in {answer.collection} ({answer.vector})")
    table.add_column("#", justify="right")
    table.add_column("score", justify="right")
    table.add_column("modality")
    table.add_column("asset", overflow="fold")  # a URL cut short names nothing
    table.add_column("segment", no_wrap=True)
    table.add_column("text", ratio=1)
    for hit in answer.hits:
        segment = ""
        if hit.start_time is not None and hit.end_time is not None:
            segment = f"{hit.start_time:g}-{hit.end_time:g} s"
        table.add_row(
            str(hit.rank),
            f"{hit.score:.3f}",
            hit.modality or "",
            hit.url or f"(text) {hit.asset_id or ''}",
            segment,
            hit.snippet,
        )
    console.print(table)
