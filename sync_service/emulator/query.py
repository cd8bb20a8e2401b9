"""Filters, sort, search and pagination over plain JSON-shaped dicts (pure functions)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

_MISSING = object()


def lookup(doc: dict[str, Any], path: str) -> Any:
    """Value at a dot path (``metadata.author``), or a private sentinel when absent."""
    node: Any = doc
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _compare(op: Callable[[Any, Any], bool], left: Any, right: Any) -> bool:
    try:
        return bool(op(left, right))
    except TypeError:  # e.g. comparing a string with a number: no match, not a crash
        return False


def _condition(doc: dict[str, Any], cond: dict[str, Any]) -> bool:
    value = lookup(doc, str(cond.get("key", "")))
    expected = cond.get("value")
    operator = cond.get("operator", "eq")
    present = value is not _MISSING
    if operator == "eq":
        return present and value == expected
    if operator == "ne":
        return not present or value != expected
    if operator in ("in", "nin"):
        hit = present and isinstance(expected, list) and value in expected
        return hit if operator == "in" else not hit
    if operator in ("gt", "gte", "lt", "lte"):
        ops: dict[str, Callable[[Any, Any], bool]] = {
            "gt": lambda a, b: a > b,
            "gte": lambda a, b: a >= b,
            "lt": lambda a, b: a < b,
            "lte": lambda a, b: a <= b,
        }
        return present and _compare(ops[operator], value, expected)
    if operator == "exists":
        return present == bool(expected if expected is not None else True)
    if operator == "is_null":
        return (not present or value is None) == bool(expected if expected is not None else True)
    # Unknown operators (text, regex, ...) are ignored rather than rejected: the emulator
    # should not fail a client for using a feature it does not model.
    return True


def matches(doc: dict[str, Any], filters: dict[str, Any] | None) -> bool:
    """Evaluate a Gen B filter tree ``{"AND"|"OR"|"NOR": [cond | tree, ...]}``."""
    if not filters:
        return True
    result = True
    for group, items in filters.items():
        if group not in ("AND", "OR", "NOR") or not isinstance(items, list):
            continue
        outcomes = [
            matches(doc, item) if _is_tree(item) else _condition(doc, item)
            for item in items
            if isinstance(item, dict)
        ]
        if group == "AND":
            result = result and all(outcomes)
        elif group == "OR":
            result = result and (any(outcomes) if outcomes else True)
        else:
            result = result and not any(outcomes)
    return result


def _is_tree(item: dict[str, Any]) -> bool:
    return any(key in item for key in ("AND", "OR", "NOR"))


def sort_docs(docs: list[dict[str, Any]], field: str, descending: bool) -> list[dict[str, Any]]:
    """Stable sort by a dot path; documents without the field go last either way."""

    def key(doc: dict[str, Any]) -> tuple[int, str, Any]:
        value = lookup(doc, field)
        if value is _MISSING or value is None:
            return (1, "", "")
        # Group by type name so mixed types never raise TypeError while comparing.
        return (0, type(value).__name__, value)

    present = [d for d in docs if key(d)[0] == 0]
    absent = [d for d in docs if key(d)[0] == 1]
    return sorted(present, key=key, reverse=descending) + absent


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def search_hit(doc: dict[str, Any], fields: list[str] | None, needle: str) -> bool:
    """Case-insensitive substring match on ``fields`` (dot paths) or on every string value."""
    needle = needle.lower()
    if fields is None:
        return any(needle in s.lower() for s in _strings(doc))
    for path in fields:
        value = lookup(doc, path)
        if value is not _MISSING and any(needle in s.lower() for s in _strings(value)):
            return True
    return False


def total_pages(total: int, page_size: int) -> int:
    return math.ceil(total / page_size) if total else 0
