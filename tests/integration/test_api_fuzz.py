"""Fuzzing the control API, in-process, from its own OpenAPI document.

The app is the real one (``create_api``: FastAPI behind the Guard middleware) over a real SQLite
state store, Qdrant local mode in memory and a ``MixpeekClient`` pointed at the in-process
emulator, driven through ``httpx.ASGITransport`` on an event loop this module owns.

* **schemathesis** generates requests for every operation of ``/openapi.json``, valid ones
  (positive) and invalid ones (negative), with the bearer token. Each answer must not be a server
  error, must match its documented schema (and content type), and invalid input must be refused.
* **hypothesis** adds what a schema-driven generator does not send: junk bodies (broken JSON,
  ``NaN``/``Infinity``, lone surrogates, deep nesting, bytes that are not UTF-8), odd path and
  query values, odd headers, and requests without (or with a wrong) token, which must all be 401
  except on ``/healthz`` and ``/readyz``.

An exception escaping the app fails the test (a client would get a 500). Examples per fuzzer:
``SYNC_FUZZ_EXAMPLES`` (default 50). The 5xx these fuzzers found stay at the end as fixed
examples.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from qdrant_client import AsyncQdrantClient

from sync_service.control.api import OPEN_PATHS, create_api
from sync_service.control.metrics import Metrics
from sync_service.emulator import EmulatorConfig, EmulatorServer
from sync_service.qdrant.sink import QdrantSink
from sync_service.state.records import DeadLetter, SyncResult
from sync_service.state.store import Store
from sync_service.upstream.gen_b.adapter import GenBUpstream
from sync_service.upstream.gen_b.client import MixpeekClient, RetryPolicy
from tests.conftest import API_KEY

schemathesis = pytest.importorskip("schemathesis", minversion="4.32")
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
)

EXAMPLES = int(os.environ.get("SYNC_FUZZ_EXAMPLES", "50"))
TOKEN = "fuzz-token-Q7RmZ2"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BASE = "http://api"
MAX_BODY = 64 * 1024

FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,  # every run explores afresh; a failure prints its example
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
    ],
)

#: Every operation of the OpenAPI document (checked against it below, so none is forgotten).
OPERATIONS = [
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("POST", "/tasks"),
    ("GET", "/tasks"),
    ("POST", "/submit"),
    ("GET", "/tasks/{task_id}"),
    ("POST", "/tasks/retry"),
    ("GET", "/dead-letters"),
    ("POST", "/dead-letters/{letter_id}/retry"),
    ("DELETE", "/dead-letters/{letter_id}"),
    ("GET", "/watch"),
    ("POST", "/watch"),
    ("DELETE", "/watch/{collection_id}"),
    ("POST", "/webhooks/mixpeek"),
]


class AppCrashed(AssertionError):
    """An exception escaped the app: a client would have got a 500."""


# -- the app under test ------------------------------------------------------------------------


@dataclass
class Api:
    runner: asyncio.Runner
    http: httpx.AsyncClient
    store: Store

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """One request; an exception escaping the app fails the test."""
        try:
            return self.runner.run(self.http.request(method, url, **kwargs))
        except Exception as exc:
            raise AppCrashed(f"{method} {url} -> unhandled {type(exc).__name__}: {exc}") from exc

    def send_case(self, case: Any) -> httpx.Response:
        """A schemathesis case, sent through httpx (it serialises for ``requests``)."""
        kwargs = case.as_transport_kwargs(base_url=BASE, headers=AUTH)
        content: bytes | None = None
        if "json" in kwargs:
            content = json.dumps(kwargs["json"]).encode()
        elif kwargs.get("data") is not None:
            data = kwargs["data"]
            content = data.encode() if isinstance(data, str) else bytes(data)
        headers = {k: v for k, v in kwargs["headers"].items() if k.lower() != "connection"}
        return self.request(
            kwargs["method"],
            kwargs["url"],
            headers=headers,
            params=kwargs.get("params") or None,
            content=content,
        )


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorServer]:
    """One emulator for the module (the shared fixture is per test)."""
    with EmulatorServer(EmulatorConfig(api_key=API_KEY, processing_time=0.4, seed=1)) as server:
        yield server


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, emulator: EmulatorServer) -> Iterator[Api]:
    """The control API over real parts, with some state for the routes to show.

    One per module: building it costs more than a hundred requests, and the state the fuzzers
    leave behind (tracked tasks, dropped dead letters) is more input for the next one.
    """
    runner = asyncio.Runner()
    database = tmp_path_factory.mktemp("fuzz") / "sync.db"
    store = Store.open(f"sqlite:///{database}")
    sink = QdrantSink(AsyncQdrantClient(":memory:"))
    policy = RetryPolicy(max_attempts=2, base_delay=0.01, max_delay=0.02, attempt_timeout=5)
    client = MixpeekClient(base_url=emulator.url, api_key=API_KEY, policy=policy)

    async def start() -> httpx.AsyncClient:
        await store.migrate()
        await client.__aenter__()
        await seed(store)
        app = create_api(
            store=store,
            upstream=GenBUpstream(client),
            sink=sink,
            metrics=Metrics(),
            token=TOKEN,
            max_body_bytes=MAX_BODY,
        )
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=True)
        return httpx.AsyncClient(transport=transport, base_url=BASE, timeout=30)

    async def stop(http: httpx.AsyncClient) -> None:
        await http.aclose()
        await client.__aexit__(None, None, None)
        await sink.close()
        await store.close()

    with runner:
        http = runner.run(start())
        try:
            yield Api(runner, http, store)
        finally:
            runner.run(stop(http))


async def seed(store: Store) -> None:
    """A pending, a synced (with dead letters) and a failed task."""
    await store.track(["seed-pending", "seed-synced", "seed-failed"])
    claims = {c.task_id: c for c in await store.claim_due("fuzz", 10, 600)}
    letters = [
        DeadLetter("vector not finite", f"feature-{i}", '{"modality": "video"}') for i in range(3)
    ]
    await store.mark_synced(
        claims["seed-synced"],
        SyncResult("DONE", "asset-1", "col", "col", features=(), dead_letters=letters),
    )
    await store.mark_failed(claims["seed-failed"], "failed upstream (status FAILED)")
    await store.release(claims["seed-pending"])


@pytest.fixture(scope="module")
def schema(api: Api) -> Any:
    answer = api.request("GET", "/openapi.json", headers=AUTH)
    assert answer.status_code == 200
    return schemathesis.openapi.from_dict(answer.json())


# -- schemathesis ------------------------------------------------------------------------------


def test_the_fuzzed_operations_are_all_the_documented_ones(schema: Any) -> None:
    documented = {
        (method.upper(), path)
        for path, item in schema.raw_schema["paths"].items()
        for method in item
    }
    assert documented == set(OPERATIONS)


def _has_input(operation: Any) -> bool:
    return bool(operation.definition.raw.get("parameters") or operation.body)


@pytest.mark.parametrize("mode", ["positive", "negative"])
@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_schemathesis_finds_no_server_error_and_no_schema_violation(
    api: Api, schema: Any, method: str, path: str, mode: str
) -> None:
    operation = schema[path][method]
    if mode == "negative" and not _has_input(operation):
        pytest.skip("nothing to make invalid: the operation takes no input")
    checks = [not_a_server_error, response_schema_conformance, content_type_conformance]
    if mode == "negative":
        checks.append(negative_data_rejection)
    generation = schemathesis.GenerationMode(mode)
    statuses: dict[int, int] = {}

    @FUZZ_SETTINGS
    @given(case=operation.as_strategy(generation))
    def fuzz(case: Any) -> None:
        response = api.send_case(case)
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        run = checks
        if response.status_code == 413:  # refused as too big (the Guard): a rejection too
            run = [c for c in checks if c is not negative_data_rejection]
        case.validate_response(response, checks=run, headers=AUTH)

    try:
        fuzz()
    except Unsatisfiable:
        if mode == "negative":  # e.g. a string path parameter: every string is valid
            pytest.skip("schemathesis can make no invalid input for this operation")
        raise
    print(f"{method} {path} {mode}: statuses {statuses}")
    # The state the fuzzer left is still sane: counts add up and the metrics render.
    listing = api.request("GET", "/tasks?limit=10000", headers=AUTH).json()
    assert sum(listing["counts"].values()) == len(listing["tasks"])
    assert api.request("GET", "/metrics", headers=AUTH).status_code == 200


# -- hypothesis: what the schema does not describe ----------------------------------------------

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)
#: Strings that break things in other layers: NUL, lone surrogates (as JSON escapes, below),
#: path tricks, SQL and format-string bait, very long ones.
NASTY_TEXT = st.sampled_from(
    [
        "",
        " ",
        "\x00",
        "a\x00b",
        "../../etc/passwd",
        "%00",
        "%2e%2e%2f",
        "' OR 1=1 --",
        "{collection_id}",
        "%s%n",
        "\u202e",
        "\U0001d518\U0001d52b\U0001d526",  # astral-plane letters
        "x" * 300,
        "9" * 40,
    ]
) | st.text(max_size=30)
#: Bare JSON tokens Python's parser accepts although JSON does not, and surrogate escapes.
RAW_TOKENS = ["NaN", "Infinity", "-Infinity", "1e400", "-1e400", '"\\ud800"', '"\\udfff x"']


@st.composite
def near_valid_bodies(draw: st.DrawFn, path: str) -> bytes:
    """Bodies shaped like the route's model with junk in the leaves, as raw JSON text."""
    raw = draw(st.sampled_from(RAW_TOKENS))
    text = json.dumps(draw(NASTY_TEXT))
    value = draw(st.sampled_from([raw, text, json.dumps(draw(JSON_VALUES))]))
    if path == "/tasks":
        templates = ['{"task_ids": [%s]}', '{"task_ids": [%s, "ok"]}', '{"task_ids": %s}', "%s"]
    else:
        text_item = '{"kind": "text", "text": %s}'
        with_meta = '{"kind": "text", "text": "t", "metadata": {"k": %s}}'
        templates = [
            '{"collection_id": %s, "items": [{"kind": "text", "text": "t"}]}',
            '{"collection_id": "c", "items": [' + text_item + "]}",
            '{"collection_id": "c", "items": [' + with_meta + "]}",
            '{"collection_id": "c", "items": [{"kind": "text", "text": "t", "metadata": %s}]}',
            '{"collection_id": "c", "items": [{"kind": "video", "url": %s}]}',
            '{"collection_id": "c", "items": [{"kind": %s, "url": "https://e.com/a.mp4"}]}',
            '{"collection_id": "c", "items": [' + text_item % '"t"' + '], "prevent_duplicate": %s}',
            '{"collection_id": "c", "items": %s}',
        ]
    return (draw(st.sampled_from(templates)) % value).encode()


