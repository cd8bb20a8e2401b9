"""The upstream port: what the service needs from Mixpeek, in the service's own words.

The engine, the keep-in-step commands, the control API and the CLI talk to Mixpeek only through
:class:`Upstream` and the models below; one adapter per API version implements it
(:mod:`sync_service.upstream.gen_b` for the November-2024 API). Nothing here knows a route,
a wire model or a status spelling of one API in particular.

Two rules shape the models:

* what will become a Qdrant payload is carried as ``data``, the JSON object as upstream served
  it (docs/contract.md §4 copies it verbatim), with a feature's vectors under ``data["vectors"]`` in
  one form whatever the API: ``{name: [floats]}`` for dense, ``{name: {"indices", "values"}}`` for
  sparse, ``{name: [[floats], …]}`` for multi-dense (one vector per token or patch). Checking
  vectors is the point mapper's job, so one bad vector never fails an asset;
* everything the service decides on (ids, outcome, change stamp) is a typed field, read once by
  the adapter, so no caller parses upstream JSON.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from types import TracebackType
from typing import Any, Literal, Protocol, Self

from sync_service.upstream.errors import (
    MixpeekAuthError,
    MixpeekBadRequest,
    MixpeekBadResponse,
    MixpeekError,
    MixpeekNotFound,
    MixpeekTransportError,
    MixpeekUnsupported,
)
from sync_service.upstream.outage import MixpeekUnavailable, Outage

__all__ = [
    "Asset",
    "AssetContent",
    "AssetPage",
    "Embedding",
    "Feature",
    "ListOrder",
    "MixpeekAuthError",
    "MixpeekBadRequest",
    "MixpeekBadResponse",
    "MixpeekError",
    "MixpeekNotFound",
    "MixpeekTransportError",
    "MixpeekUnavailable",
    "MixpeekUnsupported",
    "Outage",
    "Submission",
    "TaskOutcome",
    "TaskState",
    "Upstream",
    "VectorShape",
    "WebhookSubscription",
    "classify_status",
]


class TaskOutcome(StrEnum):
    """What an upstream status means for the sync: finished well, finished badly, or not yet."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    PENDING = "pending"


# Every spelling seen across Mixpeek's generations (docs/upstream-2024.md §3).
_SUCCEEDED = frozenset({"DONE", "COMPLETED", "COMPLETED_WITH_ERRORS"})
_FAILED = frozenset({"FAILED", "CANCELLED", "CANCELED", "SKIPPED"})


def classify_status(status: str | None) -> TaskOutcome:
    """Classify any upstream status spelling; anything unknown is PENDING (never terminal)."""
    if not isinstance(status, str):
        return TaskOutcome.PENDING
    value = status.strip().upper()
    if value in _SUCCEEDED:
        return TaskOutcome.SUCCEEDED
    if value in _FAILED:
        return TaskOutcome.FAILED
    return TaskOutcome.PENDING


@dataclass(frozen=True)
class TaskState:
    """A task as last seen upstream."""

    task_id: str
    #: Upstream's own word ("PROCESSING", "DONE"...), for messages and ``status``.
    status: str
    outcome: TaskOutcome
    #: The asset the task produces, once upstream names it.
    asset_id: str | None = None
    #: Further assets the same task produced (a v1 batch of several objects, or one feeding
    #: several collections): the engine syncs each as an asset job of its own.
    more_assets: tuple[str, ...] = ()
    #: What the task should have produced and did not, in words (a v1 batch's object that
    #: yielded no document, a document count that disagrees with what the batch reports):
    #: recorded as the task's dead letters, so ``status`` shows them beside what landed.
    problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class Asset:
    """An asset (a video, image or text that was indexed), as listed or read upstream."""

    asset_id: str
    collection_id: str | None
    #: Upstream's status word, if it states one; ``outcome`` counts none as finished.
    status: str | None
    outcome: TaskOutcome
    #: Its change stamp exactly as served: what tells a changed asset apart (None: unknown).
    stamp: str | None
    #: The same stamp in epoch seconds, for watermarks and the changed-since filter.
    changed_at: float | None
    #: Why upstream failed it, if it says.
    error: str | None
    #: The task that made it, if upstream says.
    task_id: str | None
    #: The JSON object as served: copied into every point's payload as ``asset``.
    data: Mapping[str, Any] = field(repr=False)
    #: Every feature id the asset has upstream, when a listing served them all (None: unknown,
    #: as from an API that lists assets without their features). A full pass compares it with
    #: the points held, which finds a feature deleted from an asset that was not changed.
    feature_ids: frozenset[str] | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Feature:
    """One feature (video segment, image, text...) of an asset, with its named vectors."""

    feature_id: str
    #: The JSON object as served (the point's payload), vectors under ``"vectors"``.
    data: Mapping[str, Any] = field(repr=False)


@dataclass(frozen=True)
class VectorShape:
    """A vector name as upstream declares it (v1's vector indexes), before any vector is seen:
    what the Qdrant collection must hold under that name."""

    kind: Literal["dense", "sparse", "multi_dense"]
    #: Dimensions of a dense vector, or of each vector of a multi-dense one; None for sparse.
    size: int | None
    #: "cosine", "dot", "euclid" or "manhattan"; None: the service's configured distance.
    distance: str | None = None


