"""The early API version probe (upstream/version_probe.py): real HTTP, the standard library's."""

from __future__ import annotations

import json
import socket
import time
from typing import Any

import pytest

from sync_service.emulator import EmulatorConfig, EmulatorServer
from sync_service.emulator.v1.config import V1Config
from sync_service.emulator.v1.server import V1EmulatorServer
from sync_service.settings import MixpeekApiVersion, Settings
from sync_service.upstream.version_probe import HEALTH, Probed, probe, start_probe
from tests.scripted_http import Answer, Asked, ScriptedServer

KEY = "probe-test-key"
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


@pytest.fixture(autouse=True)
def _no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


def _settings(url: str, **extra: Any) -> Settings:
    return Settings(MIXPEEK_API_URL=url, MIXPEEK_API_KEY=KEY, SYNC_HTTP_TIMEOUT=5, **extra)


def test_the_emulators_are_told_apart_over_real_http() -> None:
    with EmulatorServer(EmulatorConfig(api_key=KEY)) as gen_b:
        assert probe(_settings(gen_b.url)) == Probed(MixpeekApiVersion.v2024)
    with V1EmulatorServer(V1Config(api_key=KEY)) as v1:
        assert probe(_settings(v1.url)) == Probed(MixpeekApiVersion.v1)


@pytest.mark.parametrize(
    ("status", "body", "version"),
    [
        (200, b"{}", MixpeekApiVersion.v1),
        (204, b"", MixpeekApiVersion.v1),
        (404, b'{"detail": "Not Found"}', MixpeekApiVersion.v2024),
        (400, b'{"detail": "bad"}', MixpeekApiVersion.v2024),
        (405, b'{"detail": "Method Not Allowed"}', MixpeekApiVersion.v2024),
        # Decides nothing: the first call asks again, through the client.
        (500, b"{}", None),
        (503, b"{}", None),
        (401, b'{"detail": "Unauthorized"}', None),
        (404, b'{"detail": "Invalid API key"}', None),  # the 2024 API's way to refuse a key
    ],
)
def test_each_answer_is_read_as_the_clients_probe_reads_it(
    status: int, body: bytes, version: MixpeekApiVersion | None
) -> None:
    with ScriptedServer(lambda _: Answer(status, body)) as server:
        assert probe(_settings(server.url)).version is version
    assert [a.path for a in server.asked] == [HEALTH]  # one attempt


def test_it_sends_the_v1_clients_headers_and_under_the_urls_path() -> None:
    with ScriptedServer(lambda _: Answer(200)) as server:
        probe(_settings(f"{server.url}/prefix", MIXPEEK_NAMESPACE=" ns_1 "))
    (asked,) = server.asked
    assert asked.path == f"/prefix{HEALTH}"
    assert asked.headers["Authorization"] == f"Bearer {KEY}"
    assert asked.headers["X-Namespace"] == "ns_1"
    assert asked.headers["User-Agent"].startswith("sync-service/")


def test_a_wait_the_server_asks_for_is_kept() -> None:
    def answer(_: Asked) -> Answer:
        return Answer(429, json.dumps({"detail": "slow down"}).encode(), (("Retry-After", "2"),))

    with ScriptedServer(answer) as server:
        assert probe(_settings(server.url)) == Probed(None, retry_after=2.0)


def test_a_redirect_is_not_followed_and_the_key_goes_nowhere_else() -> None:
    with ScriptedServer(lambda _: Answer(200)) as elsewhere:
        moved = Answer(302, b"", (("Location", f"{elsewhere.url}{HEALTH}"),))
        with ScriptedServer(lambda _: moved) as server:
            assert probe(_settings(server.url)) == Probed(None)
    assert len(server.asked) == 1 and elsewhere.asked == []


def test_no_server_decides_nothing() -> None:
    with socket.socket() as closed:  # a port with nothing listening
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    assert probe(_settings(f"http://127.0.0.1:{port}")) == Probed(None)


def test_over_tls_a_server_that_fails_the_handshake_decides_nothing() -> None:
    with ScriptedServer(lambda _: Answer(200)) as plain:  # speaks plain HTTP only
        https = plain.url.replace("http://", "https://")
        assert start_probe(_settings(https)).result(timeout=10) == Probed(None)
    assert plain.asked == []  # no request made it through


def test_with_proxy_variables_set_it_is_left_to_the_client(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with ScriptedServer(lambda _: Answer(200)) as server:
        monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
        assert probe(_settings(server.url)) == Probed(None)
    assert server.asked == []  # not sent around the proxy


def test_started_in_a_thread_and_a_cancelled_wait_leaves_it_be() -> None:
    with ScriptedServer(lambda _: Answer(404)) as server:
        started = time.monotonic()
        future = start_probe(_settings(server.url))
        assert time.monotonic() - started < 0.5  # returned at once
        assert not future.cancel()  # a waiter's cancel (asyncio.wrap_future) changes nothing
        assert future.result(timeout=10) == Probed(MixpeekApiVersion.v2024)
