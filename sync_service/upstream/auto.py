"""``MIXPEEK_API_VERSION=auto``: the API version found by one probe, on the first call.

Building an upstream does no I/O (``open_upstream`` is synchronous and commands that never call
Mixpeek must not wait on it), so :class:`AutoUpstream` stands in for the adapter until its first
call, asks ``GET /v1/health`` once, logs what it found, and from then on hands every call to the
adapter of that version. A v1 server answers the route (2xx); the 2024 API has no ``/v1/``
paths, so any other 4xx means 2024. No answer (a transport error, a 5xx after the retries)
decides nothing: the call fails as any call would, and the next one probes again.

The daemon asks for the probe ``early``: one attempt (upstream/version_probe.py, in a thread)
starts when the upstream is entered, or is handed over already under way (``run`` sends it as
soon as it has read its settings), so its round trip overlaps the rest of start-up instead of
delaying the first poll by one. It stands outside the process's breaker and has no retries:
if it decides nothing, the first call probes as it always did (and waits at most that one
attempt for it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from concurrent.futures import Future
from typing import TYPE_CHECKING, Self

from sync_service.settings import MixpeekApiVersion, Settings
from sync_service.upstream.errors import MixpeekError
from sync_service.upstream.http import RequestObserver
from sync_service.upstream.outage import Outage
from sync_service.upstream.owner import ClosedOnExit
from sync_service.upstream.port import (
    Asset,
    AssetContent,
    AssetPage,
    Embedding,
    ListOrder,
    Submission,
    TaskState,
    Upstream,
    WebhookSubscription,
)
from sync_service.upstream.version_probe import Probed, start_probe, version_for

if TYPE_CHECKING:
    from sync_service.upstream.v1.client import V1Client

__all__ = ["AutoUpstream", "detect_version"]

log = logging.getLogger(__name__)


async def detect_version(settings: Settings) -> MixpeekApiVersion:
    """The API version at ``MIXPEEK_API_URL``: one ``GET /v1/health`` (with its retries)."""
    client = _detector(settings, None)
    try:
        return await _detect(client)
    finally:
        await client.aclose()


def _detector(settings: Settings, outage: Outage | None) -> V1Client:
    """The probe's client."""
    from sync_service.upstream.connect import retry_policy
    from sync_service.upstream.v1.client import V1Client

    return V1Client(
        base_url=settings.mixpeek_api_url,
        api_key=settings.mixpeek_api_key,
        namespace=settings.mixpeek_namespace,
        policy=retry_policy(settings),
        outage=outage,
    )


async def _detect(client: V1Client) -> MixpeekApiVersion:
    """The version, by the rules of :func:`version_for`; raises when they decide nothing."""
    try:
        await client.health()
    except MixpeekError as exc:
        if (version := version_for(exc)) is None:
            raise
        return version
    return MixpeekApiVersion.v1


