"""MixpeekClient against scripted answers (httpx.MockTransport): no sockets, no real sleeps."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import traceback
from collections.abc import Awaitable, Callable
from email.utils import formatdate
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from pydantic import SecretStr

from sync_service import __version__
from sync_service.upstream.errors import (
    MixpeekAuthError,
    MixpeekBadRequest,
    MixpeekBadResponse,
    MixpeekError,
    MixpeekNotFound,
    MixpeekRateLimited,
    MixpeekServerError,
    MixpeekTransportError,
)
from sync_service.upstream.gen_b.client import MixpeekClient, RetryPolicy

KEY = "sk-test-SECRET-123"
BASE = "https://mixpeek.test"
TASK = {"asset_id": "a1", "task_id": "t1", "status": "DONE"}

Step = httpx.Response | BaseException | Callable[[httpx.Request], Awaitable[httpx.Response]]


class FakeTime:
    """Injected clock + sleep: sleeps are recorded and advance the clock instantly."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class MaxRng:
    """Deterministic 'random' source that always returns the upper bound, and records calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, float]] = []

    def uniform(self, a: float, b: float, /) -> float:
        self.calls.append((a, b))
        return b


class Script:
    """Answers requests from a list in order (the last step repeats); records every request."""

    def __init__(self, *steps: Step) -> None:
        self.steps = list(steps)
        self.requests: list[httpx.Request] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        step = self.steps.pop(0) if len(self.steps) > 1 else self.steps[0]
        if isinstance(step, BaseException):
            raise step
        if isinstance(step, httpx.Response):
            return step
        return await step(request)


class Recorder:
    def __init__(self) -> None:
        self.responses: list[tuple[str, int | None]] = []
        self.retries: list[tuple[str, int, float, str]] = []

    def on_response(self, endpoint: str, status: int | None, elapsed: float) -> None:
        self.responses.append((endpoint, status))

    def on_retry(self, endpoint: str, attempt: int, wait: float, reason: str) -> None:
        self.retries.append((endpoint, attempt, wait, reason))


def make(
    script: Script | Callable[[httpx.Request], Any],
    fake: FakeTime | None = None,
    *,
    rng: Any = None,
    **kwargs: Any,
) -> MixpeekClient:
    fake = fake or FakeTime()
    policy_args = {k: kwargs.pop(k) for k in list(kwargs) if k in RetryPolicy.__dataclass_fields__}
    policy = RetryPolicy(
        sleep=fake.sleep,
        clock=fake.clock,
        rng=rng or MaxRng(),
        **{"base_delay": 0.1, **policy_args},
    )
    kwargs.setdefault("api_key", KEY)
    return MixpeekClient(
        base_url=kwargs.pop("base_url", BASE),
        policy=policy,
        transport=httpx.MockTransport(script),
        **kwargs,
    )


def ok(data: Any, **kwargs: Any) -> httpx.Response:
    return httpx.Response(200, json=data, **kwargs)


def err(status: int, data: Any = None, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, json=data if data is not None else {}, headers=headers)


# -- headers and routing --------------------------------------------------------------------


async def test_headers_bearer_namespace_and_user_agent() -> None:
    script = Script(ok(TASK))
    async with make(script, namespace="ns_1", api_key=SecretStr(KEY)) as client:
        task = await client.get_task("t1")
    assert task.task_id == "t1"
    headers = script.requests[0].headers
    assert headers["authorization"] == f"Bearer {KEY}"
    assert headers["x-namespace"] == "ns_1" and headers["index-id"] == "ns_1"
    assert headers["accept"] == "application/json"
    assert headers["user-agent"] == f"sync-service/{__version__}"
    assert "sk-test" not in repr(client)


async def test_no_key_no_authorization_header() -> None:
    script = Script(ok({"status": "ok"}))
    async with make(script, api_key=None) as client:
        assert await client.healthcheck() == {"status": "ok"}
    assert "authorization" not in script.requests[0].headers
    assert "x-namespace" not in script.requests[0].headers


async def test_path_segments_are_quoted_and_base_path_kept() -> None:
    script = Script(ok(TASK))
    async with make(script, base_url="https://mixpeek.test/v1") as client:
        await client.get_task("a/b?c d")
    assert script.requests[0].url.raw_path == b"/v1/tasks/a%2Fb%3Fc%20d"


@pytest.mark.parametrize(
    "base",
    [
        "http://127.0.0.1:8000",
        "http://127.0.0.1:8000/",
        "https://mixpeek.test/v1",
        "https://u:p@h:81/a%20b/",
    ],
)
@pytest.mark.parametrize("task_id", ["t1", "a b/ü", "%zz", "x#y"])
async def test_the_url_built_absolute_is_the_one_httpx_would_merge(base: str, task_id: str) -> None:
    # The client builds each request's URL whole (one parse instead of httpx's three).
    script = Script(ok(TASK), ok({"feature_id": "f", "vectors": {"v": [1.0]}}))
    async with make(script, base_url=base) as client:
        await client.get_task(task_id)
        await client.get_feature(task_id)  # with its query: include_vectors=true
    http = httpx.AsyncClient(base_url=base)  # its own merge of base, path and params
    segment = quote(task_id, safe="")  # as the client quotes an id
    assert [r.url for r in script.requests] == [
        http.build_request("GET", f"/tasks/{segment}").url,
        http.build_request("GET", f"/features/{segment}", params={"include_vectors": "true"}).url,
    ]


async def test_empty_id_rejected() -> None:
    script = Script(ok(TASK))
    async with make(script) as client:
        with pytest.raises(ValueError, match="task_id"):
            await client.get_task("")
    assert script.requests == []


# -- retries ----------------------------------------------------------------------------------


async def test_429_retry_after_header_is_honoured() -> None:
    fake = FakeTime()
    script = Script(err(429, {"detail": "slow down"}, {"Retry-After": "2"}), ok(TASK))
    async with make(script, fake) as client:
        assert (await client.get_task("t1")).status == "DONE"
    assert len(script.requests) == 2
    assert len(fake.sleeps) == 1 and fake.sleeps[0] >= 2


async def test_429_json_retry_after_is_honoured() -> None:
    fake = FakeTime()
    body = {
        "success": False,
        "status": 429,
        "error": {
            "message": "Rate limit",
            "type": "TooManyRequestsError",
            "details": {"retry_after": 35},
        },
    }
    script = Script(err(429, body), ok(TASK))
    async with make(script, fake) as client:
        await client.get_task("t1")
    assert fake.sleeps[0] >= 35


async def test_429_http_date_retry_after() -> None:
    fake = FakeTime()
    header = formatdate(time.time() + 30, usegmt=True)
    script = Script(err(429, headers={"Retry-After": header}), ok(TASK))
    async with make(script, fake) as client:
        await client.get_task("t1")
    assert 28 <= fake.sleeps[0] <= 30


async def test_retry_after_capped_by_max_retry_after() -> None:
    fake = FakeTime()
    script = Script(err(429, headers={"Retry-After": "100"}), ok(TASK))
    async with make(script, fake, max_retry_after=5, base_delay=0.1) as client:
        await client.get_task("t1")
    assert fake.sleeps == [5]


async def test_retry_after_beyond_deadline_gives_up_at_once() -> None:
    fake = FakeTime()
    script = Script(err(429, headers={"Retry-After": "300"}), ok(TASK))
    async with make(script, fake, call_deadline=120) as client:
        with pytest.raises(MixpeekRateLimited) as info:
            await client.get_task("t1")
    assert info.value.retry_after == 300
    assert len(script.requests) == 1 and fake.sleeps == []


async def test_503_then_200() -> None:
    script = Script(err(503), ok(TASK))
    async with make(script) as client:
        assert (await client.get_task("t1")).task_id == "t1"
    assert len(script.requests) == 2


async def test_a_retry_is_logged_at_info_only_from_the_second_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """One failure the retry fixes is routine (DEBUG; the metric counts it); a call failing
    again is worth a line a person sees at the default level."""
    script = Script(err(503), err(502), ok(TASK))
    with caplog.at_level(logging.DEBUG, logger="sync_service"):
        async with make(script) as client:
            await client.get_task("t1")
    lines = [(r.levelno, r.getMessage()) for r in caplog.records if "retrying in" in r.message]
    assert [level for level, _ in lines] == [logging.DEBUG, logging.INFO], lines
    assert "attempt 1 failed (http_503)" in lines[0][1]
    assert "attempt 2 failed (http_502)" in lines[1][1]


async def test_500_forever_gives_up_after_max_attempts() -> None:
    fake = FakeTime()
    script = Script(err(500, {"detail": "kaboom"}))
    async with make(script, fake, max_attempts=4) as client:
        with pytest.raises(MixpeekServerError, match="kaboom") as info:
            await client.get_task("t1")
    assert info.value.status == 500
    assert len(script.requests) == 4
    assert len(fake.sleeps) == 3


@pytest.mark.parametrize(
    "failure",
    [
        httpx.ConnectError("connection refused"),
        httpx.ReadTimeout("read timed out"),
        httpx.RemoteProtocolError("peer closed connection without sending complete message"),
    ],
)
async def test_transport_errors_are_retried(failure: Exception) -> None:
    recorder = Recorder()
    script = Script(failure, ok(TASK))
    async with make(script, observer=recorder) as client:
        assert (await client.get_task("t1")).task_id == "t1"
    assert len(script.requests) == 2
    assert recorder.responses == [("GET /tasks/{task_id}", None), ("GET /tasks/{task_id}", 200)]
    assert recorder.retries[0][:2] == ("GET /tasks/{task_id}", 1)
    assert recorder.retries[0][3] == f"transport:{type(failure).__name__}"


async def test_transport_error_raised_when_exhausted() -> None:
    script = Script(httpx.ConnectError("connection refused"))
    async with make(script, max_attempts=2) as client:
        with pytest.raises(MixpeekTransportError, match="connection refused") as info:
            await client.get_task("t1")
    assert info.value.error_type == "ConnectError" and info.value.status is None
    assert isinstance(info.value.__cause__, httpx.ConnectError)


async def test_slow_answer_hits_attempt_deadline() -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return ok(TASK)

    script = Script(slow)
    started = time.perf_counter()
    async with make(script, max_attempts=2, attempt_timeout=0.05) as client:
        with pytest.raises(MixpeekTransportError, match="no complete answer") as info:
            await client.get_task("t1")
    assert time.perf_counter() - started < 2
    assert info.value.retryable and info.value.error_type == "AttemptDeadline"
    assert len(script.requests) == 2


async def test_slow_answer_then_fast_one() -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return ok(TASK)

    script = Script(slow, ok(TASK))
    async with make(script, attempt_timeout=0.05) as client:
        assert (await client.get_task("t1")).task_id == "t1"


async def test_call_deadline_stops_retrying() -> None:
    fake = FakeTime()
    script = Script(err(503))
    # MaxRng makes waits 4, 8, 16...: after 4 s of waiting the next 8 s would pass 10 s.
    async with make(script, fake, base_delay=4, max_delay=100, call_deadline=10) as client:
        with pytest.raises(MixpeekServerError):
            await client.get_task("t1")
    assert fake.sleeps == [4]
    assert len(script.requests) == 2


@pytest.mark.parametrize("status", [401, 403])
async def test_auth_errors_not_retried_and_key_never_leaks(status: int) -> None:
    # The server even echoes the key back: it must still never show up anywhere.
    body = {"error": {"message": f"Invalid API key {KEY}", "type": "UnauthorizedError"}}
    script = Script(err(status, body))
    async with make(script) as client:
        with pytest.raises(MixpeekAuthError) as info:
            await client.get_task("t1")
    assert len(script.requests) == 1
    error = info.value
    assert str(error).startswith(f"Mixpeek refused the API key ({status} UnauthorizedError")
    assert "check MIXPEEK_API_KEY" in str(error)
    rendered = "".join(traceback.format_exception(error))
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None:
        chain.append(current)
        current = current.__cause__ or current.__context__
    for text in [str(error), repr(error), rendered, repr(error.details), *map(repr, chain)]:
        assert KEY not in text


async def test_key_never_leaks_from_transport_errors() -> None:
    script = Script(httpx.LocalProtocolError(f"Illegal header value b'Bearer {KEY}'"))
    async with make(script, max_attempts=1) as client:
        with pytest.raises(MixpeekTransportError) as info:
            await client.get_task("t1")
    error = info.value
    assert error.__cause__ is None and error.__context__ is None
    assert KEY not in "".join(traceback.format_exception(error)) and KEY not in repr(error)


async def test_404_not_retried() -> None:
    script = Script(err(404, {"detail": "Task not found"}))
    async with make(script) as client:
        with pytest.raises(MixpeekNotFound, match="Task not found"):
            await client.get_task("t1")
    assert len(script.requests) == 1


async def test_422_is_bad_request_with_fastapi_message() -> None:
    detail = [{"loc": ["body", "url"], "msg": "invalid or missing URL scheme", "type": "url"}]
    script = Script(err(422, {"detail": detail}))
    async with make(script) as client:
        with pytest.raises(MixpeekBadRequest, match=r"body\.url: invalid or missing URL scheme"):
            await client.index_video_url("https://x.test/v.mp4", "c1")
    assert len(script.requests) == 1


@pytest.mark.parametrize(
    "bad",
    [
        httpx.Response(200, content=b'{"task_id": "t1", "sta'),
        httpx.Response(200, content=b"<html>oops</html>"),
        httpx.Response(200, json=["not", "an", "object"]),
        httpx.Response(200, json={"status": "DONE"}),  # no task_id
    ],
)
async def test_bad_2xx_bodies_are_retried(bad: httpx.Response) -> None:
    script = Script(bad, ok(TASK))
    async with make(script) as client:
        assert (await client.get_task("t1")).task_id == "t1"
    assert len(script.requests) == 2


async def test_bad_2xx_body_raised_when_exhausted() -> None:
    script = Script(httpx.Response(200, content=b"{truncated"))
    async with make(script, max_attempts=2) as client:
        with pytest.raises(MixpeekBadResponse, match="not valid JSON"):
            await client.get_task("t1")


async def test_mar_2024_envelopes() -> None:
    wrapped = {"success": True, "status": 200, "error": None, "response": TASK}
    failed = {"success": False, "status": 404, "error": "Task not found", "response": None}
    script = Script(ok(wrapped), ok(failed))
    async with make(script) as client:
        assert (await client.get_task("t1")).asset_id == "a1"
        with pytest.raises(MixpeekNotFound, match="Task not found"):
            await client.get_task("t1")


# -- backoff ----------------------------------------------------------------------------------


def test_full_jitter_bounds() -> None:
    rng = MaxRng()
    policy = RetryPolicy(base_delay=0.5, max_delay=30, rng=rng)
    assert [policy.backoff(n) for n in (1, 2, 3, 4, 7, 8, 20)] == [0.5, 1, 2, 4, 30, 30, 30]
    assert all(low == 0.0 for low, _ in rng.calls)


def test_full_jitter_with_real_rng_stays_in_bounds() -> None:
    import random

    policy = RetryPolicy(base_delay=0.5, max_delay=30, rng=random.Random(7))
    for attempt in range(1, 12):
        ceiling = min(30, 0.5 * 2 ** (attempt - 1))
        waits = [policy.backoff(attempt) for _ in range(50)]
        assert all(0 <= w <= ceiling for w in waits)
        assert max(waits) > ceiling / 2  # it is actually spread, not stuck at 0


def test_wait_for_takes_the_larger_of_jitter_and_hint() -> None:
    policy = RetryPolicy(base_delay=0.5, max_delay=30, rng=MaxRng(), max_retry_after=60)
    hinted = MixpeekRateLimited("x", retry_after=10)
    assert policy.wait_for(1, hinted) == 10
    assert policy.wait_for(10, hinted) == 30
    assert policy.wait_for(1, MixpeekRateLimited("x", retry_after=500)) == 60


def test_policy_validation() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError, match="attempt_timeout"):
        RetryPolicy(attempt_timeout=0)


async def test_observer_sees_templates_and_waits() -> None:
    recorder = Recorder()
    fake = FakeTime()
    script = Script(err(429, headers={"Retry-After": "3"}), err(503), ok(TASK))
    async with make(script, fake, observer=recorder) as client:
        await client.get_task("t-123")
    assert recorder.responses == [
        ("GET /tasks/{task_id}", 429),
        ("GET /tasks/{task_id}", 503),
        ("GET /tasks/{task_id}", 200),
    ]
    assert [(r[1], r[3]) for r in recorder.retries] == [(1, "http_429"), (2, "http_503")]
    assert [r[2] for r in recorder.retries] == fake.sleeps


async def test_broken_observer_does_not_break_requests() -> None:
    class Broken:
        def on_response(self, endpoint: str, status: int | None, elapsed: float) -> None:
            raise RuntimeError("metrics down")

        def on_retry(self, endpoint: str, attempt: int, wait: float, reason: str) -> None:
            raise RuntimeError("metrics down")

    async with make(Script(err(503), ok(TASK)), observer=Broken()) as client:
        assert (await client.get_task("t1")).task_id == "t1"


# -- concurrency -----------------------------------------------------------------------------


async def test_max_in_flight_is_respected() -> None:
    active = peak = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.01)
        active -= 1
        return ok(TASK)

    async with make(Script(handler), max_in_flight=3) as client:
        await asyncio.gather(*(client.get_task(f"t{i}") for i in range(12)))
    assert peak == 3


async def test_slot_is_not_held_during_backoff() -> None:
    release = asyncio.Event()
    sleeping = asyncio.Event()

    async def blocking_sleep(seconds: float) -> None:
        sleeping.set()
        await release.wait()

    answers = iter([err(503), ok(TASK), ok(TASK)])

    async def handler(request: httpx.Request) -> httpx.Response:
        return next(answers)

    transport = httpx.MockTransport(handler)
    policy = RetryPolicy(sleep=blocking_sleep, rng=MaxRng(), base_delay=0.1)
    async with MixpeekClient(
        base_url=BASE, api_key=KEY, policy=policy, transport=transport, max_in_flight=1
    ) as client:
        first = asyncio.create_task(client.get_task("t1"))
        await sleeping.wait()  # first call is backing off after its 503
        # With one slot, this only completes if the backing-off call released it.
        assert (await asyncio.wait_for(client.get_task("t2"), 1)).task_id == "t1"
        release.set()
        await first


# -- endpoints --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url", ["ftp://x.test/v.mp4", "video.mp4", "", "file:///etc/passwd", "https://"]
)
async def test_non_http_url_rejected_before_any_request(url: str) -> None:
    script = Script(ok({"task_id": "t"}))
    async with make(script) as client:
        with pytest.raises(ValueError, match="http"):
            await client.index_video_url(url, "c1")
        with pytest.raises(ValueError, match="http"):
            await client.index_image_url(url, "c1")
    assert script.requests == []


async def test_index_video_url_body_and_result() -> None:
    queued = {"message": "Video URL processing queued", "task_id": "t9"}
    script = Script(ok(queued))
    async with make(script) as client:
        result = await client.index_video_url(
            "https://x.test/v.mp4",
            "c1",
            metadata={"k": "v"},
            video_settings=[{"interval_sec": 10}],
            prevent_duplicate=True,
        )
    assert result.task_id == "t9" and not result.duplicate
    request = script.requests[0]
    assert (request.method, request.url.path) == ("POST", "/index/videos/url")
    assert json.loads(request.content) == {
        "url": "https://x.test/v.mp4",
        "collection_id": "c1",
        "metadata": {"k": "v"},
        "video_settings": [{"interval_sec": 10}],
        "prevent_duplicate": True,
    }


async def test_index_image_duplicate_returns_asset() -> None:
    asset = {"asset_id": "a1", "task_id": "t-old", "status": "DONE", "url": "https://x.test/i.png"}
    script = Script(ok(asset))
    async with make(script) as client:
        result = await client.index_image_url("https://x.test/i.png", "c1", prevent_duplicate=True)
    assert result.duplicate and result.task_id == "t-old"
    assert script.requests[0].url.path == "/index/images/url"


async def test_index_text() -> None:
    script = Script(ok({"message": "queued", "task_id": "t2"}))
    async with make(script) as client:
        result = await client.index_text("hello", "c1", text_settings={"embed": {}})
        with pytest.raises(ValueError, match="text"):
            await client.index_text("  ", "c1")
    assert result.task_id == "t2"
    assert json.loads(script.requests[0].content) == {
        "collection_id": "c1",
        "text_settings": {"embed": {}},
        "text": "hello",
    }


async def test_index_answer_without_task_or_asset_is_bad() -> None:
    script = Script(ok({"message": "??"}))
    async with make(script, max_attempts=1) as client:
        with pytest.raises(MixpeekBadResponse, match="neither task_id nor asset_id"):
            await client.index_text("hello", "c1")


async def test_get_asset_and_features() -> None:
    grouped = {"asset": {"asset_id": "a1"}, "features": {"text": [{"feature_id": "f1"}]}}
    script = Script(ok({"asset_id": "a1", "status": "DONE"}), ok(grouped))
    async with make(script) as client:
        assert (await client.get_asset("a1")).status == "DONE"
        features = await client.get_asset_features("a1")
    assert [f.feature_id for f in features.all_features()] == ["f1"]
    assert [r.url.path for r in script.requests] == ["/assets/a1", "/assets/a1/features"]


async def test_vectors_flag_fallback_is_remembered() -> None:
    vectors = {"multimodal-v1": [0.1, 0.2]}
    server = {"flag": "return_vectors"}

    async def handler(request: httpx.Request) -> httpx.Response:
        has = request.url.params.get(server["flag"]) == "true"
        fid = request.url.path.rsplit("/", 1)[-1]
        return ok({"feature_id": fid, **({"vectors": vectors} if has else {})})

    script = Script(handler)
    async with make(script) as client:
        first = await client.get_feature("f1")
        second = await client.get_feature("f2")
        server["flag"] = "include_vectors"  # the server changes its mind again
        third = await client.get_feature("f3")
        plain = await client.get_feature("f4", with_vectors=False)
    assert first.vectors == vectors and second.vectors == vectors and third.vectors == vectors
    assert plain.vectors is None
    params = [dict(r.url.params) for r in script.requests]
    assert params == [
        {"include_vectors": "true"},
        {"return_vectors": "true"},  # fallback worked: remembered
        {"return_vectors": "true"},  # f2 goes straight to it
        {"return_vectors": "true"},
        {"include_vectors": "true"},  # f3 fell back again
        {},
    ]


async def test_feature_without_vectors_anywhere_returns_vectorless() -> None:
    script = Script(ok({"feature_id": "f1", "vectors": None}))
    async with make(script) as client:
        feature = await client.get_feature("f1")
    assert feature.vectors is None and len(script.requests) == 2


async def test_list_assets_query_params_and_body() -> None:
    script = Script(ok({"results": [], "pagination": {"page": 2, "next_page": None}}))
    async with make(script) as client:
        page = await client.list_assets("c1", page=2, page_size=5, filters={"AND": []})
    assert not page.has_next
    request = script.requests[0]
    assert dict(request.url.params) == {"page": "2", "page_size": "5"}
    assert json.loads(request.content) == {"collection_ids": ["c1"], "filters": {"AND": []}}


async def test_iter_assets_walks_pages() -> None:
    def page(n: int, ids: list[str], last: bool) -> dict[str, Any]:
        nxt = None if last else f"{BASE}/assets?page={n + 1}&page_size=2"
        pagination = {"total": 5, "page": n, "page_size": 2, "total_pages": 3, "next_page": nxt}
        return {"results": [{"asset_id": i} for i in ids], "pagination": pagination}

    script = Script(
        ok(page(1, ["a", "b"], False)), ok(page(2, ["c", "d"], False)), ok(page(3, ["e"], True))
    )
    async with make(script) as client:
        ids = [asset.asset_id async for asset in client.iter_assets(["c1"], page_size=2)]
    assert ids == ["a", "b", "c", "d", "e"]
    assert [r.url.params["page"] for r in script.requests] == ["1", "2", "3"]


async def test_iter_assets_without_pagination_block_and_repeating_server() -> None:
    # No pagination at all: full pages mean "maybe more"; a repeated page stops the walk.
    script = Script(ok({"results": [{"asset_id": "a"}, {"asset_id": "b"}]}))
    async with make(script) as client:
        ids = [asset.asset_id async for asset in client.iter_assets("c1", page_size=2)]
    assert ids == ["a", "b"]
    assert len(script.requests) == 2


async def test_list_features_cursor() -> None:
    body = {
        "results": [{"feature_id": "f1"}, {"feature_id": "f2"}],
        "pagination": {"page_size": 2, "current_page": 1, "total_pages": 2},
    }
    script = Script(ok(body))
    async with make(script) as client:
        page = await client.list_features(["c1"], offset_feature_id="f0", page_size=2)
    assert page.next_cursor == "f2"
    assert dict(script.requests[0].url.params) == {"page_size": "2", "offset_feature_id": "f0"}


async def test_deletes_ignore_body() -> None:
    script = Script(httpx.Response(200, content=b""), ok({"message": "deleted"}))
    async with make(script) as client:
        await client.delete_asset("a1")
        await client.delete_feature("f1")
    assert [(r.method, r.url.path) for r in script.requests] == [
        ("DELETE", "/assets/a1"),
        ("DELETE", "/features/f1"),
    ]


async def test_all_errors_are_mixpeek_errors() -> None:
    script = Script(err(400, {"detail": "bad"}))
    async with make(script) as client:
        with pytest.raises(MixpeekError):
            await client.list_assets(["c1"])


async def test_short_keys_do_not_mangle_messages() -> None:
    script = Script(err(404, {"detail": "Task k not found"}))
    async with make(script, api_key="k") as client:
        with pytest.raises(MixpeekNotFound, match="Task k not found"):
            await client.get_task("k")
