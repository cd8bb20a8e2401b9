"""Qdrant point writes and reads: batched, version-guarded upserts and the rest of point I/O.

All Qdrant calls live in this package; collection and alias management is inherited from
:class:`~sync_service.qdrant.collections.QdrantCollections`, and failures are classified by
:mod:`sync_service.qdrant.errors`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sync_service.engine.points import PlannedPoint, SparseValues
from sync_service.qdrant.client import AsyncQdrantClient, UnexpectedResponse, models
from sync_service.qdrant.collections import INDEXED_FIELDS, QdrantCollections
from sync_service.qdrant.errors import (
    TRANSPORT_ERRORS,
    BadInput,
    SinkUnavailable,
    error_message,
    reachable,
    unavailable,
)
from sync_service.qdrant.marker import MARKER_COLLECTION, has_mark, write_mark
from sync_service.settings import Distance, Settings, SettingUnusable

# Callers import these from here, as they did before collections and errors moved out.
__all__ = [
    "INDEXED_FIELDS",
    "VERSION_FIELD",
    "QdrantSink",
    "RefusedPoint",
    "SinkUnavailable",
    "synced_payload",
]

#: Payload field holding the version of the write that put a point there (see ``upsert``).
VERSION_FIELD = "_sync_version"


@dataclass(frozen=True)
class RefusedPoint:
    """A point Qdrant refused as bad input, isolated from the rest of its batch."""

    point: PlannedPoint
    reason: str


#: What a search looks up: a dense vector, a multivector (one vector per token) or a sparse one.
QueryVector = list[float] | list[list[float]] | SparseValues


class QdrantSink(QdrantCollections):
    """The service's only door to Qdrant: point I/O here, collections and aliases inherited."""

    def __init__(
        self,
        client: AsyncQdrantClient,
        *,
        distance: Distance = Distance.cosine,
        batch_points: int = 256,
        batch_bytes: int = 8 * 1024 * 1024,
        on_batch: Callable[[float, int], None] | None = None,
    ) -> None:
        super().__init__(client, distance=distance)
        self.on_batch = on_batch
        self.batch_points = batch_points
        self.batch_bytes = batch_bytes

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
            try:
                settings.qdrant_path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                where = str(settings.qdrant_path)
                raise SettingUnusable(
                    f"QDRANT_PATH: cannot make the folder {where!r} ({exc.strerror})"
                ) from None
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
        except BadInput as exc:
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
                raise BadInput(error_message(exc)) from None
            raise unavailable(exc) from None
        except ValueError as exc:  # local mode's way of saying "bad input"
            raise BadInput(str(exc)) from None
        except TRANSPORT_ERRORS as exc:
            raise unavailable(exc) from None
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
            async with reachable():
                await self.client.batch_update_points(name, operations, wait=True)

    async def existing(self, name: str, point_ids: Sequence[str]) -> set[str]:
        """Which of ``point_ids`` exist in ``name``."""
        if not point_ids:
            return set()
        async with reachable():
            found = await self.client.retrieve(
                name, list(point_ids), with_payload=False, with_vectors=False
            )
        return {str(r.id) for r in found}

    async def delete_points(self, name: str, point_ids: Sequence[str]) -> None:
        """Delete points by id (``wait=True``); ids that are not there are ignored."""
        for start in range(0, len(point_ids), 1000):
            selector = models.PointIdsList(points=list(point_ids[start : start + 1000]))
            async with reachable():
                await self.client.delete(name, selector, wait=True)

    async def asset_point_ids(self, name: str, asset_id: str) -> list[str]:
        """Ids of every point of ``asset_id`` in ``name`` (what Qdrant has, ledger or not)."""
        match = models.Filter(
            must=[models.FieldCondition(key="asset_id", match=models.MatchValue(value=asset_id))]
        )
        ids: list[str] = []
        offset: Any = None
        async with reachable():
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

    async def retrieve(self, name: str, point_ids: Sequence[str]) -> list[models.Record]:
        async with reachable():
            return await self.client.retrieve(
                name, list(point_ids), with_payload=True, with_vectors=True
            )

    async def pages(
        self, name: str, *, limit: int = 256, with_vectors: bool = True
    ) -> AsyncIterator[list[models.Record]]:
        """Every point of a collection, a page at a time (vectors of a big one do not fit)."""
        offset: Any = None
        while True:
            async with reachable():
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
            async with reachable():
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
        self,
        name: str,
        vector_name: str,
        vector: QueryVector,
        limit: int = 5,
        *,
        match: Mapping[str, str] | None = None,
        exclude: Sequence[str] = (),
    ) -> list[models.ScoredPoint]:
        """The ``limit`` points nearest ``vector`` in vector ``vector_name``, best first, whose
        payload has each ``match`` key equal to its value, minus the ``exclude`` ids."""
        must: list[models.Condition] = [
            models.FieldCondition(key=key, match=models.MatchValue(value=value))
            for key, value in (match or {}).items()
        ]
        must_not: list[models.Condition] = (
            [models.HasIdCondition(has_id=list(exclude))] if exclude else []
        )
        query_filter = models.Filter(must=must, must_not=must_not) if must or must_not else None
        query: list[float] | list[list[float]] | models.SparseVector = (
            models.SparseVector(indices=vector.indices, values=vector.values)
            if isinstance(vector, SparseValues)
            else vector  # a multivector (a list of vectors) is compared by its MAX_SIM
        )
        async with reachable():
            response = await self.client.query_points(
                name,
                query=query,
                using=vector_name,
                limit=limit,
                query_filter=query_filter,
                with_payload=True,
            )
        return response.points

    async def names(self) -> list[str]:
        """What a reader names: every alias, and each collection no alias points at."""
        async with reachable():
            collections = (await self.client.get_collections()).collections
            aliases = (await self.client.get_aliases()).aliases
        behind = {a.collection_name for a in aliases} | {MARKER_COLLECTION}
        plain = {c.name for c in collections if c.name not in behind}
        return sorted(plain | {a.alias_name for a in aliases})

    async def has_mark(self, store_id: str) -> bool:
        """Whether this Qdrant carries the mark of the state store ``store_id``."""
        return await has_mark(self.client, store_id)

    async def mark(self, store_id: str) -> None:
        await write_mark(self.client, store_id)

    async def ping(self) -> None:
        """Raise if Qdrant does not answer (SinkUnavailable saying so, as a failed write would)."""
        async with reachable():
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
