"""How Qdrant's failures reach the service: "try again later" versus "this input is bad".

Shared by collection management (``collections``) and point writes (``sink``); kept apart so
both can use it without importing each other.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx

from sync_service.qdrant.client import ResponseHandlingException, UnexpectedResponse

# Defined apart, so the engine can catch them without loading qdrant_client; used from here.
from sync_service.qdrant.faults import BadInput as BadInput
from sync_service.qdrant.faults import SinkUnavailable as SinkUnavailable

TRANSPORT_ERRORS = (ResponseHandlingException, httpx.HTTPError, OSError, TimeoutError)


def unavailable(exc: Exception) -> SinkUnavailable:
    if isinstance(exc, UnexpectedResponse):
        return SinkUnavailable(f"Qdrant answered {exc.status_code}: {error_message(exc)}")
    return SinkUnavailable(f"Qdrant unreachable: {type(exc).__name__}: {exc}")


@asynccontextmanager
async def reachable() -> AsyncIterator[None]:
    """Turn "Qdrant is down or failing" into SinkUnavailable; bad input passes through."""
    try:
        yield
    except UnexpectedResponse as exc:
        if exc.status_code is not None and exc.status_code < 500:
            raise
        raise unavailable(exc) from None
    except TRANSPORT_ERRORS as exc:
        raise unavailable(exc) from None


def error_message(exc: UnexpectedResponse) -> str:
    """The ``status.error`` text of a Qdrant error answer, else the raw content (short)."""
    try:
        return str(json.loads(exc.content)["status"]["error"])
    except (ValueError, KeyError, TypeError):
        return exc.content.decode(errors="replace")[:300] or exc.reason_phrase


def already_exists(exc: Exception) -> bool:
    return "already exists" in str(exc).lower()


def refusal(exc: BaseException) -> str | None:
    """Why Qdrant refused a request as invalid, when it did: no retry can make it valid (a
    4xx other than 404/408/409/429, a refused point, or embedded Qdrant's ValueError, such as
    a collection name it does not allow)."""
    if isinstance(exc, BadInput):
        return str(exc)
    if isinstance(exc, UnexpectedResponse):
        code = exc.status_code or 0
        if 400 <= code < 500 and code not in (404, 408, 409, 429):
            return f"Qdrant refused it ({code}): {error_message(exc)}"
        return None
    if type(exc) is ValueError:  # local mode validates as the server does, with ValueError
        return f"Qdrant refused it: {exc}"
    return None
