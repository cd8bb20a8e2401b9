"""Qdrant collection management: creating collections, their vector names, and aliases.

Collections are created behind an alias from the start: users query ``name`` (an alias) while
the points live in a versioned physical collection ``name__v1``, so a later re-index can build
``name__v2`` and swap the alias atomically without the name users query ever going away.
"""

from __future__ import annotations

import asyncio
import logging
import warnings
from collections.abc import Mapping
from typing import Any

from sync_service.engine.points import VectorSpec
from sync_service.qdrant.client import AsyncQdrantClient, UnexpectedResponse, models
from sync_service.qdrant.errors import already_exists, reachable
from sync_service.qdrant.faults import BadInput
from sync_service.qdrant.marker import MARKER_COLLECTION
from sync_service.settings import Distance

log = logging.getLogger(__name__)

#: Payload fields every collection indexes (keyword), created before the first point.
INDEXED_FIELDS = ("asset_id", "collection_id", "modality", "task_id")
#: What a v1 collection indexes besides (README "Mixpeek v1"): the denormalised ids a mirror
#: looks points up by, and the change time a watcher compares.
V1_INDEXED_FIELDS = {
    "document_id": "keyword",
    "namespace_id": "keyword",
    "root_object_id": "keyword",
    "source_object_id": "keyword",
    "mixpeek_updated_at": "datetime",
}
#: The collection metadata key naming the Mixpeek API generation whose points it holds.
GENERATION_KEY = "mixpeek_api"

_DISTANCES = {
    Distance.cosine: models.Distance.COSINE,
    Distance.dot: models.Distance.DOT,
    Distance.euclid: models.Distance.EUCLID,
    Distance.manhattan: models.Distance.MANHATTAN,
}


# v1's VectorIndex.distance words (README "Mixpeek v1"), and Qdrant's own spellings.
_DECLARED_DISTANCES = {
    "cosine": models.Distance.COSINE,
    "dot": models.Distance.DOT,
    "euclid": models.Distance.EUCLID,
    "euclidean": models.Distance.EUCLID,
    "manhattan": models.Distance.MANHATTAN,
}
#: A multi-dense vector (late interaction: one vector per token or patch) is scored by the
#: sum over the query's vectors of the best match among the document's.
_MAX_SIM = models.MultiVectorConfig(comparator=models.MultiVectorComparator.MAX_SIM)


