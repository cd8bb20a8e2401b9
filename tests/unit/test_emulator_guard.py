"""emulator/guard.py: the guard runs as plain ASGI and sees the handler's whole answer."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from sync_service.emulator.guard import Guarded

Next = Callable[[Request], Awaitable[Response]]


def _app(seen: list[object]) -> FastAPI:
    app = FastAPI()

    @app.get("/thing")
    async def thing() -> Response:
        return JSONResponse({"ok": True}, status_code=201, headers={"X-Handler": "yes"})

    @app.get("/stream")
    async def stream() -> Response:
        async def parts() -> AsyncIterator[bytes]:
            yield b'{"a":'
            yield b"1}"

        return StreamingResponse(parts(), media_type="application/json")

    @app.get("/boom")
    async def boom() -> Response:
        raise RuntimeError("handler bug")

    @app.exception_handler(Exception)
    async def crash(_: Request, exc: Exception) -> Response:
        return JSONResponse({"error": type(exc).__name__}, status_code=500)

    async def guard(request: Request, call_next: Next) -> Response:
        if request.url.path == "/refused":
            return JSONResponse({"refused": True}, status_code=401)
        try:
            response = await call_next(request)
        except Exception as exc:
            seen.append(exc)
            raise
        seen.append((response.status_code, bytes(response.body)))
        response.headers.update({"X-Guard": "1"})
        return response

    app.add_middleware(Guarded, guard=guard)
    return app


async def _get(app: FastAPI, path: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://emu") as client:
        return await client.get(path)


async def test_the_guard_sees_and_amends_the_handlers_whole_answer() -> None:
    seen: list[object] = []
    answer = await _get(_app(seen), "/thing")
    assert (answer.status_code, answer.json()) == (201, {"ok": True})
    assert answer.headers["x-handler"] == "yes" and answer.headers["x-guard"] == "1"
    assert answer.headers["content-length"] == str(len(answer.content))
    assert seen == [(201, b'{"ok":true}')]


async def test_a_streamed_answer_reaches_the_guard_whole() -> None:
    seen: list[object] = []
    answer = await _get(_app(seen), "/stream")
    assert answer.json() == {"a": 1}
    assert seen == [(200, b'{"a":1}')]


async def test_a_handlers_crash_passes_through_the_guard_to_the_500_handler() -> None:
    seen: list[object] = []
    answer = await _get(_app(seen), "/boom")
    assert (answer.status_code, answer.json()) == (500, {"error": "RuntimeError"})
    assert [type(e) for e in seen] == [RuntimeError]


async def test_the_guard_answers_alone_without_calling_the_handler() -> None:
    seen: list[object] = []
    answer = await _get(_app(seen), "/refused")
    assert (answer.status_code, answer.json()) == (401, {"refused": True})
    assert seen == []
