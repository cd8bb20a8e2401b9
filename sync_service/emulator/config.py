"""Knobs of the Mixpeek emulator: one validated model shared by the app, the CLI and tests."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

VectorsParam = Literal["both", "include_vectors", "return_vectors"]
RetryAfterHeader = Literal["sometimes", "always", "never"]
VectorKind = Literal["meaningful", "random"]
# Faults on the wire, drawn with one roll per request, so their rates share one budget of 1.
WIRE_FAULTS = ("garbage", "truncate", "reset", "slow_drip", "hang")


class EmulatorConfig(BaseModel):
    """Every behaviour the emulator can be tuned with.

    The model is validated on construction and on every runtime patch
    (``PATCH /_emulator/config``), so a bad value is a clear 422 rather than a crash later.
    """

    # extra="forbid" so a typo in a runtime patch is rejected instead of silently ignored.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    api_key: str | None = Field(
        default=None, description="Bearer token to require; None accepts any bearer token."
    )
    latency: float = Field(
        default=0.0, ge=0.0, description="Seconds each API answer takes, its own work included."
    )
    processing_time: float = Field(
        default=3.0, ge=0.0, description="Seconds a task takes from creation to DONE/FAILED."
    )
    fail_rate: float = Field(default=0.0, ge=0.0, le=1.0, description="Share of tasks that FAIL.")
    error_rate: float = Field(
        default=0.0, ge=0.0, le=1.0, description="Share of API requests answered 500/502/503."
    )
    rate_limit: int | None = Field(
        default=None, gt=0, description="API requests per minute (token bucket); None = unlimited."
    )
    rate_burst: int | None = Field(
        default=None, gt=0, description="Token bucket size; default max(1, rate_limit // 60)."
    )
    vector_size: int = Field(default=1408, gt=1, description="Length of multimodal-v1 vectors.")
    extra_vectors: dict[str, int] = Field(
        default_factory=dict,
        description="More named vectors every feature carries, name to length "
        '(e.g. {"clip-v1": 512}); multimodal-v1 is always there.',
    )
    vector_kind: VectorKind = Field(
        default="meaningful",
        description="meaningful: a feature's vectors embed its text (words and word pairs, "
        "hashed), so a text query finds it; random: seeded noise, as before.",
    )
    seed: int = Field(default=0, description="Seed for ids, failures, poison and fault choices.")
    interval_sec: int = Field(
        default=10, gt=0, description="Video segment length when the request gives none."
    )
    poison_rate: float = Field(
        default=0.0, ge=0.0, le=1.0, description="Share of features served with bad vectors."
    )
    stuck_rate: float = Field(
        default=0.0, ge=0.0, le=1.0, description="Share of tasks that stay PROCESSING forever."
    )
    vectors_param: VectorsParam = Field(
        default="both",
        description="Which query flag returns vectors: include_vectors (Gen B), "
        "return_vectors (later generation) or both.",
    )

    storm_rate: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="Share of API requests answered 429 whatever "
        "the token bucket says (a rate-limit storm).",
    )
    retry_after: int | None = Field(
        default=None,
        ge=0,
        description="Seconds every 429 announces (header and "
        "details.retry_after); None: the bucket's wait, or 1 s for a storm.",
    )
    retry_after_header: RetryAfterHeader = Field(
        default="sometimes",
        description="When a 429 carries the Retry-After header: sometimes "
        "(half of them, seeded), always or never; details.retry_after is always there.",
    )
    garbage_rate: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="Share of API requests answered 200 with a "
        "proxy's HTML page instead of JSON (the request is not applied).",
    )
    truncate_rate: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="Share of API requests whose 200 body is cut "
        "short of its Content-Length, then the connection closed.",
    )
    reset_rate: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="Share of API requests whose connection is "
        "reset after the headers and part of the body.",
    )
    slow_drip_rate: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="Share of API requests whose correct body is "
        "sent 16 bytes at a time, slow_drip_delay apart.",
    )
    slow_drip_delay: float = Field(
        default=0.5, ge=0.0, description="Seconds between two chunks of a slow-drip answer."
    )
    hang_rate: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="Share of API requests held hang_seconds before the (normal) answer is sent.",
    )
    hang_seconds: float = Field(
        default=30.0, ge=0.0, description="Seconds a hanging request is held."
    )

    ignore_filters: bool = Field(
        default=False,
        description="POST /assets ignores the request's filters, as an upstream that does "
        "not support them silently would (sort is still honoured).",
    )
    list_fail_page: int | None = Field(
        default=None,
        ge=1,
        description="POST /assets (v1: documents/list) answers 500 for this page number, "
        "every time (a listing cut short); None: never. v1 counts pages of its cursor's size.",
    )

    @model_validator(mode="after")
    def _rates_are_exclusive(self) -> EmulatorConfig:
        # fail and stuck are drawn for the same task; together they cannot exceed every task.
        if self.fail_rate + self.stuck_rate > 1.0:
            raise ValueError("fail_rate + stuck_rate must not exceed 1")
        if sum(self.wire_rates().values()) > 1.0:
            names = " + ".join(f"{name}_rate" for name in WIRE_FAULTS)
            raise ValueError(f"{names} must not exceed 1")
        return self

    @model_validator(mode="after")
    def _extra_vectors_are_sane(self) -> EmulatorConfig:
        for name, size in self.extra_vectors.items():
            if not name.strip() or name == "multimodal-v1":
                raise ValueError(f"extra_vectors: {name!r} is not a new vector name")
            if size < 2:
                raise ValueError(f"extra_vectors: {name!r} needs a length of 2 or more")
        return self

    def vector_sizes(self) -> dict[str, int]:
        """Every named vector a feature carries, with its length."""
        return {"multimodal-v1": self.vector_size, **self.extra_vectors}

    def wire_rates(self) -> dict[str, float]:
        """``{fault: rate}`` for the wire faults, in the order their shares are laid out."""
        return {name: float(getattr(self, f"{name}_rate")) for name in WIRE_FAULTS}

    @property
    def effective_burst(self) -> int:
        """Bucket capacity: explicit ``rate_burst`` or one second's worth of tokens."""
        if self.rate_burst is not None:
            return self.rate_burst
        return max(1, (self.rate_limit or 0) // 60)

    def patched(self, changes: dict[str, Any]) -> EmulatorConfig:
        """A new, fully validated config with ``changes`` applied (raises ValidationError)."""
        # type(self): a subclass (the v1 emulator's knobs) stays itself when patched.
        return type(self).model_validate({**self.model_dump(), **changes})