JUNK_BYTES = st.one_of(
    st.binary(max_size=200),
    st.builds(lambda d: json.dumps(d).encode(), JSON_VALUES),
    st.integers(1, 20_000).map(lambda n: b"[" * n),
    st.integers(1, 2_000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
    st.just(b"\xff\xfe{\x00}"),
    st.just(b'{"task_ids": ["a"]'),
)


@pytest.mark.parametrize("path", ["/tasks", "/submit"])
def test_junk_bodies_never_get_a_server_error(api: Api, path: str) -> None:
    content_types = st.sampled_from(
        ["application/json", "text/plain", "application/x-www-form-urlencoded", "", "json"]
    )

    @FUZZ_SETTINGS
    @given(
        body=st.one_of(near_valid_bodies(path), JUNK_BYTES),
        content_type=content_types,
    )
    def fuzz(body: bytes, content_type: str) -> None:
        headers = {**AUTH, "content-type": content_type}
        answer = api.request("POST", path, content=body, headers=headers)
        assert answer.status_code in (200, 400, 413, 422), (answer.status_code, answer.text[:300])

    fuzz()


FINITE_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)
URLS = st.builds(
    "https://{}.example/{}?duration={}".format,
    st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True),
    st.text(max_size=20).map(lambda t: quote(t, safe="")),
    st.integers(1, 60),
)
METADATA = {"metadata": st.none() | st.dictionaries(st.text(max_size=8), FINITE_JSON)}
VALID_ITEMS = st.one_of(
    st.fixed_dictionaries(
        # A text of only whitespace is refused on purpose (422): a valid one has a letter or
        # digit (never whitespace under Python's or the validator's own definition).
        {
            "kind": st.just("text"),
            "text": st.text(min_size=1, max_size=200).filter(lambda t: any(c.isalnum() for c in t)),
        },
        optional=METADATA,
    ),
    st.fixed_dictionaries(
        {"kind": st.sampled_from(["video", "image"]), "url": URLS}, optional=METADATA
    ),
)


