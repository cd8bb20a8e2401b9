"""JSON responses and the error envelope shared by every emulated route."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import orjson
from fastapi import Response

# Error ``type`` per status, as in Mixpeek's 2025 envelope (§8 of the spec).
ERROR_TYPES: dict[int, str] = {
    400: "BadRequestError",
    401: "UnauthorizedError",
    404: "NotFoundError",
    429: "TooManyRequestsError",
    500: "InternalServerError",
    502: "InternalServerError",
    503: "ServiceUnavailableError",
}


class ApiError(Exception):
    """Raised by a handler; rendered as the error envelope with ``status``."""

    def __init__(self, status: int, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details


def json_response(
    body: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """Serialise ``body`` allowing NaN/Infinity.

    Starlette's JSONResponse refuses non-finite floats, but poisoned vectors must reach the
    client exactly as a broken upstream would send them (Python's json reads them back).
    orjson would turn them into ``null``, so it only serialises bodies that are all finite:
    it is ~10x faster on vectors, and the emulator's own CPU would otherwise add to the
    latency it is configured to have.
    """
    if _all_finite(body):
        payload = orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS)
    else:
        payload = json.dumps(body, allow_nan=True, separators=(",", ":")).encode()
    return Response(payload, status_code=status, headers=headers, media_type="application/json")


def _all_finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, Mapping):
        return all(_all_finite(v) for v in value.values())
    if isinstance(value, list | tuple):
        try:  # a vector: one C-level sum is NaN or infinite if any element is
            return math.isfinite(sum(value))
        except TypeError:
            return all(_all_finite(v) for v in value)
    return True


def error_response(
    status: int,
    message: str,
    details: dict[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """``{"success": false, "status": N, "error": {"message", "type", "details"}}``."""
    kind = ERROR_TYPES.get(status, "BadRequestError" if status < 500 else "InternalServerError")
    body = {
        "success": False,
        "status": status,
        "error": {"message": message, "type": kind, "details": details},
    }
    return json_response(body, status, headers)
