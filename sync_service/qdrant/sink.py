"""Qdrant: collections, their vector names, and batched upserts. All Qdrant calls live here.

Collections are created behind an alias from the start: users query ``name`` (an alias) while
the points live in a versioned physical collection ``name__v1``, so a later re-index can build
``name__v2`` and swap the alias atomically without the name users query ever going away.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from qdrant_client import AsyncQdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from sync_service.engine.points import PlannedPoint, SparseValues, VectorSpec
from sync_service.settings import Distance, Settings

log = logging.getLogger(__name__)

#: Payload fields every collection indexes (keyword), created before the first point.
INDEXED_FIELDS = ("asset_id", "collection_id", "modality", "task_id")
#: Payload field holding the version of the write that put a point there (see ``upsert``).
VERSION_FIELD = "_sync_version"

_DISTANCES = {
    Distance.cosine: models.Distance.COSINE,
    Distance.dot: models.Distance.DOT,
    Distance.euclid: models.Distance.EUCLID,
    Distance.manhattan: models.Distance.MANHATTAN,
}


class SinkUnavailable(Exception):
    """Qdrant did not answer, or failed on its side (5xx, timeout): try again later.

    Nothing may be recorded as synced after this: the write may or may not have landed, and a
    redo with the same point ids settles it either way.
    """


@dataclass(frozen=True)
class RefusedPoint:
    """A point Qdrant refused as bad input, isolated from the rest of its batch."""

    point: PlannedPoint
    reason: str


class QdrantSink:
    """The service's only door to Qdrant."""

    def __init__(
        self,
        client: AsyncQdrantClient,
        *,
        distance: Distance = Distance.cosine,
        batch_points: int = 256,
        batch_bytes: int = 8 * 1024 * 1024,
        on_batch: Callable[[float, int], None] | None = None,
    ) -> None:
        self.client = client
        self.on_batch = on_batch
        self.distance = _DISTANCES[distance]
        self.batch_points = batch_points
        self.batch_bytes = batch_bytes
        self._schemas: dict[str, dict[str, VectorSpec]] = {}

    @classmethod
    def from_settings(
        cls, settings: Settings, on_batch: Callable[[float, int], None] | None = None
    ) -> QdrantSink:
        if settings.qdrant_url:
            api_key = (
                settings.qdrant_api_key.get_secret_value() if settings.qdrant_api_key else None
            )
            client = AsyncQdrantClient(
                url=settings.qdrant_url, api_key=api_key, timeout=30, check_compatibility=False
            )
        else:
            settings.qdrant_path.mkdir(parents=True, exist_ok=True)
            client = AsyncQdrantClient(path=str(settings.qdrant_path))
        return cls(
            client,
            distance=settings.distance,
            batch_points=settings.upsert_batch_points,
            batch_bytes=settings.upsert_batch_bytes,
            on_batch=on_batch,
        )

    async def close(self) -> None:
        await self.client.close()

    # -- collections --------------------------------------------------------------------

    async def schema(self, name: str) -> dict[str, VectorSpec]:
        """The vector names of collection (or alias) ``name``; empty if it does not exist."""
        if name in self._schemas:
            return self._schemas[name]
        async with _reachable():
            return await self._read_schema(name)

    async def _read_schema(self, name: str) -> dict[str, VectorSpec]:
        if not await self.client.collection_exists(name):
            return {}
        info = await self.client.get_collection(name)
        schema: dict[str, VectorSpec] = {}
        dense = info.config.params.vectors
        if isinstance(dense, Mapping):
            schema.update({n: VectorSpec(size=p.size) for n, p in dense.items()})
        elif isinstance(dense, models.VectorParams):
            schema[""] = VectorSpec(size=dense.size)
        for sparse_name in info.config.params.sparse_vectors or {}:
            schema[sparse_name] = VectorSpec(size=None, sparse=True)
        self._schemas[name] = schema
        return schema

    async def ensure_vectors(self, name: str, new: Mapping[str, VectorSpec]) -> list[str]:
        """Create collection ``name`` or add vector names to it. Returns names it could not add.

        Safe when another replica does the same at the same moment: "already exists" answers
        are treated as success and the schema is read again.
        """
        if not new:
            return []
        current = await self.schema(name)
        async with _reachable():
            return await self._add_vectors(name, current, new)

    async def _add_vectors(
        self, name: str, current: Mapping[str, VectorSpec], new: Mapping[str, VectorSpec]
    ) -> list[str]:
        if not current:
            await self._create(name, new)
            return []
        refused = []
        # A new vector name takes the collection's distance (a re-index may have changed it
        # from SYNC_DISTANCE), so one collection never mixes metrics by accident.
        metric = await self._distance(name)
        for vector_name, spec in new.items():
            if vector_name in current:
                continue
            try:
                await self.client.create_vector_name(
                    name, vector_name, self._vector_name_config(spec, metric), wait=True
                )
            except (UnexpectedResponse, ValueError) as exc:
                if not _already_exists(exc):
                    log.warning("cannot add vector %r to %s: %s", vector_name, name, exc)
                    refused.append(vector_name)
        self._schemas.pop(name, None)
        return refused

    async def _create(self, name: str, specs: Mapping[str, VectorSpec]) -> None:
        physical = f"{name}__v1"
        await self.create_physical(physical, specs)
        if not await self._alias_target(name):
            await self.client.update_collection_aliases(
                change_aliases_operations=[
                    models.CreateAliasOperation(
                        create_alias=models.CreateAlias(collection_name=physical, alias_name=name)
                    )
                ]
            )
        self._schemas.pop(name, None)
        log.info(
            "collection created",
            extra={"event": "collection_created", "collection": name, "physical": physical},
        )

    async def create_physical(
        self, physical: str, specs: Mapping[str, VectorSpec], distance: Distance | None = None
    ) -> None:
        """Create a physical collection with the keyword indexes (no alias); idempotent."""
        metric = _DISTANCES[distance] if distance is not None else self.distance
        dense = {
            n: models.VectorParams(size=s.size or 0, distance=metric)
            for n, s in specs.items()
            if not s.sparse
        }
        sparse = {n: models.SparseVectorParams() for n, s in specs.items() if s.sparse}
        try:
            await self.client.create_collection(
                physical, vectors_config=dense, sparse_vectors_config=sparse or None
            )
        except (UnexpectedResponse, ValueError) as exc:
            if not _already_exists(exc):
                raise
        with warnings.catch_warnings():
            # Local mode warns that payload indexes have no effect there; a server uses them.
            warnings.filterwarnings("ignore", message="Payload indexes have no effect")
            for field_name in INDEXED_FIELDS:
                await self.client.create_payload_index(
                    physical, field_name, field_schema=models.PayloadSchemaType.KEYWORD, wait=True
                )

    async def alias_target(self, alias: str) -> str | None:
        """The physical collection behind ``alias``, or None if it is not an alias."""
        async with _reachable():
            return await self._alias_target(alias)

    async def exists(self, name: str) -> bool:
        """Whether ``name`` resolves (a collection or an alias)."""
        async with _reachable():
            return await self.client.collection_exists(name)

    async def physical_collections(self) -> list[str]:
        async with _reachable():
            return sorted(c.name for c in (await self.client.get_collections()).collections)

    async def point_alias(self, alias: str, physical: str) -> None:
        """Point ``alias`` at ``physical`` in one atomic request (delete + create).

        Searches against the alias see the old collection or the new one, never neither.
        """
        operations: list[Any] = []
        if await self._alias_target(alias) is not None:
            operations.append(
                models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=alias))
            )
        operations.append(
            models.CreateAliasOperation(
                create_alias=models.CreateAlias(collection_name=physical, alias_name=alias)
            )
        )
        async with _reachable():
            await self.client.update_collection_aliases(change_aliases_operations=operations)
        self._schemas.pop(alias, None)

    async def drop(self, physical: str) -> None:
        """Delete a physical collection (never an alias's name)."""
        async with _reachable():
            await self.client.delete_collection(physical)
        self._schemas.pop(physical, None)

    async def distance_of(self, name: str) -> str | None:
        """The distance of the collection's first dense vector (lowercase), if any."""
        async with _reachable():
            info = await self.client.get_collection(name)
        dense = info.config.params.vectors
        params = next(iter(dense.values()), None) if isinstance(dense, Mapping) else dense
        return str(params.distance.value).lower() if params is not None else None

    async def _distance(self, name: str) -> models.Distance:
        """The collection's distance, or the configured one when it has no dense vector."""
        held = await self.distance_of(name)
        return models.Distance(held.capitalize()) if held else self.distance

    async def _alias_target(self, alias: str) -> str | None:
        for description in (await self.client.get_aliases()).aliases:
            if description.alias_name == alias:
                return description.collection_name
        return None

    def _vector_name_config(
        self, spec: VectorSpec, metric: models.Distance
    ) -> models.DenseVectorNameConfig | models.SparseVectorNameConfig:
        if spec.sparse:
            return models.SparseVectorNameConfig(sparse=models.SparseVectorConfig())
        return models.DenseVectorNameConfig(
            dense=models.DenseVectorConfig(size=spec.size or 0, distance=metric)
        )

    # -- points -------------------------------------------------------------------------

    async def upsert(
        self, name: str, points: Sequence[PlannedPoint], version: float | None = None
    ) -> list[RefusedPoint]:
        """Write ``points`` with ``wait=True``, in batches bounded by count and by bytes.

        With a ``version`` (the database time of the claim behind this write), each point
        carries it as ``_sync_version`` and the write is conditional: an existing point is
        only replaced by a newer version. A worker that stalled past its lease and wakes up
        later therefore cannot overwrite what the worker that took over already wrote.

        A batch Qdrant refuses as bad input (400/422) is split in halves until the refused
        points are isolated; those are returned, every other point is written. Raises
        :class:`SinkUnavailable` when Qdrant cannot be reached or fails on its side; batches
        written before that stay written (they are idempotent).
        """
        refused: list[RefusedPoint] = []
        for batch in self.batches(points):
            refused += await self._upsert_isolating(name, batch, version)
        return refused

    async def _upsert_isolating(
        self, name: str, batch: list[PlannedPoint], version: float | None
    ) -> list[RefusedPoint]:
        try:
            await self._upsert_batch(name, batch, version)
        except _BadInput as exc:
            if len(batch) == 1:
                return [RefusedPoint(batch[0], f"Qdrant refused the point: {exc}")]
            middle = len(batch) // 2
            return await self._upsert_isolating(name, batch[:middle], version) + (
                await self._upsert_isolating(name, batch[middle:], version)
            )
        return []

    async def _upsert_batch(
        self, name: str, batch: list[PlannedPoint], version: float | None
    ) -> None:
        started = time.perf_counter()
        structs = [_to_struct(p, version) for p in batch]
        # Replace a point only if it holds an older version (or none); new points are
        # inserted regardless of the filter.
        guard = _older_than(version) if version is not None else None
        try:
            await self.client.upsert(name, structs, wait=True, update_filter=guard)
        except UnexpectedResponse as exc:
            if exc.status_code in (400, 422):
                raise _BadInput(_message(exc)) from None
            raise _unavailable(exc) from None
        except ValueError as exc:  # local mode's way of saying "bad input"
            raise _BadInput(str(exc)) from None
        except _TRANSPORT_ERRORS as exc:
            raise _unavailable(exc) from None
        if self.on_batch is not None:
            self.on_batch(time.perf_counter() - started, len(batch))

    async def set_payloads(
        self, name: str, points: Sequence[PlannedPoint], version: float | None = None
    ) -> None:
        """Replace the payload of existing points, leaving their vectors alone.

        For features whose payload changed but whose vectors did not: re-sending 1,408 floats
        per point to change a caption would cost more than the whole payload write. With a
        ``version`` the write is guarded like :meth:`upsert`: a point holding a newer version
        keeps its payload. A point that does not exist is left alone (not created).
        """
        for batch in self.batches(points):
            operations = [
                models.OverwritePayloadOperation(
                    overwrite_payload=models.SetPayload(
                        payload=_payload(p, version), filter=_only_older(p.point_id, version)
                    )
                )
                for p in batch
            ]
            async with _reachable():
                await self.client.batch_update_points(name, operations, wait=True)

    async def existing(self, name: str, point_ids: Sequence[str]) -> set[str]:
        """Which of ``point_ids`` exist in ``name``."""
        if not point_ids:
            return set()
        async with _reachable():
            found = await self.client.retrieve(
                name, list(point_ids), with_payload=False, with_vectors=False
            )
        return {str(r.id) for r in found}

    async def delete_points(self, name: str, point_ids: Sequence[str]) -> None:
        """Delete points by id (``wait=True``); ids that are not there are ignored."""
        for start in range(0, len(point_ids), 1000):
            selector = models.PointIdsList(points=list(point_ids[start : start + 1000]))
            async with _reachable():
                await self.client.delete(name, selector, wait=True)

    async def asset_point_ids(self, name: str, asset_id: str) -> list[str]:
        """Ids of every point of ``asset_id`` in ``name`` (what Qdrant has, ledger or not)."""
        match = models.Filter(
            must=[models.FieldCondition(key="asset_id", match=models.MatchValue(value=asset_id))]
        )
        ids: list[str] = []
        offset: Any = None
        async with _reachable():
            while True:
                page, offset = await self.client.scroll(
                    name, scroll_filter=match, limit=256, offset=offset, with_payload=False
                )
                ids.extend(str(r.id) for r in page)
                if offset is None:
                    return ids

    def batches(self, points: Sequence[PlannedPoint]) -> Iterator[list[PlannedPoint]]:
        """Split into batches of at most ``batch_points`` points and ``batch_bytes`` bytes.

        A point id never appears twice in one batch: Qdrant would keep only the later one.
        """
        batch: list[PlannedPoint] = []
        ids: set[str] = set()
        size = 0
        for point in points:
            full = len(batch) >= self.batch_points or (
                batch and size + point.approx_bytes > self.batch_bytes
            )
            if full or point.point_id in ids:
                yield batch
                batch, ids, size = [], set(), 0
            batch.append(point)
            ids.add(point.point_id)
            size += point.approx_bytes
        if batch:
            yield batch

    async def count(self, name: str) -> int:
        async with _reachable():
            if not await self.client.collection_exists(name):
                return 0
            return (await self.client.count(name, exact=True)).count

    async def retrieve(self, name: str, point_ids: Sequence[str]) -> list[models.Record]:
        async with _reachable():
            return await self.client.retrieve(
                name, list(point_ids), with_payload=True, with_vectors=True
            )

    async def pages(
        self, name: str, *, limit: int = 256, with_vectors: bool = True
    ) -> AsyncIterator[list[models.Record]]:
        """Every point of a collection, a page at a time (vectors of a big one do not fit)."""
        offset: Any = None
        while True:
            async with _reachable():
                page, offset = await self.client.scroll(
                    name, limit=limit, offset=offset, with_payload=True, with_vectors=with_vectors
                )
            yield page
            if offset is None:
                return

    async def point_ids(self, name: str) -> list[str]:
        """Every point id of a collection (no payload, no vectors)."""
        ids: list[str] = []
        offset: Any = None
        while True:
            async with _reachable():
                page, offset = await self.client.scroll(
                    name, limit=1024, offset=offset, with_payload=False, with_vectors=False
                )
            ids.extend(str(r.id) for r in page)
            if offset is None:
                return ids

    async def scroll_all(self, name: str) -> list[models.Record]:
        """Every point of a collection with payload and vectors (for checks and small tools)."""
        return [record async for page in self.pages(name) for record in page]

    async def search(
        self, name: str, vector_name: str, vector: list[float], limit: int = 5
    ) -> list[models.ScoredPoint]:
        async with _reachable():
            response = await self.client.query_points(
                name, query=vector, using=vector_name, limit=limit, with_payload=True
            )
        return response.points

    async def ping(self) -> None:
        """Raise if Qdrant does not answer."""
        await self.client.get_collections()


