"""What ``run`` imports in a thread when its first write reaches for Qdrant
(``runtime.SinkInMaking``): the sink, and the models a daemon's writes use, built here rather
than on the event loop at their first use (25-45 ms for these, every request in flight
waiting). Listed from a run of bench scenario 10, after which no other model was built; any
other is built at its first use. Commands that load the sink themselves skip this.
"""

from __future__ import annotations

from sync_service.qdrant.client import build_now, models
from sync_service.qdrant.sink import QdrantSink

__all__ = ["QdrantSink"]

build_now(
    models.CollectionConfig,
    models.CollectionInfo,
    models.CollectionParams,
    models.CollectionsAliasesResponse,
    models.CountResult,
    models.CreateAlias,
    models.CreateAliasOperation,
    models.CreateCollection,
    models.FieldCondition,
    models.Filter,
    models.HnswConfig,
    models.IsEmptyCondition,
    models.MultiVectorConfig,
    models.OptimizersConfig,
    models.PayloadField,
    models.PointStruct,
    models.Range,
    models.UpdateResult,
    models.VectorParams,
    models.WalConfig,
)
