"""Upstream faults of the Mixpeek emulator over real HTTP (docs/testing.md §2 B, §1).

Each knob at rate 1.0 with plain httpx, the Retry-After ledger, and the product's client
surviving every fault at a 0.3 share.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import typer
from typer.testing import CliRunner

from sync_service.emulator import EmulatorConfig, EmulatorServer
from sync_service.emulator.command import emulator
from sync_service.emulator.wire_faults import DRIP_CHUNK
from sync_service.upstream.gen_b.client import MixpeekClient, RetryPolicy
from sync_service.upstream.gen_b.models import TaskOutcome

AUTH = {"Authorization": "Bearer test-key"}
TRANSPORT_ERRORS = (httpx.RemoteProtocolError, httpx.ReadError)
Factory = Callable[..., EmulatorServer]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def start() -> Iterator[Factory]:
    servers: list[EmulatorServer] = []

    def factory(clock: Callable[[], float] = time.monotonic, **knobs: Any) -> EmulatorServer:
        server = EmulatorServer(EmulatorConfig(**knobs), clock=clock)
        server.start()
        servers.append(server)
        return server

    yield factory
    for server in servers:
        server.stop()


def client(server: EmulatorServer, **options: Any) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers=AUTH, **options)


def stats(server: EmulatorServer) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(f"{server.url}/_emulator/stats").json()
    return body


def patch(server: EmulatorServer, **changes: Any) -> httpx.Response:
    return httpx.patch(f"{server.url}/_emulator/config", json=changes)


def asset_ids(server: EmulatorServer) -> list[str]:
    """Every asset of collection "c", read with the faults switched off."""
    saved = server.config
    clean = {f"{name}_rate": 0.0 for name in saved.wire_rates()}
    assert patch(server, **clean, storm_rate=0.0).status_code == 200
    body = client(server).post("/assets?page_size=100", json={"collection_ids": ["c"]}).json()
    server.update_config(**saved.model_dump())
    return [asset["asset_id"] for asset in body["results"]]


# -- wire faults, one knob at a time ---------------------------------------------------------


def test_slow_drip_headers_at_once_body_trickles_and_is_valid_json(start: Factory) -> None:
    delay = 0.1
    server = start(slow_drip_rate=1.0, slow_drip_delay=delay)
    # A per-read timeout above the delay never trips, however long the whole body takes.
    http = client(server, timeout=httpx.Timeout(5.0, read=delay * 6))
    began = time.monotonic()
    with http.stream("GET", "/collections") as response:
        headers_after = time.monotonic() - began
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        chunks = list(response.iter_raw())
    elapsed = time.monotonic() - began
    body = b"".join(chunks)
    assert len(body) == int(response.headers["content-length"])
    assert json.loads(body)["pagination"]["total"] == 0
    count = math.ceil(len(body) / DRIP_CHUNK)
    assert count >= 5 and headers_after < delay * count / 2
    assert elapsed >= count * delay
    assert len(chunks) >= count // 2  # really sent piecemeal, not in one write
    assert stats(server)["faults"]["slow_drip"] == 1


def test_slow_drip_only_an_overall_deadline_catches_it(start: Factory) -> None:
    server = start(slow_drip_rate=1.0, slow_drip_delay=0.2)
    http = client(server, timeout=httpx.Timeout(5.0, read=1.0))
    began = time.monotonic()
    deadline = began + 0.5
    with pytest.raises(TimeoutError), http.stream("GET", "/collections") as response:
        for _ in response.iter_raw():  # every read succeeds within the read timeout...
            if time.monotonic() > deadline:  # ...so only the caller's own deadline fires
                raise TimeoutError
    assert time.monotonic() - began < 1.0


def test_reset_mid_body_is_a_transport_error_and_the_request_was_applied(start: Factory) -> None:
    server = start(reset_rate=1.0)
    http = client(server)
    with pytest.raises(TRANSPORT_ERRORS):
        http.post("/index/text", json={"text": "hello", "collection_id": "c"})
    with pytest.raises(TRANSPORT_ERRORS):
        http.get("/collections")
    snapshot = stats(server)
    assert snapshot["faults"]["reset"] == 2
    assert snapshot["requests"]["POST /index/text"] == {"200": 1}
    assert len(asset_ids(server)) == 1  # applied once, like upstream behind a dying proxy


def test_truncated_body_is_short_of_its_content_length(start: Factory) -> None:
    server = start(truncate_rate=1.0)
    http = client(server)
    received = bytearray()
    announced = 0
    with pytest.raises(TRANSPORT_ERRORS), http.stream("GET", "/collections") as response:
        assert response.status_code == 200
        announced = int(response.headers["content-length"])
        for chunk in response.iter_raw():
            received += chunk
    assert 0 < len(received) < announced
    with pytest.raises(ValueError):
        json.loads(bytes(received))
    with pytest.raises(TRANSPORT_ERRORS):
        http.get("/collections")  # the plain call fails too, never a clean response
    assert stats(server)["faults"]["truncate"] == 2


def test_garbage_is_a_200_html_page_and_nothing_is_applied(start: Factory) -> None:
    server = start(garbage_rate=1.0)
    http = client(server)
    response = http.post("/index/text", json={"text": "hello", "collection_id": "c"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "502 Bad Gateway" in response.text
    with pytest.raises(ValueError):
        response.json()
    assert stats(server)["faults"]["garbage"] == 1
    assert asset_ids(server) == []


def test_hang_holds_the_answer_then_answers_normally(start: Factory) -> None:
    server = start(hang_rate=1.0, hang_seconds=1.0)
    http = client(server, timeout=5.0)
    began = time.monotonic()
    response = http.get("/collections")
    assert time.monotonic() - began >= 1.0
    assert response.status_code == 200 and response.json()["results"] == []
    with pytest.raises(httpx.ReadTimeout):
        http.get("/collections", timeout=0.3)  # any reasonable client times out
    assert httpx.get(f"{server.url}/healthcheck", timeout=2.0).status_code == 200
    assert stats(server)["faults"]["hang"] == 2


def test_wire_faults_keep_ids_deterministic(start: Factory) -> None:
    knobs = {"seed": 7, "reset_rate": 0.3, "truncate_rate": 0.3, "garbage_rate": 0.2}
    runs = []
    for server in (start(**knobs), start(**knobs)):
        http = client(server)
        outcomes = []
        for i in range(12):
            try:
                response = http.post("/index/text", json={"text": f"t{i}", "collection_id": "c"})
                outcomes.append(response.headers["content-type"].split(";")[0])
            except TRANSPORT_ERRORS as exc:
                outcomes.append(type(exc).__name__)
        runs.append((outcomes, asset_ids(server), stats(server)["faults"]))
    assert runs[0] == runs[1]
    outcomes, ids, faults = runs[0]
    assert faults["reset"] and faults["truncate"] and faults["garbage"]
    assert len(ids) == 12 - faults["garbage"]  # garbage answers before the handler


# -- 429 storm and Retry-After --------------------------------------------------------------


@pytest.mark.parametrize("mode", ["always", "never"])
def test_storm_announces_exactly_the_retry_after_knob(start: Factory, mode: str) -> None:
    server = start(storm_rate=1.0, retry_after=2, retry_after_header=mode)
    http = client(server)
    for path in ("/collections", "/tasks/x", "/assets/y"):
        response = http.get(path)
        assert response.status_code == 429
        error = response.json()["error"]
        assert error["type"] == "TooManyRequestsError" and error["details"]["retry_after"] == 2
        assert response.headers.get("retry-after") == ("2" if mode == "always" else None)
    assert httpx.get(f"{server.url}/healthcheck").status_code == 200
    snapshot = stats(server)
    assert snapshot["faults"]["storm"] == 3 and snapshot["rate_limited"] == 3


def test_storm_default_retry_after_and_sometimes_header(start: Factory) -> None:
    server = start(storm_rate=1.0)
    http = client(server)
    answers = [http.get(f"/tasks/{i}") for i in range(20)]
    assert all(a.json()["error"]["details"]["retry_after"] == 1 for a in answers)
    headers = [a.headers.get("retry-after") for a in answers]
    assert "1" in headers and None in headers


def test_retry_after_knob_applies_to_the_token_bucket_too(start: Factory) -> None:
    server = start(rate_limit=60, retry_after=3, retry_after_header="always")
    http = client(server)
    assert http.get("/collections").status_code == 200
    limited = http.get("/collections")
    assert limited.status_code == 429 and limited.headers["retry-after"] == "3"
    assert limited.json()["error"]["details"]["retry_after"] == 3


def test_retry_after_violations_in_real_time(start: Factory) -> None:
    server = start(storm_rate=1.0, retry_after=1, retry_after_header="never")
    http = client(server)
    assert http.get("/tasks/a").status_code == 429
    assert http.get("/tasks/a").status_code == 429  # at once: a violation
    other = {"Authorization": "Bearer someone-else"}
    http.get("/tasks/b")  # another path and another key are not retries
    http.get("/tasks/a", headers=other)
    assert stats(server)["retry_after_violations"] == 1
    time.sleep(1.0)
    assert http.get("/tasks/a").status_code == 429  # waited: compliant
    snapshot = stats(server)
    assert snapshot["retry_after_violations"] == 1
    waits = snapshot["retry_after_waits"]
    assert [(w["method"], w["path"], w["announced"]) for w in waits] == [("GET", "/tasks/a", 1)] * 2
    assert waits[0]["waited"] < 0.5 and waits[1]["waited"] >= 1.0
    assert httpx.post(f"{server.url}/_emulator/stats/reset").status_code == 200
    snapshot = stats(server)
    assert snapshot["retry_after_violations"] == 0 and snapshot["retry_after_waits"] == []
    assert set(snapshot["faults"].values()) == {0}


def test_retry_after_ledger_follows_the_bucket_on_a_fake_clock(start: Factory) -> None:
    clock = FakeClock()
    server = start(clock=clock, rate_limit=60)  # one token a second, burst 1
    http = client(server)

    def retry_after(response: httpx.Response) -> float:
        assert response.status_code == 429
        return float(response.json()["error"]["details"]["retry_after"])

    assert http.get("/collections").status_code == 200
    assert retry_after(http.get("/collections")) == pytest.approx(1.0)
    clock.now += 0.5
    assert retry_after(http.get("/collections")) == pytest.approx(0.5)  # half-way: a violation
    clock.now += 1.0
    assert http.get("/collections").status_code == 200  # waited 1.0 for 0.5: compliant
    clock.now += 0.5
    announced = retry_after(http.get("/collections"))  # a new request, not a retry
    clock.now += announced - 0.04  # early, but within the 0.05 s tolerance
    http.get("/collections")
    snapshot = stats(server)
    assert snapshot["retry_after_violations"] == 1
    waits = [(w["announced"], round(w["waited"], 2)) for w in snapshot["retry_after_waits"]]
    assert waits == [(1.0, 0.5), (0.5, 1.0), (announced, round(announced - 0.04, 2))]


# -- knobs: validation, runtime patch, command line -----------------------------------------


def test_knobs_patch_at_runtime_and_validate(start: Factory) -> None:
    server = start()
    assert client(server).get("/collections").status_code == 200
    patched = patch(server, garbage_rate=1.0, hang_seconds=2, retry_after_header="always")
    assert patched.status_code == 200
    assert patched.json()["garbage_rate"] == 1.0 and patched.json()["slow_drip_delay"] == 0.5
    assert client(server).get("/collections").headers["content-type"].startswith("text/html")
    for bad in (
        {"reset_rate": 0.6},  # with garbage_rate 1.0: the wire faults exceed every request
        {"storm_rate": 1.5},
        {"retry_after": -1},
        {"retry_after_header": "often"},
        {"hang_seconds": -1},
    ):
        assert patch(server, **bad).status_code == 422, bad
    assert patch(server, garbage_rate=0.5, reset_rate=0.5).status_code == 200
    defaults = EmulatorConfig()
    assert (defaults.slow_drip_delay, defaults.hang_seconds) == (0.5, 30.0)
    assert (defaults.retry_after, defaults.retry_after_header) == (None, "sometimes")


def test_command_has_the_fault_flags() -> None:
    app = typer.Typer()
    app.command()(emulator)
    runner = CliRunner()
    result = runner.invoke(app, ["--help"], env={"COLUMNS": "200"})
    for flag in (
        "--storm-rate",
        "--retry-after",
        "--retry-after-header",
        "--garbage-rate",
        "--truncate-rate",
        "--reset-rate",
        "--slow-drip-rate",
        "--slow-drip-delay",
        "--hang-rate",
        "--hang-seconds",
    ):
        assert flag in result.output, flag
    for bad in (["--reset-rate", "0.7", "--truncate-rate", "0.7"], ["--retry-after-header", "x"]):
        assert runner.invoke(app, ["--port", "0", *bad]).exit_code == 2


# -- the product's client under every fault -------------------------------------------------

FAST = RetryPolicy(max_attempts=8, base_delay=0.01, max_delay=0.05, attempt_timeout=1.0)


async def index_poll_features_vectors(server: EmulatorServer) -> None:
    async with MixpeekClient(base_url=server.url, api_key="test-key", policy=FAST) as mixpeek:
        result = await mixpeek.index_text("hello faults", "c")
        assert result.task_id
        for _ in range(200):
            task = await mixpeek.get_task(result.task_id)
            if task.outcome is not TaskOutcome.PENDING:
                break
            await asyncio.sleep(0.02)
        assert task.outcome is TaskOutcome.SUCCEEDED and task.asset_id
        grouped = await mixpeek.get_asset_features(task.asset_id)
        (feature,) = grouped.features["text"]
        full = await mixpeek.get_feature(feature.feature_id)
        assert full.vectors is not None and len(full.vectors["multimodal-v1"]) == 16


@pytest.mark.parametrize(
    "knobs",
    [
        {"reset_rate": 0.3},
        {"truncate_rate": 0.3},
        {"garbage_rate": 0.3},
        {"slow_drip_rate": 0.3, "slow_drip_delay": 0.5},
        {"hang_rate": 0.3, "hang_seconds": 3.0},
        {"error_rate": 0.3},
    ],
    ids=lambda knobs: next(iter(knobs)),
)
async def test_product_client_survives(start: Factory, knobs: dict[str, Any]) -> None:
    server = start(seed=9, processing_time=0.1, vector_size=16, **knobs)
    await index_poll_features_vectors(server)
    snapshot = server.state.stats.snapshot()
    errors = sum(n for codes in snapshot["requests"].values() for c, n in codes.items() if c >= "5")
    assert sum(snapshot["faults"].values()) + errors >= 2  # seed 9: the faults did happen
    assert snapshot["retry_after_violations"] == 0
    # Faults after the handler make the client re-send POST /index/text, which upstream has
    # already applied: a second asset (at-least-once indexing, as against real Mixpeek).
    print(f"{knobs}: faults {snapshot['faults']}, {len(server.state.assets)} asset(s)")


async def test_product_client_honours_retry_after_in_a_storm(start: Factory) -> None:
    server = start(seed=13, processing_time=0.1, vector_size=16, storm_rate=0.3, retry_after=1)
    await index_poll_features_vectors(server)
    snapshot = server.state.stats.snapshot()
    assert snapshot["faults"]["storm"] >= 1
    waits = snapshot["retry_after_waits"]
    assert len(waits) == snapshot["faults"]["storm"]
    print(
        f"storm: {len(waits)} retries, announced 1 s, waited "
        f"min {min(w['waited'] for w in waits):.3f} s, "
        f"avg {sum(w['waited'] for w in waits) / len(waits):.3f} s"
    )
    assert snapshot["retry_after_violations"] == 0