def _to_struct(point: PlannedPoint, version: float | None = None) -> models.PointStruct:
    vectors: dict[str, Any] = {
        name: models.SparseVector(indices=v.indices, values=v.values)
        if isinstance(v, SparseValues)
        else v
        for name, v in point.vectors.items()
    }
    # model_construct skips pydantic's validation of every float (a third of the write path's
    # CPU): points.py has already checked each vector and the id is a canonical UUID.
    return models.PointStruct.model_construct(
        id=point.point_id, vector=vectors, payload=_payload(point, version)
    )


def _older_than(version: float) -> models.Filter:
    """Points holding an older write version than ``version``, or none at all."""
    return models.Filter(
        should=[
            models.FieldCondition(key=VERSION_FIELD, range=models.Range(lt=version)),
            models.IsEmptyCondition(is_empty=models.PayloadField(key=VERSION_FIELD)),
        ]
    )


def _only_older(point_id: str, version: float | None) -> models.Filter:
    """The point ``point_id``, if it holds an older version than ``version`` (or none)."""
    has_id = models.HasIdCondition(has_id=[point_id])
    if version is None:
        return models.Filter(must=[has_id])
    return models.Filter(must=[has_id, _older_than(version)])


def synced_payload(record: models.Record) -> dict[str, Any]:
    """A stored point's payload as it was synced: without the sink's own version field."""
    return {k: v for k, v in (record.payload or {}).items() if k != VERSION_FIELD}


