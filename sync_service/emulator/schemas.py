"""Request bodies of the emulated Gen B endpoints.

Declared as pydantic models so FastAPI answers malformed requests with its own 422
``{"detail": [...]}`` body, exactly as Mixpeek's FastAPI server did.
"""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Lenient(BaseModel):
    # Upstream grew fields quickly (§9 of the spec); unknown keys must not turn into 422s.
    model_config = ConfigDict(extra="allow")


class AssetUpdate(_Lenient):
    asset_id: str
    mode: Literal["replace", "append"]


class VideoSetting(_Lenient):
    interval_sec: int | None = Field(default=None, ge=5, lt=120)


class _IndexUrl(_Lenient):
    url: str
    collection_id: str = Field(min_length=1)
    metadata: dict[str, Any] = Field(default_factory=dict)
    asset_update: AssetUpdate | None = None
    prevent_duplicate: bool = False
    should_save: bool = True

    @field_validator("url")
    @classmethod
    def _http_only(cls, value: str) -> str:
        # Kept as the caller's string (no normalising) because unique_hash is taken from it.
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("url must be an absolute http or https URL")
        return value


class IndexVideoUrl(_IndexUrl):
    video_settings: list[VideoSetting] | None = None


class IndexImageUrl(_IndexUrl):
    image_settings: dict[str, Any] | None = None


class IndexText(_Lenient):
    text: str = Field(min_length=1)
    collection_id: str = Field(min_length=1)
    metadata: dict[str, Any] = Field(default_factory=dict)
    text_settings: dict[str, Any] | None = None
    asset_update: AssetUpdate | None = None


class Sort(_Lenient):
    field: str
    direction: Literal["asc", "desc"] = "asc"


class ListRequest(_Lenient):
    collection_ids: list[str]
    filters: dict[str, Any] | None = None
    select: list[str] | None = None
    sort: Sort | None = None


class SearchQuery(_Lenient):
    key: list[str] | Literal["*"] = "*"
    value: str


class SearchRequest(ListRequest):
    query: SearchQuery


class AssetPatch(_Lenient):
    metadata: dict[str, Any] | None = None
    propagate_features: bool = False


class FeaturePut(_Lenient):
    metadata: dict[str, Any]


class EmbedRequest(_Lenient):
    """``POST /features/extractors/embed``: the later generations' body (``type``, ``value``,
    ``embedding_model``); B' named the vector ``vector_index``/``vector_name``, accepted too."""

    type: Literal["text"] = "text"
    value: str = Field(min_length=1, max_length=100_000)
    embedding_model: str | None = None
    vector_index: str | None = None
    vector_name: str | None = None

    @property
    def vector(self) -> str | None:
        return self.embedding_model or self.vector_index or self.vector_name
