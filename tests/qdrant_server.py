"""A Qdrant *server* stand-in for tests: Qdrant's REST routes on top of qdrant-client's local mode.

No Qdrant server can run on this machine, and embedded Qdrant is one process per folder. Tests in
which several product processes share one Qdrant point ``QDRANT_URL`` at this instead, so the
product's real server code path (``AsyncQdrantClient(url=...)`` over REST) runs over real HTTP.

It stands in for a server we cannot run; the product's logic is not tested *in* it. Each route
parses the body into its ``qdrant_client.http.models`` type, calls the local client, and wraps the
result in Qdrant's envelope. What it cannot reproduce (WAL, HNSW, ``wait=false`` visibility, real
payload indexes, clustering) is listed in ``docs/testing.md`` §3.

Start it::

    with QdrantStandIn() as qdrant:          # a subprocess; several clients may share it
        client = AsyncQdrantClient(url=qdrant.url, check_compatibility=False)
        qdrant.set_faults(mode="reject_points", reject_ids=[...])
        qdrant.requests()                     # [{method, path, query, status}, ...]

or ``python -m tests.qdrant_server --host 127.0.0.1 --port 0 [--path DIR]``.

Qdrant routes served: ``GET /``, ``/healthz``, ``/livez``, ``/readyz``; ``GET /collections``;
``GET|PUT|DELETE /collections/{c}``; ``GET /collections/{c}/exists``;
``PUT /collections/{c}/index``, ``DELETE /collections/{c}/index/{field}``;
``PUT|DELETE /collections/{c}/vectors/{name}``;
``GET /aliases``, ``GET /collections/{c}/aliases``, ``POST /collections/aliases``;
``PUT /collections/{c}/points`` (list or batch, ``update_filter``, ``update_mode``),
``POST /collections/{c}/points`` (retrieve), ``POST .../points/scroll``, ``.../points/count``,
``.../points/query``, ``.../points/delete``, ``PUT .../points/vectors``,
``POST|PUT .../points/payload`` (set / overwrite).

Divergences from a server that tests may meet: ``wait`` is accepted but every write is applied
before the answer (``wait=false`` answers ``acknowledged`` all the same); payload indexes are
accepted but unused and do not show in ``payload_schema``; collection settings other than
vectors, sparse vectors and metadata are ignored; an alias change is all-or-nothing (the server
applies its actions one by one); error texts are local mode's, mapped onto the server's codes
and prefixes; there is no API-key check.

Test-only routes (never faulted, never logged):

* ``POST /_test/faults`` ``{"mode": "none"|"down"|"reject_points"|"ambiguous"|"disk_full",
  "reject_ids": [...], "count": n}`` sets one fault, replacing the previous one; ``count`` is how
  many times it fires (default: until cleared, ``ambiguous``: once). ``GET /_test/faults`` shows it.
  - ``down``: every Qdrant route answers 503.
  - ``reject_points``: an upsert whose batch holds one of ``reject_ids`` answers 400
    ``Wrong input: ...`` and writes nothing.
  - ``ambiguous``: an upsert is applied, then answered 500.
  - ``disk_full``: an upsert answers 500 ``No space left on device`` and writes nothing; every
    other route (reads, the probe's collection list) answers as usual.
* ``GET /_test/requests``: ``[{method, path, query, status}]`` of the Qdrant requests seen, in
  the order they were answered;
  ``POST /_test/requests/reset`` clears it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import parse_qsl

import httpx
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, Field, TypeAdapter, ValidationError
from qdrant_client import QdrantClient
from qdrant_client.http import models

QDRANT_VERSION = "1.20.0"
READY_LINE = "Qdrant stand-in listening on "
#: Qdrant's default ``service.max_request_size_mb``.
MAX_BODY_BYTES = 32 * 1024 * 1024
#: Status for a body that is not valid JSON or does not match the route's model. The server
#: (src/actix/mod.rs, ``validation_error_handler``) answers these 400 "Format error in JSON body:
#: ...", and 422 "Validation error in JSON body: ..." only for bodies that parse but fail its
#: validators (such as ``limit: 0``).
FORMAT_ERROR_STATUS = 400
_U64_MAX = 2**64 - 1
_ROOT = Path(__file__).resolve().parent.parent

T = TypeVar("T")
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class QdrantError(Exception):
    """An error answer in Qdrant's shape: ``{"status": {"error": message}, "time": ...}``."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message


