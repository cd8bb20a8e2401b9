"""The emulator's ASGI app: Mixpeek routes behind auth and fault injection, plus controls.

Request pipeline for Mixpeek API routes, in this order:
auth (401) -> storm (429) -> rate limit (429) -> error_rate (5xx)
-> wire fault (garbage | truncate | reset | slow_drip | hang) -> handler -> the rest of
the latency (an answer takes ``latency`` seconds, the handler's own time included).
Auth comes first so an unauthenticated client never spends rate-limit tokens, and a storm
comes before the bucket so a storm 429 spends no token either. 429/5xx/garbage answer before
any work, so they never leave a half-applied change behind. truncate, reset, slow_drip and
hang are decided with the rest but damage the handler's answer *after* it ran: the request is
applied once, as upstream would apply it, and ids stay a function of the seed and the order
of requests. Each stage draws from the seeded fault RNG only when its knob is set, so adding
a knob at zero never shifts the decisions of an existing seed.

Every API request is also checked against the last 429 announced for the same method,
concrete path and Authorization header: see ``Stats`` for ``retry_after_violations``.
``/healthcheck`` skips auth and faults; ``/_emulator/*`` skips them and is not counted.
``/_emulator/seed``, ``/_emulator/assets/{id}/reindex`` and the edit and delete routes under
``/_emulator/assets`` change upstream data as another client would (``lifecycle``).
"""

from __future__ import annotations

import asyncio
import math
import random
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Body, FastAPI, Request, Response
from fastapi.encoders import jsonable_encoder
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from sync_service.emulator import wire_faults
from sync_service.emulator.config import EmulatorConfig
from sync_service.emulator.faults import RetryKey
from sync_service.emulator.guard import Guarded
from sync_service.emulator.lifecycle import (
    AssetChange,
    DeleteRequest,
    NotIndexed,
    ReindexRequest,
    SeedRequest,
)
from sync_service.emulator.records import Asset
from sync_service.emulator.responses import ApiError, error_response, json_response
from sync_service.emulator.routes import add_routes
from sync_service.emulator.state import EmulatorState

CONTROL_PREFIX = "/_emulator"
UNAUTHORIZED = "Invalid or missing API key"
STORM_RETRY_AFTER = 1  # seconds a storm 429 announces unless the retry_after knob says


def route_key(app: FastAPI, request: Request) -> str:
    """``"<METHOD> <route template>"``, e.g. ``GET /features/{feature_id}``.

    Matched up front (not read from scope after the call) because 429/5xx faults answer
    before routing happens and must still be counted under their route.
    """
    template = None
    for route in app.router.routes:
        match, _ = route.matches(request.scope)
        if match is Match.FULL:
            template = getattr(route, "path", None)
            break
        if match is Match.PARTIAL and template is None:
            template = getattr(route, "path", None)
    return f"{request.method} {template or request.url.path}"


def auth_failure(expected: str | None, request: Request) -> Response | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    ok = scheme.lower() == "bearer" and bool(token)
    if ok and expected is not None:
        ok = secrets.compare_digest(token.encode(), expected.encode())
    if ok:
        return None
    # Never echo the presented key: error bodies end up in logs.
    return error_response(401, UNAUTHORIZED, headers={"WWW-Authenticate": "Bearer"})


def _too_many(state: EmulatorState, wait: float | None) -> tuple[Response, float]:
    """A 429 and the seconds it announces; ``wait`` is the bucket's, None for a storm."""
    config = state.config
    header: float
    seconds: float
    if config.retry_after is not None:
        header = seconds = config.retry_after
    elif wait is None:
        header = seconds = STORM_RETRY_AFTER
    else:
        header, seconds = max(1, math.ceil(wait)), max(round(wait, 3), 0.001)
    # "sometimes": half the answers carry the header, the rest only details.retry_after, so a
    # client has to honour both (Mixpeek documented the header only from 2025 on).
    mode = config.retry_after_header
    with_header = mode == "always" or (mode == "sometimes" and state.rngs.faults.random() < 0.5)
    response = error_response(
        429,
        f"Rate limit exceeded. Please retry after {seconds} seconds.",
        {"retry_after": seconds},
        {"Retry-After": str(header)} if with_header else None,
    )
    # The header is never below the JSON hint, so a client honouring either waits >= seconds.
    return response, float(seconds)


def _throttled(state: EmulatorState, key: RetryKey, now: float) -> Response | None:
    storm = state.config.storm_rate
    if storm > 0 and state.rngs.faults.random() < storm:
        state.stats.fault("storm")
        response, seconds = _too_many(state, None)
    elif state.bucket is not None and (wait := state.bucket.take()) > 0:
        response, seconds = _too_many(state, wait)
    else:
        return None
    state.stats.announce(key, now, seconds)
    return response


def injected_error(rate: float, rng: random.Random) -> Response | None:
    """A 5xx for a share ``rate`` of requests (draws only when the knob is set)."""
    if rate <= 0 or rng.random() >= rate:
        return None
    status = rng.choice((500, 502, 503))
    return error_response(status, f"Emulated upstream failure (HTTP {status})")


