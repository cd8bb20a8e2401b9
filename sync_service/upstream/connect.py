"""The upstream the settings describe: the one place that picks and builds an adapter.

``MIXPEEK_API_VERSION`` names the API (``2024`` or ``v1``); ``auto`` (the default) leaves it to
one probe on the first call (:class:`~sync_service.upstream.auto.AutoUpstream`), so building an
upstream stays free of I/O and commands that never call Mixpeek never probe it. Adapters are
imported when built: a command that makes no upstream loads neither, and this module loads
no HTTP client (``run`` sends its version probe from here before the client loads).
"""

from __future__ import annotations

from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from sync_service.settings import MixpeekApiVersion, Settings
from sync_service.upstream.outage import Outage
from sync_service.upstream.port import Upstream
from sync_service.upstream.retry_policy import RetryPolicy
from sync_service.upstream.version_probe import Probed, start_probe

if TYPE_CHECKING:
    from sync_service.upstream.http import RequestObserver

__all__ = ["Probed", "build_upstream", "open_upstream", "probe_version_early", "retry_policy"]


def probe_version_early(settings: Settings) -> Future[Probed] | None:
    """Under ``MIXPEEK_API_VERSION=auto``, the version probe sent now, in a thread
    (upstream/version_probe.py), to be handed to :func:`open_upstream` (``probe``)."""
    if settings.mixpeek_api_version is MixpeekApiVersion.auto:
        return start_probe(settings)
    return None


def open_upstream(
    settings: Settings,
    observer: RequestObserver | None = None,
    outage: Outage | None = None,
    *,
    probe_early: bool = False,
    probe: Future[Probed] | None = None,
) -> Upstream:
    """Mixpeek behind the upstream port, as the settings describe it (close it after use).
    ``outage``: the process's breaker, when it was made before the upstream. ``probe_early``
    (the daemon, which calls Mixpeek at once): under ``auto`` the version probe starts when
    the upstream is entered (``async with``) instead of at the first call, unless ``probe``
    (``version_probe.start_probe``) is one already under way."""
    version = settings.mixpeek_api_version
    if version is MixpeekApiVersion.auto:
        from sync_service.upstream.auto import AutoUpstream

        return AutoUpstream(settings, observer, outage, early=probe_early, probe=probe)
    return build_upstream(settings, version, observer, outage)


def build_upstream(
    settings: Settings,
    version: MixpeekApiVersion,
    observer: RequestObserver | None = None,
    outage: Outage | None = None,
) -> Upstream:
    """The adapter of one named API version."""
    client_class: Any
    if version is MixpeekApiVersion.v1:
        from sync_service.upstream.v1.client import V1Client as client_class
    else:
        from sync_service.upstream.gen_b.client import MixpeekClient as client_class
    # Both clients take the same arguments: the shared plumbing's.
    client = client_class(
        base_url=settings.mixpeek_api_url,
        api_key=settings.mixpeek_api_key,
        namespace=settings.mixpeek_namespace,
        max_in_flight=settings.max_concurrency,
        rate_limit_per_minute=settings.rate_limit_per_minute,
        observer=observer,
        outage=outage,
        policy=retry_policy(settings),
    )
    if version is MixpeekApiVersion.v1:
        from sync_service.upstream.v1.adapter import V1Upstream

        return V1Upstream(client)
    from sync_service.upstream.gen_b.adapter import GenBUpstream

    return GenBUpstream(client)


def retry_policy(settings: Settings) -> RetryPolicy:
    return RetryPolicy(
        max_attempts=settings.http_max_attempts,
        base_delay=settings.retry_base_delay,
        max_delay=settings.retry_max_delay,
        attempt_timeout=settings.http_timeout,
        call_deadline=max(settings.http_timeout * 4, 120.0),
    )
