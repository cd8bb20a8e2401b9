"""The wire under the Mixpeek client: aiohttp's pool and parser, behind httpx's API.

httpx stays the client (its API, its timeouts, its ``MockTransport`` in the tests); only the
wire underneath changes. Profiling the benchmark (``bench/``, scenario 1) showed httpcore and
the anyio layer it runs on taking about half of the daemon's event loop: a lock, cancel scopes
and an async-library lookup per read and write, and a check of every pooled connection per
request. aiohttp's connection pool and C-accelerated HTTP parser do the same work for a
fraction of it: 223 -> 237 features/s at 16 in flight, 335 -> 417 at 32, with less CPU.

The shape follows httpx-aiohttp (by an httpx maintainer); it is written out here so that every
aiohttp error becomes the httpx error the client's retry policy classifies (that library maps
a server hang-up to ``ConnectTimeout`` and lets unknown errors through unmapped).

:class:`AiohttpClient` goes one step further: its ``send`` hands each request straight to
aiohttp (which then also follows the redirects), skipping httpx's send chain (auth flow,
redirect loop, cookie jar, stream wrappers). That was a fifth of the client's CPU per
feature fetch (with the URL built whole in ``http.py``: 610 -> 508 us, four alternating runs
of 3,000 fetches against the emulator).
"""

from __future__ import annotations

import functools
import ssl
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import aiohttp
import httpx
import yarl

_HEADER_BYTES = 100 * 1024

#: aiohttp error -> the httpx error it is, most specific first (the first match wins).
_ERRORS: tuple[tuple[type[BaseException], type[httpx.RequestError]], ...] = (
    (aiohttp.TooManyRedirects, httpx.TooManyRedirects),
    (aiohttp.ConnectionTimeoutError, httpx.ConnectTimeout),
    (aiohttp.SocketTimeoutError, httpx.ReadTimeout),
    (aiohttp.ServerTimeoutError, httpx.ReadTimeout),
    (aiohttp.ClientConnectorError, httpx.ConnectError),
    (aiohttp.ServerDisconnectedError, httpx.RemoteProtocolError),
    (aiohttp.ClientPayloadError, httpx.RemoteProtocolError),  # a body cut short
    (aiohttp.ClientResponseError, httpx.RemoteProtocolError),  # not HTTP (garbage)
    (aiohttp.InvalidUrlClientError, httpx.UnsupportedProtocol),
    (aiohttp.ClientOSError, httpx.ReadError),  # e.g. connection reset
    (aiohttp.ClientError, httpx.TransportError),
    (TimeoutError, httpx.TimeoutException),
    (OSError, httpx.NetworkError),  # anything the socket raised that aiohttp let through
)


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """httpx's TLS context (its CA bundle, SSL_CERT_FILE), one per process: reading and
    parsing the bundle costs ~17 ms, once instead of once per client."""
    return httpx.create_ssl_context()


@contextmanager
def _as_httpx_errors(request: httpx.Request) -> Iterator[None]:
    try:
        yield
    except httpx.HTTPError:
        raise
    except (aiohttp.ClientError, OSError) as exc:  # TimeoutError is an OSError
        kind = next(to for source, to in _ERRORS if isinstance(exc, source))
        raise kind(str(exc) or type(exc).__name__, request=request) from exc


class _Body(httpx.AsyncByteStream):
    """The response body, read from aiohttp; closing it hands the connection back."""

    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request) -> None:
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _as_httpx_errors(self._request):
            async for chunk in self._response.content.iter_chunked(64 * 1024):
                yield chunk

    async def aclose(self) -> None:
        self._response.release()


