"""Request plumbing for the Mixpeek client: one policy for every call, whatever the endpoint.

:class:`MixpeekHttp` owns the pooled ``httpx.AsyncClient`` and runs every request through
:meth:`MixpeekHttp.call`: one :class:`RetryPolicy` (tenacity underneath) around
:meth:`MixpeekHttp._attempt`. An attempt is one HTTP exchange under an overall ``asyncio.timeout``:
httpx's read timeout is per chunk, so a slow-drip answer would otherwise never time out
(docs/contract.md §6.2). ``Retry-After`` (or ``details.retry_after``) raises the backoff wait. Body
parsing happens inside the attempt, so a truncated 200 is retried like any other transient failure.
Non-2xx answers become typed :mod:`~sync_service.upstream.errors` errors, with the API key redacted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import httpx
import orjson
from pydantic import ValidationError
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception

from sync_service.upstream.admission import FETCH, LIST, Admission
from sync_service.upstream.errors import (
    MixpeekBadResponse,
    MixpeekError,
    MixpeekTransportError,
    error_from_response,
)
from sync_service.upstream.outage import MixpeekUnavailable, Outage
from sync_service.upstream.retry_policy import RandomSource, RetryPolicy
from sync_service.upstream.transport import AiohttpClient, pooled_transport

__all__ = ["MixpeekHttp", "RandomSource", "RequestObserver", "RetryPolicy"]

# One name for both API generations' requests (this plumbing serves the 2024 and the v1
# client): it was "sync_service.upstream.gen_b.client", which told a v1 user the wrong API.
log = logging.getLogger("sync_service.upstream")
R = TypeVar("R")


class RequestObserver(Protocol):
    """Hook for metrics. ``endpoint`` is a route template such as ``"GET /tasks/{task_id}"``."""

    def on_response(self, endpoint: str, status: int | None, elapsed: float) -> None:
        """After every attempt; ``status`` is None when no HTTP answer arrived."""

    def on_retry(self, endpoint: str, attempt: int, wait: float, reason: str) -> None:
        """Before each backoff wait; ``attempt`` is the 1-based attempt that failed."""


class _NoObserver:
    def on_response(self, endpoint: str, status: int | None, elapsed: float) -> None:
        pass

    def on_retry(self, endpoint: str, attempt: int, wait: float, reason: str) -> None:
        pass


def _retry_reason(error: BaseException | None) -> str:
    # Low-cardinality labels, fit for a metrics counter.
    if isinstance(error, MixpeekError) and error.status is not None:
        return f"http_{error.status}"
    if isinstance(error, MixpeekBadResponse):
        return "bad_response"
    if isinstance(error, MixpeekTransportError):
        return f"transport:{error.error_type or 'error'}"
    return type(error).__name__


def _is_retryable(error: BaseException) -> bool:
    return isinstance(error, MixpeekError) and error.retryable


class MixpeekHttp:
    """The pooled ``httpx.AsyncClient`` plus the retry loop, concurrency slot and error mapping.

    ``secret`` is only used to redact the API key from error texts; the caller puts it in
    ``headers``. ``outage`` is the process's breaker, which this client feeds and probes
    through; ``probe_path`` the route its probe asks (any answer below 500 proves upstream
    there).
    """

    def __init__(
        self,
        *,
        base_url: str,
        headers: dict[str, str],
        secret: str,
        policy: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        max_in_flight: int | None = None,
        rate_limit_per_minute: float | None = None,
        observer: RequestObserver | None = None,
        timeout: httpx.Timeout | None = None,
        outage: Outage | None = None,
        probe_path: str = "/",
    ) -> None:
        self._secret = secret
        # A breaker given (the daemon's) is fed and probed through this client; without one the
        # client keeps a detached breaker that never opens, so a one-shot command reports
        # the error it met, as before.
        self.outage = outage if outage is not None else Outage()
        self._probe: Callable[[], Awaitable[str | None]] = lambda: self.probe(probe_path)
        if outage is not None:
            outage.attach(self._probe)
        if max_in_flight is not None and max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        size = max_in_flight or 20
        limits = httpx.Limits(
            max_connections=size, max_keepalive_connections=size, keepalive_expiry=30.0
        )
        self._http = AiohttpClient(
            base_url=base_url,
            headers=headers,
            timeout=timeout or httpx.Timeout(connect=10.0, read=30.0, write=30.0, pool=30.0),
            # aiohttp's pool and parser under httpx (see transport.py). With proxy
            # variables set, httpx's own transport (built from ``limits``) is kept so that it
            # honours them.
            limits=limits,
            transport=transport or pooled_transport(size),
            follow_redirects=True,
        )
        # httpx parses a relative URL, then the merged one, then again with its params:
        # built whole here, a request's URL is parsed once (~0.1 ms less CPU per request).
        base = str(self._http.base_url)  # "http://host" for a root path, else ends in "/"
        self._base = base if base.endswith("/") else base + "/"
        self._policy = policy or RetryPolicy()
        self._admission = Admission(max_in_flight, rate_limit_per_minute)
        self._observer: RequestObserver = observer or _NoObserver()

    @property
    def base_url(self) -> httpx.URL:
        return self._http.base_url

    async def aclose(self) -> None:
        """Close the connection pool (and stop probing through it)."""
        await self.outage.detach(self._probe)
        await self._http.aclose()

    async def call(
        self,
        method: str,
        template: str,
        path_params: dict[str, str],
        parse: Callable[[Any], R],
        *,
        params: dict[str, Any] | None = None,
        json_body: Any = None,
        expect_json: bool = True,
        priority: int = FETCH,
    ) -> R:
        """One logical call: attempts under the retry policy; raises the last typed error."""
        policy = self._policy
        endpoint = f"{method} {template}"
        path = template.format(**path_params)
        deadline = policy.clock() + policy.call_deadline

        met: list[MixpeekError] = []  # what this call's last attempt met, for the message

        async def attempt() -> R:
            if self.outage.is_open:  # checked before each attempt: retry loops end too
                last = f"; its last attempt: {met[-1]}" if met else ""
                raise MixpeekUnavailable(
                    f"{self.outage.describe()}; request not sent{last}",
                    error_type="Unavailable",
                    endpoint=endpoint,
                )
            budget = min(policy.attempt_timeout, deadline - policy.clock())
            try:
                response = await self._attempt(
                    method, path, endpoint, params, json_body, budget, priority
                )
                return self._parse(response, endpoint, parse, expect_json)
            except MixpeekError as exc:
                met[:] = [exc]
                raise

        def wait(state: RetryCallState) -> float:
            error = state.outcome.exception() if state.outcome else None
            return policy.wait_for(state.attempt_number, error)

        def stop(state: RetryCallState) -> bool:
            # Runs after wait(): never start a wait that would overrun the call's deadline.
            if state.attempt_number >= policy.max_attempts:
                return True
            return policy.clock() + state.upcoming_sleep > deadline

        def before_sleep(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            reason = _retry_reason(error)
            # A first failure that the retry fixes is routine on a flaky network: at INFO, 10 %
            # of 5xx made a line per ten requests (dozens a second in the daemon, a screenful
            # above `verify`'s progress bar). It stays in the metric; a second failure is a line.
            log.log(
                logging.DEBUG if state.attempt_number == 1 else logging.INFO,
                "Mixpeek %s: attempt %d failed (%s); retrying in %.2f s",
                endpoint, state.attempt_number, reason, state.upcoming_sleep,
            )  # fmt: skip
            with contextlib.suppress(Exception):  # metrics must never break a request
                self._observer.on_retry(
                    endpoint, state.attempt_number, state.upcoming_sleep, reason
                )

        # The first attempt runs bare: most calls succeed at once, and building and driving an
        # AsyncRetrying cost about 5 % of the daemon's event loop in the benchmark's profile.
        try:
            return await attempt()
        except Exception as exc:
            if not _is_retryable(exc) or policy.max_attempts == 1:
                raise
            failed_first: list[Exception] = [exc]

        async def replay_then_attempt() -> R:
            # Tenacity sees the first failure as its own attempt 1, so its waits, logs and
            # metrics are those of a call it had run from the start.
            if failed_first:
                raise failed_first.pop()
            return await attempt()

        # A fresh AsyncRetrying per call: tenacity keeps per-run state on the object.
        retrying = AsyncRetrying(
            sleep=policy.sleep,
            stop=stop,
            wait=wait,
            retry=retry_if_exception(_is_retryable),
            before_sleep=before_sleep,
            reraise=True,
        )
        result: R = await retrying(replay_then_attempt)
        return result

    async def _attempt(
        self,
        method: str,
        path: str,
        endpoint: str,
        params: dict[str, Any] | None,
        json_body: Any,
        budget: float,
        priority: int,
    ) -> httpx.Response:
        """One HTTP exchange, body included, within ``budget`` seconds and an admission slot."""
        # (A query, a fragment or a "//" start in the path are read differently relative:
        # those are left to httpx's merge.)
        if "?" in path or "#" in path or path.startswith("//"):
            request = self._http.build_request(method, path, params=params, json=json_body)
        else:
            query = f"?{httpx.QueryParams(params)}" if params else ""
            url = httpx.URL(f"{self._base}{path.lstrip('/')}{query}")
            request = self._http.build_request(method, url, json=json_body)
        failure: MixpeekError | None = None
        cause: BaseException | None = None
        response: httpx.Response | None = None
        # Held for the exchange only, never during a backoff sleep.
        async with self._admission.slot(priority):
            started = time.perf_counter()  # after the slot: observe upstream latency only
            try:
                if budget <= 0:
                    raise TimeoutError
                async with asyncio.timeout(budget):
                    response = await self._http.send(request)  # reads the whole body
            except httpx.HTTPError as exc:
                text = self._redact(str(exc)) or type(exc).__name__
                retryable = not isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL)
                failure = MixpeekTransportError(
                    text, error_type=type(exc).__name__, endpoint=endpoint, retryable=retryable
                )
                # Chain for debugging unless the text would carry the key.
                cause = exc if text == str(exc) else None
            except TimeoutError:
                failure = MixpeekTransportError(
                    f"no complete answer within {max(budget, 0):.3g} s",
                    error_type="AttemptDeadline",
                    endpoint=endpoint,
                )
        elapsed = time.perf_counter() - started
        status = response.status_code if response is not None else None
        if status is not None and status < 500:
            self.outage.answered()
        else:
            self.outage.failed()
        if status == 429:
            self._admission.rate_limited()
        elif status is not None and status < 400:
            self._admission.succeeded()
        with contextlib.suppress(Exception):
            self._observer.on_response(endpoint, status, elapsed)
        if failure is not None:
            raise failure from cause  # raised outside the except: no implicit __context__
        assert response is not None
        return response

    async def probe(self, path: str) -> str | None:
        """One attempt, no retry, at the front of the queue: None when upstream answered
        (any status below 500), else why it did not."""
        budget = min(self._policy.attempt_timeout, 10.0)
        try:
            response = await self._attempt("GET", path, "probe", None, None, budget, LIST)
        except MixpeekError as exc:
            return str(exc)
        if response.status_code >= 500:
            return f"GET {path} answered {response.status_code}"
        return None

    def _parse(
        self, response: httpx.Response, endpoint: str, parse: Callable[[Any], R], expect_json: bool
    ) -> R:
        status = response.status_code
        if not 200 <= status < 300:
            raise error_from_response(
                status,
                self._redact_bytes(response.content),
                content_type=response.headers.get("content-type"),
                retry_after_header=response.headers.get("retry-after"),
                endpoint=endpoint,
            )
        if not expect_json:
            return parse(None)
        try:
            data = _loads(response.content)
        except ValueError:
            snippet = self._redact(response.content[:80].decode("utf-8", "replace"))
            raise MixpeekBadResponse(
                f"answer is not valid JSON: {snippet!r}", status=status, endpoint=endpoint
            ) from None
        data = self._unwrap(data, endpoint)
        try:
            return parse(data)
        except MixpeekBadResponse as exc:
            raise MixpeekBadResponse(exc.message, status=status, endpoint=endpoint) from None
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "(root)"
            raise MixpeekBadResponse(
                f"unexpected answer shape: {where}: {first['msg']}",
                status=status,
                endpoint=endpoint,
            ) from None

    def _unwrap(self, data: Any, endpoint: str) -> Any:
        """Strip the Mar-2024 ``{success, status, error, response}`` envelope when present."""
        if not isinstance(data, dict) or "success" not in data:
            return data
        if data.get("success") is False and data.get("error"):
            code = data.get("status")
            code = code if isinstance(code, int) and 400 <= code < 600 else 500
            raw = self._redact_bytes(json.dumps(data).encode())
            raise error_from_response(code, raw, endpoint=endpoint)
        if data.get("success") is True and isinstance(data.get("response"), dict):
            return data["response"]
        return data

    # Keys shorter than this (test keys like "k") would mangle every word that contains them.
    _MIN_REDACT = 8

    def _redact(self, text: str) -> str:
        if len(self._secret) < self._MIN_REDACT:
            return text
        return text.replace(self._secret, "***")

    def _redact_bytes(self, content: bytes) -> bytes:
        if len(self._secret) < self._MIN_REDACT:
            return content
        return content.replace(self._secret.encode(), b"***")


def _loads(body: bytes) -> Any:
    """Decode JSON: orjson is ~10x faster on a feature's float arrays (the hot path), and
    the standard library still reads what orjson refuses (``NaN``/``Infinity`` literals), so a
    poisoned vector stays one feature's dead letter instead of a broken answer."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return json.loads(body)
