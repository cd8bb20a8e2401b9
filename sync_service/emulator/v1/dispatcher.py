"""Outbound webhooks: events of the store delivered to the registered webhook channels.

Mixpeek stores an event, a scheduled worker POSTs it, retrying with exponential backoff until a
2xx; there is no signature, only the static headers the subscriber set (``X-Mixpeek-Secret``
by convention). The dispatcher does the same on the server's event loop, one tick every
``TICK`` seconds, with knobs for what a receiver must survive: a delay before the first
attempt, duplicates (same ``event_id``), reordering (deliveries due together go out shuffled),
and failures kept for inspection after ``webhook_max_attempts``.

Scheduling uses the real monotonic clock, not the store's injectable one: deliveries are real
HTTP, and a test that freezes the store's clock must still see them go out. Deliveries go
one at a time, so their order is exactly the seeded order (deterministic given a seed).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import httpx

from sync_service.emulator.v1.store import Event, V1State

TICK = 0.05
MAX_LOG = 1000


@dataclass
class Delivery:
    event: Event
    webhook_id: str
    url: str
    headers: dict[str, str]
    timeout: float
    due: float
    attempt: int = 0
    copy: int = 0  # 1 for the duplicate of a delivery


def envelope(state: V1State, event: Event) -> dict[str, Any]:
    """The event body in the configured form (current docs, or the earlier page's)."""
    occurred = state.zulu(event.occurred)
    base = {
        "event_id": event.event_id,
        "event_type": event.event_type,
        "occurred_at": occurred,
        "subject": dict(event.subject),
        "metadata": dict(event.metadata),
    }
    collection_id = event.metadata.get("collection_id")
    if state.config.webhook_envelope == "current":
        scope: dict[str, Any] = {"scope": "namespace", "namespace_id": event.namespace_id}
        if collection_id:
            scope = {"scope": "collection", "collection_id": collection_id}
        return {**base, "namespace_id": event.namespace_id, "cache_scope": scope}
    ns = state.namespaces.get(event.namespace_id)
    col = state.collections.get(str(collection_id or ""))
    keys = [f"mixpeek:{event.namespace_id}:{event.subject['id']}"]
    return {
        **base,
        "namespace": ns.namespace_name if ns else event.namespace_id,
        "collection": col.collection_name if col else None,
        "actor": "system",
        "version": "v1",
        "cache_scope_to_invalidate": {"scope": "key", "keys": keys},
    }


class Dispatcher:
    """Drains ``state.outbox`` into deliveries and sends them; started on the first request
    (uvicorn runs the emulator without a lifespan), stopped with the server's loop."""

    def __init__(self, state: V1State) -> None:
        self.state = state
        self.queue: list[Delivery] = []
        self.log: deque[dict[str, Any]] = deque(maxlen=MAX_LOG)
        self._rng = random.Random(f"{state.config.seed}:webhooks")
        self._task: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None

    def ensure_running(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        self._client = httpx.AsyncClient()
        try:
            while True:
                await self.tick()
                await asyncio.sleep(TICK)
        finally:
            with contextlib.suppress(Exception):
                await self._client.aclose()

    def _enqueue(self, event: Event, now: float) -> None:
        cfg = self.state.config
        for hook in self.state.webhooks.values():
            body = hook.body
            if not body.get("is_active", True) or event.event_type not in body["event_types"]:
                continue
            for channel in body["channels"]:
                if channel.get("channel") != "webhook":
                    continue  # email and slack are not emulated
                configs = channel.get("configs") or {}
                due = now + cfg.webhook_delay
                window = cfg.webhook_reorder_window
                if cfg.webhook_reorder and window > 0:
                    due = math.ceil(due / window) * window  # events close in time go together
                copies = (
                    2
                    if cfg.webhook_duplicate_rate
                    and (self._rng.random() < cfg.webhook_duplicate_rate)
                    else 1
                )
                for n in range(copies):
                    self.queue.append(
                        Delivery(
                            event,
                            hook.webhook_id,
                            str(configs["url"]),
                            {str(k): str(v) for k, v in (configs.get("headers") or {}).items()},
                            float(configs.get("timeout") or 10),
                            due,
                            copy=n,
                        )
                    )

    async def tick(self) -> None:
        """Turn new events into deliveries, then send those that are due."""
        self.state.refresh()  # tasks that finished with nobody polling still emit events
        now = time.monotonic()
        events, self.state.outbox = self.state.outbox, []
        for event in events:
            self._enqueue(event, now)
        due = [d for d in self.queue if d.due <= now]
        if not due:
            return
        self.queue = [d for d in self.queue if d.due > now]
        if self.state.config.webhook_reorder:
            self._rng.shuffle(due)
        for delivery in due:
            await self._send(delivery)

    async def _send(self, delivery: Delivery) -> None:
        assert self._client is not None
        cfg = self.state.config
        delivery.attempt += 1
        body = envelope(self.state, delivery.event)
        entry: dict[str, Any] = {
            "event_id": delivery.event.event_id,
            "event_type": delivery.event.event_type,
            "webhook_id": delivery.webhook_id,
            "url": delivery.url,
            "attempt": delivery.attempt,
            "duplicate": bool(delivery.copy),
        }
        try:
            response = await self._client.post(
                delivery.url, json=body, headers=delivery.headers, timeout=delivery.timeout
            )
            entry["status"] = response.status_code
            ok = 200 <= response.status_code < 300
        except httpx.HTTPError as exc:
            entry["error"] = type(exc).__name__
            ok = False
        entry["outcome"] = "delivered" if ok else "retrying"
        if not ok:
            if delivery.attempt >= cfg.webhook_max_attempts:
                entry["outcome"] = "failed"  # kept in the log, as Mixpeek keeps failures
            else:
                backoff = cfg.webhook_retry_base * 2 ** (delivery.attempt - 1)
                delivery.due = time.monotonic() + backoff
                self.queue.append(delivery)
        self.log.append(entry)

    def snapshot(self) -> dict[str, Any]:
        return {"pending": len(self.queue) + len(self.state.outbox), "deliveries": list(self.log)}
