"""The API version probe, sent in a thread with the standard library as soon as ``run`` has
read its settings.

Under ``MIXPEEK_API_VERSION=auto`` every call waits for the API version (upstream/auto.py),
so ``run``'s first polls leave when it is known. Asked through the HTTP client, the probe
waited for the client's modules (aiohttp and httpx: 0.1 s here); asked here, its round trip
overlaps their loading, and the first polls leave one round trip sooner.

It is the client's probe, made once: ``GET /v1/health`` with the v1 client's headers and, over
TLS, its context (httpx's: the CA bundle, ``SSL_CERT_FILE``), the answer read by the same
rules (``error_from_response``, then :func:`version_for`). One attempt; no redirect followed
(an answer from elsewhere decides nothing, and the key goes to Mixpeek's origin only); not
tried when proxy variables are set (the client's way through them is httpx's). What decides
nothing (no answer, a 5xx, a refused key, a redirect) leaves the choice to the first call,
which probes through the client, with its retries and the process's breaker.
"""

from __future__ import annotations

import logging
import threading
import urllib.error
import urllib.request
from concurrent.futures import Future
from dataclasses import dataclass

from sync_service.settings import MixpeekApiVersion, Settings
from sync_service.upstream.errors import (
    MixpeekBadRequest,
    MixpeekError,
    MixpeekNotFound,
    error_from_response,
)
from sync_service.upstream.headers import v1_headers

__all__ = ["HEALTH", "Probed", "probe", "start_probe", "version_for"]

log = logging.getLogger(__name__)

#: v1's health route: a v1 server answers it, the 2024 API has no ``/v1/`` routes.
HEALTH = "/v1/health"
ENDPOINT = f"GET {HEALTH}"
#: Enough of an error's body to tell a refused key from a missing route.
_BODY_LIMIT = 64 * 1024


@dataclass(frozen=True)
class Probed:
    """What a probe decided: the version, or None; and a wait the server asked for."""

    version: MixpeekApiVersion | None
    retry_after: float | None = None


def version_for(error: MixpeekError | None) -> MixpeekApiVersion | None:
    """The version a probe's outcome tells: an answer (no error) is v1's; a 404 or another
    request error (400, 405, 422) means no ``/v1/`` routes, so 2024; anything else (a 5xx,
    a refused key, no answer) decides nothing."""
    if error is None:
        return MixpeekApiVersion.v1
    if isinstance(error, MixpeekNotFound | MixpeekBadRequest):
        return MixpeekApiVersion.v2024
    return None


def start_probe(settings: Settings) -> Future[Probed]:
    """:func:`probe`, under way in a thread. The future never fails, and cancelling a wait
    for it leaves it be (the thread cannot be stopped; it ends with its one attempt)."""
    done: Future[Probed] = Future()
    done.set_running_or_notify_cancel()
    if settings.mixpeek_api_url.startswith("https://"):
        # Loaded here, for the TLS context: the thread then imports nothing while this one
        # goes on importing (two threads importing at once can deadlock on a module cycle).
        import httpx  # noqa: F401
    threading.Thread(
        target=lambda: done.set_result(probe(settings)), name="api-probe", daemon=True
    ).start()
    return done


def probe(settings: Settings) -> Probed:
    """One ``GET /v1/health`` (blocking), and what it decided: nothing, on any failure."""
    if urllib.request.getproxies():
        return Probed(None)
    try:
        return _ask(settings)
    except Exception as exc:  # no answer: the first call probes through the client
        log.debug("early API version probe: no answer (%s)", type(exc).__name__)
        return Probed(None)


def _ask(settings: Settings) -> Probed:
    headers, _ = v1_headers(settings.mixpeek_api_key, settings.mixpeek_namespace)
    url = settings.mixpeek_api_url + HEALTH  # the setting holds no trailing slash
    handlers: list[urllib.request.BaseHandler] = [
        urllib.request.ProxyHandler({}),
        _NoRedirect(),
    ]
    if url.startswith("https://"):
        import httpx  # the client's TLS context (loaded by start_probe, or here when called)

        handlers.append(urllib.request.HTTPSHandler(context=httpx.create_ssl_context()))
    opener = urllib.request.build_opener(*handlers)
    try:
        request = urllib.request.Request(url, headers=headers)
        with opener.open(request, timeout=settings.http_timeout):
            return Probed(version_for(None))
    except urllib.error.HTTPError as answer:  # every status but 2xx (3xx included)
        with answer:
            error = error_from_response(
                answer.code,
                answer.read(_BODY_LIMIT),
                content_type=answer.headers.get("Content-Type"),
                retry_after_header=answer.headers.get("Retry-After"),
                endpoint=ENDPOINT,
            )
        return Probed(version_for(error), error.retry_after)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *_args: object, **_kwargs: object) -> None:
        return None  # not followed: urllib raises the 3xx as an HTTPError
