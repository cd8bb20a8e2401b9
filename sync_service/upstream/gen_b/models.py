"""Pydantic models for Mixpeek answers, tolerant of every API generation in docs/upstream-2024.md.

Two rules shape everything here:

* unknown fields are kept (``extra="allow"``) and every model keeps the exact dict it was parsed
  from as ``.raw``, because the sync pipeline copies upstream payloads into Qdrant verbatim and
  must not re-serialise timestamps or drop fields a later generation added;
* odd values (garbage timestamps, ``null`` metadata, numeric ids) never fail a model; they become
  ``None``/empty while ``.raw`` still shows what came.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated, Any, Generic, Self, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    model_validator,
)
from pydantic.functional_validators import ModelWrapValidatorHandler

from sync_service.upstream.port import TaskOutcome, classify_status

__all__ = [
    "MODALITIES",
    "Asset",
    "AssetFeatures",
    "CursorPage",
    "Feature",
    "IndexResult",
    "Page",
    "Task",
    "TaskOutcome",
    "classify_status",
    "parse_timestamp",
]

MODALITIES = ("video", "image", "text", "audio")


def parse_timestamp(value: Any) -> datetime | None:
    """Aware UTC datetime from naive ISO (assets), ``Z`` ISO (features), epoch or ``{"$date"}``.

    Naive values are taken as UTC (Mixpeek's "MongoDB datetime format"); garbage gives None.
    """
    if isinstance(value, dict) and "$date" in value:  # MongoDB extended JSON
        value = value["$date"]
    parsed: datetime
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value):
            return None
        seconds = value / 1000 if abs(value) > 1e11 else value  # epoch milliseconds
        try:
            return datetime.fromtimestamp(seconds, tz=UTC)
        except (OverflowError, OSError, ValueError):
            return None
    elif isinstance(value, str) and value.strip():
        text = value.strip()
        if text[-1] in "zZ":
            text = text[:-1] + "+00:00"
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            return None
    else:
        return None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _opt_str(value: Any) -> str | None:
    """Strings stay, numbers become strings (ids), anything else becomes None."""
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def _id_str(value: Any) -> Any:
    # Numeric ids are coerced; anything else is left for pydantic to reject (ids are required).
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


def _opt_float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _dict_or_empty(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _dict_or_none(value: Any) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


Timestamp = Annotated[datetime | None, BeforeValidator(parse_timestamp)]
OptStr = Annotated[str | None, BeforeValidator(_opt_str)]
OptFloat = Annotated[float | None, BeforeValidator(_opt_float)]
Metadata = Annotated[dict[str, Any], BeforeValidator(_dict_or_empty)]
Id = Annotated[str, BeforeValidator(_id_str)]


class MixpeekModel(BaseModel):
    """Base: keeps unknown fields and the exact source dict as :attr:`raw`."""

    # defer_build: the validators are built on first use, not when `run` imports this module.
    model_config = ConfigDict(extra="allow", populate_by_name=True, defer_build=True)

    _raw: dict[str, Any] = PrivateAttr(default_factory=dict)

    @model_validator(mode="wrap")
    @classmethod
    def _keep_raw(cls, data: Any, handler: ModelWrapValidatorHandler[Self]) -> Self:
        model = handler(data)
        if isinstance(data, dict):
            # The very object we were given: nested models keep their own sub-dicts too.
            model._raw = data
        return model

    @property
    def raw(self) -> dict[str, Any]:
        """The JSON object this model was parsed from, unchanged (not a copy)."""
        return self._raw

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        """Parse a decoded JSON object; ``.raw`` is ``data`` itself."""
        return cls.model_validate(data)


class Task(MixpeekModel):
    """``GET /tasks/{id}``. Gen C tasks carry ``inputs``/``outputs`` and no ``asset_id``."""

    task_id: Id
    asset_id: OptStr = None
    # Gen D's TaskResponse defaults status to PENDING; a missing one must not fail the poll.
    status: Annotated[str, BeforeValidator(lambda v: _opt_str(v) or "")] = ""

    @property
    def outcome(self) -> TaskOutcome:
        """The status classified by :func:`classify_status`."""
        return classify_status(self.status)


class Asset(MixpeekModel):
    """An ``AssetResponse``; everything but ``asset_id`` is optional."""

    asset_id: Id
    collection_id: OptStr = None
    status: OptStr = None
    url: OptStr = None
    metadata: Metadata = Field(default_factory=dict)
    error: Any = None
    modality: OptStr = None
    task_id: OptStr = None
    created_at: Timestamp = None
    updated_at: Timestamp = None


class Feature(MixpeekModel):
    """One feature (video segment, image, text...) with its named ``vectors`` when asked for.

    ``vectors`` values are kept exactly as sent (dense lists, sparse dicts); checking them is
    the point mapper's job, so one bad vector never fails the whole answer.
    """

    feature_id: Id
    asset_id: OptStr = None
    collection_id: OptStr = None
    modality: OptStr = None
    metadata: Metadata = Field(default_factory=dict)
    created_at: Timestamp = None
    text: OptStr = None
    transcription: OptStr = None
    description: OptStr = None
    start_time: OptFloat = None
    end_time: OptFloat = None
    json_output: Any = None
    detect: Any = None
    vectors: Annotated[dict[str, Any] | None, BeforeValidator(_dict_or_none)] = None


class AssetFeatures(MixpeekModel):
    """``GET /assets/{id}/features``: the asset plus its features grouped by modality."""

    asset: Asset
    features: dict[str, list[Feature]] = Field(default_factory=dict)
    # Items that are not valid features (no feature_id...): set aside so the good ones still sync.
    invalid_features: list[Any] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _fill_modalities(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        features = data.get("features")
        grouped: dict[str, list[Any]] = {key: [] for key in MODALITIES}
        invalid: list[Any] = []
        for key, items in features.items() if isinstance(features, dict) else ():
            batch = _split_items({"results": items if isinstance(items, list) else []}, Feature)
            grouped[key] = batch["results"]
            invalid += batch["invalid_results"]
            if items is not None and not isinstance(items, list):
                invalid.append(items)
        # A new dict: .raw must stay the untouched upstream object.
        return {**data, "features": grouped, "invalid_features": invalid}

    def all_features(self) -> list[Feature]:
        """Every feature, standard modalities first, then any extra modality keys."""
        order = [*MODALITIES, *(k for k in self.features if k not in MODALITIES)]
        return [feature for key in order for feature in self.features.get(key, [])]


class IndexResult(MixpeekModel):
    """Answer of the index endpoints: ``{message, task_id}`` or, for a duplicate, an asset."""

    task_id: OptStr = None
    message: OptStr = None
    asset: Asset | None = None

    @model_validator(mode="before")
    @classmethod
    def _unwrap_asset(cls, data: Any) -> Any:
        if isinstance(data, dict) and "asset_id" in data and "asset" not in data:
            # prevent_duplicate returns the original AssetResponse; its task_id is the one to track.
            return {"asset": data, "task_id": data.get("task_id"), "message": data.get("message")}
        return data

    @property
    def duplicate(self) -> bool:
        """True when upstream returned an existing asset instead of queueing new work."""
        return self.asset is not None


T = TypeVar("T", bound=MixpeekModel)


def _split_items(data: Any, item_type: type[BaseModel] | None) -> Any:
    """Flatten ``pagination`` and set aside result items that fail validation.

    One malformed asset must not make a whole page (and every retry of it) fail.
    """
    if not isinstance(data, dict):
        return data
    out: dict[str, Any] = {k: v for k, v in data.items() if k != "pagination"}
    pagination = data.get("pagination")
    if isinstance(pagination, dict):
        for key, value in pagination.items():
            out.setdefault(key, value)
    results = data.get("results")
    if isinstance(results, list) and item_type is not None:
        good: list[Any] = []
        bad: list[Any] = []
        for item in results:
            try:
                good.append(item_type.model_validate(item))
            except ValidationError:
                bad.append(item)
        out["results"] = good
        out["invalid_results"] = bad
    elif results is None:
        out["results"] = []
    return out


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    try:
        return int(str(value))
    except ValueError:
        return None


OptInt = Annotated[int | None, BeforeValidator(_int_or_none)]


class Page(MixpeekModel, Generic[T]):
    """A page of ``POST /assets`` (page-number pagination); ``Page[Asset]``."""

    results: list[T] = Field(default_factory=list)
    total: OptInt = None
    page: OptInt = None
    page_size: OptInt = None
    total_pages: OptInt = None
    next_page: OptStr = None
    previous_page: OptStr = None
    invalid_results: list[Any] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _flatten(cls, data: Any, info: ValidationInfo) -> Any:
        # Page[Asset] is a pydantic-made subclass that knows its item type; bare Page does not.
        args = cls.__pydantic_generic_metadata__["args"]
        item_type = args[0] if args and isinstance(args[0], type) else None
        data = _split_items(data, item_type)
        if isinstance(data, dict) and isinstance(info.context, dict):
            data.setdefault("page_size", info.context.get("page_size"))
            data.setdefault("page", info.context.get("page"))
        return data

    @property
    def has_next(self) -> bool:
        """Whether another page follows: ``next_page`` if sent, else totals, else a full page."""
        return _has_next(self, self.page)


class CursorPage(MixpeekModel):
    """A page of ``POST /features`` (cursor pagination on ``offset_feature_id``)."""

    results: list[Feature] = Field(default_factory=list)
    total: OptInt = None
    page_size: OptInt = None
    total_pages: OptInt = None
    current_page: OptInt = None
    next_page: OptStr = None
    invalid_results: list[Any] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _flatten(cls, data: Any, info: ValidationInfo) -> Any:
        data = _split_items(data, Feature)
        if isinstance(data, dict) and isinstance(info.context, dict):
            data.setdefault("page_size", info.context.get("page_size"))
        return data

    @property
    def has_next(self) -> bool:
        """Whether another page follows (same rules as :attr:`Page.has_next`)."""
        return _has_next(self, self.current_page)

    @property
    def next_cursor(self) -> str | None:
        """The ``offset_feature_id`` for the next page: the last feature id, if there is one."""
        if not self.has_next:
            return None
        if self.results:
            return self.results[-1].feature_id
        last = self.invalid_results[-1] if self.invalid_results else None
        return _opt_str(last.get("feature_id")) if isinstance(last, dict) else None


def _has_next(page: Page[Any] | CursorPage, number: int | None) -> bool:
    """One rule for both pagination styles (``number`` is ``page`` or ``current_page``)."""
    count = len(page.results) + len(page.invalid_results)
    if count == 0:
        return False
    pagination = page.raw.get("pagination")
    if isinstance(pagination, dict) and "next_page" in pagination:
        return page.next_page is not None
    if number is not None and page.total_pages is not None:
        return number < page.total_pages
    return page.page_size is not None and count >= page.page_size
