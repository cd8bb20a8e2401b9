"""Several small HTTP connection pools behind one httpx transport.

httpcore checks every pooled connection (an ``extra_info`` lookup, a ``getpeername`` and a
``poll`` per idle connection) each time a request starts or ends, so its cost per request grows
with the size of the pool. Profiling the benchmark (``bench/``, scenario 1) showed that check
taking half of the daemon's CPU at 32 connections, and more concurrency then *lowered*
throughput (130 features/s at 32 against 205 at 16). Spreading the same connections over pools
of a few keeps each check short: 329 features/s at 32.
"""

from __future__ import annotations

import urllib.request
from collections.abc import AsyncIterator

import httpx

#: Connections per pool: small enough that the per-request scan stays cheap.
SHARD_SIZE = 4


class ShardedTransport(httpx.AsyncBaseTransport):
    """``connections`` keep-alive connections split over pools of :data:`SHARD_SIZE`.

    Each request goes to the pool with the fewest requests in flight, so no pool queues while
    another has a free connection (the caller bounds the total in flight).
    """

    def __init__(self, connections: int, *, keepalive_expiry: float = 30.0) -> None:
        shards = max(1, -(-connections // SHARD_SIZE))
        per_shard = -(-connections // shards)
        limits = httpx.Limits(
            max_connections=per_shard,
            max_keepalive_connections=per_shard,
            keepalive_expiry=keepalive_expiry,
        )
        self._pools = [httpx.AsyncHTTPTransport(limits=limits) for _ in range(shards)]
        self._busy = [0] * shards

    @property
    def pools(self) -> int:
        return len(self._pools)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        index = min(range(len(self._pools)), key=self._busy.__getitem__)
        self._busy[index] += 1
        try:
            response = await self._pools[index].handle_async_request(request)
        except BaseException:
            self._busy[index] -= 1
            raise
        # The connection stays busy until the body is read and the response closed.
        response.stream = _Tracked(response.stream, self._busy, index)
        return response

    async def aclose(self) -> None:
        for pool in self._pools:
            await pool.aclose()


class _Tracked(httpx.AsyncByteStream):
    """A response body that frees its pool's slot when closed."""

    def __init__(
        self, stream: httpx.SyncByteStream | httpx.AsyncByteStream, busy: list[int], index: int
    ) -> None:
        assert isinstance(stream, httpx.AsyncByteStream)  # an async transport's body
        self._stream = stream
        self._busy = busy
        self._index = index
        self._closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            yield chunk

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._busy[self._index] -= 1
        await self._stream.aclose()


def pooled_transport(connections: int) -> httpx.AsyncBaseTransport | None:
    """The sharded transport, or None (httpx's own) when proxy variables are set.

    httpx applies ``HTTP(S)_PROXY`` only to transports it builds itself, so with a proxy
    configured the single pool is kept rather than silently bypassing the proxy.
    """
    if urllib.request.getproxies():
        return None
    return ShardedTransport(connections)
