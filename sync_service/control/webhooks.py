"""The webhook receiver: ``POST /webhooks/mixpeek`` on the control API (README "Webhooks").

Mixpeek signs nothing: a subscription sends static headers, one of them a shared secret
(``SYNC_WEBHOOK_SECRET`` in ``SYNC_WEBHOOK_HEADER``), compared here in constant time. The route
needs that secret instead of the control API's token. It answers before any upstream or Qdrant
work: the event goes into the state store, which de-duplicates on its id for every replica, and
the daemon applies it afterwards (``keep/webhook_events.py``). Deliveries arriving together are
written in one transaction (:class:`Inbox`), and a delivery answers once its event is written
or after ``ANSWER_WITHIN`` seconds, whichever comes first (the write goes on). An event is only
ever a hint to read upstream again; nothing in its body reaches Qdrant.

The envelope is read by ``webhook_envelope.py``.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from sync_service.control.metrics import Metrics
from sync_service.control.webhook_envelope import HANDLED, MalformedEvent, read_envelope, type_label
from sync_service.state.store import STORE_ERRORS, Store
from sync_service.state.webhooks import WebhookEvent

log = logging.getLogger(__name__)

PATH = "/webhooks/mixpeek"
#: A delivery is answered by then, written or not (Mixpeek's timeout is 10 s by default; the
#: service promises 50 ms).
ANSWER_WITHIN = 0.04
#: Deliveries waiting to be written, at most: beyond, 503 (Mixpeek delivers again later).
MAX_WAITING = 5000
#: Events written per transaction.
WRITE_BATCH = 500


class Inbox:
    """Writes received events to the state store, every delivery waiting at that moment in one
    transaction (group commit): a flood costs a few writes a second, not one per event."""

    def __init__(self, store: Store, metrics: Metrics, on_event: Callable[[], None] | None):
        self.store = store
        self.metrics = metrics
        self.on_event = on_event
        self._waiting: list[tuple[WebhookEvent, asyncio.Future[bool]]] = []
        self._writer: asyncio.Task[None] | None = None
        #: Writes whose delivery was answered before they ended (nobody awaits them).
        self._answered: set[asyncio.Future[bool]] = set()

    @property
    def full(self) -> bool:
        return len(self._waiting) >= MAX_WAITING

    def answered(self, future: asyncio.Future[bool]) -> None:
        """The delivery of this write was answered already (it took too long)."""
        if not future.done():
            self._answered.add(future)

    def put(self, event: WebhookEvent) -> asyncio.Future[bool]:
        """The event, to be written: the future says whether it was new (or raises)."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting.append((event, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write(), name="webhook-inbox")
        return future

    async def _write(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting[:WRITE_BATCH], self._waiting[WRITE_BATCH:]
            try:
                answers = await self.store.receive_webhooks([e for e, _ in batch])
            except STORE_ERRORS as exc:
                self._failed(batch, exc)
                continue
            for (event, future), new in zip(batch, answers, strict=True):
                label = type_label(event.event_type)
                self.metrics.webhook_received.labels(label, "queued" if new else "duplicate").inc()
                if not new:
                    self.metrics.webhook_deduplicated.inc()
                self._answered.discard(future)
                if not future.done():
                    future.set_result(new)
            if any(answers) and self.on_event is not None:
                self.on_event()

    def _failed(
        self, batch: list[tuple[WebhookEvent, asyncio.Future[bool]]], exc: BaseException
    ) -> None:
        answered = 0
        for event, future in batch:
            if future in self._answered:  # answered already: lost, the next pass finds it
                self._answered.discard(future)
                answered += 1
                self.metrics.webhook_received.labels(type_label(event.event_type), "lost").inc()
            elif not future.done():
                future.set_exception(exc)
        log.warning(
            "webhook events not queued, the state store is unavailable (%s): %d answered "
            "already are lost (the next watch pass finds their changes)",
            type(exc).__name__,
            answered,
            extra={"event": "webhook_store_unavailable", "lost": answered},
        )


def add_webhook_route(
    app: FastAPI,
    *,
    store: Store,
    metrics: Metrics,
    secret: str | None,
    header: str,
    on_event: Callable[[], None] | None = None,
) -> None:
    """Serve ``POST /webhooks/mixpeek`` on ``app``; ``on_event`` is told of each new event (the
    daemon applies it at once instead of at its next tick)."""
    expected = None if secret is None else secret.encode("utf-8")
    inbox = Inbox(store, metrics, on_event)

    @app.post(
        PATH,
        status_code=202,
        responses={
            200: {"description": "a duplicate: its event id was received before"},
            400: {"description": "not a JSON object, or no event type"},
            401: {"description": "missing or wrong shared secret header"},
            404: {"description": "webhooks are off (SYNC_WEBHOOK_SECRET unset)"},
            503: {"description": "the state store is unavailable: deliver again later"},
        },
    )
    async def mixpeek_webhook(request: Request) -> JSONResponse:
        """A Mixpeek webhook delivery: checked, de-duplicated and queued; applied afterwards."""
        if expected is None:
            metrics.webhook_rejected.labels("disabled").inc()
            return _answer(404, "webhooks are off: set SYNC_WEBHOOK_SECRET to receive them")
        given = request.headers.get(header)
        # Bytes on both sides: compare_digest takes str only when it is ASCII.
        if given is None or not secrets.compare_digest(given.encode("latin-1"), expected):
            metrics.webhook_rejected.labels("secret").inc()
            log.warning(
                "webhook refused: missing or wrong %s header",
                header,
                extra={"event": "webhook_rejected", "client": _client(request)},
            )
            return _answer(401, f"missing or wrong {header} header")
        raw = await request.body()
        try:
            event = read_envelope(raw)
        except MalformedEvent as exc:
            metrics.webhook_rejected.labels("malformed").inc()
            return _answer(400, str(exc))
        label = type_label(event.event_type)
        if event.event_type not in HANDLED:
            metrics.webhook_received.labels(label, "ignored_type").inc()
            return JSONResponse({"status": "ignored", "event_id": event.event_id}, 202)
        if inbox.full:
            return _answer(503, "too many deliveries waiting; deliver again later")
        written = inbox.put(event)
        try:
            # Shielded: a delivery answered before its write finishes leaves the write going.
            new = await asyncio.wait_for(asyncio.shield(written), ANSWER_WITHIN)
        except TimeoutError:
            inbox.answered(written)
            return JSONResponse({"status": "accepted", "event_id": event.event_id}, 202)
        except STORE_ERRORS:
            # Not acknowledged: Mixpeek delivers it again later (and watch catches up anyway).
            return _answer(503, "the state store is unavailable; deliver again later")
        if not new:
            return JSONResponse({"status": "duplicate", "event_id": event.event_id}, 200)
        return JSONResponse({"status": "queued", "event_id": event.event_id}, 202)


def _answer(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status)


def _client(request: Request) -> str | None:
    return None if request.client is None else request.client.host
