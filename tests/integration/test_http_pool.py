"""The sharded connection pool over real HTTP: spreads requests, frees slots, keeps proxies."""

from __future__ import annotations

import asyncio
import os

import httpx
import pytest

from sync_service.emulator import EmulatorServer
from sync_service.http_pool import ShardedTransport, pooled_transport
from tests.conftest import API_KEY


async def test_requests_spread_over_pools_and_free_their_slots(emulator: EmulatorServer) -> None:
    transport = ShardedTransport(8)
    assert transport.pools == 2
    peak = [0, 0]
    original = transport.handle_async_request

    async def watched(request: httpx.Request) -> httpx.Response:
        response = await original(request)
        peak[:] = [max(p, b) for p, b in zip(peak, transport._busy, strict=True)]
        return response

    transport.handle_async_request = watched  # type: ignore[method-assign]
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with httpx.AsyncClient(
        base_url=emulator.url, transport=transport, headers=headers
    ) as http:
        answers = await asyncio.gather(*(http.get("/collections") for _ in range(8)))
        assert all(a.status_code == 200 for a in answers)
        # Eight at once over two pools of four: both pools were used, none beyond its size.
        assert min(peak) >= 1 and max(peak) <= 4
        # Every body was read and closed: no slot is left counted as busy.
        assert transport._busy == [0, 0]
        streamed = await http.send(http.build_request("GET", "/collections"), stream=True)
        assert sum(transport._busy) == 1
        await streamed.aclose()
        assert transport._busy == [0, 0]


async def test_a_failed_request_frees_its_slot() -> None:
    transport = ShardedTransport(4)
    async with httpx.AsyncClient(transport=transport) as http:
        with pytest.raises(httpx.ConnectError):
            await http.get("http://127.0.0.1:9/")  # discard port: connection refused
    assert transport._busy == [0]


def test_proxy_variables_keep_httpx_own_transport(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.lower().endswith("_proxy")]:
        monkeypatch.delenv(name)
    assert isinstance(pooled_transport(16), ShardedTransport)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    assert pooled_transport(16) is None
