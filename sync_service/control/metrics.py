"""Prometheus metrics: what this process did (counters) and the state store's view (gauges).

Counters and histograms count this process's own work. The gauges (tasks by state, backlog,
oldest pending task, dead letters) are read from the state store when ``/metrics`` is scraped,
so every replica reports the same, shared totals.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

if TYPE_CHECKING:  # the store's views load SQLAlchemy, which a daemon imports later
    from sync_service.engine.availability import Availability
    from sync_service.state.views import StoreStats
    from sync_service.upstream.port import Outage

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_LAG_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900, 3600)


class Metrics:
    """One registry per process (tests build their own). Also the client's request observer."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.tasks = Gauge("sync_tasks", "Tracked tasks by state.", ["state"], registry=r)
        self.backlog = Gauge("sync_backlog_tasks", "Tasks pending (not terminal yet).", registry=r)
        self.oldest_pending = Gauge(
            "sync_oldest_pending_age_seconds",
            "Age of the oldest pending task (0 when none is pending).",
            registry=r,
        )
        self.dead_letters = Gauge(
            "sync_dead_letters", "Features set aside, waiting for retry or drop.", registry=r
        )
        self.finished = Counter(
            "sync_tasks_finished_total",
            "Tasks this process finished, by outcome.",
            ["state"],
            registry=r,
        )
        self.features = Counter(
            "sync_features_synced_total", "Features whose point this process wrote.", registry=r
        )
        self.points = Counter(
            "sync_points_upserted_total", "Points sent to Qdrant (redos included).", registry=r
        )
        self.writes_skipped = Counter(
            "sync_points_unchanged_total",
            "Points a re-sync found unchanged and did not write.",
            registry=r,
        )
        self.payload_writes = Counter(
            "sync_points_payload_only_total",
            "Points whose payload alone was rewritten (same vectors).",
            registry=r,
        )
        self.removed = Counter(
            "sync_points_removed_total",
            "Points deleted because their feature or asset is gone upstream.",
            registry=r,
        )
        self.dead_lettered = Counter(
            "sync_dead_lettered_total", "Features this process set aside.", registry=r
        )
        self.upstream = Counter(
            "sync_upstream_requests_total",
            "Requests to Mixpeek by endpoint and HTTP status ('error' for no answer).",
            ["endpoint", "status"],
            registry=r,
        )
        self.upstream_latency = Histogram(
            "sync_upstream_request_seconds",
            "Mixpeek request latency.",
            ["endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.rate_limited = Counter(
            "sync_upstream_rate_limited_total", "429 answers from Mixpeek.", registry=r
        )
        self.retries = Counter(
            "sync_upstream_retries_total",
            "Retried Mixpeek requests, by reason.",
            ["reason"],
            registry=r,
        )
        self.upsert_batches = Counter(
            "sync_upsert_batches_total", "Upsert batches Qdrant acknowledged.", registry=r
        )
        self.upsert_latency = Histogram(
            "sync_upsert_batch_seconds",
            "Time for Qdrant to acknowledge one upsert batch.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.sync_lag = Histogram(
            "sync_lag_seconds",
            "From a task first seen DONE upstream to its points recorded.",
            buckets=_LAG_BUCKETS,
            registry=r,
        )
        self.watch_lag = Gauge(
            "sync_watch_lag_seconds",
            "Per watched collection: now minus its watermark (the newest change listed).",
            ["collection"],
            registry=r,
        )
        self.watch_passes = Counter(
            "sync_watch_passes_total",
            "Listing passes this replica finished, by collection and kind (incremental/full).",
            ["collection", "kind"],
            registry=r,
        )
        self.watch_listed = Counter(
            "sync_watch_listed_assets_total",
            "Assets the passes of this replica listed.",
            ["collection"],
            registry=r,
        )
        self.watch_swept_assets = Counter(
            "sync_watch_swept_assets_total",
            "Assets a sweep confirmed deleted upstream and removed from Qdrant.",
            ["collection"],
            registry=r,
        )
        self.watch_held_sweeps = Counter(
            "sync_watch_held_sweeps_total",
            "Sweeps the delete guard held (nothing deleted).",
            ["collection"],
            registry=r,
        )
        self.upstream_up = Gauge(
            "sync_upstream_up",
            "1 while Mixpeek answers this process; 0 while its breaker is open (work paused).",
            registry=r,
        )
        self.upstream_down_since = Gauge(
            "sync_upstream_unavailable_since_seconds",
            "When Mixpeek became unavailable to this process (Unix time; 0 while it answers).",
            registry=r,
        )
        self.qdrant_up = Gauge(
            "sync_qdrant_up",
            "1 while Qdrant answers this process's writes; 0 while it is down (claims paused).",
            registry=r,
        )
        self.qdrant_down_since = Gauge(
            "sync_qdrant_unavailable_since_seconds",
            "When Qdrant stopped answering this process (Unix time; 0 while it answers).",
            registry=r,
        )
        self.store_up = Gauge(
            "sync_state_store_up",
            "1 while the state store answers this process; 0 during an outage.",
            registry=r,
        )
        self.store_down_since_gauge = Gauge(
            "sync_state_store_unavailable_since_seconds",
            "When the state store stopped answering this process (Unix time; 0 while it does).",
            registry=r,
        )
        self.webhook_received = Counter(
            "sync_webhook_events_received_total",
            "Webhook events this replica's receiver answered, by type and outcome (queued, "
            "duplicate, ignored_type).",
            ["event_type", "outcome"],
            registry=r,
        )
        self.webhook_applied = Counter(
            "sync_webhook_events_applied_total",
            "Webhook events this replica applied, by type and outcome (pass_requested, "
            "reconcile_queued, held, ignored_*).",
            ["event_type", "outcome"],
            registry=r,
        )
        self.webhook_deduplicated = Counter(
            "sync_webhook_deduplicated_total",
            "Webhook deliveries whose event id was received before (by any replica).",
            registry=r,
        )
        self.webhook_rejected = Counter(
            "sync_webhook_rejected_total",
            "Webhook deliveries refused, by reason (secret, malformed, disabled).",
            ["reason"],
            registry=r,
        )
        self.upstream_up.set(1)
        self.qdrant_up.set(1)
        self.store_up.set(1)
        #: When the state store stopped answering (the daemon's ticks, a scrape, /readyz).
        self.store_down_since: datetime | None = None

    # -- availability -----------------------------------------------------------------------

    def watch_outage(self, outage: Outage) -> None:
        """Follow the upstream breaker (``upstream/outage.py``)."""

        def changed(outage: Outage) -> None:
            self.upstream_up.set(0 if outage.is_open else 1)
            self.upstream_down_since.set(outage.since.timestamp() if outage.since else 0)

        outage.on_change(changed)

    def watch_qdrant(self, qdrant: Availability) -> None:
        """Follow Qdrant's availability as the pipeline's writes see it."""

        def changed(qdrant: Availability) -> None:
            self.qdrant_up.set(0 if qdrant.down else 1)
            self.qdrant_down_since.set(qdrant.since.timestamp() if qdrant.since else 0)

        qdrant.on_change(changed)

    def store_answered(self, ok: bool) -> None:
        if ok:
            self.store_down_since = None
        elif self.store_down_since is None:
            self.store_down_since = datetime.now(UTC)
        self.store_up.set(1 if ok else 0)
        since = self.store_down_since
        self.store_down_since_gauge.set(since.timestamp() if since else 0)

    # -- watch mode -------------------------------------------------------------------------

    def watch_pass(self, collection: str, kind: str, listed: int) -> None:
        self.watch_passes.labels(collection, kind).inc()
        self.watch_listed.labels(collection).inc(listed)

    def watch_swept(self, collection: str, assets: int) -> None:
        self.watch_swept_assets.labels(collection).inc(assets)

    def watch_held(self, collection: str) -> None:
        self.watch_held_sweeps.labels(collection).inc()

    # -- the Mixpeek client's RequestObserver ------------------------------------------------

    def on_response(self, endpoint: str, status: int | None, elapsed: float) -> None:
        self.upstream.labels(endpoint, str(status) if status is not None else "error").inc()
        self.upstream_latency.labels(endpoint).observe(elapsed)
        if status == 429:
            self.rate_limited.inc()

    def on_retry(self, endpoint: str, attempt: int, wait: float, reason: str) -> None:  # noqa: ARG002
        self.retries.labels(reason).inc()

    # -- the pipeline and the sink ----------------------------------------------------------

    def upsert_batch(self, seconds: float, points: int) -> None:
        self.upsert_batches.inc()
        self.upsert_latency.observe(seconds)
        self.points.inc(points)

    def task_synced(self, features: int, dead_letters: int, lag: float | None) -> None:
        self.finished.labels("synced").inc()
        self.features.inc(features)
        self.dead_lettered.inc(dead_letters)
        if lag is not None and lag >= 0:
            self.sync_lag.observe(lag)

    def resynced(self, unchanged: int, payload_only: int, removed: int) -> None:
        self.writes_skipped.inc(unchanged)
        self.payload_writes.inc(payload_only)
        self.removed.inc(removed)

    def task_failed(self) -> None:
        self.finished.labels("failed").inc()

    # -- scrape -----------------------------------------------------------------------------

    def render(self, stats: StoreStats | None) -> bytes:
        """The exposition text, with the gauges refreshed from the state store (``None``: the
        store did not answer; its gauges keep their last values and ``sync_state_store_up``
        says 0)."""
        self.store_answered(stats is not None)
        if stats is None:
            return generate_latest(self.registry)
        for state, count in stats.counts.items():
            self.tasks.labels(state).set(count)
        self.backlog.set(stats.counts.get("pending", 0))
        self.oldest_pending.set(stats.oldest_pending_age or 0)
        self.dead_letters.set(stats.dead_letters)
        self.watch_lag.clear()  # a collection no longer watched drops out
        for collection, lag in stats.watch_lag.items():
            if lag is not None:
                self.watch_lag.labels(collection).set(lag)
        return generate_latest(self.registry)