def _payload(point: PlannedPoint, version: float | None) -> dict[str, Any]:
    return dict(point.payload) if version is None else {**point.payload, VERSION_FIELD: version}


_TRANSPORT_ERRORS = (ResponseHandlingException, httpx.HTTPError, OSError, TimeoutError)


def _unavailable(exc: Exception) -> SinkUnavailable:
    if isinstance(exc, UnexpectedResponse):
        return SinkUnavailable(f"Qdrant answered {exc.status_code}: {_message(exc)}")
    return SinkUnavailable(f"Qdrant unreachable: {type(exc).__name__}: {exc}")


@asynccontextmanager
async def _reachable() -> AsyncIterator[None]:
    """Turn "Qdrant is down or failing" into SinkUnavailable; bad input passes through."""
    try:
        yield
    except UnexpectedResponse as exc:
        if exc.status_code is not None and exc.status_code < 500:
            raise
        raise _unavailable(exc) from None
    except _TRANSPORT_ERRORS as exc:
        raise _unavailable(exc) from None


class _BadInput(Exception):
    """Qdrant refused a request as malformed (a point's fault, not Qdrant's)."""


def _message(exc: UnexpectedResponse) -> str:
    """The ``status.error`` text of a Qdrant error answer, else the raw content (short)."""
    try:
        return str(json.loads(exc.content)["status"]["error"])
    except (ValueError, KeyError, TypeError):
        return exc.content.decode(errors="replace")[:300] or exc.reason_phrase


def _already_exists(exc: Exception) -> bool:
    return "already exists" in str(exc).lower()
