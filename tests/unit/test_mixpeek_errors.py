"""Every Mixpeek error body shape, Retry-After parsing, and the error classes."""

from __future__ import annotations

import json
import time
import traceback
from email.utils import formatdate
from typing import Any

import pytest

from sync_service.upstream.errors import (
    MixpeekAuthError,
    MixpeekBadRequest,
    MixpeekConflict,
    MixpeekError,
    MixpeekNotFound,
    MixpeekRateLimited,
    MixpeekRequestTimeout,
    MixpeekServerError,
    error_from_response,
    parse_error_body,
    parse_retry_after,
)

JSON = "application/json"


def body(data: Any) -> bytes:
    return json.dumps(data).encode()


def test_mar_2024_string_error() -> None:
    raw = body({"success": False, "status": 404, "error": "Invalid API key", "response": None})
    parsed = parse_error_body(404, raw, JSON)
    assert parsed.message == "Invalid API key"
    assert parsed.error_type is None


def test_mar_2024_object_error() -> None:
    raw = body({"success": False, "status": 400, "error": {"message": "bad url"}, "response": None})
    assert parse_error_body(400, raw, JSON).message == "bad url"


def test_dec_2024_detail_msg_list() -> None:
    parsed = parse_error_body(404, body({"detail": [{"msg": "Task not found"}]}), JSON)
    assert parsed.message == "Task not found"


def test_fastapi_422() -> None:
    detail = [
        {"loc": ["body", "url"], "msg": "field required", "type": "value_error.missing"},
        {"loc": ["query", "page", 0], "msg": "not an int", "type": "type_error"},
    ]
    parsed = parse_error_body(422, body({"detail": detail}), JSON)
    assert parsed.message == "body.url: field required; query.page.0: not an int"
    assert parsed.error_type == "ValidationError"
    assert parsed.details == detail


def test_detail_string() -> None:
    assert parse_error_body(404, body({"detail": "Not Found"}), JSON).message == "Not Found"


def test_2025_envelope_with_retry_after() -> None:
    raw = body(
        {
            "success": False,
            "status": 429,
            "error": {
                "message": "Rate limit exceeded. Please retry after 35 seconds.",
                "type": "TooManyRequestsError",
                "details": {"retry_after": 35},
            },
        }
    )
    parsed = parse_error_body(429, raw, JSON)
    assert parsed.message.startswith("Rate limit exceeded")
    assert parsed.error_type == "TooManyRequestsError"
    assert parsed.details == {"retry_after": 35}
    assert parsed.retry_after == 35


def test_jan_2025_429() -> None:
    details = {"rate_limit": 10, "api_name": "index.url"}
    raw = body({"error": "TooManyRequests", "message": "Rate limit exceeded", "details": details})
    parsed = parse_error_body(429, raw, JSON)
    assert (parsed.message, parsed.error_type, parsed.details) == (
        "Rate limit exceeded",
        "TooManyRequests",
        details,
    )
    assert parsed.retry_after is None


def test_slowapi_429() -> None:
    parsed = parse_error_body(429, body({"error": "Rate limit exceeded: 10 per 1 minute"}), JSON)
    assert parsed.message == "Rate limit exceeded: 10 per 1 minute"


def test_retry_after_from_message_text_only() -> None:
    raw = body({"error": {"message": "Please retry after 12 seconds.", "type": "X"}})
    assert parse_error_body(429, raw, JSON).retry_after == 12


def test_non_json_text_is_truncated() -> None:
    parsed = parse_error_body(500, b"boom " * 200, "text/plain")
    assert parsed.message.startswith("boom boom")
    assert len(parsed.message) <= 200


def test_empty_body_uses_reason_phrase() -> None:
    assert parse_error_body(503, b"", None).message == "Service Unavailable"
    assert parse_error_body(599, b"  ", None).message == "HTTP 599"


