"""What every v1 route shares: the namespace header, the error envelope, the 422 forms."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError

from sync_service.emulator.responses import ApiError, json_response
from sync_service.emulator.v1.config import V1Config
from sync_service.emulator.v1.model import Namespace
from sync_service.emulator.v1.store import V1State

# Error ``type`` per status, as the v1 errors page names them.
ERROR_TYPES: dict[int, str] = {
    400: "BadRequestError",
    401: "UnauthorizedError",
    403: "ForbiddenError",
    404: "NotFoundError",
    405: "BadRequestError",
    409: "AlreadyExistsError",
    422: "ValidationError",
    429: "TooManyRequestsError",
    500: "InternalServerError",
    502: "InternalServerError",
    503: "InferenceServiceUnavailableError",
}


def error_response(
    status: int,
    message: str,
    details: dict[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """``{"success": false, "status", "error": {"message", "type", "details"?}}``; a real 404
    carries no ``details`` at all, so it is left out rather than null."""
    error: dict[str, Any] = {"message": message, "type": ERROR_TYPES.get(status, "BadRequestError")}
    if details is not None:
        error["details"] = details
    return json_response({"success": False, "status": status, "error": error}, status, headers)


def validation_response(exc: RequestValidationError, config: V1Config) -> Response:
    """A 422 in the configured form: the envelope (docs) or FastAPI's ``detail`` (OpenAPI)."""
    errors = jsonable_encoder(exc.errors())
    if config.validation_form == "fastapi":
        detail = [{k: e[k] for k in ("loc", "msg", "type") if k in e} for e in errors]
        return json_response({"detail": detail}, 422)
    items = [
        {"type": e.get("type"), "location": list(e.get("loc", [])), "message": e.get("msg")}
        for e in errors
    ]
    return error_response(422, "Request validation failed", {"validation_errors": items})


def namespace(state: V1State, request: Request) -> Namespace:
    """The namespace of ``X-Namespace`` (id or name), else of ``?namespace=`` (v0.82).

    Missing both is a 400 ``BadRequestError``: a GUESS, the published API does not say.
    """
    ident = request.headers.get("x-namespace") or request.query_params.get("namespace")
    if not ident:
        raise ApiError(400, "X-Namespace header is required for this endpoint")
    return state.namespace(ident.strip())