class Faults(BaseModel):
    #: ``disk_full``: point writes answer 500 (nothing applied), reads still answer.
    mode: Literal["none", "down", "reject_points", "ambiguous", "disk_full"] = "none"
    reject_ids: list[int | str] = Field(default_factory=list)
    #: How many more times the fault fires; ``None``: until cleared.
    count: int | None = None


class StandIn:
    """One local-mode client, the fault switch and the request log, shared by all requests."""

    def __init__(self, location: str) -> None:
        if location == ":memory:":
            self.client = QdrantClient(location=":memory:")
        else:
            # Handlers run on the event loop thread, but an app served from another thread (or
            # by a test's ASGI transport) must not trip SQLite's same-thread check; the lock
            # below serialises every call.
            self.client = QdrantClient(path=location, force_disable_check_same_thread=True)
        self.lock = threading.Lock()
        self.faults = Faults()
        self.requests: list[dict[str, Any]] = []
        self._operation_id = 0

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run one local-client call under the lock, with its errors turned into Qdrant's."""
        with self.lock, warnings.catch_warnings():
            # Local mode warns that payload indexes have no effect; a server would use them.
            warnings.simplefilter("ignore", UserWarning)
            try:
                return fn(*args, **kwargs)
            except ValueError as exc:
                raise _translate(exc) from exc
            except RuntimeError as exc:
                raise QdrantError(500, f"Service internal error: {exc}") from exc

    def update_result(self, request: Request) -> dict[str, Any]:
        self._operation_id += 1
        wait = request.query_params.get("wait", "false").lower() == "true"
        # Local mode always applies synchronously; answer as the server would for ``wait``.
        return {
            "operation_id": self._operation_id,
            "status": "completed" if wait else "acknowledged",
        }

    def fire(self, mode: str) -> bool:
        """True if fault ``mode`` is set and fires now (using up one of its ``count``)."""
        with self.lock:
            if self.faults.mode != mode:
                return False
            if self.faults.count is not None:
                if self.faults.count <= 0:
                    return False
                self.faults.count -= 1
                if self.faults.count == 0:
                    self.faults = Faults()
            return True


def _translate(exc: ValueError) -> QdrantError:
    """Local mode's ValueError → the server's status code and message."""
    message = str(exc)
    if m := re.fullmatch(r"Collection (.+) not found", message):
        return QdrantError(404, f"Not found: Collection `{m[1]}` doesn't exist!")
    if m := re.fullmatch(r"(Collection|Alias) (.+) already exists", message):
        return QdrantError(409, f"Wrong input: {m[1]} `{m[2]}` already exists!")
    if m := re.fullmatch(r"Alias (.+) does not exist", message):
        return QdrantError(404, f"Not found: Alias `{m[1]}` doesn't exist!")
    if m := re.fullmatch(r"Point (.+) is not found in the collection", message):
        return QdrantError(404, f"Not found: No point with id {m[1]} found")
    if re.match(r"(limit|offset|group_size) value .* is invalid", message):
        return QdrantError(422, f"Validation error in JSON body: {message}")
    if not message.startswith(("Wrong input:", "Bad request:", "Not found:")):
        message = f"Wrong input: {message}"
    return QdrantError(400, message)


# -- request bodies and results ------------------------------------------------------------

_ADAPTERS: dict[Any, TypeAdapter[Any]] = {}


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


async def parse_body(request: Request, model: Any) -> Any:
    """The request body as ``model``, or a 400 like the server's serde errors."""
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise QdrantError(
            400,
            f"JSON payload ({len(raw)} bytes) is larger than allowed"
            f" (limit: {MAX_BODY_BYTES} bytes).",
        )
    try:
        # The server's JSON parser has no NaN/Infinity; Python's json would accept them.
        data = json.loads(raw or b"null", parse_constant=_reject_constant)
    except ValueError as exc:
        raise QdrantError(FORMAT_ERROR_STATUS, f"Format error in JSON body: {exc}") from exc
    adapter = _ADAPTERS.get(model)
    if adapter is None:
        adapter = _ADAPTERS[model] = TypeAdapter(model)
    try:
        return adapter.validate_python(data)
    except ValidationError as exc:
        details = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5]
        )
        raise QdrantError(FORMAT_ERROR_STATUS, f"Format error in JSON body: {details}") from exc