class AutoUpstream(ClosedOnExit):
    """The port, over whichever adapter :func:`detect_version` picks on the first call."""

    def __init__(
        self,
        settings: Settings,
        observer: RequestObserver | None,
        outage: Outage | None,
        *,
        early: bool = False,
        probe: Future[Probed] | None = None,
    ) -> None:
        self._settings = settings
        self._early = early
        #: The early probe, when it was sent before this upstream was made.
        self._probe = probe
        #: When the early probe was told to wait (429): the next probe waits until then.
        self._probe_not_before = 0.0
        self._early_probe: asyncio.Task[None] | None = None
        self._observer = observer
        self._given_outage = outage
        # The process's breaker when given; a detached one otherwise (as a client without one).
        self.outage = outage if outage is not None else Outage()
        self._chosen: Upstream | None = None
        # Asks the version; with the process's breaker, it feeds and probes it until an
        # adapter is chosen (Mixpeek down from the start then costs no task an attempt).
        self._detecting: V1Client | None = None
        self._lock = asyncio.Lock()
        self.version: MixpeekApiVersion | None = None

    async def __aenter__(self) -> Self:
        if self._early and self._chosen is None:
            probe = self._probe or start_probe(self._settings)
            self._early_probe = asyncio.create_task(self._probe_early(probe), name="api-probe")
        return self

    async def _probe_early(self, probe: Future[Probed]) -> None:
        async with self._lock:
            if self._chosen is not None:
                return
            probed = await asyncio.wrap_future(probe)
            if probed.version is not None:
                self._choose(probed.version)
            elif probed.retry_after:
                # Nothing decided, and nothing told the breaker: the first call probes again,
                # with the retries and the breaker, as it would have anyway; not before a wait
                # the server asked for (a 429's Retry-After).
                from sync_service.upstream.connect import retry_policy

                cap = retry_policy(self._settings).max_retry_after
                self._probe_not_before = time.monotonic() + min(probed.retry_after, cap)

    async def _upstream(self) -> Upstream:
        if self._chosen is not None:
            return self._chosen
        if self._early_probe is not None:
            # The early probe decides first, even for a call made before it ran (waiting
            # for it neither cancels it nor raises what it met).
            await asyncio.wait([self._early_probe])
        async with self._lock:
            if self._chosen is None:
                if self._detecting is None:
                    self._detecting = _detector(self._settings, self._given_outage)
                wait = self._probe_not_before - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                self._choose(await _detect(self._detecting))
                await self._detecting.aclose()  # the adapter's own probe is attached now
                self._detecting = None
        assert self._chosen is not None
        return self._chosen

    def _choose(self, version: MixpeekApiVersion) -> None:
        from sync_service.upstream.connect import build_upstream

        log.info(
            "Mixpeek API version %s detected at %s (MIXPEEK_API_VERSION=auto; set it "
            "to skip this probe)",
            version.value,
            self._settings.mixpeek_api_url,
            extra={"event": "mixpeek_api_detected", "api_version": version.value},
        )
        self.version = version
        self._chosen = build_upstream(self._settings, version, self._observer, self._given_outage)

    async def aclose(self) -> None:
        if self._early_probe is not None:
            self._early_probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._early_probe
        if self._detecting is not None:
            await self._detecting.aclose()
        if self._chosen is not None:
            await self._chosen.aclose()

    def __repr__(self) -> str:
        return f"AutoUpstream({self._chosen!r})"

    async def get_task(self, task_id: str) -> TaskState:
        return await (await self._upstream()).get_task(task_id)

    async def failure_reason(self, task: TaskState) -> str | None:
        return await (await self._upstream()).failure_reason(task)

    async def get_asset(self, asset_id: str) -> Asset:
        return await (await self._upstream()).get_asset(asset_id)

    async def fetch_content(self, asset_id: str, *, only_if_done: bool = False) -> AssetContent:
        return await (await self._upstream()).fetch_content(asset_id, only_if_done=only_if_done)

    async def list_assets(
        self,
        collection_id: str,
        *,
        order: ListOrder,
        page: int = 1,
        page_size: int = 100,
        changed_since: float | None = None,
        resume: str | None = None,
    ) -> AssetPage:
        upstream = await self._upstream()
        return await upstream.list_assets(
            collection_id,
            order=order,
            page=page,
            page_size=page_size,
            changed_since=changed_since,
            resume=resume,
        )

    async def delete_asset(self, asset_id: str) -> None:
        await (await self._upstream()).delete_asset(asset_id)

    async def embed(self, text: str, vector_name: str) -> Embedding:
        return await (await self._upstream()).embed(text, vector_name)

    async def submit(self, item: Submission) -> str | None:
        return await (await self._upstream()).submit(item)

    async def submit_all(self, items: Sequence[Submission]) -> AsyncIterator[str]:
        async for task_id in (await self._upstream()).submit_all(items):
            yield task_id

    async def namespace_ids(self) -> frozenset[str]:
        return await (await self._upstream()).namespace_ids()

    async def save_webhook(
        self, name: str, url: str, event_types: tuple[str, ...], headers: Mapping[str, str]
    ) -> tuple[WebhookSubscription, bool]:
        return await (await self._upstream()).save_webhook(name, url, event_types, headers)

    async def list_webhooks(self) -> list[WebhookSubscription]:
        return await (await self._upstream()).list_webhooks()

    async def delete_webhook(self, webhook_id: str) -> None:
        await (await self._upstream()).delete_webhook(webhook_id)
