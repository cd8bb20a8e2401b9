"""Filters, sort, search and pagination over JSON-shaped documents (pure functions).

Filters are compiled once per request into a predicate, and values are read through a
*getter* per dot path, so the same code serves plain dicts (features) and assets, whose
fields are read straight from their records without building each asset's full view.

Date-times compare as instants (``timestamps.Instant``) whenever both sides are date-times:
``2026-12-06T01:02:03`` (naive, UTC) equals ``2026-12-06T01:02:03Z`` and
``2026-12-06T03:02:03+02:00``. Anything else compares as the plain JSON values it is.
"""

from __future__ import annotations

import math
import operator as op
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from sync_service.emulator.timestamps import Instant

T = TypeVar("T")
MISSING: Any = object()  # what a getter answers for an absent field

GetterFor = Callable[[str], Callable[[T], Any]]  # dot path -> its getter
Predicate = Callable[[T], bool]

_ORDER: dict[str, Callable[[Any, Any], bool]] = {
    "gt": op.gt,
    "gte": op.ge,
    "lt": op.lt,
    "lte": op.le,
}
_GROUPS = ("AND", "OR", "NOR")


def walk(node: Any, parts: Iterable[str]) -> Any:
    """Value below ``node`` along ``parts``, or MISSING when absent."""
    for part in parts:
        if not isinstance(node, dict) or part not in node:
            return MISSING
        node = node[part]
    return node


def lookup(doc: dict[str, Any], path: str) -> Any:
    """Value at a dot path (``metadata.author``), or MISSING when absent."""
    return walk(doc, path.split("."))


def path_getter(path: str) -> Callable[[dict[str, Any]], Any]:
    """Getter of a dot path in plain dicts."""
    parts = path.split(".")
    return lambda doc: walk(doc, parts)


# -- filters ------------------------------------------------------------------------------


def _sides(value: Any, expected: Any, expected_instant: Instant | None) -> tuple[Any, Any]:
    """What to compare: two instants when both sides are date-times, else the values as the
    API shows them (an asset's timestamp as its text, so a non-date filter value on a date
    field behaves as it always did)."""
    if expected_instant is not None:
        instant = Instant.parse(value)
        if instant is not None:
            return instant, expected_instant
    if isinstance(value, Instant):
        return value.naive(), expected
    return value, expected


def _ordered(compare: Callable[[Any, Any], bool], left: Any, right: Any) -> bool:
    try:
        return bool(compare(left, right))
    except TypeError:  # e.g. comparing a string with a number: no match, not a crash
        return False


def _equal(value: Any, expected: Any, expected_instant: Instant | None) -> bool:
    left, right = _sides(value, expected, expected_instant)
    return bool(left == right)


def _flag(expected: Any) -> bool:
    return bool(expected if expected is not None else True)


def _compile_condition(cond: dict[str, Any], getter_for: GetterFor[T]) -> Predicate[T]:
    get = getter_for(str(cond.get("key", "")))
    expected = cond.get("value")
    operator = cond.get("operator", "eq")
    instant = Instant.parse(expected)  # once per request, not once per document
    if operator == "eq":
        return lambda item: (v := get(item)) is not MISSING and _equal(v, expected, instant)
    if operator == "ne":
        return lambda item: (v := get(item)) is MISSING or not _equal(v, expected, instant)
    if operator in ("in", "nin"):
        options = [(o, Instant.parse(o)) for o in expected] if isinstance(expected, list) else []
        wanted: bool = operator == "in"

        def member(item: T) -> bool:
            value = get(item)
            hit: bool = value is not MISSING and any(_equal(value, o, i) for o, i in options)
            return hit == wanted

        return member
    if operator in _ORDER:
        compare = _ORDER[operator]

        def ordered(item: T) -> bool:
            value = get(item)
            if instant is not None and type(value) is Instant:  # the hot path: updated_at
                return compare(value, instant)
            return value is not MISSING and _ordered(compare, *_sides(value, expected, instant))

        return ordered
    if operator == "exists":
        return lambda item: (get(item) is not MISSING) == _flag(expected)
    if operator == "is_null":
        return lambda item: ((v := get(item)) is MISSING or v is None) == _flag(expected)
    # Unknown operators (text, regex, ...) are ignored rather than rejected: the emulator
    # should not fail a client for using a feature it does not model.
    return lambda _: True


