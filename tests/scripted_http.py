"""A real HTTP server on a free loopback port that answers as a test scripts it, and keeps
what it was asked (for code that speaks HTTP without the Mixpeek client, which the tests
otherwise intercept at ``AiohttpClient.send``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self


@dataclass(frozen=True)
class Asked:
    path: str
    headers: dict[str, str]
    at: float  # time.monotonic()


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes = b"{}"
    headers: tuple[tuple[str, str], ...] = ()


class ScriptedServer:
    """``with ScriptedServer(lambda asked: Answer(404)) as server: server.url, server.asked``;
    ``hang=True`` accepts connections and never answers."""

    def __init__(self, answer: Callable[[Asked], Answer], *, hang: bool = False) -> None:
        self.asked: list[Asked] = []
        outer = self
        self._stop = threading.Event()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                asked = Asked(self.path, dict(self.headers.items()), time.monotonic())
                outer.asked.append(asked)
                if hang:
                    outer._stop.wait()
                    return
                reply = answer(asked)
                self.send_response(reply.status)
                for name, value in reply.headers:
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)

            def log_message(self, *_args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> Self:
        # A short poll: shutdown() waits up to one for the serving loop to notice.
        serve = lambda: self._server.serve_forever(poll_interval=0.02)  # noqa: E731
        threading.Thread(target=serve, daemon=True).start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()
