"""The v1 emulator's ASGI app: the v1 routes behind the 2024 emulator's request pipeline.

Pipeline for API routes, in the 2024 order: auth (401) -> storm (429) -> rate limit (429)
-> error_rate (5xx) -> wire fault -> handler -> the rest of the latency. What v1 adds: a 429
in the v1 shape (``details.limit``, ``window``, ``retry_after``), the ``X-RateLimit-*``
headers of the rate-limit page on every answer while a rate limit is set, an
``X-Request-ID`` (the header's name is a GUESS), errors in the v1 envelope and the 422 form
``validation_form`` picks. ``/v1/health`` skips auth and faults (a liveness probe), and
``/_emulator/*`` skips everything and is not counted.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from sync_service.emulator import wire_faults
from sync_service.emulator.app import (
    STORM_RETRY_AFTER,
    UNAUTHORIZED,
    auth_failure,
    injected_error,
    route_key,
)
from sync_service.emulator.faults import RetryKey
from sync_service.emulator.guard import Guarded
from sync_service.emulator.responses import ApiError
from sync_service.emulator.v1.api import error_response, validation_response
from sync_service.emulator.v1.config import V1Config
from sync_service.emulator.v1.controls import CONTROL_PREFIX, add_controls
from sync_service.emulator.v1.dispatcher import Dispatcher
from sync_service.emulator.v1.routes_buckets import add_bucket_routes
from sync_service.emulator.v1.routes_collections import add_collection_routes
from sync_service.emulator.v1.routes_org import add_org_routes
from sync_service.emulator.v1.routes_tasks import add_task_routes
from sync_service.emulator.v1.store import V1State

HEALTH = "/v1/health"


def limit_headers(state: V1State) -> dict[str, str]:
    """The rate-limit page's headers: limit per window, tokens left, when it is full again."""
    bucket, per_minute = state.bucket, state.config.rate_limit
    if bucket is None or per_minute is None:
        return {}
    return {
        "X-RateLimit-Limit": str(per_minute),
        "X-RateLimit-Remaining": str(bucket.remaining()),
        "X-RateLimit-Reset": str(math.ceil(time.time() + bucket.seconds_to_full())),
        "X-RateLimit-Window": "60",
    }


def _too_many(state: V1State, wait: float | None, key: RetryKey, now: float) -> Response:
    config = state.config
    if config.retry_after is not None:
        seconds = float(config.retry_after)
    elif wait is None:
        seconds = float(STORM_RETRY_AFTER)
    else:
        seconds = max(round(wait, 3), 0.001)
    header = max(1, math.ceil(seconds)) if seconds else 0
    mode = config.retry_after_header
    with_header = mode == "always" or (mode == "sometimes" and state.rngs.faults.random() < 0.5)
    headers = limit_headers(state) | ({"Retry-After": str(header)} if with_header else {})
    details = {"limit": config.rate_limit or 0, "window": "1m", "retry_after": seconds}
    state.stats.announce(key, now, seconds)
    return error_response(429, "Rate limit exceeded", details, headers)


def _throttled(state: V1State, key: RetryKey, now: float) -> Response | None:
    if state.config.storm_rate > 0 and state.rngs.faults.random() < state.config.storm_rate:
        state.stats.fault("storm")
        return _too_many(state, None, key, now)
    if state.bucket is not None and (wait := state.bucket.take()) > 0:
        return _too_many(state, wait, key, now)
    return None


def _unauthorized(state: V1State, request: Request) -> Response | None:
    # The 2024 check, answered in the v1 envelope (no ``details`` key rather than null).
    failed = auth_failure(state.config.api_key, request)
    if failed is None:
        return None
    return error_response(401, UNAUTHORIZED, None, {"WWW-Authenticate": "Bearer"})


def _install_guard(app: FastAPI, state: V1State, dispatcher: Dispatcher) -> None:
    counter = [0]

    async def guard(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        dispatcher.ensure_running()
        arrived = time.perf_counter()  # the answer's time includes all the guard's work
        path = request.url.path
        if path.startswith(CONTROL_PREFIX):
            return await call_next(request)
        key = route_key(app, request)
        counter[0] += 1
        request_id = {"X-Request-ID": f"req_{counter[0]:012x}"}
        response, fault = None, None
        if path != HEALTH:
            retry_key = (request.method, path, request.headers.get("authorization", ""))
            now = state.clock()
            state.stats.arrival(retry_key, now)
            response = (
                _unauthorized(state, request)
                or _throttled(state, retry_key, now)
                or injected_error(state.config.error_rate, state.rngs.faults)
            )
            if response is None:
                fault = wire_faults.choose(state.config, state.rngs.faults)
                if fault is not None:
                    state.stats.fault(fault)
                if fault == "garbage":
                    response = wire_faults.garbage()
            state.refresh()
        if response is not None:
            response.headers.update(request_id)
            state.stats.record(key, response.status_code)
            return response
        try:
            response = await call_next(request)
        except Exception:
            state.stats.record(key, 500)
            raise
        remaining = state.config.latency - (time.perf_counter() - arrived)
        if path != HEALTH and remaining > 0:
            await asyncio.sleep(remaining)
        response.headers.update(limit_headers(state) | request_id)
        state.stats.record(key, response.status_code)
        if fault is not None:
            response = await wire_faults.damage(fault, response, request.scope, state.config)
        return response

    app.add_middleware(Guarded, guard=guard)


def _install_errors(app: FastAPI, state: V1State) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> Response:
        return error_response(exc.status, exc.message, exc.details)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> Response:
        return validation_response(exc, state.config)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> Response:
        return error_response(exc.status_code, str(exc.detail), None, exc.headers)

    @app.exception_handler(Exception)
    async def crash(_: Request, exc: Exception) -> Response:
        return error_response(500, f"Internal error: {type(exc).__name__}")


def create_app(
    config: V1Config | None = None, *, clock: Callable[[], float] = time.monotonic
) -> FastAPI:
    """Build the v1 emulator; its state is ``app.state.emulator``, the webhook dispatcher
    ``app.state.dispatcher``."""
    state = V1State(config or V1Config(), clock)
    dispatcher = Dispatcher(state)
    app = FastAPI(title="Mixpeek emulator (v1 API)", version="0.1.0")
    app.state.emulator, app.state.dispatcher = state, dispatcher
    router = APIRouter()
    add_org_routes(router, state)
    add_bucket_routes(router, state)
    add_collection_routes(router, state)
    add_task_routes(router, state)
    add_controls(router, state, dispatcher)
    app.include_router(router)
    _install_errors(app, state)
    _install_guard(app, state, dispatcher)
    return app
