"""Reading a Mixpeek webhook event: the types the service acts on, and both envelopes.

Two envelopes are documented (the current page's and an earlier one's), and sample receivers
read fields no example shows; :func:`read_envelope` takes each field from the first place that
has it (README "Webhooks" lists the assumptions). Pure: the receiver and the daemon both use it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from sync_service.state.webhooks import WebhookEvent

#: The event types the service acts on; any other is acknowledged and ignored.
DOCUMENTS_WRITTEN = "collection.documents.written"
OBJECT_DELETED = "object.deleted"
COLLECTION_DELETED = "collection.deleted"
HANDLED = frozenset({DOCUMENTS_WRITTEN, OBJECT_DELETED, COLLECTION_DELETED})
#: The published enum (31 values); metrics label other types "other" (their names come from
#: the outside, and every new name would be a new time series).
KNOWN_TYPES = frozenset(
    [f"object.{x}" for x in ("created", "updated", "deleted")]
    + ["objects.created.batch"]
    + [f"collection.{x}" for x in ("created", "updated", "deleted", "documents.written")]
    + [f"cluster.{x}" for x in ("created", "updated", "deleted")]
    + [f"cluster.execution.{x}" for x in ("started", "completed", "failed")]
    + [f"trigger.{x}" for x in ("created", "updated", "deleted", "paused", "resumed", "fired")]
    + [f"trigger.execution.{x}" for x in ("completed", "failed")]
    + [f"taxonomy.{x}" for x in ("created", "updated", "deleted")]
    + [f"alert.{x}" for x in ("created", "updated", "deleted", "triggered")]
    + [f"alert.execution.{x}" for x in ("completed", "failed")]
)
_MAX_ID = 255


class MalformedEvent(ValueError):
    """The body is not an event the receiver can read."""


def type_label(event_type: str) -> str:
    return event_type if event_type in KNOWN_TYPES else "other"


def _text(value: Any) -> str | None:
    """A usable id: a non-empty string (or an integer) of at most 255 characters."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        return None
    value = value.strip()
    return value if 0 < len(value) <= _MAX_ID and value.isprintable() else None


def _obj(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _first(*values: Any) -> str | None:
    for value in values:
        if (found := _text(value)) is not None:
            return found
    return None


def read_envelope(raw: bytes) -> WebhookEvent:
    """The event in either envelope, fields read in this order: type
    ``event_type`` → ``type``; id ``event_id`` → SHA-256 of the raw body; entity
    ``subject.{type,id}`` → ``metadata.*`` → ``data.*``; namespace ``namespace_id`` →
    ``metadata.namespace_id`` → ``data.namespace_id`` → ``namespace``."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise MalformedEvent("the body is not JSON") from None
    if not isinstance(body, dict):
        raise MalformedEvent("the body is not a JSON object")
    event_type = _first(
        *(t for t in (body.get("event_type"), body.get("type")) if isinstance(t, str))
    )
    if event_type is None:
        raise MalformedEvent("the event names no event_type")
    subject, meta, data = (
        _obj(body.get("subject")),
        _obj(body.get("metadata")),
        _obj(body.get("data")),
    )
    scope = _obj(body.get("cache_scope"))
    kind = subject.get("type")
    # A retried delivery carries the same body: its hash de-duplicates an event without an id.
    event_id = _first(body.get("event_id")) or "sha256:" + hashlib.sha256(raw).hexdigest()
    legacy_collection = body.get("collection")
    return WebhookEvent(
        event_id=event_id,
        event_type=event_type,
        namespace=_first(
            body.get("namespace_id"),
            meta.get("namespace_id"),
            data.get("namespace_id"),
            body.get("namespace"),
        ),
        collection_id=_first(
            subject.get("id") if kind == "collection" else None,
            meta.get("collection_id"),
            data.get("collection_id"),
            scope.get("collection_id"),
        ),
        # The earlier envelope names the collection, not its id.
        collection_name=_first(
            meta.get("collection_name"),
            data.get("collection_name"),
            legacy_collection if isinstance(legacy_collection, str) else None,
        ),
        object_id=_first(
            subject.get("id") if kind == "object" else None,
            meta.get("object_id"),
            data.get("object_id"),
        ),
    )
