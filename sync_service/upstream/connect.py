"""The upstream the settings describe: the one place that picks and builds an adapter."""

from __future__ import annotations

from sync_service.settings import Settings
from sync_service.upstream.gen_b.adapter import GenBUpstream
from sync_service.upstream.gen_b.client import MixpeekClient
from sync_service.upstream.http import RequestObserver, RetryPolicy
from sync_service.upstream.outage import Outage
from sync_service.upstream.port import Upstream


def open_upstream(
    settings: Settings, observer: RequestObserver | None = None, outage: Outage | None = None
) -> Upstream:
    """Mixpeek behind the upstream port, as the settings describe it (close it after use).
    ``outage``: the process's breaker, when it was made before the upstream."""
    client = MixpeekClient(
        base_url=settings.mixpeek_api_url,
        api_key=settings.mixpeek_api_key,
        namespace=settings.mixpeek_namespace,
        max_in_flight=settings.max_concurrency,
        rate_limit_per_minute=settings.rate_limit_per_minute,
        observer=observer,
        outage=outage,
        policy=RetryPolicy(
            max_attempts=settings.http_max_attempts,
            base_delay=settings.retry_base_delay,
            max_delay=settings.retry_max_delay,
            attempt_timeout=settings.http_timeout,
            call_deadline=max(settings.http_timeout * 4, 120.0),
        ),
    )
    return GenBUpstream(client)
