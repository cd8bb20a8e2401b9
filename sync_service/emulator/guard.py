"""The emulators' request guard as plain ASGI middleware.

Each emulator's guard (auth, faults, latency: ``app.py``, ``v1/app.py``) is written as an
``@app.middleware("http")`` function, ``guard(request, call_next) -> Response``. Starlette runs
those through ``BaseHTTPMiddleware``, which hands the handler's answer back as a stream
between two tasks: per request a task group, memory streams and several event-loop hops. The
emulator is the yardstick the service's throughput is measured against (bench scenario 10:
its answers took 52.7 ms on average for a configured 50), so its own overhead counts.

:class:`Guarded` calls the same guard function from plain ASGI: ``call_next`` runs the rest
of the app to the end and returns its answer as one buffered ``Response`` (status, the
handler's headers as they were, body), which the guard may delay, amend or damage
(``wire_faults.damage``) before it is sent. The emulator's answers are small JSON bodies, so
buffering them changes nothing a client can see.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import Request, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: ``guard(request, call_next)``: the emulator's pipeline around the handler.
Guard = Callable[[Request, Callable[[Request], Awaitable[Response]]], Awaitable[Response]]


class Guarded:
    """ASGI middleware running ``guard`` around the rest of the app (``app.add_middleware``)."""

    def __init__(self, app: ASGIApp, guard: Guard) -> None:
        self.app = app
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def call_next(_request: Request) -> Response:
            return await answer_of(self.app, scope, receive)

        response = await self.guard(Request(scope, receive), call_next)
        await response(scope, receive, send)


async def answer_of(app: ASGIApp, scope: Scope, receive: Receive) -> Response:
    """What ``app`` answers to the request, buffered: its status, headers and whole body."""
    status, headers, chunks = 500, [], []

    async def capture(message: Message) -> None:
        nonlocal status, headers
        if message["type"] == "http.response.start":
            status = message["status"]
            headers = list(message.get("headers", []))
        elif message["type"] == "http.response.body":
            chunks.append(bytes(message.get("body", b"")))

    await app(scope, receive, capture)
    response = Response(b"".join(chunks), status_code=status)
    response.raw_headers = headers  # the handler's own, Content-Length included
    return response
