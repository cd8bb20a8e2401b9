"""Knobs of the v1 emulator: the 2024 emulator's (latency, faults, rate limit...) plus v1's.

Every knob can be changed at runtime with ``PATCH /_emulator/config``, like the 2024 ones.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from sync_service.emulator.config import EmulatorConfig, RetryAfterHeader

VectorPlacement = Literal["root", "vectors", "vector"]
ValidationForm = Literal["envelope", "fastapi"]
DocumentIds = Literal["bucket", "deterministic", "random"]
WebhookEnvelope = Literal["current", "legacy"]


class V1Config(EmulatorConfig):
    """The 2024 knobs keep their meaning where v1 has the same thing (``processing_time``,
    ``fail_rate``, ``stuck_rate``, ``interval_sec``, ``vector_kind``, ``ignore_filters`` on
    the documents list, every fault and rate knob); ``vector_size``, ``extra_vectors`` and
    ``vectors_param`` do not apply (v1 reads vector names and sizes from the extractor)."""

    # v1's docs say every 429 carries Retry-After, unlike the 2024 API.
    retry_after_header: RetryAfterHeader = "always"

    vector_placement: VectorPlacement = Field(
        default="root",
        description="Where return_vectors puts the vectors: root keys named after the vector "
        "indexes (the guessed current shape), a 'vectors' dict (Apr 2025) or one 'vector' "
        "list of the primary index (Dec 2025 SDK).",
    )
    vector_dimensions: dict[str, int] = Field(
        default_factory=dict,
        description="Override of an index's dimensions by vector name (small vectors keep "
        "tests fast); the extractor's own size otherwise.",
    )
    validation_form: ValidationForm = Field(
        default="envelope",
        description="422 body: the error envelope with details.validation_errors (the docs) "
        "or FastAPI's {'detail': [...]} (the OpenAPI).",
    )
    task_expiry: float | None = Field(
        default=None,
        gt=0,
        description="Seconds after its creation a task answers 404 (Mixpeek keeps them about "
        "24 h); None: never. Its batch still answers.",
    )
    partial_rate: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="Share of tasks that end COMPLETED_WITH_ERRORS (one object of the batch "
        "yields no documents).",
    )
    document_ids: DocumentIds = Field(
        default="bucket",
        description="bucket: deterministic ids when the bucket has a unique_key, random ones "
        "otherwise (so re-processing duplicates documents); or force either.",
    )
    object_delete_cascades: bool = Field(
        default=False,
        description="Deleting an object deletes its documents even without ?cascade=true "
        "(by default documents outlive their object unless cascade is asked).",
    )
    webhook_envelope: WebhookEnvelope = Field(
        default="current",
        description="Event body: the current docs' envelope (namespace_id, cache_scope) or "
        "the earlier one (namespace, actor, version, cache_scope_to_invalidate).",
    )
    webhook_delay: float = Field(
        default=0.0, ge=0.0, description="Seconds between an event and its first delivery."
    )
    webhook_duplicate_rate: float = Field(
        default=0.0, ge=0.0, le=1.0, description="Share of deliveries sent twice (same event_id)."
    )
    webhook_reorder: bool = Field(
        default=False,
        description="Deliveries due together go out in a seeded shuffled order.",
    )
    webhook_reorder_window: float = Field(
        default=0.0,
        ge=0.0,
        description="With webhook_reorder, hold deliveries to the end of windows this many "
        "seconds long, so events close in time (not only simultaneous ones) go out shuffled.",
    )
    webhook_retry_base: float = Field(
        default=0.5, ge=0.0, description="Backoff before the first retry; doubled each time."
    )
    webhook_max_attempts: int = Field(
        default=5, ge=1, description="Attempts per delivery before it is kept as failed."
    )

    @model_validator(mode="after")
    def _outcomes_fit(self) -> V1Config:
        if self.fail_rate + self.stuck_rate + self.partial_rate > 1.0:
            raise ValueError("fail_rate + stuck_rate + partial_rate must not exceed 1")
        for name, size in self.vector_dimensions.items():
            if size < 2:
                raise ValueError(f"vector_dimensions: {name!r} needs 2 or more")
        return self