def test_valid_submissions_reach_mixpeek_and_are_tracked(api: Api) -> None:
    """Schemathesis rarely builds a valid /submit (one item kind, one source): build them here."""
    accepted: list[str] = []

    @FUZZ_SETTINGS
    @given(
        body=st.fixed_dictionaries(
            {
                "collection_id": st.text(min_size=1, max_size=60),
                "items": st.lists(VALID_ITEMS, min_size=1, max_size=3),
            },
            optional={"prevent_duplicate": st.booleans()},
        )
    )
    def fuzz(body: dict[str, Any]) -> None:
        answer = api.request("POST", "/submit", json=body, headers=AUTH)
        assert answer.status_code == 200, (body, answer.status_code, answer.text[:300])
        result = answer.json()
        assert set(result) == {"task_ids", "errors"}
        assert len(result["task_ids"]) + len(result["errors"]) == len(body["items"])
        for task_id in result["task_ids"]:
            state = api.request("GET", f"/tasks/{quote(task_id, safe='')}", headers=AUTH)
            assert state.status_code == 200 and state.json()["state"] == "pending"
        accepted.extend(result["task_ids"])

    fuzz()
    assert accepted, "no submission reached Mixpeek"


def test_odd_path_and_query_values_never_get_a_server_error(api: Api) -> None:
    values = st.one_of(
        NASTY_TEXT,
        st.integers(min_value=-(2**80), max_value=2**80).map(str),
        st.floats().map(str),
        st.text(min_size=1, max_size=20),
    )
    templates = [
        "/tasks/{}",
        "/dead-letters/{}",
        "/dead-letters/{}/retry",
        "/tasks?limit={}",
        "/dead-letters?limit={}",
        "/dead-letters?task_id={}",
    ]

    @FUZZ_SETTINGS
    @given(template=st.sampled_from(templates), value=values, method_index=st.integers(0, 2))
    def fuzz(template: str, value: str, method_index: int) -> None:
        url = template.format(quote(value, safe=""))
        if template.startswith("/dead-letters/{}"):
            method = ["POST", "DELETE", "GET"][method_index]
            method = "POST" if template.endswith("retry") and method == "DELETE" else method
        else:
            method = "GET"
        answer = api.request(method, url, headers=AUTH)
        assert answer.status_code < 500, (method, url, answer.status_code, answer.text[:300])

    fuzz()