def _is_tree(item: dict[str, Any]) -> bool:
    return any(key in item for key in _GROUPS)


def compile_filters(filters: dict[str, Any] | None, getter_for: GetterFor[T]) -> Predicate[T]:
    """Predicate of a Gen B filter tree ``{"AND"|"OR"|"NOR": [cond | tree, ...]}``.

    Groups of one tree must all hold; an empty OR holds. Parsed once, so a filter costs one
    getter call and a comparison per condition and document.
    """
    if not filters:
        return lambda _: True
    groups: list[Predicate[T]] = []
    for group, items in filters.items():
        if group not in _GROUPS or not isinstance(items, list):
            continue
        parts = [
            compile_filters(item, getter_for)
            if _is_tree(item)
            else _compile_condition(item, getter_for)
            for item in items
            if isinstance(item, dict)
        ]
        groups.append(_group(group, parts))
    return _all(groups)


def _all(parts: list[Predicate[T]]) -> Predicate[T]:
    # A lone condition is returned as is: one call per document instead of three.
    if len(parts) == 1:
        return parts[0]
    return lambda item: all(part(item) for part in parts)


def _group(group: str, parts: list[Predicate[T]]) -> Predicate[T]:
    if group == "AND":
        return _all(parts)
    if group == "OR":
        return (lambda item: any(part(item) for part in parts)) if parts else (lambda _: True)
    return lambda item: not any(part(item) for part in parts)


def matches(doc: dict[str, Any], filters: dict[str, Any] | None) -> bool:
    """Whether one plain document passes ``filters`` (see ``compile_filters``)."""
    return compile_filters(filters, path_getter)(doc)


# -- sort ---------------------------------------------------------------------------------


def sort_items(
    items: list[T],
    get: Callable[[T], Any],
    descending: bool,
    tiebreak: Callable[[T], Any] | None = None,
) -> list[T]:
    """Sort by the value ``get`` reads; items without it (or with null) go last either way.

    Equal values keep their order, or follow ``tiebreak`` (a unique key makes a descending
    sort the exact reverse of an ascending one, so pages never shuffle between requests).
    """
    present: list[T] = []
    keys: list[tuple[Any, ...]] = []
    absent: list[T] = []
    for item in items:
        value = get(item)
        if value is MISSING or value is None:
            absent.append(item)
            continue
        if isinstance(value, str):  # date-time strings sort chronologically, with instants
            instant = Instant.parse(value)
            value = value if instant is None else instant
        # The type name first, so mixed types never raise TypeError while comparing.
        name = type(value).__name__
        if name == "Instant":
            value = int(value)  # same order; a plain int keeps the key untracked (see below)
        keys.append((name, value) if tiebreak is None else (name, value, tiebreak(item)))
        present.append(item)
    # Positions are sorted rather than (key, item) pairs: keys of plain values are untracked
    # by the garbage collector, pairs holding items (or instants) are not, and 10,000 of
    # them per request brought on full collections of the whole store (~40 ms each).
    order = sorted(range(len(present)), key=keys.__getitem__, reverse=descending)
    return [present[i] for i in order] + absent


def sort_docs(docs: list[dict[str, Any]], field: str, descending: bool) -> list[dict[str, Any]]:
    """Stable sort of plain documents by a dot path (see ``sort_items``)."""
    return sort_items(docs, path_getter(field), descending)


# -- search and pages ---------------------------------------------------------------------


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
        if value is not MISSING and any(needle in s.lower() for s in _strings(value)):
            return True
    return False


def total_pages(total: int, page_size: int) -> int:
    return math.ceil(total / page_size) if total else 0
