"""Builds the service's parts from settings, and closes them again."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from sync_service.mixpeek import MixpeekClient, RetryPolicy
from sync_service.pipeline import Pipeline
from sync_service.settings import Settings
from sync_service.sink import QdrantSink
from sync_service.store import Store


@dataclass
class Service:
    settings: Settings
    store: Store
    client: MixpeekClient
    sink: QdrantSink
    pipeline: Pipeline


def mixpeek_client(settings: Settings) -> MixpeekClient:
    return MixpeekClient(
        base_url=settings.mixpeek_api_url,
        api_key=settings.mixpeek_api_key,
        namespace=settings.mixpeek_namespace,
        max_in_flight=settings.max_concurrency,
        policy=RetryPolicy(
            max_attempts=settings.http_max_attempts,
            base_delay=settings.retry_base_delay,
            max_delay=settings.retry_max_delay,
            attempt_timeout=settings.http_timeout,
            call_deadline=max(settings.http_timeout * 4, 120.0),
        ),
    )


@asynccontextmanager
async def open_store(settings: Settings) -> AsyncIterator[Store]:
    """The state store, migrated to the newest schema (every command that needs it does this)."""
    store = Store.open(settings.database_url)
    try:
        await store.migrate()
        yield store
    finally:
        await store.close()


@asynccontextmanager
async def open_service(settings: Settings) -> AsyncIterator[Service]:
    async with open_store(settings) as store:
        sink = QdrantSink.from_settings(settings)
        try:
            async with mixpeek_client(settings) as client:
                pipeline = Pipeline(settings, store, client, sink)
                yield Service(settings, store, client, sink, pipeline)
        finally:
            await sink.close()