def _install_guard(app: FastAPI, state: EmulatorState) -> None:
    async def guard(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        arrived = time.perf_counter()  # the answer's time includes all the guard's work
        path = request.url.path
        if path.startswith(CONTROL_PREFIX):
            return await call_next(request)
        key = route_key(app, request)
        response, fault = None, None
        if path != "/healthcheck":
            retry_key = (request.method, path, request.headers.get("authorization", ""))
            now = state.clock()
            state.stats.arrival(retry_key, now)
            response = (
                auth_failure(state.config.api_key, request)
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
        if response is None:
            try:
                response = await call_next(request)
            except Exception:
                state.stats.record(key, 500)
                raise
            # The latency is the answer time, the handler's own work included, as a remote
            # API's is: on a busy machine the emulator's CPU must not add to what it was told.
            remaining = state.config.latency - (time.perf_counter() - arrived)
            if path != "/healthcheck" and remaining > 0:
                await asyncio.sleep(remaining)
            state.stats.record(key, response.status_code)
            if fault is not None:
                response = await wire_faults.damage(fault, response, request.scope, state.config)
            return response
        state.stats.record(key, response.status_code)
        return response

    app.add_middleware(Guarded, guard=guard)


def _install_errors(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> Response:
        return error_response(exc.status, exc.message, exc.details)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> Response:
        # Unknown paths (404), wrong methods (405) and the like get the envelope too.
        return error_response(exc.status_code, str(exc.detail), None, exc.headers)

    @app.exception_handler(Exception)
    async def crash(_: Request, exc: Exception) -> Response:
        return error_response(500, f"Internal error: {type(exc).__name__}")


def _install_controls(app: FastAPI, state: EmulatorState) -> None:
    @app.get(f"{CONTROL_PREFIX}/stats", include_in_schema=False)
    async def stats() -> Response:
        body = state.stats.snapshot()
        body["poisoned_features"] = list(state.poisoned)
        body["poison_kinds"] = dict(state.poisoned)
        return json_response(body)

    @app.post(f"{CONTROL_PREFIX}/stats/reset", include_in_schema=False)
    async def reset_stats() -> Response:
        state.stats.reset()
        return json_response({"message": "Statistics reset"})

    @app.post(f"{CONTROL_PREFIX}/poison/clear", include_in_schema=False)
    async def clear_poison() -> Response:
        # Upstream "fixes" its data: every feature serves good vectors from now on.
        healed = list(state.poisoned)
        state.poisoned.clear()
        return json_response({"healed": healed})

    @app.get(f"{CONTROL_PREFIX}/config", include_in_schema=False)
    async def get_config() -> Response:
        return json_response(state.config.model_dump())

    @app.patch(f"{CONTROL_PREFIX}/config", include_in_schema=False)
    async def patch_config(changes: dict[str, Any] = Body(...)) -> Response:
        try:
            config = state.update_config(changes)
        except ValidationError as exc:
            detail = jsonable_encoder(exc.errors(include_url=False, include_context=False))
            return json_response({"detail": detail}, 422)
        return json_response(config.model_dump())

    @app.post(f"{CONTROL_PREFIX}/seed", include_in_schema=False)
    async def seed(body: SeedRequest) -> Response:
        tasks = state.seed_assets(body.collection_id, body.count, body.modality, body.duration)
        return json_response(
            {"asset_ids": [t.asset_id for t in tasks], "task_ids": [t.task_id for t in tasks]}
        )


def _install_asset_controls(app: FastAPI, state: EmulatorState) -> None:
    """Routes that change one upstream asset, or delete some, as another client would."""

    def asset_or_404(asset_id: str) -> Asset:
        state.refresh()  # control routes skip the middleware's refresh
        asset = state.assets.get(asset_id)
        if asset is None:
            raise ApiError(404, f"Asset {asset_id} not found")
        return asset

    @app.patch(CONTROL_PREFIX + "/assets/{asset_id}", include_in_schema=False)
    async def change(asset_id: str, body: AssetChange) -> Response:
        # What a client's PATCH /assets/{id} with propagate_features does.
        asset = asset_or_404(asset_id)
        state.update_asset(asset, body.metadata, replace=False, propagate=True)
        return json_response(state.asset_view(asset))

    @app.delete(CONTROL_PREFIX + "/assets/{asset_id}", include_in_schema=False)
    async def delete(asset_id: str) -> Response:
        state.delete_asset(asset_or_404(asset_id).asset_id)
        return json_response({"deleted": 1})

    @app.post(f"{CONTROL_PREFIX}/assets/delete", include_in_schema=False)
    async def delete_many(body: DeleteRequest) -> Response:
        # Unknown ids are skipped, not an error: a sweep may name assets already gone.
        return json_response({"deleted": state.delete_assets(body.asset_ids)})

    @app.post(CONTROL_PREFIX + "/assets/{asset_id}/reindex", include_in_schema=False)
    async def reindex(asset_id: str, body: ReindexRequest | None = None) -> Response:
        asset = asset_or_404(asset_id)
        try:
            task = state.reindex_asset(asset_id, body.mode if body is not None else "all")
        except NotIndexed as exc:
            raise ApiError(409, str(exc)) from None
        return json_response(
            {"asset_id": asset_id, "task_id": task.task_id, "generation": asset.generation}
        )


def create_app(
    config: EmulatorConfig | None = None, *, clock: Callable[[], float] = time.monotonic
) -> FastAPI:
    """Build the emulator app; its state is at ``app.state.emulator``."""
    state = EmulatorState(config or EmulatorConfig(), clock)
    app = FastAPI(title="Mixpeek emulator (Gen B, 7 Nov 2024)", version="0.1.0")
    app.state.emulator = state

    @app.get("/healthcheck")
    async def healthcheck() -> Response:
        return json_response({"status": "ok"})

    add_routes(app.router, state)
    _install_controls(app, state)
    _install_asset_controls(app, state)
    _install_errors(app)
    _install_guard(app, state)
    return app