@dataclass(frozen=True)
class AssetContent:
    """An asset with every feature's full JSON, vectors included (what a sync writes)."""

    asset: Asset
    #: The Mixpeek collection the asset belongs to ("default" when upstream names none).
    collection_id: str
    features: list[Feature]
    #: Features the asset listed but that were gone when fetched (404), with what was listed.
    vanished: list[Feature]
    #: Every feature id the asset lists upstream (fetched or not), minus the vanished ones.
    upstream_ids: frozenset[str]
    #: The vector names upstream declares for the collection (empty: known only from the data).
    declared: Mapping[str, VectorShape] = field(default_factory=dict)
    #: Which API generation served it: a Qdrant collection holds one generation only.
    generation: Literal["2024", "v1"] = "2024"


@dataclass(frozen=True)
class AssetPage:
    """One page of a collection's assets."""

    assets: list[Asset]
    #: Whether a next page follows.
    has_next: bool
    #: Assets in the whole listing and its page count, when upstream says.
    total: int | None = None
    total_pages: int | None = None
    #: An opaque token to list the next page without walking there from page 1 (v1 pages by
    #: cursor), for a pass another process resumes; None when the page number suffices.
    resume: str | None = None


class ListOrder(StrEnum):
    """The orders a listing is asked for in."""

    #: Oldest created first: the stable order a full pass pages through.
    CREATED = "created"
    #: Least recently changed first: an incremental pass's keyset order.
    CHANGED = "changed"
    #: Most recently changed first: to read the newest change stamp.
    NEWEST_CHANGE = "newest_change"


@dataclass(frozen=True)
class Submission:
    """One item to index: a video or image by URL, or a text."""

    kind: Literal["video", "image", "text"]
    #: The URL (video, image) or the text itself.
    content: str
    collection_id: str
    metadata: Mapping[str, Any] | None = None
    #: Ask upstream to answer with the existing asset for a URL it already has.
    prevent_duplicate: bool = False


#: A text embedded as upstream embeds features: dense floats, multi-dense (one vector per
#: token, compared by MAX_SIM), or sparse ``{"indices", "values"}``.
Embedding = list[float] | list[list[float]] | dict[str, list[Any]]


@dataclass(frozen=True)
class WebhookSubscription:
    """A webhook registered upstream, as ``webhook list`` shows it: never a header's value
    (one of them is the shared secret)."""

    webhook_id: str
    name: str
    #: Where it delivers (its first ``webhook`` channel), if it has one.
    url: str | None
    event_types: tuple[str, ...]
    active: bool
    #: The names of the headers it sends.
    header_names: tuple[str, ...] = ()


class Upstream(Protocol):
    """Mixpeek as the service needs it. Errors are :class:`MixpeekError` subclasses:
    :class:`MixpeekNotFound` for a 404 (gone), :class:`MixpeekAuthError` for a refused key,
    :class:`MixpeekUnavailable` when the breaker is open."""

    #: The process's breaker: whether Mixpeek as a whole is down (see ``upstream/outage.py``).
    outage: Outage

    async def get_task(self, task_id: str) -> TaskState:
        """The task's state now."""
        ...

    async def failure_reason(self, task: TaskState) -> str | None:
        """Why upstream failed this task, if it says (None when it does not or cannot)."""
        ...

    async def get_asset(self, asset_id: str) -> Asset:
        """One asset; :class:`MixpeekNotFound` when it is gone."""
        ...

    async def fetch_content(self, asset_id: str, *, only_if_done: bool = False) -> AssetContent:
        """The asset with every feature and its vectors.

        ``only_if_done``: an asset not finished upstream comes back without features (a job
        polling a processing asset must not download every vector each time).
        """
        ...

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
        """One page of the collection's assets, changed at or after ``changed_since`` (epoch
        seconds) when given. Upstream may ignore the filter or the order: callers check.
        ``resume``: the previous page's :attr:`AssetPage.resume`, when this page is asked for
        by another process (a token that does not fit the request is ignored)."""
        ...

    async def delete_asset(self, asset_id: str) -> None:
        """Delete the asset upstream."""
        ...

    async def embed(self, text: str, vector_name: str) -> Embedding:
        """``text`` embedded into vector ``vector_name`` as upstream embeds features (see
        :data:`Embedding`). :class:`MixpeekUnsupported` when the API cannot embed,
        :class:`MixpeekBadRequest` when it does not know the vector name."""
        ...

    async def submit(self, item: Submission) -> str | None:
        """Queue one item for indexing; the task id to track (None if upstream gave none, as
        for an existing asset returned for ``prevent_duplicate`` that names no task)."""
        ...

    def submit_all(self, items: Sequence[Submission]) -> AsyncIterator[str]:
        """Queue several items submitted together; yields each task id to track as soon as it
        exists (so a failure half-way loses none): one per item on the 2024 API, one per batch
        on v1 (a batch holds every item bound for one bucket)."""
        ...

    # -- webhooks (MixpeekUnsupported where the API has none) ------------------------------

    async def namespace_ids(self) -> frozenset[str]:
        """Every identifier (id and name) of the namespace this upstream reads: a webhook
        event naming another is not this service's. Empty when no namespace is configured."""
        ...

    async def save_webhook(
        self, name: str, url: str, event_types: tuple[str, ...], headers: Mapping[str, str]
    ) -> tuple[WebhookSubscription, bool]:
        """Register the webhook ``name`` (replacing one of that name): (it, whether it is new)."""
        ...

    async def list_webhooks(self) -> list[WebhookSubscription]:
        """The webhooks registered upstream."""
        ...

    async def delete_webhook(self, webhook_id: str) -> None:
        """Remove a webhook (by id or name); removing one that is not there is no error."""
        ...

    async def aclose(self) -> None:
        """Close the connections."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None: ...