def test_without_the_right_token_everything_but_health_is_401(api: Api) -> None:
    paths = st.sampled_from(
        [
            *{
                p.replace("{task_id}", "seed-synced").replace("{letter_id}", "1")
                for _, p in OPERATIONS
            },
            "/openapi.json",
            "/docs",
            "/redoc",
            "/docs/oauth2-redirect",
            "/nope",
            "/",
            "/healthz/",
            "/readyz/",
            "//tasks",
            "/healthz/../tasks",
            "/HEALTHZ",
            "/tasks/",
            "/healthz%2F..%2Ftasks",
        ]
    )
    wrong_tokens = st.one_of(
        st.sampled_from(
            [
                None,
                "",
                "Bearer",
                "Bearer ",
                f"Bearer  {TOKEN}",
                f"Bearer {TOKEN} ",
                f"Bearer {TOKEN[:-1]}",
                f"Bearer {TOKEN}x",
                f"Bearer {TOKEN.upper()}",
                f"Basic {TOKEN}",
                TOKEN,
                f"Token {TOKEN}",
                f"Bearer\t{TOKEN}",
            ]
        ),
        st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40),
    )

    @FUZZ_SETTINGS
    @given(
        method=st.sampled_from(["GET", "POST", "DELETE", "PUT", "PATCH", "OPTIONS", "HEAD"]),
        path=paths,
        authorization=wrong_tokens,
        body=st.one_of(st.none(), JUNK_BYTES),
    )
    def fuzz(method: str, path: str, authorization: str | None, body: bytes | None) -> None:
        headers = {} if authorization is None else {"Authorization": authorization}
        answer = api.request(method, path, headers=headers, content=body)
        scope_path = httpx.URL(BASE + path).path
        if scope_path in OPEN_PATHS:
            assert answer.status_code < 500, (method, path, answer.status_code)
        else:
            assert answer.status_code == 401, (method, path, authorization, answer.status_code)
            assert answer.headers.get("www-authenticate") == "Bearer"
        assert TOKEN not in answer.text

    fuzz()


