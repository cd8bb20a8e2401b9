"""The control API served by ``sync-service run``: work in, state out, health and metrics.

With ``SYNC_API_TOKEN`` set, every route except ``/healthz``, ``/readyz`` and the webhook
receiver (which needs its own shared secret, ``webhooks.py``) needs
``Authorization: Bearer <token>``. Bodies over ``SYNC_API_MAX_BODY_BYTES`` are refused with 413
before they are read in full; malformed input gets 422.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sync_service.control import webhooks
from sync_service.control.metrics import Metrics
from sync_service.control.schemas import (
    CollectionId,
    DeadLetterOut,
    Item,
    LetterId,
    RetryAnswer,
    RetryOut,
    RetryRequest,
    StatusAnswer,
    SubmitAnswer,
    SubmitRequest,
    TaskDetail,
    TaskState,
    TrackAnswer,
    TrackRequest,
    WatchAnswer,
    WatchRequest,
)
from sync_service.engine.availability import Availability, first_line
from sync_service.keep.watch_status import watch_view
from sync_service.qdrant.faults import SinkUnavailable
from sync_service.qdrant.sink import QdrantSink
from sync_service.state.store import Store
from sync_service.upstream.port import MixpeekError, Outage, Submission, Upstream

log = logging.getLogger(__name__)

OPEN_PATHS = frozenset({"/healthz", "/readyz", webhooks.PATH})


def create_api(
    *,
    store: Store,
    upstream: Upstream,
    sink: QdrantSink,
    metrics: Metrics,
    token: str | None = None,
    max_body_bytes: int = 1024 * 1024,
    outage: Outage | None = None,
    qdrant: Availability | None = None,
    webhook_secret: str | None = None,
    webhook_header: str = "X-Mixpeek-Secret",
    on_webhook: Callable[[], None] | None = None,
) -> ASGIApp:
    """The control API as an ASGI app (the guard wraps FastAPI, OpenAPI included).
    ``outage``: the daemon's upstream breaker, reported by ``/readyz``, as is ``qdrant``, Qdrant
    as the daemon's writes find it (down while writes fail, however reads answer).
    ``webhook_secret`` (None: the receiver refuses every delivery) and ``webhook_header``: the
    receiver's shared secret; ``on_webhook`` is told of each new event."""
    app = FastAPI(title="sync-service control API", version="1")
    webhooks.add_webhook_route(
        app,
        store=store,
        metrics=metrics,
        secret=webhook_secret,
        header=webhook_header,
        on_event=on_webhook,
    )

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's default echoes the input back, which cannot be rendered when it holds NaN
        # or a lone surrogate (and should not be echoed anyway): say where and what, only.
        errors = [
            {
                "loc": [_printable(part) for part in e.get("loc", ())],
                "msg": _printable(e.get("msg", "")),
                "type": _printable(e.get("type", "")),
            }
            for e in exc.errors()
        ]
        return JSONResponse({"detail": errors}, status_code=422)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """The process is alive."""
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        """The state store and Qdrant both answer. Mixpeek's state is reported, not required:
        while it is down the daemon waits, and the API still tracks work."""
        checks = {"state_store": await _check(store.ping), "qdrant": await _check(sink.ping)}
        if qdrant is not None and qdrant.holds_work:  # the writes fail, whatever a read says
            checks["qdrant"] = f"error: {qdrant.describe()}"
        metrics.store_answered(checks["state_store"] == "ok")
        if (since := metrics.store_down_since) is not None:
            checks["state_store"] += f" (unavailable since {since:%Y-%m-%d %H:%M:%S}Z)"
        ready = all(value == "ok" for value in checks.values())
        mixpeek = outage.describe() if outage is not None and outage.is_open else "ok"
        body = {"ready": ready, **checks, "mixpeek": mixpeek}
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get("/metrics", response_class=PlainTextResponse)
    async def prometheus() -> Response:
        """Prometheus exposition format."""
        try:
            stats = await store.stats()
        except Exception:  # still served: sync_state_store_up says why the gauges are old
            stats = None
        return Response(metrics.render(stats), media_type=CONTENT_TYPE_LATEST)

    @app.post("/tasks", response_model=TrackAnswer)
    async def track(body: TrackRequest) -> TrackAnswer:
        """Track existing Mixpeek tasks (idempotent)."""
        ids = list(dict.fromkeys(body.task_ids))
        new = await store.track(ids)
        if new:
            log.info("tasks tracked", extra={"event": "task_tracked", "count": new})
        return TrackAnswer(tracked=new, already_tracked=len(ids) - new)

    @app.post("/submit", response_model=SubmitAnswer)
    async def submit(body: SubmitRequest) -> SubmitAnswer:
        """Index items with Mixpeek and track their tasks; one failing item stops no other."""
        task_ids: list[str] = []
        errors: list[str] = []
        for number, item in enumerate(body.items):
            try:
                task_id = await _index(upstream, item, body.collection_id, body.prevent_duplicate)
            except (MixpeekError, ValueError) as exc:  # ValueError: the client refused the item
                errors.append(f"item {number}: {exc}")
                continue
            await store.track([task_id], source="submit")
            log.info(
                "task tracked",
                extra={"event": "task_tracked", "task_id": task_id, "source": "submit"},
            )
            task_ids.append(task_id)
        return SubmitAnswer(task_ids=task_ids, errors=errors)

    @app.get("/tasks", response_model=StatusAnswer)
    async def list_tasks(limit: Annotated[int, Query(ge=1, le=10_000)] = 100) -> StatusAnswer:
        """Counts by state and the newest tasks."""
        rows = await store.list_tasks(newest=limit)
        return StatusAnswer(counts=await store.counts(), tasks=[TaskState(**r) for r in rows])

    @app.get("/tasks/{task_id}", response_model=TaskDetail)
    async def task_state(task_id: str) -> TaskDetail:
        """One task's sync state, with its dead letters."""
        rows = await store.list_tasks(task_id)
        if not rows:
            raise HTTPException(404, f"task {task_id} is not tracked")
        letters = [DeadLetterOut(**d) for d in await store.dead_letters(task_id)]
        retries = [RetryOut(**r) for r in await store.task_history(task_id)]
        return TaskDetail(**rows[0], dead_letter_list=letters, retries=retries)

    @app.post("/tasks/retry", response_model=RetryAnswer)
    async def retry_failed(body: RetryRequest) -> RetryAnswer:
        """Re-queue failed tasks and asset jobs with fresh attempts (their failure is kept)."""
        since = body.since
        if isinstance(since, datetime):  # naive is UTC, as everywhere in the service
            since = (since if since.tzinfo else since.replace(tzinfo=UTC)).timestamp()
        done = await store.requeue_failed(body.task_ids, since=since, dry_run=body.dry_run)
        if done.task_ids and not body.dry_run:
            log.info("failed work re-queued", extra={"event": "retry", "count": len(done.task_ids)})
        return RetryAnswer(dry_run=body.dry_run, requeued=done.task_ids, skipped=done.skipped)

    @app.get("/watch")
    async def list_watched() -> list[dict[str, Any]]:
        """The watched collections: last passes, lag, assets known, held sweep if any."""
        return await watch_view(store)

    @app.post("/watch", response_model=WatchAnswer)
    async def watch(body: WatchRequest) -> WatchAnswer:
        ids = list(dict.fromkeys(body.collection_ids))
        added = await store.watch_add(ids, source="api")
        return WatchAnswer(added=added, already_watched=[c for c in ids if c not in added])

    @app.delete("/watch/{collection_id}", status_code=204)
    async def unwatch(collection_id: CollectionId) -> Response:
        if not await store.watch_remove([collection_id]):
            raise HTTPException(404, f"collection {collection_id} is not watched")
        return Response(status_code=204)

    @app.get("/dead-letters", response_model=list[DeadLetterOut])
    async def list_dead_letters(
        task_id: str | None = None, limit: Annotated[int, Query(ge=1, le=10_000)] = 100
    ) -> list[DeadLetterOut]:
        """Features set aside, oldest first."""
        return [DeadLetterOut(**d) for d in await store.dead_letters(task_id, limit=limit)]

    @app.post("/dead-letters/{letter_id}/retry")
    async def retry_dead_letter(letter_id: LetterId) -> dict[str, str]:
        """Sync the dead letter's task again (after its cause was fixed)."""
        task_id = await store.retry_dead_letter(letter_id)
        if task_id is None:
            raise HTTPException(404, f"no dead letter {letter_id}")
        log.info("dead letter retried", extra={"event": "dead_letter_retry", "task_id": task_id})
        return {"task_id": task_id, "state": "pending"}

    @app.delete("/dead-letters/{letter_id}", status_code=204)
    async def drop_dead_letter(letter_id: LetterId) -> Response:
        """Forget a dead letter (its feature stays out of Qdrant)."""
        if not await store.drop_dead_letter(letter_id):
            raise HTTPException(404, f"no dead letter {letter_id}")
        return Response(status_code=204)

    return Guard(app, token=token, max_body_bytes=max_body_bytes)


