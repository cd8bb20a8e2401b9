"""Documents listing: v1 filters, sort and cursor paging over the store's documents.

Filters come in three forms, all accepted: a ``LogicalOperator`` tree
(``{"AND"|"OR"|"NOT": [...]}``), a bare condition ``{"field", "operator", "value"}`` and the
shorthand ``{"metadata.title": "x"}`` (equality). Conditions are evaluated by the 2024
emulator's ``query`` module (instants compare as instants, naive = UTC), plus v1's string
operators. Lineage and timestamp fields have bare aliases (``root_object_id``, ``updated_at``).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable
from typing import Any

from sync_service.emulator import query
from sync_service.emulator.responses import ApiError

Doc = dict[str, Any]
Predicate = Callable[[Doc], bool]
_GROUPS = ("AND", "OR", "NOT")
_LINEAGE = ("root_object_id", "source_object_id", "root_bucket_id", "source_document_id")
_STRING_OPS: dict[str, Callable[[str, str], bool]] = {
    "contains": lambda v, e: e in v,
    "starts_with": lambda v, e: v.startswith(e),
    "ends_with": lambda v, e: v.endswith(e),
    "text": lambda v, e: all(w in v for w in e.split()),
}


def canonical(field: str) -> str:
    """The dot path a filter or sort field names in a rendered document."""
    bare = field.removeprefix("_internal.")
    if bare in _LINEAGE:
        return f"_internal.lineage.{bare}"
    if bare in ("created_at", "updated_at"):
        return f"_internal.{bare}"
    return field


def _condition(cond: dict[str, Any], case_sensitive: bool) -> Predicate:
    path = canonical(str(cond.get("field", cond.get("key", ""))))
    operator = str(cond.get("operator", "eq"))
    expected = cond.get("value")
    get = query.path_getter(path)
    if operator in _STRING_OPS or operator == "regex":
        test = _STRING_OPS.get(operator)
        pattern = re.compile(str(expected), 0 if case_sensitive else re.IGNORECASE)

        def string_match(doc: Doc) -> bool:
            value = get(doc)
            if not isinstance(value, str):
                return False
            if test is None:
                return pattern.search(value) is not None
            if case_sensitive:
                return test(value, str(expected))
            return test(value.lower(), str(expected).lower())

        return string_match
    tree = {"AND": [{"key": path, "operator": operator, "value": expected}]}
    return query.compile_filters(tree, query.path_getter)


def compile_filters(filters: Any, case_sensitive: bool = False) -> Predicate:
    """The predicate of a filter in any of its three forms (400 for what is not a filter)."""
    if filters is None or filters == {}:
        return lambda _: True
    if not isinstance(filters, dict):
        raise ApiError(400, "filters must be an object")
    case_sensitive = bool(filters.get("case_sensitive", case_sensitive))
    if "field" in filters:
        return _condition(filters, case_sensitive)
    parts: list[Predicate] = []
    for key, value in filters.items():
        if key == "case_sensitive":
            continue
        if key in _GROUPS:
            if not isinstance(value, list):
                raise ApiError(400, f"filters.{key} must be a list")
            items = [compile_filters(item, case_sensitive) for item in value]
            parts.append(_group(key, items))
        else:  # shorthand: {"metadata.title": "x"}
            parts.append(_condition({"field": key, "value": value}, case_sensitive))
    return lambda doc: all(part(doc) for part in parts)


def _group(kind: str, items: list[Predicate]) -> Predicate:
    if kind == "AND":
        return lambda doc: all(p(doc) for p in items)
    if kind == "OR":
        return lambda doc: any(p(doc) for p in items) if items else True
    return lambda doc: not any(p(doc) for p in items)


# -- cursors ------------------------------------------------------------------------------


def encode_cursor(position: dict[str, Any]) -> str:
    raw = json.dumps(position, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> dict[str, Any]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        position = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise ApiError(400, "Invalid cursor", {"cursor": cursor}) from None
    if not isinstance(position, dict):
        raise ApiError(400, "Invalid cursor", {"cursor": cursor})
    return position


def paginate(
    docs: list[tuple[int, Doc]],
    sort: dict[str, Any] | None,
    limit: int,
    offset: int,
    cursor: str | None,
) -> tuple[list[tuple[int, Doc]], str | None, int]:
    """One page of ``(seq, doc)`` pairs, the cursor of the next one (None: last page), and
    the page's number (1 for the first ``limit`` matches, as a page-numbered API counts).

    Unsorted, the order is creation order and the cursor names the last document's sequence
    number (keyset): documents added or deleted meanwhile never shift a page. Sorted, the
    cursor holds an offset into the sorted matches (ties broken by creation order).
    """
    if sort and sort.get("field"):
        get = query.path_getter(canonical(str(sort["field"])))
        descending = str(sort.get("direction", "asc")).lower() == "desc"
        ordered = query.sort_items(docs, lambda p: get(p[1]), descending, lambda p: p[0])
        start = offset
        if cursor:
            start = int(decode_cursor(cursor).get("o", 0))
        chunk = ordered[start : start + limit]
        more = start + limit < len(ordered)
        return chunk, encode_cursor({"o": start + limit}) if more else None, start // limit + 1
    ordered = sorted(docs, key=lambda p: p[0])
    passed = 0
    if cursor:
        after = int(decode_cursor(cursor).get("after", 0))
        passed = sum(1 for p in ordered if p[0] <= after)
        ordered = ordered[passed:]
        offset = 0
    chunk = ordered[offset : offset + limit]
    more = offset + limit < len(ordered)
    number = (passed + offset) // limit + 1
    return chunk, encode_cursor({"after": chunk[-1][0]}) if more and chunk else None, number
