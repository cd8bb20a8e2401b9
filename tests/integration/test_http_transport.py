"""The aiohttp transport under httpx, over real sockets: answers, reuse, and every failure
arriving as the httpx error the client's retry policy knows."""

from __future__ import annotations

import asyncio
import gzip
import os
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from sync_service.emulator import EmulatorServer
from sync_service.upstream import transport
from sync_service.upstream.transport import AiohttpClient, AiohttpTransport, pooled_transport
from tests.conftest import API_KEY

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class RawServer:
    """A TCP server on loopback that answers with whatever bytes a test scripts."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.url = ""
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> RawServer:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            try:
                await self.handler(reader, writer)
            finally:
                writer.close()

        self._server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()


async def _read_request(reader: asyncio.StreamReader) -> None:
    await reader.readuntil(b"\r\n\r\n")


def _answer(body: bytes, declared: int | None = None) -> bytes:
    length = len(body) if declared is None else declared
    head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n"
    return head.encode() + b"\r\n" + body


#: Both ways over the wire: httpx's send chain onto the transport, and AiohttpClient's
#: straight one (what the Mixpeek client uses).
CLIENTS = {"httpx-send": httpx.AsyncClient, "direct": AiohttpClient}


@pytest.fixture(params=list(CLIENTS))
def kind(request: pytest.FixtureRequest) -> type[httpx.AsyncClient]:
    return CLIENTS[request.param]


@pytest.fixture
async def client(kind: type[httpx.AsyncClient]) -> AsyncIterator[httpx.AsyncClient]:
    timeout = httpx.Timeout(connect=2.0, read=0.5, write=2.0, pool=2.0)
    async with kind(transport=AiohttpTransport(4), timeout=timeout) as http:
        yield http


async def test_answers_bodies_and_headers_arrive_whole(
    emulator: EmulatorServer, kind: type[httpx.AsyncClient]
) -> None:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with kind(base_url=emulator.url, transport=AiohttpTransport(4), headers=headers) as http:
        answers = await asyncio.gather(*(http.get("/collections") for _ in range(12)))
        assert {a.status_code for a in answers} == {200}
        assert all("results" in a.json() for a in answers)
        assert answers[0].headers["content-type"].startswith("application/json")
        refused = await http.get("/collections", headers={"Authorization": "Bearer wrong"})
        assert refused.status_code == 401 and refused.json()["error"]["type"]
        posted = await http.post("/index/text", json={"text": "hi", "collection_id": "c"})
        assert posted.status_code == 200 and posted.json()["task_id"]


async def test_connections_are_bounded_and_reused(client: httpx.AsyncClient) -> None:
    async def keep_alive(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                await _read_request(reader)
            except asyncio.IncompleteReadError:
                return
            await asyncio.sleep(0.02)
            writer.write(_answer(b'{"ok": true}'))
            await writer.drain()

    async with RawServer(keep_alive) as server:
        answers = await asyncio.gather(*(client.get(server.url) for _ in range(40)))
        assert all(a.json() == {"ok": True} for a in answers)
        assert server.connections <= 4  # 40 requests, at most four connections, kept alive


async def test_redirects_are_followed_with_their_body(client: httpx.AsyncClient) -> None:
    seen: list[bytes] = []

    async def redirecting(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:  # keep-alive: the follow-up request may come on the same connection
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                return
            length = next(
                (int(line.split(b":")[1]) for line in head.split(b"\r\n")
                 if line.lower().startswith(b"content-length:")),
                0,
            )  # fmt: skip
            body = await reader.readexactly(length)
            seen.append(head.split(b"\r\n")[0] + b" " + body)
            if head.startswith(b"POST /old"):
                writer.write(b"HTTP/1.1 307 Temporary Redirect\r\nLocation: /new\r\n")
                writer.write(b"Content-Length: 0\r\n\r\n")
            else:
                writer.write(_answer(b'{"moved": true}'))
            await writer.drain()

    async with RawServer(redirecting) as server:
        client.follow_redirects = True
        answer = await client.post(f"{server.url}/old", json={"text": "hi"})
        assert answer.json() == {"moved": True}
        # 307 repeats the method and the body at the new place.
        assert seen == [b'POST /old HTTP/1.1 {"text":"hi"}', b'POST /new HTTP/1.1 {"text":"hi"}']


async def test_the_url_and_headers_go_and_come_as_they_are(client: httpx.AsyncClient) -> None:
    lines: list[bytes] = []
    big = b"x" * 20_000  # a large cookie or policy header is not an error

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        lines.append((await reader.readuntil(b"\r\n\r\n")).split(b"\r\n")[0])
        body = b'{"ok": true}'
        writer.write(b"HTTP/1.1 200 OK\r\nX-Big: " + big + b"\r\n")
        writer.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        await writer.drain()

    async with RawServer(echo) as server:
        answer = await client.get(f"{server.url}/assets/a%2Fb", params={"q": "x:y,z/?~"})
        assert answer.json() == {"ok": True} and len(answer.headers["x-big"]) == len(big)
    # Sent as httpx encoded it, not re-quoted on the way out.
    assert lines == [b"GET /assets/a%2Fb?q=x%3Ay%2Cz%2F%3F~ HTTP/1.1"]


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (b"this is not HTTP\r\n\r\n", httpx.RemoteProtocolError),
        (_answer(b'{"cut": ', declared=100), httpx.RemoteProtocolError),
        (b"", httpx.RemoteProtocolError),  # hung up without answering
    ],
    ids=["garbage", "truncated body", "hang-up"],
)
async def test_a_broken_answer_is_an_httpx_transport_error(
    client: httpx.AsyncClient, reply: bytes, error: type[httpx.TransportError]
) -> None:
    async def broken(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(reply)
        await writer.drain()

    async with RawServer(broken) as server:
        with pytest.raises(error):
            await client.get(server.url)


async def test_a_server_that_never_answers_is_a_read_timeout(client: httpx.AsyncClient) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        await asyncio.sleep(5)

    async with RawServer(silent) as server:
        with pytest.raises(httpx.ReadTimeout):
            await client.get(server.url)


async def test_a_refused_connection_is_a_connect_error(client: httpx.AsyncClient) -> None:
    with pytest.raises(httpx.ConnectError):
        await client.get("http://127.0.0.1:9/")  # discard port: connection refused


def test_proxy_variables_keep_httpx_own_transport(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.lower().endswith("_proxy")]:
        monkeypatch.delenv(name)
    assert isinstance(pooled_transport(16), AiohttpTransport)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    assert pooled_transport(16) is None


async def test_tls_is_set_up_once_and_only_for_https(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[int] = []
    make = httpx.create_ssl_context

    def counted() -> object:
        built.append(1)
        return make()

    monkeypatch.setattr(httpx, "create_ssl_context", counted)
    transport._tls_context.cache_clear()  # and again at the end: no counted context stays

    async def plain(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(_answer(b"{}"))
        await writer.drain()

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        pass  # closes at once: the TLS handshake fails fast

    timeout = httpx.Timeout(2.0)
    async with (
        RawServer(plain) as server,
        httpx.AsyncClient(transport=AiohttpTransport(2), timeout=timeout) as http,
    ):
        assert (await http.get(server.url)).status_code == 200
    assert built == []  # plain http: no CA bundle read
    async with RawServer(hang_up) as server:
        https = server.url.replace("http://", "https://")
        for _ in range(2):  # two clients (the version probe's and the adapter's) share one
            async with httpx.AsyncClient(transport=AiohttpTransport(2), timeout=timeout) as http:
                with pytest.raises(httpx.TransportError):  # the handshake found no TLS
                    await http.get(https)
        assert server.connections == 2
    assert built == [1]
    transport._tls_context.cache_clear()


async def test_a_redirect_elsewhere_drops_the_key_and_one_home_keeps_it(
    client: httpx.AsyncClient,
) -> None:
    heads: list[bytes] = []

    async def landing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(_answer(b'{"landed": true}'))
        await writer.drain()

    async with RawServer(landing) as other:

        async def moving(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            head = await reader.readuntil(b"\r\n\r\n")
            heads.append(head)
            if head.startswith(b"GET /away"):
                target = f"{other.url}/there".encode()  # another port: another origin
            elif head.startswith(b"GET /home"):
                target = b"/here"
            else:
                writer.write(_answer(b'{"landed": true}'))
                await writer.drain()
                return
            writer.write(b"HTTP/1.1 302 Found\r\nLocation: " + target + b"\r\n")
            writer.write(b"Content-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()

        async with RawServer(moving) as server:
            client.follow_redirects = True
            auth = {"Authorization": "Bearer sk-secret"}
            assert (await client.get(f"{server.url}/away", headers=auth)).json() == {"landed": True}
            assert (await client.get(f"{server.url}/home", headers=auth)).json() == {"landed": True}
    keyed = [h.split(b"\r\n")[0] for h in heads if b"sk-secret" in h]
    assert keyed == [b"GET /away HTTP/1.1", b"GET /home HTTP/1.1", b"GET /here HTTP/1.1"]
    assert len(heads) == 4  # /there arrived, without the key


async def test_endless_redirects_and_compressed_answers(client: httpx.AsyncClient) -> None:
    async def loop_or_gzip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                return
            if head.startswith(b"GET /gz"):
                body = gzip.compress(b'{"small": "' + b"a" * 1000 + b'"}')
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n")
                writer.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
            else:
                writer.write(b"HTTP/1.1 302 Found\r\nLocation: /again\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()

    async with RawServer(loop_or_gzip) as server:
        client.follow_redirects = True
        client.max_redirects = 3
        with pytest.raises(httpx.TooManyRedirects):
            await client.get(f"{server.url}/again")
        assert (await client.get(f"{server.url}/gz")).json() == {"small": "a" * 1000}


def test_the_straight_path_is_taken_only_through_its_own_transport(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in [n for n in os.environ if n.lower().endswith("_proxy")]:
        monkeypatch.delenv(name)
    assert AiohttpClient(transport=AiohttpTransport(2))._wire is not None
    assert AiohttpClient(transport=httpx.MockTransport(lambda r: httpx.Response(200)))._wire is None
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")  # httpx mounts the proxy
    assert AiohttpClient(transport=AiohttpTransport(2))._wire is None