def test_html_body_uses_title() -> None:
    html = b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"
    assert parse_error_body(502, html, "text/html").message == "502 Bad Gateway"
    assert parse_error_body(502, b"<html><body>x</body></html>", None).message == "Bad Gateway"


def test_unknown_json_shapes() -> None:
    assert parse_error_body(500, body({"weird": 1}), JSON).message == '{"weird": 1}'
    assert parse_error_body(500, body(["a", "b"]), JSON).message == '["a", "b"]'
    assert parse_error_body(500, body("just text"), JSON).message == "just text"
    assert parse_error_body(400, body({"message": "plain", "type": "T"}), JSON).error_type == "T"


@pytest.mark.parametrize(
    ("status", "cls", "retryable"),
    [
        (400, MixpeekBadRequest, False),
        (401, MixpeekAuthError, False),
        (403, MixpeekAuthError, False),
        (404, MixpeekNotFound, False),
        (405, MixpeekBadRequest, False),
        (408, MixpeekRequestTimeout, True),
        (409, MixpeekConflict, True),
        (410, MixpeekBadRequest, False),
        (422, MixpeekBadRequest, False),
        (429, MixpeekRateLimited, True),
        (500, MixpeekServerError, True),
        (502, MixpeekServerError, True),
        (503, MixpeekServerError, True),
    ],
)
def test_status_classes(status: int, cls: type[MixpeekError], retryable: bool) -> None:
    error = error_from_response(status, body({"detail": "x"}), endpoint="GET /tasks/{task_id}")
    assert type(error) is cls
    assert error.retryable is retryable
    assert error.status == status and error.endpoint == "GET /tasks/{task_id}"


def test_mar_2024_auth_on_404_and_400_is_an_auth_error() -> None:
    raw = body({"success": False, "status": 404, "error": "Invalid API key", "response": None})
    assert isinstance(error_from_response(404, raw), MixpeekAuthError)
    raw = body({"success": False, "status": 400, "error": "Authorization header is missing"})
    assert isinstance(error_from_response(400, raw), MixpeekAuthError)
    # a plain not-found stays a not-found
    assert isinstance(error_from_response(404, body({"detail": "Task not found"})), MixpeekNotFound)


def test_auth_error_message_is_clear() -> None:
    raw = body({"error": {"message": "Invalid API key", "type": "UnauthorizedError"}})
    error = error_from_response(401, raw, endpoint="GET /tasks/{task_id}")
    text = str(error)
    assert text.startswith("Mixpeek refused the API key (401 UnauthorizedError: Invalid API key)")
    assert text.endswith("check MIXPEEK_API_KEY")


def test_generic_error_str_and_repr() -> None:
    error = error_from_response(503, b"", endpoint="GET /healthcheck")
    assert str(error) == "Mixpeek GET /healthcheck failed (503): Service Unavailable"
    assert "MixpeekServerError" in repr(error)


def test_retry_after_header_wins_over_json() -> None:
    raw = body({"error": {"message": "slow down", "details": {"retry_after": 35}}})
    assert error_from_response(429, raw, retry_after_header="2").retry_after == 2
    assert error_from_response(429, raw).retry_after == 35


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2", 2.0),
        (" 1.5 ", 1.5),
        ("0", 0.0),
        ("-3", None),
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_retry_after_seconds(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value) == expected


def test_parse_retry_after_http_date() -> None:
    now = time.time()
    header = formatdate(now + 30, usegmt=True)
    seconds = parse_retry_after(header, now=now)
    assert seconds is not None and 29 <= seconds <= 30
    assert parse_retry_after(formatdate(now - 60, usegmt=True), now=now) == 0.0


def test_secret_never_in_auth_error_text() -> None:
    # The client redacts before parsing; here we check the class never adds anything secret.
    secret = "sk-test-SECRET-123"
    error = error_from_response(401, body({"detail": "Invalid API key"}))
    try:
        raise error
    except MixpeekAuthError as exc:
        rendered = "".join(traceback.format_exception(exc))
    for text in (str(error), repr(error), rendered):
        assert secret not in text
