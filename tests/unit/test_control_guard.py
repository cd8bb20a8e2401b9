"""The control API's Guard answers a request the service's stop cut short (control/server.py)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from sync_service.control.api import STOPPED, Guard

Message = dict[str, Any]


async def _receive() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


def _scope() -> dict[str, Any]:
    return {"type": "http", "path": "/submit", "headers": [], "method": "POST"}


async def _run(app: Any) -> tuple[asyncio.Task[None], list[Message]]:
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    guard = Guard(app, token=None, max_body_bytes=1024)
    task = asyncio.create_task(guard(_scope(), _receive, send))
    await asyncio.sleep(0.05)
    task.cancel()  # as uvicorn does once its graceful-shutdown timeout has passed
    await asyncio.wait([task], timeout=5)
    return task, sent


async def test_a_request_cut_before_its_answer_gets_a_503_saying_why() -> None:
    async def waits_on_mixpeek(scope: Any, receive: Any, send: Any) -> None:
        await asyncio.Event().wait()

    task, sent = await _run(waits_on_mixpeek)
    assert task.done() and not task.cancelled()  # answered, and the request's task ended
    start, body = sent
    assert start["status"] == 503
    assert (b"retry-after", b"5") in start["headers"]
    assert json.loads(body["body"]) == {"detail": STOPPED}


async def test_a_request_cut_while_answering_is_not_answered_twice() -> None:
    async def answers_slowly(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await asyncio.Event().wait()

    task, sent = await _run(answers_slowly)
    assert task.cancelled()  # the server closes the connection: nothing more can be said
    assert [m["type"] for m in sent] == ["http.response.start"]
