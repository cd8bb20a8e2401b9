"""The performance benchmark of sync-service: one command, a table, and a JSON file.

    .venv/bin/python bench/run.py [--quick] [--only 1,2,...] [--json bench/results/latest.json]

Scenarios (see bench/README.md): 1 throughput vs ideal and vs the naive script, 2 rate-limited
upstream, 3 upstream calls per feature, 4 the write path alone, 5 100k pending tasks,
6 freshness, 7 keeping Qdrant in step, 8 watch mode, 9 start-up, 10 the whole process,
11 Mixpeek v1. The
service always runs as a real ``sync-service`` subprocess.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script

from rich.console import Console
from rich.table import Table

from bench.common import Row
from bench.freshness import freshness
from bench.keep_in_step import keep_in_step
from bench.scenarios import FULL, QUICK, Size, rate_limited, throughput
from bench.startup import startup
from bench.store_bench import store_scale
from bench.v1_batches import v1_batches
from bench.watch import watch
from bench.whole_process import whole_process
from bench.write_path import write_path

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "latest.json"
Scenario = Callable[[Size, Path], tuple[list[Row], dict[str, Any]]]


def _write_path(size: Size, _tmp: Path) -> tuple[list[Row], dict[str, Any]]:
    from tests.qdrant_server import QdrantStandIn

    with QdrantStandIn() as qdrant:
        return write_path(size.points, qdrant.url, size.rest_points)


SCENARIOS: dict[str, tuple[set[int], Scenario]] = {
    "throughput": ({1, 3}, throughput),
    "rate_limited": ({2}, rate_limited),
    "write_path": ({4}, _write_path),
    "store_scale": ({5}, lambda size, tmp: store_scale(size.pending, tmp)),
    "freshness": ({6}, freshness),
    "keep_in_step": ({7}, lambda size, tmp: keep_in_step(size.keep_assets, tmp)),
    "watch": ({8}, watch),
    "startup": ({9}, lambda _size, tmp: startup(tmp)),
    "whole_process": ({10}, whole_process),
    "v1_batches": ({11}, v1_batches),
}


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if unit in ("", "calls") and abs(value) < 10:
        return f"{value:.3f}" if unit == "calls" else f"{value * 100:.1f} %"
    if abs(value) >= 100 or isinstance(value, int):  # counts print as counts
        return f"{value:,.0f} {unit}".strip()
    return f"{value:.2f} {unit}".strip()


def print_table(rows: list[Row], console: Console) -> None:
    table = Table(title="sync-service benchmark", show_lines=False)
    for column in (
        "scenario",
        "metric",
        "measured",
        "reference / ideal",
        "ratio",
        "target",
        "result",
    ):
        table.add_column(column, overflow="fold")
    for r in rows:
        reference = f"{_fmt(r.reference, r.unit)}  {r.reference_label}".strip()
        result = {True: "[green]PASS[/]", False: "[red]FAIL[/]", None: "[dim]info[/]"}[r.passed]
        ratio = "-" if r.ratio is None else f"{r.ratio:.2f}"
        table.add_row(
            r.scenario, r.metric, _fmt(r.measured, r.unit), reference, ratio, r.target, result
        )
    console.print(table)
    for r in rows:
        if r.note:
            console.print(f"[dim]{r.scenario} / {r.metric}: {r.note}[/]")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes: a smoke run < 1 min")
    parser.add_argument(
        "--only", default="1,2,3,4,5,6,7,8,9,10,11", help="scenario numbers, e.g. 1,4"
    )
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write results")
    args = parser.parse_args(argv)
    only = {int(x) for x in args.only.split(",") if x.strip()}
    size = QUICK if args.quick else FULL
    console = Console(width=None if sys.stdout.isatty() else 200)
    rows: list[Row] = []
    details: dict[str, Any] = {}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="sync-bench-") as tmp:
        for name, (numbers, scenario) in SCENARIOS.items():
            if not numbers & only:
                continue
            console.print(f"[bold]running {name}…[/]")
            t0 = time.monotonic()
            try:
                new_rows, details[name] = scenario(size, Path(tmp))
                rows += new_rows
            except Exception as exc:
                traceback.print_exc()
                rows.append(Row(name, "ERROR", None, passed=False, note=f"{exc}"[:300]))
                details[name] = {"error": traceback.format_exc()}
            console.print(f"  done in {time.monotonic() - t0:.1f}s")
    elapsed = time.monotonic() - started
    console.print()
    print_table(rows, console)
    console.print(
        "Qdrant: embedded qdrant-client local mode in memory (QDRANT_PATH=':memory:') for the "
        "service runs; scenario 4 also against the REST stand-in (tests/qdrant_server.py). "
        f"Upstream: in-process emulator. Total {elapsed:.0f}s."
    )
    failed = sum(1 for r in rows if r.passed is False)
    console.print(f"[bold]{sum(1 for r in rows if r.passed)} PASS, {failed} FAIL[/]")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {
                "quick": args.quick,
                "only": sorted(only),
                "elapsed_s": elapsed,
                "machine": {"python": platform.python_version(), "platform": platform.platform()},
                "rows": [r.as_dict() for r in rows],
                "details": details,
            },
            indent=2,
            default=str,
        )
    )
    console.print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