class QdrantCollections:
    """Collections, vector names and aliases; ``QdrantSink`` inherits this and adds points.

    A base class rather than an object the sink owns, so callers keep calling ``sink.schema``,
    ``sink.point_alias`` and the rest on the one sink without a layer of forwarding methods.
    """

    def __init__(self, client: AsyncQdrantClient, *, distance: Distance = Distance.cosine) -> None:
        self.client = client
        self.distance = _DISTANCES[distance]
        # Vector names per collection or alias, read once; dropped whenever they may change.
        self._schemas: dict[str, dict[str, VectorSpec]] = {}
        # One schema change per name at a time (see ensure_vectors).
        self._changing: dict[str, asyncio.Lock] = {}
        # The API generation a collection holds, once known (it never changes).
        self._generations: dict[str, str] = {}

    async def schema(self, name: str) -> dict[str, VectorSpec]:
        """The vector names of collection (or alias) ``name``; empty if it does not exist."""
        if name in self._schemas:
            return self._schemas[name]
        async with reachable():
            return await self._read_schema(name)

    async def _read_schema(self, name: str) -> dict[str, VectorSpec]:
        if not await self.client.collection_exists(name):
            return {}
        info = await self.client.get_collection(name)
        schema: dict[str, VectorSpec] = {}
        dense = info.config.params.vectors
        if isinstance(dense, Mapping):
            schema.update({n: _spec(p) for n, p in dense.items()})
        elif isinstance(dense, models.VectorParams):
            schema[""] = _spec(dense)
        for sparse_name in info.config.params.sparse_vectors or {}:
            schema[sparse_name] = VectorSpec(size=None, sparse=True)
        self._schemas[name] = schema
        return schema

    async def ensure_vectors(
        self, name: str, new: Mapping[str, VectorSpec], generation: str | None = None
    ) -> list[str]:
        """Create collection ``name`` or add vector names to it. Returns names it could not add.

        Safe when another replica does the same at the same moment: "already exists" answers
        are treated as success and the schema is read again. Within this process the callers
        for one name take turns, and a caller that waited finds the names already there: the
        tasks that all reach a new collection at once (the first seconds of a run) create it
        once instead of each sending the whole creation to Qdrant.
        """
        if not new:
            return []
        async with self._changing.setdefault(name, asyncio.Lock()):
            current = await self.schema(name)
            if current and all(n in current for n in new):
                return []  # added while this caller waited its turn
            async with reachable():
                return await self._add_vectors(name, current, new, generation)

    async def _add_vectors(
        self,
        name: str,
        current: Mapping[str, VectorSpec],
        new: Mapping[str, VectorSpec],
        generation: str | None = None,
    ) -> list[str]:
        if not current:
            await self._create(name, new, generation)
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
                if not already_exists(exc):
                    log.warning("cannot add vector %r to %s: %s", vector_name, name, exc)
                    refused.append(vector_name)
        self._schemas.pop(name, None)
        return refused

    async def _create(
        self, name: str, specs: Mapping[str, VectorSpec], generation: str | None = None
    ) -> None:
        physical = f"{name}__v1"
        await self.create_physical(physical, specs, generation=generation)
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
        self,
        physical: str,
        specs: Mapping[str, VectorSpec],
        distance: Distance | None = None,
        generation: str | None = None,
    ) -> None:
        """Create a physical collection with the keyword indexes (no alias); idempotent.

        ``generation`` ("2024", "v1") is recorded in the collection's metadata, and a v1
        collection also gets the indexes of :data:`V1_INDEXED_FIELDS`."""
        metric = _DISTANCES[distance] if distance is not None else self.distance
        dense = {
            n: models.VectorParams(
                size=s.size or 0,
                distance=_declared(s, metric),
                multivector_config=_MAX_SIM if s.multi else None,
            )
            for n, s in specs.items()
            if not s.sparse
        }
        sparse = {n: models.SparseVectorParams() for n, s in specs.items() if s.sparse}
        try:
            await self.client.create_collection(
                physical,
                vectors_config=dense,
                sparse_vectors_config=sparse or None,
                metadata={GENERATION_KEY: generation} if generation else None,
            )
        except (UnexpectedResponse, ValueError) as exc:
            if not already_exists(exc):
                raise
        fields = dict.fromkeys(INDEXED_FIELDS, "keyword")
        if generation == "v1":
            fields.update(V1_INDEXED_FIELDS)
        with warnings.catch_warnings():
            # Local mode warns that payload indexes have no effect there; a server uses them.
            warnings.filterwarnings("ignore", message="Payload indexes have no effect")
            # All at once: each waits for its index (wait=True), and one after the other the
            # first collection cost a round trip per field before any point could be written.
            await asyncio.gather(
                *(
                    self.client.create_payload_index(
                        physical, f, field_schema=models.PayloadSchemaType(kind), wait=True
                    )
                    for f, kind in fields.items()
                )
            )

    async def check_generation(self, name: str, generation: str) -> None:
        """Refuse (:class:`BadInput`) to write Mixpeek ``generation``'s points into a collection
        holding the other generation's: their ids, vector names and payloads differ, and a
        search over both would mix them."""
        async with reachable():
            held = await self.generation(name)
        if held is not None and held != generation:
            raise BadInput(
                f"Qdrant collection {name!r} holds Mixpeek {held} points and these are Mixpeek "
                f"{generation} ones; a collection holds one API generation only: give the "
                f"{generation} collections other names (QDRANT_COLLECTION with {{collection_id}}) "
                "or another Qdrant"
            )

    async def generation(self, name: str) -> str | None:
        """The generation recorded in the collection's metadata; for a collection made before
        it was recorded, the one its points say (``mixpeek_api`` is on every v1 point); None
        for no collection or an empty one."""
        if name in self._generations:
            return self._generations[name]
        if not await self.client.collection_exists(name):
            return None
        info = await self.client.get_collection(name)
        held = (info.config.metadata or {}).get(GENERATION_KEY)
        if not isinstance(held, str):
            points, _ = await self.client.scroll(name, limit=1, with_payload=[GENERATION_KEY])
            if not points:
                return None
            held = "v1" if (points[0].payload or {}).get(GENERATION_KEY) == "v1" else "2024"
        self._generations[name] = held
        return held

    async def alias_target(self, alias: str) -> str | None:
        """The physical collection behind ``alias``, or None if it is not an alias."""
        async with reachable():
            return await self._alias_target(alias)

    async def exists(self, name: str) -> bool:
        """Whether ``name`` resolves (a collection or an alias)."""
        async with reachable():
            return await self.client.collection_exists(name)

    async def count(self, name: str) -> int:
        async with reachable():
            if not await self.client.collection_exists(name):
                return 0
            return (await self.client.count(name, exact=True)).count

    async def physical_collections(self) -> list[str]:
        """Every collection holding synced points (the marker's is not one)."""
        async with reachable():
            names = (c.name for c in (await self.client.get_collections()).collections)
            return sorted(n for n in names if n != MARKER_COLLECTION)

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
        async with reachable():
            await self.client.update_collection_aliases(change_aliases_operations=operations)
        self._schemas.pop(alias, None)
        self._generations.pop(alias, None)

    async def drop(self, physical: str) -> None:
        """Delete a physical collection (never an alias's name)."""
        async with reachable():
            await self.client.delete_collection(physical)
        self._schemas.pop(physical, None)
        self._generations.clear()  # an alias may have pointed at it

    async def distance_of(self, name: str) -> str | None:
        """The distance of the collection's first dense vector (lowercase), if any."""
        async with reachable():
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
            dense=models.DenseVectorConfig(
                size=spec.size or 0,
                distance=_declared(spec, metric),
                multivector_config=_MAX_SIM if spec.multi else None,
            )
        )


def _spec(params: models.VectorParams) -> VectorSpec:
    return VectorSpec(size=params.size, multi=params.multivector_config is not None)


def _declared(spec: VectorSpec, metric: models.Distance) -> models.Distance:
    """The distance upstream declares for the vector (v1's vector indexes), else ``metric``."""
    return _DECLARED_DISTANCES.get((spec.distance or "").lower(), metric)