def check_ids(ids: list[models.ExtendedPointId]) -> None:
    """Point ids the server accepts: unsigned 64-bit integers or UUIDs (local mode takes any)."""
    for point_id in ids:
        valid = True
        if isinstance(point_id, int):
            valid = 0 <= point_id <= _U64_MAX
        elif isinstance(point_id, str):
            try:
                uuid.UUID(point_id)
            except ValueError:
                valid = False
        if not valid:
            raise QdrantError(
                FORMAT_ERROR_STATUS,
                f"Format error in JSON body: value {point_id} is not a valid point ID",
            )


def canonical_id(point_id: object) -> str:
    """One spelling per point id, so fault ``reject_ids`` match however a client wrote them."""
    if isinstance(point_id, uuid.UUID):
        return str(point_id)
    if isinstance(point_id, str):
        try:
            return str(uuid.UUID(point_id))
        except ValueError:
            return point_id
    return str(point_id)


def dump(value: Any) -> Any:
    """A local-mode result as the JSON the server would send (models without unset fields)."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", exclude_unset=True)
    if isinstance(value, list | tuple):
        return [dump(v) for v in value]
    return value


def ok(result: Any, started: float) -> JSONResponse:
    return JSONResponse(
        {"result": dump(result), "status": "ok", "time": round(time.perf_counter() - started, 6)}
    )


def error_response(status_code: int, message: str) -> JSONResponse:
    return JSONResponse(
        {"result": None, "status": {"error": message}, "time": 0.0}, status_code=status_code
    )


def _selector(
    points: list[models.ExtendedPointId] | None, filter_: models.Filter | None
) -> list[models.ExtendedPointId] | models.Filter:
    if points is not None:
        check_ids(points)
        return points
    if filter_ is not None:
        return filter_
    raise QdrantError(
        FORMAT_ERROR_STATUS,
        "Format error in JSON body: Either list of point ids or filter must be provided",
    )


# -- fault gate and request log --------------------------------------------------------------


class _Gate:
    """ASGI middleware: answers 503 while ``down`` and logs every Qdrant request."""

    def __init__(self, app: ASGIApp, *, state: StandIn) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/_test/"):
            await self.app(scope, receive, send)
            return
        entry: dict[str, Any] = {
            "method": scope["method"],
            "path": scope["path"],
            "query": dict(parse_qsl(scope.get("query_string", b"").decode())),
            "status": None,
        }

        async def logged_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                # Logged before the answer leaves, so a client that reads the log right after
                # its call always finds the call there.
                entry["status"] = message["status"]
                self.state.requests.append(entry)
            await send(message)

        if self.state.fire("down"):
            response = error_response(503, "Service Unavailable: stand-in fault 'down'")
            await response(scope, receive, logged_send)
            return
        await self.app(scope, receive, logged_send)


# -- the app ---------------------------------------------------------------------------------


def create_app(location: str = ":memory:") -> FastAPI:
    """The stand-in's ASGI app over ``QdrantClient(location)`` (``":memory:"`` or a folder)."""
    state = StandIn(location)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        with state.lock:
            state.client.close()

    app = FastAPI(title="Qdrant stand-in", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.stand_in = state
    client = state.client

    @app.exception_handler(QdrantError)
    async def qdrant_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, QdrantError)
        return error_response(exc.status_code, exc.message)

    @app.exception_handler(Exception)
    async def internal_error(_: Request, exc: Exception) -> Response:
        return error_response(500, f"Service internal error: {type(exc).__name__}: {exc}")

    # -- service

    @app.get("/")
    async def root() -> dict[str, str]:
        return {"title": "qdrant - vector search engine", "version": QDRANT_VERSION}

    @app.get("/healthz", response_class=PlainTextResponse)
    @app.get("/livez", response_class=PlainTextResponse)
    async def healthz() -> str:
        return "healthz check passed"

    @app.get("/readyz", response_class=PlainTextResponse)
    async def readyz() -> str:
        return "all shards are ready"

    # -- collections

    @app.get("/collections")
    async def get_collections() -> Response:
        t = time.perf_counter()
        return ok(state.call(client.get_collections), t)

    @app.get("/collections/{name}")
    async def get_collection(name: str) -> Response:
        t = time.perf_counter()
        return ok(state.call(client.get_collection, name), t)

    @app.get("/collections/{name}/exists")
    async def collection_exists(name: str) -> Response:
        t = time.perf_counter()
        return ok({"exists": state.call(client.collection_exists, name)}, t)

    @app.put("/collections/{name}")
    async def create_collection(name: str, request: Request) -> Response:
        t = time.perf_counter()
        body: models.CreateCollection = await parse_body(request, models.CreateCollection)
        # hnsw, optimizer, quantization, sharding and WAL settings have no local equivalent.
        result = state.call(
            client.create_collection,
            name,
            vectors_config=body.vectors,
            sparse_vectors_config=body.sparse_vectors,
            metadata=body.metadata,
        )
        return ok(result, t)

    @app.delete("/collections/{name}")
    async def delete_collection(name: str) -> Response:
        t = time.perf_counter()
        return ok(state.call(client.delete_collection, name), t)

    @app.put("/collections/{name}/index")
    async def create_field_index(name: str, request: Request) -> Response:
        t = time.perf_counter()
        body: models.CreateFieldIndex = await parse_body(request, models.CreateFieldIndex)
        state.call(client.create_payload_index, name, body.field_name, body.field_schema)
        return ok(state.update_result(request), t)

    @app.delete("/collections/{name}/index/{field_name}")
    async def delete_field_index(name: str, field_name: str, request: Request) -> Response:
        t = time.perf_counter()
        state.call(client.delete_payload_index, name, field_name)
        return ok(state.update_result(request), t)

    @app.put("/collections/{name}/vectors/{vector_name}")
    async def create_vector_name(name: str, vector_name: str, request: Request) -> Response:
        t = time.perf_counter()
        body: models.VectorNameConfig = await parse_body(request, models.VectorNameConfig)
        state.call(client.create_vector_name, name, vector_name, body)
        return ok(state.update_result(request), t)

    @app.delete("/collections/{name}/vectors/{vector_name}")
    async def delete_vector_name(name: str, vector_name: str, request: Request) -> Response:
        t = time.perf_counter()
        state.call(client.delete_vector_name, name, vector_name)
        return ok(state.update_result(request), t)

    # -- aliases

    @app.get("/aliases")
    async def get_aliases() -> Response:
        t = time.perf_counter()
        return ok(state.call(client.get_aliases), t)

    @app.get("/collections/{name}/aliases")
    async def get_collection_aliases(name: str) -> Response:
        t = time.perf_counter()
        state.call(client.get_collection, name)  # 404 for a missing collection
        return ok(state.call(client.get_collection_aliases, name), t)

    @app.post("/collections/aliases")
    async def update_aliases(request: Request) -> Response:
        t = time.perf_counter()
        body: models.ChangeAliasesOperation = await parse_body(
            request, models.ChangeAliasesOperation
        )
        return ok(state.call(client.update_collection_aliases, body.actions), t)

    # -- points

    @app.put("/collections/{name}/points")
    async def upsert_points(name: str, request: Request) -> Response:
        t = time.perf_counter()
        body: models.PointInsertOperations = await parse_body(request, models.PointInsertOperations)
        if isinstance(body, models.PointsList):
            points: models.Batch | list[models.PointStruct] = body.points
            ids = [p.id for p in body.points]
        else:
            points = body.batch
            ids = list(body.batch.ids)
        check_ids(ids)
        if state.fire("disk_full"):
            raise QdrantError(500, "Service internal error: No space left on device (os error 28)")
        rejected = {canonical_id(i) for i in state.faults.reject_ids}
        hit = next((i for i in ids if canonical_id(i) in rejected), None)
        if hit is not None and state.fire("reject_points"):
            raise QdrantError(400, f"Wrong input: stand-in fault 'reject_points': point {hit}")
        state.call(
            client.upsert,
            name,
            points,
            update_filter=body.update_filter,
            update_mode=body.update_mode,
        )
        result = state.update_result(request)
        if state.fire("ambiguous"):
            raise QdrantError(
                500, "Service internal error: stand-in fault 'ambiguous' (the write was applied)"
            )
        return ok(result, t)

    @app.post("/collections/{name}/points")
    async def retrieve_points(name: str, request: Request) -> Response:
        t = time.perf_counter()
        body: models.PointRequest = await parse_body(request, models.PointRequest)
        check_ids(body.ids)
        records = state.call(
            client.retrieve,
            name,
            body.ids,
            with_payload=True if body.with_payload is None else body.with_payload,
            with_vectors=False if body.with_vector is None else body.with_vector,
        )
        return ok(records, t)

    @app.post("/collections/{name}/points/scroll")
    async def scroll_points(name: str, request: Request) -> Response:
        t = time.perf_counter()
        body: models.ScrollRequest = await parse_body(request, models.ScrollRequest)
        if body.offset is not None:
            check_ids([body.offset])
        records, next_offset = state.call(
            client.scroll,
            name,
            scroll_filter=body.filter,
            limit=10 if body.limit is None else body.limit,
            order_by=body.order_by,
            offset=body.offset,
            with_payload=True if body.with_payload is None else body.with_payload,
            with_vectors=False if body.with_vector is None else body.with_vector,
        )
        return ok(models.ScrollResult(points=records, next_page_offset=next_offset), t)

    @app.post("/collections/{name}/points/count")
    async def count_points(name: str, request: Request) -> Response:
        t = time.perf_counter()
        body: models.CountRequest = await parse_body(request, models.CountRequest)
        exact = True if body.exact is None else body.exact
        return ok(state.call(client.count, name, count_filter=body.filter, exact=exact), t)

    @app.post("/collections/{name}/points/query")
    async def query_points(name: str, request: Request) -> Response:
        t = time.perf_counter()
        body: models.QueryRequest = await parse_body(request, models.QueryRequest)
        response = state.call(
            client.query_points,
            name,
            query=body.query,
            using=body.using,
            prefetch=body.prefetch,
            query_filter=body.filter,
            search_params=body.params,
            limit=10 if body.limit is None else body.limit,
            offset=body.offset,
            with_payload=False if body.with_payload is None else body.with_payload,
            with_vectors=False if body.with_vector is None else body.with_vector,
            score_threshold=body.score_threshold,
            lookup_from=body.lookup_from,
        )
        return ok(response, t)

    @app.post("/collections/{name}/points/delete")
    async def delete_points(name: str, request: Request) -> Response:
        t = time.perf_counter()
        body: models.PointsSelector = await parse_body(request, models.PointsSelector)
        if isinstance(body, models.PointIdsList):
            check_ids(body.points)
        state.call(client.delete, name, body)
        return ok(state.update_result(request), t)

    @app.put("/collections/{name}/points/vectors")
    async def update_vectors(name: str, request: Request) -> Response:
        t = time.perf_counter()
        body: models.UpdateVectors = await parse_body(request, models.UpdateVectors)
        check_ids([p.id for p in body.points])
        state.call(client.update_vectors, name, body.points, update_filter=body.update_filter)
        return ok(state.update_result(request), t)

    @app.post("/collections/{name}/points/payload")
    async def set_payload(name: str, request: Request) -> Response:
        t = time.perf_counter()
        body: models.SetPayload = await parse_body(request, models.SetPayload)
        selector = _selector(body.points, body.filter)
        state.call(client.set_payload, name, body.payload, selector, key=body.key)
        return ok(state.update_result(request), t)

    @app.put("/collections/{name}/points/payload")
    async def overwrite_payload(name: str, request: Request) -> Response:
        t = time.perf_counter()
        body: models.SetPayload = await parse_body(request, models.SetPayload)
        selector = _selector(body.points, body.filter)
        state.call(client.overwrite_payload, name, body.payload, selector)
        return ok(state.update_result(request), t)

    @app.post("/collections/{name}/points/batch")
    async def batch_update(name: str, request: Request) -> Response:
        t = time.perf_counter()
        body: models.UpdateOperations = await parse_body(request, models.UpdateOperations)
        state.call(client.batch_update_points, name, body.operations)
        return ok([state.update_result(request) for _ in body.operations], t)

    # -- test hooks (no faults, not logged)

    @app.post("/_test/faults")
    async def set_faults(request: Request) -> Response:
        try:
            faults = Faults.model_validate_json(await request.body() or b"{}")
        except ValidationError as exc:
            return error_response(422, str(exc))
        if faults.mode == "ambiguous" and faults.count is None:
            faults.count = 1
        with state.lock:
            state.faults = Faults() if faults.mode == "none" else faults
            return JSONResponse(state.faults.model_dump(mode="json"))

    @app.get("/_test/faults")
    async def get_faults() -> Response:
        return JSONResponse(state.faults.model_dump(mode="json"))

    @app.get("/_test/requests")
    async def get_requests() -> Response:
        return JSONResponse(list(state.requests))

    @app.post("/_test/requests/reset")
    async def reset_requests() -> Response:
        state.requests.clear()
        return JSONResponse([])

    app.add_middleware(_Gate, state=state)
    return app


