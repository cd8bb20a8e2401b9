"""The control API in-process (ASGI) over a real state store, Qdrant local mode and emulator."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from qdrant_client import AsyncQdrantClient

from sync_service.control.api import create_api
from sync_service.control.metrics import Metrics
from sync_service.emulator import EmulatorServer
from sync_service.engine.pipeline import Pipeline
from sync_service.qdrant.sink import QdrantSink
from sync_service.settings import Settings
from sync_service.state.store import Store
from sync_service.upstream.gen_b.adapter import GenBUpstream
from sync_service.upstream.gen_b.client import MixpeekClient, RetryPolicy
from tests.conftest import API_KEY

TOKEN = "control-token-XYZ-123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Stack:
    def __init__(
        self,
        store: Store,
        client: MixpeekClient,
        sink: QdrantSink,
        http: httpx.AsyncClient,
        pipeline: Pipeline,
    ) -> None:
        self.store, self.client, self.sink, self.http, self.pipeline = (
            store,
            client,
            sink,
            http,
            pipeline,
        )

    async def sync_all(self) -> None:
        """Run the pipeline until nothing is pending (what `run --drain` does)."""
        for _ in range(200):
            claims = await self.store.claim_due("test", 100, 30)
            for claim in claims:
                await self.pipeline.process(claim)
            if await self.store.pending_count() == 0:
                return
            await asyncio.sleep(0.05)
        raise AssertionError("did not drain")


@pytest.fixture
async def stack(tmp_path: Path, emulator: EmulatorServer) -> AsyncIterator[Stack]:
    settings = Settings(
        _env_file=None,
        MIXPEEK_API_URL=emulator.url,
        SYNC_POLL_INTERVAL=0.05,  # type: ignore[call-arg]
        SYNC_MAX_POLL_INTERVAL=0.1,
    )
    store = Store.open(f"sqlite:///{tmp_path / 'sync.db'}")
    await store.migrate()
    metrics = Metrics()
    sink = QdrantSink(AsyncQdrantClient(":memory:"), on_batch=metrics.upsert_batch)
    policy = RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.05)
    async with MixpeekClient(
        base_url=emulator.url, api_key=API_KEY, policy=policy, observer=metrics
    ) as client:
        upstream = GenBUpstream(client)
        pipeline = Pipeline(settings, store, upstream, sink, metrics)
        app = create_api(
            store=store,
            upstream=upstream,
            sink=sink,
            metrics=metrics,
            token=TOKEN,
            max_body_bytes=4096,
            qdrant=pipeline.qdrant,
        )
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
            yield Stack(store, client, sink, http, pipeline)
    await sink.close()
    await store.close()


async def test_health_is_open_everything_else_needs_the_token(stack: Stack) -> None:
    assert (await stack.http.get("/healthz")).json() == {"status": "ok"}
    ready = await stack.http.get("/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    for method, path in [
        ("GET", "/metrics"),
        ("GET", "/tasks"),
        ("POST", "/tasks"),
        ("GET", "/openapi.json"),
        ("GET", "/dead-letters"),
    ]:
        answer = await stack.http.request(method, path)
        assert answer.status_code == 401, path
        wrong = await stack.http.request(method, path, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        assert TOKEN not in answer.text
    spec = await stack.http.get("/openapi.json", headers=AUTH)
    assert spec.status_code == 200 and "/dead-letters/{letter_id}/retry" in spec.json()["paths"]


async def test_track_submit_state_and_metrics(stack: Stack) -> None:
    answer = await stack.http.post(
        "/tasks", json={"task_ids": ["unknown-1", "unknown-1"]}, headers=AUTH
    )
    assert answer.json() == {"tracked": 1, "already_tracked": 0}
    submitted = await stack.http.post(
        "/submit",
        headers=AUTH,
        json={
            "collection_id": "api",
            "items": [
                {"kind": "video", "url": "https://example.com/v.mp4?duration=20"},
                {"kind": "text", "text": "hello", "metadata": {"lang": "en"}},
            ],
        },
    )
    assert submitted.status_code == 200, submitted.text
    task_ids = submitted.json()["task_ids"]
    assert len(task_ids) == 2 and submitted.json()["errors"] == []
    await stack.sync_all()

    state = (await stack.http.get(f"/tasks/{task_ids[0]}", headers=AUTH)).json()
    assert state["state"] == "synced" and state["features_synced"] == 2
    assert (await stack.http.get("/tasks/unknown-1", headers=AUTH)).json()["error"] == (
        "task not found upstream (404)"
    )
    assert (await stack.http.get("/tasks/nope", headers=AUTH)).status_code == 404
    listing = (await stack.http.get("/tasks", headers=AUTH)).json()
    assert listing["counts"] == {"pending": 0, "synced": 2, "failed": 1}

    text = (await stack.http.get("/metrics", headers=AUTH)).text
    for line in [
        'sync_tasks{state="synced"} 2.0',
        'sync_tasks{state="failed"} 1.0',
        "sync_backlog_tasks 0.0",
        "sync_oldest_pending_age_seconds 0.0",
        "sync_features_synced_total 3.0",
        "sync_points_upserted_total 3.0",
        'sync_upstream_requests_total{endpoint="GET /tasks/{task_id}",status="404"} 1.0',
        "sync_upsert_batches_total 2.0",
        'sync_tasks_finished_total{state="failed"} 1.0',
    ]:
        assert line in text, line
    assert "sync_lag_seconds_count 2.0" in text
    assert "sync_upsert_batch_seconds_count 2.0" in text
    assert API_KEY not in text and TOKEN not in text


async def test_dead_letters_list_retry_and_drop(stack: Stack, emulator: EmulatorServer) -> None:
    emulator.update_config(poison_rate=0.5)
    (task_id,) = (
        await stack.http.post(
            "/submit",
            headers=AUTH,
            json={
                "collection_id": "dl",
                "items": [{"kind": "video", "url": "https://example.com/x.mp4?duration=80"}],
            },
        )
    ).json()["task_ids"]
    await stack.sync_all()
    letters = (await stack.http.get("/dead-letters", headers=AUTH)).json()
    assert letters and all(d["task_id"] == task_id for d in letters)

    # The cause is fixed upstream: a retry lands the features, and the dead letters go.
    emulator.update_config(poison_rate=0.0)
    async with httpx.AsyncClient() as http:
        healed = await http.post(f"{emulator.url}/_emulator/poison/clear")
    assert len(healed.json()["healed"]) == len(letters)
    retried = await stack.http.post(f"/dead-letters/{letters[0]['id']}/retry", headers=AUTH)
    assert retried.json() == {"task_id": task_id, "state": "pending"}
    await stack.sync_all()
    state = (await stack.http.get(f"/tasks/{task_id}", headers=AUTH)).json()
    assert state["dead_letters"] == 0 and state["features_synced"] == 8
    assert await stack.sink.count("dl") == 8

    assert (await stack.http.post("/dead-letters/999/retry", headers=AUTH)).status_code == 404
    assert (await stack.http.delete("/dead-letters/999", headers=AUTH)).status_code == 404


async def test_drop_forgets_a_dead_letter(stack: Stack, emulator: EmulatorServer) -> None:
    emulator.update_config(poison_rate=0.5)
    await stack.http.post(
        "/submit",
        headers=AUTH,
        json={
            "collection_id": "dl",
            "items": [{"kind": "video", "url": "https://example.com/y.mp4?duration=80"}],
        },
    )
    await stack.sync_all()
    letters = (await stack.http.get("/dead-letters", headers=AUTH)).json()
    dropped = await stack.http.delete(f"/dead-letters/{letters[0]['id']}", headers=AUTH)
    assert dropped.status_code == 204
    left = (await stack.http.get("/dead-letters", headers=AUTH)).json()
    assert len(left) == len(letters) - 1
    task = (await stack.http.get(f"/tasks/{letters[0]['task_id']}", headers=AUTH)).json()
    assert task["dead_letters"] == len(letters) - 1


async def test_not_ready_while_the_daemons_writes_find_qdrant_down(stack: Stack) -> None:
    """A full disk: Qdrant answers the ping (a read) but the daemon's writes fail. /readyz says
    so, since when and why, as `status` does, rather than "ok"."""
    qdrant = stack.pipeline.qdrant
    qdrant.failed(ConnectionError("Qdrant answered 500: No space left on device"))
    answer = await stack.http.get("/readyz")
    assert answer.status_code == 503
    shown = answer.json()["qdrant"]
    assert shown.startswith("error: Qdrant unavailable since ") and "No space left" in shown
    qdrant.answered()  # a write landed
    assert (await stack.http.get("/readyz")).json()["qdrant"] == "ok"


@pytest.mark.parametrize(
    "body",
    [
        {"task_ids": []},
        {"task_ids": [""]},
        {"task_ids": "abc"},
        {"task_ids": ["a"], "extra": 1},
        {"collection_id": "c", "items": [{"kind": "video", "url": "ftp://x/y.mp4"}]},
        {"collection_id": "c", "items": [{"kind": "text"}]},
        {"collection_id": "c", "items": [{"kind": "image", "text": "not a url"}]},
    ],
)
async def test_malformed_input_is_a_4xx(stack: Stack, body: dict[str, object]) -> None:
    path = "/tasks" if "task_ids" in body else "/submit"
    answer = await stack.http.post(path, json=body, headers=AUTH)
    assert answer.status_code == 422
    assert await stack.store.counts() == {"pending": 0, "synced": 0, "failed": 0}


async def test_a_body_over_the_limit_is_refused(stack: Stack) -> None:
    big = {"task_ids": [f"t{i:05}" for i in range(1000)]}
    answer = await stack.http.post("/tasks", json=big, headers=AUTH)
    assert answer.status_code == 413

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the size shows as it reads
        yield b'{"task_ids": ['
        for _ in range(50):
            yield b'"xxxxxxxxxx",' * 20

    chunked = await stack.http.post(
        "/tasks", content=chunks(), headers={**AUTH, "content-type": "application/json"}
    )
    assert chunked.status_code == 413
    assert await stack.store.counts() == {"pending": 0, "synced": 0, "failed": 0}


async def test_not_ready_when_qdrant_is_gone(stack: Stack) -> None:
    await stack.sink.client.close()
    stack.sink.client = AsyncQdrantClient(
        url="http://127.0.0.1:9", timeout=1, check_compatibility=False
    )
    answer = await stack.http.get("/readyz")
    assert answer.status_code == 503
    assert answer.json()["state_store"] == "ok" and answer.json()["qdrant"].startswith("error")


@pytest.mark.parametrize(
    "body",
    [
        '{"collection_id": "c", "items": [{"kind": "text", "text": "t", "metadata": {"x": NaN}}]}',
        '{"collection_id": "c", "items": [{"kind": "text", "text": "t", "metadata": {"x": 1e400}}]}',  # noqa: E501
        '{"collection_id": "c", "items": [{"kind": "text", "text": "\\ud800"}]}',
        '{"collection_id": "c", "items": [{"kind": "text", "text": "\\r \\n"}]}',
        '{"task_ids": ["\\udfff"]}',
        # A boolean is a boolean: lax parsing took 0.0 for false (found by the fuzzer).
        '{"collection_id": "c", "items": [{"kind": "text", "text": "t"}], "prevent_duplicate": 0.0}',  # noqa: E501
        '{"collection_id": "c", "items": [{"kind": "text", "text": "t"}], "prevent_duplicate": 1}',
        '{"collection_id": "c", "items": [{"kind": "text", "text": "t"}], "prevent_duplicate": "yes"}',  # noqa: E501
    ],
)
async def test_json_that_cannot_travel_on_is_a_422(stack: Stack, body: str) -> None:
    path = "/tasks" if "task_ids" in body else "/submit"
    answer = await stack.http.post(
        path, content=body, headers={**AUTH, "content-type": "application/json"}
    )
    assert answer.status_code == 422, answer.text
    assert await stack.store.counts() == {"pending": 0, "synced": 0, "failed": 0}


@pytest.mark.parametrize("letter", ["0", "-1", str(2**63), str(2**70)])
async def test_dead_letter_ids_out_of_range_are_a_422(stack: Stack, letter: str) -> None:
    assert (await stack.http.delete(f"/dead-letters/{letter}", headers=AUTH)).status_code == 422
    retry = await stack.http.post(f"/dead-letters/{letter}/retry", headers=AUTH)
    assert retry.status_code == 422


async def test_watch_routes_add_list_and_remove(stack: Stack) -> None:
    answer = await stack.http.post("/watch", json={"collection_ids": ["a", "b", "a"]}, headers=AUTH)
    assert answer.status_code == 200
    assert answer.json() == {"added": ["a", "b"], "already_watched": []}
    again = await stack.http.post("/watch", json={"collection_ids": ["b"]}, headers=AUTH)
    assert again.json() == {"added": [], "already_watched": ["b"]}
    listed = (await stack.http.get("/watch", headers=AUTH)).json()
    assert [(w["collection_id"], w["source"], w["pass"]) for w in listed] == [
        ("a", "api", None),
        ("b", "api", None),
    ]
    assert listed[0]["last_full_ago"] is None and listed[0]["held_sweep"] is None
    assert (await stack.http.delete("/watch/a", headers=AUTH)).status_code == 204
    assert (await stack.http.delete("/watch/a", headers=AUTH)).status_code == 404
    assert [w["collection_id"] for w in (await stack.http.get("/watch", headers=AUTH)).json()] == [
        "b"
    ]
    # The routes need the token, and bad input is a 422.
    assert (await stack.http.get("/watch")).status_code == 401
    for body in ({"collection_ids": []}, {"collection_ids": ["x" * 256]}, {"ids": ["a"]}):
        assert (await stack.http.post("/watch", json=body, headers=AUTH)).status_code == 422
    metrics = (await stack.http.get("/metrics", headers=AUTH)).text
    assert "# HELP sync_watch_lag_seconds" in metrics


async def test_retry_route_requeues_failed_work(stack: Stack) -> None:
    await stack.store.track(["t-a", "t-b"])
    for claim in await stack.store.claim_due("w", 10, 30):
        await stack.store.mark_failed(claim, f"boom {claim.task_id}")
    body = {"failed": True, "since": "2000-01-01T00:00:00", "dry_run": True}
    dry = await stack.http.post("/tasks/retry", json=body, headers=AUTH)
    assert dry.status_code == 200 and dry.json()["requeued"] == ["t-a", "t-b"]
    future = await stack.http.post(
        "/tasks/retry", json={"failed": True, "since": 4102444800.0}, headers=AUTH
    )
    assert future.json()["requeued"] == []  # nothing failed after 2100
    done = await stack.http.post("/tasks/retry", json={"task_ids": ["t-a", "x"]}, headers=AUTH)
    assert done.json() == {"dry_run": False, "requeued": ["t-a"], "skipped": {"x": "not tracked"}}
    detail = (await stack.http.get("/tasks/t-a", headers=AUTH)).json()
    assert detail["state"] == "pending" and detail["retries"][0]["failed_error"] == "boom t-a"
    for bad in (
        {},
        {"task_ids": ["t-b"], "failed": True},
        {"failed": True, "since": "soon"},
        {"failed": True, "since": False},  # not 1970 (Schemathesis found it accepted)
        {"failed": "yes"},
    ):
        assert (await stack.http.post("/tasks/retry", json=bad, headers=AUTH)).status_code == 422
