"""Faults on the wire: answers that go wrong after the status line, or never come at all.

One seeded roll per API request picks at most one of ``garbage``, ``truncate``, ``reset``,
``slow_drip`` and ``hang`` (their rates share one budget of 1, laid out in that order).
``garbage`` replaces the handler; the others let the handler run first, so the request is
applied exactly once (as upstream would) and only its answer is damaged:

* ``truncate``: ``Content-Length`` of the whole body, half the body, then the connection closed.
* ``reset``: headers and half the body, then a TCP reset (SO_LINGER 0, ``transport.abort()``).
* ``slow_drip``: the whole, correct body, 16 bytes at a time ``slow_drip_delay`` apart.
* ``hang``: the normal answer, held ``hang_seconds`` first.

Breaking a connection on purpose needs uvicorn's transport, which ASGI does not expose:
:class:`ExposeTransport` (wrapped around the app by the emulator's server) puts it in the scope.
Without it a cut answer simply ends unfinished, and uvicorn closes the connection itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Response
from starlette.responses import HTMLResponse, StreamingResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from sync_service.emulator.config import EmulatorConfig

TRANSPORT_KEY = "sync_service.emulator.transport"
DRIP_CHUNK = 16  # bytes per slow-drip chunk
_HOLD_STEP = 0.1  # how often a held request checks whether its client gave up

# What a reverse proxy in front of an API answers when its upstream is down, sometimes with 200.
GARBAGE_PAGE = (
    "<html><head><title>502 Bad Gateway</title></head>"
    "<body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>"
)


class ExposeTransport:
    """ASGI wrapper that stores uvicorn's transport in ``scope[TRANSPORT_KEY]``.

    uvicorn's ``send`` is a bound method of its per-request cycle, which holds the transport;
    anything else (another server, a test client) just leaves the key out.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        transport = getattr(getattr(send, "__self__", None), "transport", None)
        if scope["type"] == "http" and isinstance(transport, asyncio.Transport):
            scope[TRANSPORT_KEY] = transport
        await self.app(scope, receive, send)


def choose(config: EmulatorConfig, rng: random.Random) -> str | None:
    """The wire fault for this request, or None; draws only when a wire rate is set."""
    rates = config.wire_rates()
    if not any(rates.values()):
        return None
    roll = rng.random()
    for name, rate in rates.items():
        if roll < rate:
            return name
        roll -= rate
    return None


def garbage() -> Response:
    """A 200 that is not JSON: the proxy's error page."""
    return HTMLResponse(GARBAGE_PAGE, status_code=200)


async def damage(fault: str, response: Response, scope: Scope, config: EmulatorConfig) -> Response:
    """``response`` (the handler's) as it reaches the client under ``fault``."""
    if fault == "hang":
        await _hold(scope, config.hang_seconds)
        return response
    body = await _body_of(response)
    if fault == "slow_drip":
        return _drip(response, body, config.slow_drip_delay)
    return _CutResponse(response, body, reset=fault == "reset")


async def _body_of(response: Response) -> bytes:
    # The guard's call_next buffers the handler's answer (emulator/guard.py); a streaming
    # answer handed in some other way is read whole.
    body = getattr(response, "body", None)
    if isinstance(body, bytes):
        return body
    chunks: list[bytes] = []
    iterator: AsyncIterator[Any] = response.body_iterator  # type: ignore[attr-defined]
    async for chunk in iterator:
        chunks.append(chunk.encode() if isinstance(chunk, str) else bytes(chunk))
    return b"".join(chunks)


def _headers(response: Response, length: int) -> list[tuple[bytes, bytes]]:
    """The handler's headers with a ``Content-Length`` of ``length``."""
    kept = [(k, v) for k, v in response.raw_headers if k.lower() != b"content-length"]
    return [*kept, (b"content-length", str(length).encode())]


def _drip(response: Response, body: bytes, delay: float) -> Response:
    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), DRIP_CHUNK):
            # The status line and headers go out at once; every chunk waits its turn.
            await asyncio.sleep(delay)
            yield body[start : start + DRIP_CHUNK]

    dripping = StreamingResponse(chunks(), status_code=response.status_code)
    dripping.raw_headers = _headers(response, len(body))
    return dripping


class _CutResponse(Response):
    """Headers promising the whole body, half of it, then the connection dropped."""

    def __init__(self, original: Response, body: bytes, *, reset: bool) -> None:
        self.status_code = original.status_code
        self.background = None
        self.raw_headers = _headers(original, len(body))
        self.body = body[: len(body) // 2]
        self._reset = reset

    async def __call__(self, scope: Scope, _receive: Receive, send: Send) -> None:
        start = {"type": "http.response.start", "status": self.status_code}
        await send({**start, "headers": self.raw_headers})
        await send({"type": "http.response.body", "body": bytes(self.body), "more_body": True})
        await _drop(scope, reset=self._reset)


async def _drop(scope: Scope, *, reset: bool) -> None:
    transport = scope.get(TRANSPORT_KEY)
    if not isinstance(transport, asyncio.Transport):
        return  # uvicorn closes a connection whose answer was left unfinished (and logs it)
    if reset:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):  # linger 0: close() sends RST, not FIN
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    else:
        transport.close()  # FIN after what was written: a body short of its Content-Length
    # Let uvicorn see the connection go before this answer ends, or it logs it as unfinished.
    for _ in range(3):
        await asyncio.sleep(0)


async def _hold(scope: Scope, seconds: float) -> None:
    """Wait ``seconds``, or less if the client hangs up first (no answer is owed then)."""
    transport = scope.get(TRANSPORT_KEY)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while (left := deadline - loop.time()) > 0:
        if isinstance(transport, asyncio.Transport) and transport.is_closing():
            return
        await asyncio.sleep(min(left, _HOLD_STEP))