# -- running it ------------------------------------------------------------------------------


async def _serve(app: Any, sock: socket.socket, host: str) -> int:
    config = uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False)
    server = uvicorn.Server(config)
    stop = threading.Event()

    def request_stop(signum: int, frame: object) -> None:
        stop.set()
        server.should_exit = True

    # uvicorn captures SIGINT/SIGTERM while serving and re-raises them to the handler that was
    # there before once it has shut down; make that handler a quiet one, so the exit code is 0.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, request_stop)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            await task
            return 1
        await asyncio.sleep(0.005)
    port = sock.getsockname()[1]
    print(f"{READY_LINE}http://{host}:{port}", flush=True)
    if stop.is_set():
        server.should_exit = True
    await task
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Qdrant REST stand-in over qdrant-client local mode"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--path", default=None, help="persist in this folder (default: in memory)")
    args = parser.parse_args(argv)
    # IPPROTO_TCP, not 0: with proto 0 Python never sets TCP_NODELAY on accepted sockets, and
    # each keep-alive request would wait ~40 ms for a delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(128)
    sock.set_inheritable(True)
    app = create_app(args.path or ":memory:")
    return asyncio.run(_serve(app, sock, args.host))


class QdrantStandIn:
    """Runs the stand-in as a subprocess for the length of a ``with`` block.

    ``.url`` is its base URL and ``.process`` the ``Popen``; several product processes may share
    it. With ``path`` it persists there, and a later stand-in on the same path sees the data.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, *, startup_timeout: float = 30):
        self.path = None if path is None else str(path)
        self.startup_timeout = startup_timeout
        self.url = ""
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> QdrantStandIn:
        command = [
            sys.executable,
            "-m",
            "tests.qdrant_server",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
        ]
        if self.path is not None:
            command += ["--path", self.path]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_ROOT), env.get("PYTHONPATH", "")) if p)
        self.process = subprocess.Popen(
            command, cwd=_ROOT, env=env, stdout=subprocess.PIPE, text=True
        )
        lines: queue.Queue[str] = queue.Queue()
        stdout = self.process.stdout
        assert stdout is not None
        threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True).start()
        try:
            line = lines.get(timeout=self.startup_timeout)
        except queue.Empty:
            self.stop()
            raise RuntimeError("the Qdrant stand-in did not start in time") from None
        if not line.startswith(READY_LINE):
            self.stop()
            raise RuntimeError(f"the Qdrant stand-in failed to start: {line!r}")
        self.url = line[len(READY_LINE) :].strip()
        return self

    def stop(self, timeout: float = 10) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; returns the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        return self.process.returncode

    def __enter__(self) -> QdrantStandIn:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- test hooks

    def _http(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=10)

    def set_faults(
        self, mode: str = "none", *, reject_ids: list[Any] | None = None, count: int | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"mode": mode, "reject_ids": [str(i) for i in reject_ids or []]}
        if count is not None:
            body["count"] = count
        with self._http() as http:
            result: dict[str, Any] = http.post("/_test/faults", json=body).raise_for_status().json()
        return result

    def clear_faults(self) -> None:
        self.set_faults("none")

    def requests(self) -> list[dict[str, Any]]:
        with self._http() as http:
            result: list[dict[str, Any]] = http.get("/_test/requests").raise_for_status().json()
        return result

    def reset_requests(self) -> None:
        with self._http() as http:
            http.post("/_test/requests/reset").raise_for_status()


if __name__ == "__main__":
    sys.exit(main())
