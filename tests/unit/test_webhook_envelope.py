"""Reading webhook events: both documented envelopes, the fallbacks, and bad bodies."""

from __future__ import annotations

import hashlib
import json

import pytest
from pydantic import ValidationError

from sync_service.control.webhook_envelope import MalformedEvent, read_envelope, type_label
from sync_service.settings import Settings, describe_validation_error
from sync_service.state.webhooks import WebhookEvent


def raw(body: object) -> bytes:
    return json.dumps(body).encode()


def test_the_current_envelope() -> None:
    body = {
        "event_id": "evt_9f2c",
        "event_type": "collection.documents.written",
        "occurred_at": "2026-01-12T09:31:05Z",
        "namespace_id": "ns_640658775e",
        "subject": {"type": "collection", "id": "col_q7w2e9r4t1"},
        "metadata": {"collection_id": "col_other", "document_count": 42},
        "cache_scope": {"scope": "collection", "collection_id": "col_q7w2e9r4t1"},
    }
    assert read_envelope(raw(body)) == WebhookEvent(
        "evt_9f2c", "collection.documents.written", "ns_640658775e", "col_q7w2e9r4t1"
    )


def test_the_earlier_envelope_names_the_collection_and_the_namespace_by_name() -> None:
    body = {
        "event_id": "evt_41d0",
        "event_type": "object.deleted",
        "namespace": "acme",
        "collection": "articles",
        "actor": "system",
        "subject": {"type": "object", "id": "obj_8d1f00aa"},
        "metadata": {"object_id": "obj_x", "bucket_id": "bkt_1", "namespace_id": "ns_64"},
    }
    event = read_envelope(raw(body))
    # The namespace id wins over the name; the subject over the metadata.
    assert (event.namespace, event.object_id) == ("ns_64", "obj_8d1f00aa")
    assert (event.collection_id, event.collection_name) == (None, "articles")


def test_fallbacks_type_data_and_a_body_hash_for_an_event_without_an_id() -> None:
    body = {"type": "collection.deleted", "data": {"collection_id": "col_1", "namespace_id": 7}}
    event = read_envelope(raw(body))
    assert event.event_type == "collection.deleted" and event.collection_id == "col_1"
    assert event.namespace == "7"
    assert event.event_id == "sha256:" + hashlib.sha256(raw(body)).hexdigest()
    # An id too long to keep, or not text, is replaced by the hash too.
    assert read_envelope(raw({**body, "event_id": "x" * 300})).event_id.startswith("sha256:")
    assert read_envelope(raw({**body, "event_id": ["a"]})).event_id.startswith("sha256:")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"event_id": "e"}', "no event_type"),
        (b'{"event_type": 5}', "no event_type"),
        (b'{"event_type": "   "}', "no event_type"),
    ],
)
def test_bad_bodies_are_refused_with_a_reason(body: bytes, message: str) -> None:
    with pytest.raises(MalformedEvent, match=message):
        read_envelope(body)


def test_event_type_labels_are_bounded() -> None:
    assert type_label("object.deleted") == "object.deleted"
    assert type_label("document.created") == "other"  # in the docs, not the enum
    assert type_label("x" * 90) == "other"


def test_the_webhook_settings_are_checked_and_the_secret_never_echoed() -> None:
    with pytest.raises(ValidationError) as short:
        Settings(_env_file=None, SYNC_WEBHOOK_SECRET="tooShort-SECRET")
    (line,) = describe_validation_error(short.value)
    assert line.startswith("SYNC_WEBHOOK_SECRET: must be at least 16 characters")
    assert "tooShort-SECRET" not in line
    with pytest.raises(ValidationError) as header:
        Settings(_env_file=None, SYNC_WEBHOOK_HEADER="X Secret")
    assert describe_validation_error(header.value)[0].startswith("SYNC_WEBHOOK_HEADER:")
    settings = Settings(_env_file=None, SYNC_WEBHOOK_SECRET="a-long-enough-SECRET")
    assert settings.webhook_header == "X-Mixpeek-Secret"
    assert "a-long-enough-SECRET" not in repr(settings)
