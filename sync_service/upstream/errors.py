"""Typed errors for the Mixpeek client, and parsing of every error body shape seen upstream.

Mixpeek changed its error envelope several times (see ``docs/upstream-2024.md`` §7), so one parser
turns any of them into ``message / error_type / details`` and the client maps the HTTP status
onto a small exception hierarchy whose ``retryable`` flag drives the retry policy.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from http import HTTPStatus
from typing import Any

__all__ = [
    "MixpeekAuthError",
    "MixpeekBadRequest",
    "MixpeekBadResponse",
    "MixpeekConflict",
    "MixpeekError",
    "MixpeekNotFound",
    "MixpeekRateLimited",
    "MixpeekRequestTimeout",
    "MixpeekServerError",
    "MixpeekTransportError",
    "ParsedError",
    "error_from_response",
    "parse_error_body",
    "parse_retry_after",
]

# Upstream text can be an entire HTML error page; keep messages log-friendly.
_MAX_TEXT = 200
_TITLE_RE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
# 2025 bodies say "Please retry after 35 seconds." even when details.retry_after is missing.
_RETRY_IN_TEXT_RE = re.compile(r"retry after (\d+(?:\.\d+)?) ?s", re.IGNORECASE)
# The Mar-2024 server answered a bad key with 404 "Invalid API key" and a missing header with
# 400; classifying those as "not found" would mark every task failed instead of stopping.
_AUTH_TEXT_RE = re.compile(
    r"api[ _-]?key|authori[sz]ation header|authentication scheme|insufficient credits",
    re.IGNORECASE,
)
_AUTH_TYPES = frozenset({"unauthorizederror", "forbiddenerror", "notenablederror"})


@dataclass(frozen=True)
class ParsedError:
    """What an upstream error body says, whatever envelope it came in."""

    message: str
    error_type: str | None = None
    details: Any = None
    retry_after: float | None = None


class MixpeekError(Exception):
    """Base of every error the Mixpeek client raises.

    ``message`` is the upstream message, ``endpoint`` the route template
    (``"GET /tasks/{task_id}"``) and ``retryable`` whether trying again may help.
    """

    default_retryable = False

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        error_type: str | None = None,
        details: Any = None,
        endpoint: str = "",
        retry_after: float | None = None,
        retryable: bool | None = None,
    ) -> None:
        self.message = message
        self.status = status
        self.error_type = error_type
        self.details = details
        self.endpoint = endpoint
        # Any answer may carry Retry-After (503 too), so it lives on the base class.
        self.retry_after = retry_after
        self.retryable = self.default_retryable if retryable is None else retryable
        super().__init__(self._render())

    def _render(self) -> str:
        head = f"Mixpeek {self.endpoint}" if self.endpoint else "Mixpeek"
        return f"{head} failed ({self._code()}): {self.message}"

    def _code(self) -> str:
        parts = [str(self.status) if self.status is not None else "no status"]
        if self.error_type:
            parts.append(self.error_type)
        return " ".join(parts)

    def __str__(self) -> str:
        return self._render()


class MixpeekAuthError(MixpeekError):
    """401/403 (or an auth message on 400/404): the API key was refused. Never retried."""

    def _render(self) -> str:
        where = f" on {self.endpoint}" if self.endpoint else ""
        return (
            f"Mixpeek refused the API key ({self._code()}: {self.message}){where}; "
            "check MIXPEEK_API_KEY"
        )


class MixpeekNotFound(MixpeekError):
    """404: the task, asset or feature is unknown upstream (or expired)."""


class MixpeekRateLimited(MixpeekError):
    """429: too many requests; ``retry_after`` holds the server's hint in seconds, if any."""

    default_retryable = True


class MixpeekServerError(MixpeekError):
    """5xx: upstream failed; transient by assumption."""

    default_retryable = True


class MixpeekConflict(MixpeekError):
    """409: concurrent modification upstream; retried like the official SDKs do."""

    default_retryable = True


class MixpeekRequestTimeout(MixpeekError):
    """408: the server gave up waiting for our request."""

    default_retryable = True


class MixpeekBadRequest(MixpeekError):
    """400/405/422 and other 4xx: our request is wrong; retrying cannot help."""


class MixpeekUnsupported(MixpeekError):
    """The API this upstream speaks has no way to do what was asked (e.g. embed a text)."""

    def _render(self) -> str:
        return self.message


class MixpeekTransportError(MixpeekError):
    """No usable answer: connect/read failures, protocol errors, resets, attempt deadline."""

    default_retryable = True


class MixpeekBadResponse(MixpeekError):
    """A 2xx whose body is not JSON, truncated or the wrong shape (usually transient)."""

    default_retryable = True


