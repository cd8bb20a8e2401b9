"""The control API's request and answer bodies: what it accepts, checked before any work."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import Path as PathParam
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    StrictBool,
    StringConstraints,
    model_validator,
)


def _utf8(value: str) -> str:
    # A lone UTF-16 surrogate ("\ud800") is valid JSON but no database or upstream can store it.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text (no lone surrogates)") from None
    return value


def _strict_json(value: dict[str, Any] | None) -> dict[str, Any] | None:
    # NaN, Infinity or 1e400 parse from JSON but cannot be sent on to Mixpeek.
    try:
        json.dumps(value, allow_nan=False).encode("utf-8")
    except (ValueError, UnicodeEncodeError):
        raise ValueError("must be plain JSON (no NaN, Infinity or lone surrogates)") from None
    return value


Text = Annotated[str, AfterValidator(_utf8)]
TaskId = Annotated[Text, StringConstraints(strip_whitespace=True, min_length=1, max_length=255)]
Metadata = Annotated[dict[str, Any] | None, AfterValidator(_strict_json)]
LetterId = Annotated[int, PathParam(ge=1, le=2**63 - 1)]


class TrackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    task_ids: list[TaskId] = Field(min_length=1, max_length=1000)


class TrackAnswer(BaseModel):
    tracked: int
    already_tracked: int


class Item(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["video", "image", "text"]
    url: HttpUrl | None = None
    # Not only whitespace (``pattern`` so that the OpenAPI schema says so too).
    text: (
        Annotated[Text, StringConstraints(min_length=1, max_length=100_000, pattern=r"\S")] | None
    ) = None
    metadata: Metadata = None

    @model_validator(mode="after")
    def _one_source(self) -> Item:
        if self.kind == "text" and (self.text is None or self.url is not None):
            raise ValueError("a text item needs 'text' (and no 'url')")
        if self.kind != "text" and (self.url is None or self.text is not None):
            raise ValueError(f"a {self.kind} item needs an http(s) 'url' (and no 'text')")
        return self


class SubmitRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    collection_id: Annotated[Text, StringConstraints(min_length=1, max_length=255)]
    items: list[Item] = Field(min_length=1, max_length=100)
    # Strict, as the schema says: `0.0` or `"yes"` is a mistake to refuse, not a flag.
    prevent_duplicate: StrictBool = False


class SubmitAnswer(BaseModel):
    task_ids: list[str]
    errors: list[str]


class TaskState(BaseModel):
    task_id: str
    state: str
    upstream_status: str | None
    asset_id: str | None
    collection_id: str | None
    qdrant_collection: str | None
    features_synced: int
    dead_letters: int
    attempts: int
    error: str | None


class DeadLetterOut(BaseModel):
    id: int
    task_id: str
    feature_id: str | None
    qdrant_collection: str | None
    reason: str
    payload_excerpt: str | None
    created_at: float


class RetryOut(BaseModel):  # a failure a retry cleared
    failed_error: str | None
    failed_attempts: int
    failed_at: float
    retried_at: float


class TaskDetail(TaskState):
    dead_letter_list: list[DeadLetterOut]
    retries: list[RetryOut] = []


class RetryRequest(BaseModel):
    """``task_ids`` or every failed task; ``since``: ISO 8601 (naive is UTC) or epoch seconds."""

    model_config = ConfigDict(extra="forbid")
    task_ids: list[TaskId] = Field(default_factory=list, max_length=10_000)
    # Strict: `false` or `"yes"` is a mistake to refuse, not a time of 0 or a true flag.
    failed: StrictBool = False
    since: datetime | Annotated[float, Field(strict=True, allow_inf_nan=False)] | None = None
    dry_run: StrictBool = False

    @model_validator(mode="after")
    def _one_choice(self) -> RetryRequest:
        if bool(self.task_ids) == self.failed:
            raise ValueError("give task_ids or failed=true (one of the two)")
        return self


class RetryAnswer(BaseModel):
    dry_run: bool
    requeued: list[str]
    skipped: dict[str, str]


CollectionId = Annotated[
    Text, StringConstraints(strip_whitespace=True, min_length=1, max_length=255)
]


class WatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    collection_ids: list[CollectionId] = Field(min_length=1, max_length=1000)


class WatchAnswer(BaseModel):
    added: list[str]
    already_watched: list[str]


class StatusAnswer(BaseModel):
    counts: dict[str, int]
    tasks: list[TaskState]