def _printable(value: object) -> object:
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value if isinstance(value, int) else str(value)


async def _index(upstream: Upstream, item: Item, collection_id: str, dedupe: bool) -> str:
    content = (item.text or "") if item.kind == "text" else str(item.url)
    task_id = await upstream.submit(
        Submission(item.kind, content, collection_id, item.metadata, prevent_duplicate=dedupe)
    )
    if not task_id:
        raise MixpeekError("Mixpeek answered without a task_id", status=None)
    return task_id


async def _check(probe: Callable[[], Awaitable[None]]) -> str:
    try:
        await asyncio.wait_for(probe(), timeout=3)
    except SinkUnavailable as exc:  # the service's words and the first line of Qdrant's
        return f"error: {first_line(exc)}"
    except Exception as exc:  # any failure means "not ready"; say which kind
        return f"error: {type(exc).__name__}"
    return "ok"


#: The answer to a request the service's stop cut short.
STOPPED = (
    "the service stopped before this request finished: it may have been carried out in part "
    "(a submission may have reached Mixpeek); check before trying again"
)


class Guard:
    """ASGI middleware: bearer token (except health) and a request body size limit."""

    def __init__(self, app: ASGIApp, *, token: str | None, max_body_bytes: int) -> None:
        self.app = app
        self.token = token
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if self.token is not None and scope["path"] not in OPEN_PATHS:
            given = headers.get("authorization", "")
            scheme, _, value = given.partition(" ")
            if scheme.lower() != "bearer" or not secrets.compare_digest(value, self.token):
                await _plain(
                    send, 401, "missing or wrong bearer token", {"www-authenticate": "Bearer"}
                )
                return
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
            await _plain(send, 413, f"request body over {self.max_body_bytes} bytes")
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, self._limited(receive), tracked)
        except asyncio.CancelledError:
            # Only the server's stop cancels a request (control/server.py: what is left of
            # SYNC_SHUTDOWN_GRACE): its caller gets why, not a bare 500, and the task ends.
            if started:
                raise
            await _plain(send, 503, STOPPED, {"retry-after": "5", "connection": "close"})

    def _limited(self, receive: Receive) -> Receive:
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body_bytes:
                    # A chunked body with no Content-Length that grows too big.
                    raise HTTPException(413, f"request body over {self.max_body_bytes} bytes")
            return message

        return limited


async def _plain(send: Send, status: int, detail: str, extra: dict[str, str] | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.encode(), v.encode()) for k, v in (extra or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