class AiohttpTransport(httpx.AsyncBaseTransport):
    """At most ``connections`` keep-alive HTTP/1.1 connections, in one aiohttp session.

    The session is made on first use, inside the event loop that will use it.
    """

    def __init__(self, connections: int, *, keepalive_expiry: float = 30.0) -> None:
        self._connections = connections
        self._keepalive = keepalive_expiry
        self._session: aiohttp.ClientSession | None = None

    def _open(self, scheme: str) -> aiohttp.ClientSession:
        # A client's requests share its base URL's scheme. Over plain http (the emulator, a
        # local proxy) no TLS context is built; an https redirect from there would be
        # verified with aiohttp's default context (the system's CAs).
        tls: ssl.SSLContext | bool = _tls_context() if scheme == "https" else True
        connector = aiohttp.TCPConnector(
            limit=self._connections, keepalive_timeout=self._keepalive, ssl=tls
        )
        return aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,  # httpx decodes, as with its own transport
            cookie_jar=aiohttp.DummyCookieJar(),  # httpx keeps the cookies
            trust_env=False,  # proxies: see pooled_transport
            # aiohttp refuses a header line over 8 KiB; httpx's own transport takes 100 KiB
            # of headers in all, and a large cookie or policy header is no error.
            max_line_size=_HEADER_BYTES,
            max_field_size=_HEADER_BYTES,
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._request(request, follow_redirects=False)  # httpx follows them
        return httpx.Response(
            status_code=response.status,
            headers=list(response.raw_headers),
            stream=_Body(response, request),
            request=request,
            extensions=_extensions(response),
        )

    async def exchange(
        self, request: httpx.Request, *, follow_redirects: bool, max_redirects: int
    ) -> httpx.Response:
        """The whole exchange in aiohttp, redirects (if followed) and body included."""
        response = await self._request(
            request, follow_redirects=follow_redirects, max_redirects=max_redirects
        )
        with _as_httpx_errors(request):  # a body cut short
            try:
                body = await response.read()
            finally:
                response.release()
        # Given as content, the body is decoded by httpx (Content-Encoding) as it was.
        return httpx.Response(
            status_code=response.status,
            headers=list(response.raw_headers),
            content=body,
            request=request,
            extensions=_extensions(response),
        )

    async def _request(
        self, request: httpx.Request, *, follow_redirects: bool, max_redirects: int = 10
    ) -> aiohttp.ClientResponse:
        if self._session is None:
            self._session = self._open(request.url.scheme)
        timeout = request.extensions.get("timeout", {})
        # A redirect's follow-up request comes with its body as an unread stream.
        body = await request.aread()
        with _as_httpx_errors(request):
            return await self._session.request(
                request.method,
                # As httpx encoded it: yarl would otherwise re-quote the path and query.
                yarl.URL(str(request.url), encoded=True),
                headers=list(request.headers.multi_items()),
                data=body or None,
                allow_redirects=follow_redirects,
                max_redirects=max_redirects,
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    connect=timeout.get("pool"),  # waiting for a pooled connection, and more
                    sock_connect=timeout.get("connect"),
                    sock_read=timeout.get("read"),
                ),
            )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _extensions(response: aiohttp.ClientResponse) -> dict[str, Any]:
    extensions: dict[str, Any] = {"http_version": b"HTTP/1.1"}
    if response.reason:
        extensions["reason_phrase"] = response.reason.encode()
    return extensions


class AiohttpClient(httpx.AsyncClient):
    """httpx's client whose ``send`` goes straight through its :class:`AiohttpTransport`.

    What that path does not cover goes through httpx's own ``send``: a streamed answer, an
    auth flow or event hooks, another transport (a proxy's, a test's ``MockTransport``).
    Cookies are neither sent from nor kept in the client's jar on that path: Mixpeek is
    reached with a bearer token (aiohttp still drops the Authorization header on a redirect
    to another origin, as httpx does).
    """

    def __init__(self, *, transport: httpx.AsyncBaseTransport | None = None, **kwargs: Any):
        super().__init__(transport=transport, **kwargs)
        # httpx would mount proxy transports from the environment over the one given.
        self._wire: AiohttpTransport | None = None
        if isinstance(transport, AiohttpTransport) and not urllib.request.getproxies():
            self._wire = transport

    async def send(
        self,
        request: httpx.Request,
        *,
        stream: bool = False,
        auth: Any = httpx.USE_CLIENT_DEFAULT,
        follow_redirects: Any = httpx.USE_CLIENT_DEFAULT,
    ) -> httpx.Response:
        wire = self._wire
        if (
            wire is None
            or stream
            or auth is not httpx.USE_CLIENT_DEFAULT
            or self.auth is not None
            or any(self.event_hooks.values())
        ):
            return await super().send(
                request, stream=stream, auth=auth, follow_redirects=follow_redirects
            )
        if follow_redirects is httpx.USE_CLIENT_DEFAULT:
            follow_redirects = self.follow_redirects
        return await wire.exchange(
            request, follow_redirects=bool(follow_redirects), max_redirects=self.max_redirects
        )


def pooled_transport(connections: int) -> httpx.AsyncBaseTransport | None:
    """The aiohttp transport, or None (httpx's own) when proxy variables are set.

    httpx applies ``HTTP(S)_PROXY`` only to transports it builds itself, so with a proxy
    configured its own transport is kept rather than silently bypassing the proxy.
    """
    if urllib.request.getproxies():
        return None
    return AiohttpTransport(connections)
