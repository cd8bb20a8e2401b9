"""The layout's rules (ARCHITECTURE.md), checked on the source so they stay true.

Module-level imports only (a function-level import is a deliberate lazy import, kept out of
start-up); ``if TYPE_CHECKING:`` imports count, since a cycle of types is a cycle of design.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "sync_service"
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _top_level_imports(path: Path, known: set[str] | frozenset[str] = frozenset()) -> set[str]:
    """Modules imported at module level (``if`` blocks such as TYPE_CHECKING included).

    ``from package import module`` depends on that module, not on the package's ``__init__``
    (which the package pattern lets re-export its modules)."""
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    body: list[ast.stmt] = list(tree.body)
    while body:
        node = body.pop()
        if isinstance(node, ast.If | ast.Try):
            body.extend(node.body)
            body.extend(node.orelse)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                names.add(sub if sub in known else node.module)
    return names


def test_no_module_is_over_400_lines() -> None:
    long = {
        name: n
        for name, path in _modules().items()
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def test_no_import_cycle() -> None:
    modules = _modules()
    graph = {
        name: {m for m in _top_level_imports(path, set(modules)) if m in modules and m != name}
        for name, path in modules.items()
    }
    # A package's __init__ importing nothing of its own: edges to packages are edges to their
    # __init__ only, which the graph already holds.
    cycles = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == []


def _importers(library: str) -> set[str]:
    return {
        name
        for name, path in _modules().items()
        if any(m == library or m.startswith(library + ".") for m in _top_level_imports(path))
        or f"import {library}" in path.read_text()
    }


def test_sql_lives_in_state() -> None:
    # settings.py parses DATABASE_URL with SQLAlchemy's URL type: no SQL there.
    outside = {m for m in _importers("sqlalchemy") if not m.startswith("sync_service.state")}
    assert outside == {"sync_service.settings"}


def test_http_clients_live_at_the_boundaries() -> None:
    """httpx and aiohttp only where the service talks HTTP: to Mixpeek (upstream/), to Qdrant
    (qdrant/, whose client raises httpx errors) and in the emulator's server."""
    allowed = ("sync_service.upstream", "sync_service.qdrant", "sync_service.emulator")
    users = _importers("httpx") | _importers("aiohttp")
    assert {m for m in users if not m.startswith(allowed)} == set()


def test_qdrant_client_is_imported_in_one_place() -> None:
    """qdrant_client only through qdrant/client.py, which imports it with its models built on
    first use: a module importing it directly first would build all of them."""
    users = {
        name
        for name, path in _modules().items()
        if any(m.split(".")[0] == "qdrant_client" for m in _all_imports(path))
    }
    assert users == {"sync_service.qdrant.client"}


def _all_imports(path: Path) -> set[str]:
    """Every module named by an import anywhere in the file (function-level ones too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_mixpeek_is_reached_through_the_port() -> None:
    """Outside upstream/, Mixpeek is the port's models and errors; which adapter serves them is
    chosen in one place (upstream/connect.py), used by the parts that build a service."""
    builders = {"sync_service.runtime"} | {
        f"sync_service.cli.{name}" for name in ("main", "watch", "query")
    }
    seen = {}
    for name, path in _modules().items():
        if name.startswith("sync_service.upstream"):
            continue
        used = {m for m in _all_imports(path) if m.startswith("sync_service.upstream")}
        allowed = {"sync_service.upstream.port"}
        if name in builders:
            allowed.add("sync_service.upstream.connect")
        if used - allowed:
            seen[name] = sorted(used - allowed)
    assert seen == {}


def test_the_port_knows_no_adapter() -> None:
    modules = _modules()
    for name in ("sync_service.upstream.port", "sync_service.upstream.errors"):
        assert not any(".gen_b" in m for m in _all_imports(modules[name])), name


def test_every_state_store_write_ends_whole() -> None:
    """A method that opens a write transaction carries ``@completes`` (state/base.py): a
    caller cancelled mid-statement must not strand the transaction."""
    bare = []
    for path in sorted((PACKAGE / "state").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.AsyncFunctionDef) or node.name == "_writing":
                continue
            writes = any(
                isinstance(call, ast.Call)
                and isinstance(call.func, ast.Attribute)
                and call.func.attr == "_writing"
                for call in ast.walk(node)
            )
            marked = any(
                isinstance(d, ast.Name) and d.id == "completes" for d in node.decorator_list
            )
            if writes and not marked:
                bare.append(f"{path.name}:{node.lineno} {node.name}")
    assert not bare, bare