def _truncate(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_TEXT else text[: _MAX_TEXT - 1] + "…"


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP {status}"


def _as_float(value: Any) -> float | None:
    """A finite, non-negative number of seconds, or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) and number >= 0 else None


def _join_detail_items(items: list[Any]) -> str:
    """FastAPI 422 lists become ``"body.url: msg; body.collection_id: msg"``."""
    parts: list[str] = []
    for item in items:
        if isinstance(item, dict):
            msg = str(item.get("msg") or item.get("message") or "").strip()
            loc = item.get("loc")
            if isinstance(loc, list | tuple) and loc:
                where = ".".join(str(part) for part in loc)
                parts.append(f"{where}: {msg}" if msg else where)
            elif msg:
                parts.append(msg)
        elif item is not None:
            parts.append(str(item))
    return "; ".join(parts)


def _retry_after_in(details: Any) -> float | None:
    if isinstance(details, dict):
        return _as_float(details.get("retry_after"))
    return None


def _parse_json_body(body: dict[str, Any]) -> ParsedError | None:
    error = body.get("error")
    if isinstance(error, dict):
        # 2025+ envelope {"error": {"message", "type", "details"}} and Mar-2024 {"error": {...}}.
        message = error.get("message") or error.get("msg") or error.get("detail")
        details = error.get("details")
        return ParsedError(
            message=str(message) if message else _truncate(json.dumps(error)),
            error_type=_str_or_none(error.get("type")),
            details=details,
            retry_after=_retry_after_in(details) or _retry_after_in(body.get("details")),
        )
    if isinstance(error, str) and error:
        details = body.get("details")
        if isinstance(body.get("message"), str):
            # Jan-2025 429: {"error": "TooManyRequests", "message": "...", "details": {...}}.
            return ParsedError(body["message"], error, details, _retry_after_in(details))
        # Mar-2024 {"error": "Invalid API key"} and slowapi {"error": "Rate limit exceeded: …"}.
        return ParsedError(error, _str_or_none(body.get("type")), details, _retry_after_in(details))
    detail = body.get("detail")
    if isinstance(detail, list):
        typed = any(isinstance(i, dict) and "loc" in i for i in detail)
        return ParsedError(
            _join_detail_items(detail) or "validation error",
            "ValidationError" if typed else None,
            detail,
        )
    if isinstance(detail, str) and detail:
        return ParsedError(detail)
    if isinstance(detail, dict):
        message = detail.get("message") or detail.get("msg")
        return ParsedError(
            str(message) if message else _truncate(json.dumps(detail)),
            _str_or_none(detail.get("type")),
            detail,
            _retry_after_in(detail.get("details")),
        )
    message = body.get("message")
    if isinstance(message, str) and message:
        details = body.get("details")
        return ParsedError(
            message, _str_or_none(body.get("type")), details, _retry_after_in(details)
        )
    return None


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def parse_error_body(status: int, content: bytes, content_type: str | None) -> ParsedError:
    """Turn any known Mixpeek error body (or a non-JSON one) into a :class:`ParsedError`."""
    text = content.decode("utf-8", errors="replace").strip()
    parsed: ParsedError | None = None
    if text:
        try:
            body: Any = json.loads(text)
        except ValueError:
            body = None
        if isinstance(body, dict):
            parsed = _parse_json_body(body)
            if parsed is None:
                parsed = ParsedError(_truncate(text), details=body)
        elif isinstance(body, str) and body:
            parsed = ParsedError(_truncate(body))
        elif body is None and ("html" in (content_type or "").lower() or text.startswith("<")):
            # Proxies answer with HTML pages; the title is the only readable part.
            title = _TITLE_RE.search(text)
            parsed = ParsedError(_truncate(title.group(1)) if title else _reason(status))
        else:
            parsed = ParsedError(_truncate(text))
    if parsed is None:
        parsed = ParsedError(_reason(status))
    if parsed.retry_after is None:
        hint = _RETRY_IN_TEXT_RE.search(parsed.message)
        if hint:
            parsed = ParsedError(
                parsed.message, parsed.error_type, parsed.details, _as_float(hint.group(1))
            )
    return parsed


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header: delta-seconds or an HTTP-date (RFC 9110 §10.2.3)."""
    if value is None or not value.strip():
        return None
    seconds = _as_float(value)
    if seconds is not None:
        return seconds
    try:
        when = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC dates are GMT; be lenient with "-0000" style dates
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


def _class_for(status: int, parsed: ParsedError) -> type[MixpeekError]:
    if status in (401, 403):
        return MixpeekAuthError
    if (parsed.error_type or "").lower() in _AUTH_TYPES:
        return MixpeekAuthError
    if status in (400, 404) and _AUTH_TEXT_RE.search(parsed.message):
        return MixpeekAuthError
    if status == 404:
        return MixpeekNotFound
    if status == 408:
        return MixpeekRequestTimeout
    if status == 409:
        return MixpeekConflict
    if status == 429:
        return MixpeekRateLimited
    if status >= 500:
        return MixpeekServerError
    if status >= 400:
        return MixpeekBadRequest
    # A 1xx/3xx reached us (redirect loops, odd proxies): nothing sensible to retry.
    return MixpeekBadResponse


def error_from_response(
    status: int,
    content: bytes,
    *,
    content_type: str | None = None,
    retry_after_header: str | None = None,
    endpoint: str = "",
) -> MixpeekError:
    """Build the typed error for a non-2xx answer. The header hint wins over the JSON one."""
    parsed = parse_error_body(status, content, content_type)
    retry_after = parse_retry_after(retry_after_header)
    if retry_after is None:
        retry_after = parsed.retry_after
    cls = _class_for(status, parsed)
    return cls(
        parsed.message,
        status=status,
        error_type=parsed.error_type,
        details=parsed.details,
        endpoint=endpoint,
        retry_after=retry_after,
        retryable=False if cls is MixpeekBadResponse else None,
    )