def test_odd_headers_never_get_a_server_error(api: Api) -> None:
    header_values = st.text(
        alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=30
    )

    @FUZZ_SETTINGS
    @given(
        content_length=st.one_of(
            st.sampled_from(["-1", "abc", "", " 5", "1e3", "99999999999999999999", "0", "+5"]),
            header_values,
        ),
        content_type=header_values,
        extra=st.dictionaries(
            st.sampled_from(["x-forwarded-for", "host", "accept", "transfer-encoding", "expect"]),
            header_values,
            max_size=3,
        ),
    )
    def fuzz(content_length: str, content_type: str, extra: dict[str, str]) -> None:
        headers = {**AUTH, **extra, "content-type": content_type}
        # httpx sets Content-Length from the body; a header given explicitly replaces it.
        headers["content-length"] = content_length
        answer = api.request("POST", "/tasks", headers=headers, content=b'{"task_ids": ["h"]}')
        assert answer.status_code < 500, (headers, answer.status_code, answer.text[:200])

    fuzz()


# -- the 5xx the fuzzers found (fixed since), as fixed examples ----------------------------------


def _post(api: Api, path: str, body: bytes, content_type: str | None) -> httpx.Response:
    headers = dict(AUTH) if content_type is None else {**AUTH, "content-type": content_type}
    return api.request("POST", path, content=body, headers=headers)


BIG = str(2**63)  # one past SQLite's largest INTEGER


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("POST", f"/dead-letters/{BIG}/retry"),
        ("DELETE", f"/dead-letters/{BIG}"),
        ("DELETE", f"/dead-letters/-{BIG}1"),
        ("POST", "/dead-letters/99999999999999999999999/retry"),
    ],
)
def test_a_letter_id_beyond_64_bits_is_a_422(api: Api, method: str, url: str) -> None:
    """Was a 500: an unbounded ``letter_id`` reached SQLite, which raised OverflowError."""
    assert api.request(method, url, headers=AUTH).status_code == 422


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_a_non_finite_number_in_metadata_is_a_422(api: Api, token: str) -> None:
    """Was a 500: Python's JSON parser accepts NaN, Infinity and 1e400, /submit took them,
    and httpx then refused to serialise them for Mixpeek (a ValueError, not a MixpeekError)."""
    body = '{"collection_id": "c", "items": [{"kind": "text", "text": "t", "metadata": {"k": %s}}]}'
    assert _post(api, "/submit", (body % token).encode(), "application/json").status_code == 422


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/tasks", '{"task_ids": [NaN]}'),
        ("/tasks", '{"task_ids": ["a"], "extra": Infinity}'),
        ("/submit", '{"collection_id": "c", "items": [{"kind": "text", "text": "t"}], '
                    '"prevent_duplicate": -Infinity}'),
    ],
)  # fmt: skip
def test_a_non_finite_number_in_an_invalid_body_is_a_422(api: Api, path: str, body: str) -> None:
    """Was a 500: FastAPI's default 422 handler echoed the input and could not render NaN."""
    assert _post(api, path, body.encode(), "application/json").status_code == 422


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/tasks", '{"task_ids": ["\\ud800"]}'),
        ("/submit", '{"collection_id": "\\ud800", "items": [{"kind": "text", "text": "t"}]}'),
        ("/submit", '{"collection_id": "c", "items": [{"kind": "text", "text": "\\udfff"}]}'),
    ],
)
def test_a_lone_surrogate_is_a_422(api: Api, path: str, body: str) -> None:
    """Was a 500: the default 422 handler echoed the lone surrogate and could not encode it."""
    assert _post(api, path, body.encode(), "application/json").status_code == 422


@pytest.mark.parametrize("content_type", [None, "text/plain", "", "application/json"])
@pytest.mark.parametrize("path", ["/tasks", "/submit"])
def test_a_body_that_is_not_utf8_is_a_4xx(api: Api, path: str, content_type: str | None) -> None:
    """Was a 500 unless sent as JSON: not parsed, the raw bytes were echoed in the 422 and could
    not be decoded."""
    assert _post(api, path, b"\x80", content_type).status_code in (400, 422)


def test_the_openapi_document_gives_metrics_its_real_content_type(api: Api, schema: Any) -> None:
    """Was wrong: /metrics was documented as application/json (schemathesis: ST105)."""
    documented = set(schema.raw_schema["paths"]["/metrics"]["get"]["responses"]["200"]["content"])
    served = api.request("GET", "/metrics", headers=AUTH).headers["content-type"].split(";")[0]
    assert served in documented, (served, documented)
