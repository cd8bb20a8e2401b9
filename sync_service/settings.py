"""Configuration: the environment variables of docs/contract.md §2 plus the ``SYNC_`` tuning knobs.

Every value is validated before a command touches anything, and a bad value is reported as one
line naming the variable (``SYNC_POLL_INTERVAL: must be greater than 0 (got '-1')``).
"""

from __future__ import annotations

import ipaddress
import re
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import parse_qs

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from sync_service.choices import Distance as Distance  # defined there, light for the CLI
from sync_service.choices import MixpeekApiVersion as MixpeekApiVersion
from sync_service.engine.poll_schedule import PollScheduleKind

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

# Finite: "inf" and "nan" parse as floats, and nan compares false with every bound.
PositiveSeconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class LogFormat(StrEnum):
    text = "text"
    json = "json"


def _env(name: str, **kwargs: Any) -> Any:
    """A field read from exactly the environment variable ``name`` (the contract's names)."""
    return Field(validation_alias=AliasChoices(name), **kwargs)


class Settings(BaseSettings):
    """Everything the service reads from its environment (and from ``.env``)."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_ignore_empty=True,
        extra="ignore",
        populate_by_name=True,
    )

    # -- upstream ---------------------------------------------------------------------------
    mixpeek_api_url: str = _env("MIXPEEK_API_URL", default="https://api.mixpeek.com")
    mixpeek_api_key: SecretStr | None = _env("MIXPEEK_API_KEY", default=None)
    # Sent as a header: printable ASCII, and of a header's size.
    mixpeek_namespace: str | None = _env(
        "MIXPEEK_NAMESPACE", default=None, max_length=255, pattern=r"^[\x20-\x7e]+$"
    )
    # auto: one probe (GET /v1/health) on the first call; an explicit value skips it.
    mixpeek_api_version: MixpeekApiVersion = _env(
        "MIXPEEK_API_VERSION", default=MixpeekApiVersion.auto
    )

    # -- Qdrant -----------------------------------------------------------------------------
    qdrant_url: str | None = _env("QDRANT_URL", default=None)
    qdrant_path: Path = _env("QDRANT_PATH", default=Path("./data/qdrant"))
    qdrant_api_key: SecretStr | None = _env("QDRANT_API_KEY", default=None)
    qdrant_collection: str = _env("QDRANT_COLLECTION", default="{collection_id}", min_length=1)

    # -- state store ------------------------------------------------------------------------
    # A secret: a PostgreSQL URL usually carries the password.
    database_url: SecretStr = _env("DATABASE_URL", default=SecretStr("sqlite:///./data/sync.db"))
    db_statement_timeout: PositiveSeconds = _env("SYNC_DB_STATEMENT_TIMEOUT", default=30.0)
    #: ``run`` migrates an older schema at start; false leaves that to ``sync-service migrate``.
    auto_migrate: bool = _env("SYNC_AUTO_MIGRATE", default=True)

    # -- scheduler --------------------------------------------------------------------------
    poll_interval: PositiveSeconds = _env("SYNC_POLL_INTERVAL", default=2.0)
    max_poll_interval: PositiveSeconds = _env("SYNC_MAX_POLL_INTERVAL", default=30.0)
    poll_schedule: PollScheduleKind = _env("SYNC_POLL_SCHEDULE", default=PollScheduleKind.learned)
    task_timeout: PositiveSeconds = _env("SYNC_TASK_TIMEOUT", default=3600.0)
    max_attempts: int = _env("SYNC_MAX_ATTEMPTS", default=8, ge=1)
    claim_batch: int = _env("SYNC_CLAIM_BATCH", default=100, ge=1, le=10_000)
    lease_seconds: PositiveSeconds = _env("SYNC_LEASE_SECONDS", default=10.0)
    shutdown_grace: PositiveSeconds = _env("SYNC_SHUTDOWN_GRACE", default=20.0)
    #: ``run --drain`` gives up (exit 1, the work left pending) after Mixpeek was unavailable
    #: this long; ``run`` without ``--drain`` waits for it however long it takes.
    drain_outage_wait: PositiveSeconds = _env("SYNC_DRAIN_OUTAGE_WAIT", default=300.0)

    # -- upstream HTTP ----------------------------------------------------------------------
    max_concurrency: int = _env("SYNC_MAX_CONCURRENCY", default=16, ge=1, le=1024)
    rate_limit_per_minute: float | None = _env("SYNC_RATE_LIMIT_PER_MINUTE", default=None, gt=0)
    http_timeout: PositiveSeconds = _env("SYNC_HTTP_TIMEOUT", default=30.0)
    http_max_attempts: int = _env("SYNC_HTTP_MAX_ATTEMPTS", default=6, ge=1, le=100)
    retry_base_delay: PositiveSeconds = _env("SYNC_RETRY_BASE_DELAY", default=0.5)
    retry_max_delay: PositiveSeconds = _env("SYNC_RETRY_MAX_DELAY", default=30.0)

    # -- Qdrant writes ----------------------------------------------------------------------
    upsert_batch_points: int = _env("SYNC_UPSERT_BATCH_POINTS", default=256, ge=1, le=10_000)
    # Qdrant refuses request bodies over 32 MiB; 8 MiB keeps a wide margin (docs/contract.md §6.7).
    upsert_batch_bytes: int = _env(
        "SYNC_UPSERT_BATCH_BYTES", default=8 * 1024 * 1024, ge=64 * 1024, le=30 * 1024 * 1024
    )
    distance: Distance = _env("SYNC_DISTANCE", default=Distance.cosine)
    # A forget/verify --repair run that would delete more than this share of a collection's
    # points is refused unless forced: a wrong collection id must not empty a collection.
    delete_guard: float = _env("SYNC_DELETE_GUARD", default=0.2, ge=0.0, le=1.0)
    # Sizes for vector names a new collection is created with, before any data says otherwise
    # ("multimodal-v1=1408,clip-v1=512"): a first vector of the wrong length cannot set them.
    vector_sizes: Annotated[dict[str, int], NoDecode] = _env(
        "SYNC_VECTOR_SIZES", default_factory=dict
    )

    # -- watch mode (mirroring whole collections) --------------------------------------------
    watch_collections: Annotated[list[str], NoDecode] = _env(
        "SYNC_WATCH_COLLECTIONS", default_factory=list
    )
    watch_interval: PositiveSeconds = _env("SYNC_WATCH_INTERVAL", default=60.0)
    watch_full_interval: PositiveSeconds = _env("SYNC_WATCH_FULL_INTERVAL", default=3600.0)
    # The incremental pass lists from (watermark - overlap): upstream timestamps are naive and
    # another clock's, and a write may become visible after a later one.
    watch_overlap: float = _env("SYNC_WATCH_OVERLAP", default=300.0, ge=0.0)

    # -- control API and logs ---------------------------------------------------------------
    api_host: str = _env("SYNC_API_HOST", default="127.0.0.1", min_length=1)
    api_port: int = _env("SYNC_API_PORT", default=8080, ge=0, le=65535)
    api_token: SecretStr | None = _env("SYNC_API_TOKEN", default=None)
    api_max_body_bytes: int = _env("SYNC_API_MAX_BODY_BYTES", default=1024 * 1024, ge=1024)
    log_level: str = _env("SYNC_LOG_LEVEL", default="INFO")
    log_format: LogFormat = _env("SYNC_LOG_FORMAT", default=LogFormat.text)

    # -- webhooks (README "Webhooks"): the shared secret Mixpeek sends in the header (unset:
    # the receiver refuses all); event ids are kept a week (Mixpeek's retries are undocumented).
    webhook_secret: SecretStr | None = _env("SYNC_WEBHOOK_SECRET", default=None)
    webhook_header: str = _env(  # an HTTP header name (an RFC 9110 token)
        "SYNC_WEBHOOK_HEADER",
        default="X-Mixpeek-Secret",
        pattern=r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,100}$",
    )
    webhook_retention: PositiveSeconds = _env("SYNC_WEBHOOK_RETENTION", default=7 * 86400.0)

    @field_validator("*", mode="before")
    @classmethod
    def _utf8(cls, value: Any) -> Any:
        # Python hands undecodable bytes of the environment over as lone surrogates: they
        # would pass as text here and fail far away (an HTTP header, a file name, SQLite).
        if isinstance(value, str) and not _is_utf8(value):
            raise ValueError("is not valid UTF-8 text")
        return value

    @field_validator("mixpeek_api_key", "qdrant_api_key", "api_token", "webhook_secret")
    @classmethod
    def _header_safe(cls, value: SecretStr | None) -> SecretStr | None:
        # Each is sent as a bearer token in an HTTP header, where a space, a control
        # character or a non-ASCII letter fails the request (or splits the header).
        if value is not None and not _HEADER_TOKEN.fullmatch(value.get_secret_value()):
            raise ValueError(
                "must be printable ASCII without spaces (it is sent in an HTTP header)"
            )
        return value

    @field_validator("webhook_secret")
    @classmethod
    def _long_secret(cls, value: SecretStr | None) -> SecretStr | None:
        # It guards a route meant to face the internet: a short one is guessable.
        if value is not None and len(value.get_secret_value()) < MIN_EXPOSED_TOKEN:
            raise ValueError(f"must be at least {MIN_EXPOSED_TOKEN} characters")
        return value

    @field_validator("mixpeek_api_url", "qdrant_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith(("http://", "https://")) or len(value.split("://", 1)[1]) == 0:
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")

    @field_validator("vector_sizes", mode="before")
    @classmethod
    def _vector_sizes(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        sizes: dict[str, int] = {}
        for item in (part.strip() for part in value.split(",")):
            if not item:
                continue
            name, sep, size = item.partition("=")
            if not sep or not name.strip() or not size.strip().isdigit() or int(size) < 1:
                raise ValueError(
                    f"expected name=size pairs separated by commas, e.g. multimodal-v1=1408 "
                    f"(bad item {brief(item)})"
                )
            sizes[name.strip()] = int(size)
        return sizes

    @field_validator("watch_collections", mode="before")
    @classmethod
    def _watch_collections(cls, value: Any) -> Any:
        if isinstance(value, str):
            ids = list(dict.fromkeys(c.strip() for c in value.split(",") if c.strip()))
            for cid in ids:  # as `watch add` checks its arguments (cli/common.check_ids)
                if len(cid) > 255 or any(ord(c) < 32 or ord(c) == 127 for c in cid):
                    raise ValueError(
                        f"collection id {brief(cid, 40)}: at most 255 characters, no control "
                        "characters"
                    )
            return ids
        return value

    @field_validator("qdrant_path")
    @classmethod
    def _qdrant_path(cls, value: Path) -> Path:
        if value.expanduser().exists() and not value.expanduser().is_dir():
            raise ValueError("is a file; embedded Qdrant keeps a folder there")
        blocked = file_in_the_way(value)
        if blocked is not None:
            raise ValueError(f"{str(blocked)!r} is a file, so no folder can be made under it")
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: SecretStr) -> SecretStr:
        check_database_url(value.get_secret_value())  # raises ValueError with a readable reason
        return value

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return level

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.max_poll_interval < self.poll_interval:
            raise ValueError("SYNC_MAX_POLL_INTERVAL must not be smaller than SYNC_POLL_INTERVAL")
        return self

    def api_exposure_problem(self) -> str | None:
        """Why the control API must not start as configured (None when it may)."""
        if self.api_port == 0 or _is_loopback(self.api_host):
            return None
        if self.api_token is None:
            return (
                "SYNC_API_TOKEN: required when the control API listens on a non-loopback "
                f"address (SYNC_API_HOST={self.api_host}); set a token or SYNC_API_PORT=0 to "
                "turn the API off"
            )
        if len(self.api_token.get_secret_value()) < MIN_EXPOSED_TOKEN:
            return (
                f"SYNC_API_TOKEN: at least {MIN_EXPOSED_TOKEN} characters when the control API "
                f"listens on a non-loopback address (SYNC_API_HOST={self.api_host})"
            )
        return None

    def qdrant_collection_for(self, collection_id: str) -> str:
        """The Qdrant collection (alias) name for a Mixpeek collection id."""
        return self.qdrant_collection.replace("{collection_id}", collection_id)


#: The shortest control API token accepted on a non-loopback bind (guessable otherwise).
MIN_EXPOSED_TOKEN = 16
#: What a bearer token may hold: visible ASCII (RFC 6750 allows less; this refuses only what
#: cannot travel in a header at all).
_HEADER_TOKEN = re.compile(r"[\x21-\x7e]+")


class SettingUnusable(Exception):
    """A well-formed setting that cannot be used on this machine (a folder that cannot be
    made, a SQLite file that cannot be opened). The message names the setting; the CLI
    reports it as a configuration error (exit 2)."""


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def file_in_the_way(path: Path) -> Path | None:
    """The nearest existing ancestor of ``path`` when it is a file (nothing can be made
    under it), else None."""
    for parent in path.expanduser().parents:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_database_url(url: str) -> None:
    """Raise ValueError with a readable reason unless ``url`` is a state store we can open.

    Parsed by hand, as SQLAlchemy's URL grammar reads it: every command validates its settings
    first, and importing SQLAlchemy for that alone cost a fifth of a second of start-up."""
    scheme, sep, rest = url.partition("://")
    if not sep or not re.fullmatch(r"[\w+]+", scheme):
        raise ValueError("is not a database URL (expected sqlite:///path or postgresql://…)")
    backend = scheme.split("+")[0]
    location, _, query = rest.partition("?")
    if backend == "sqlite":
        path = location.partition("/")[2]
        if not path:
            raise ValueError("needs a file path, e.g. sqlite:///./data/sync.db")
        if path != ":memory:" and Path(path).expanduser().is_dir():
            raise ValueError(f"{path!r} is a folder, not a SQLite file")
        blocked = file_in_the_way(Path(path)) if path != ":memory:" else None
        if blocked is not None:
            raise ValueError(f"{str(blocked)!r} is a file, so {path!r} cannot be made under it")
        return
    if backend in ("postgresql", "postgres"):
        netloc = location.partition("/")[0].rpartition("@")[2]
        host = netloc[1:].partition("]")[0] if netloc.startswith("[") else netloc.partition(":")[0]
        if not host and not parse_qs(query).get("host"):
            raise ValueError("needs a host, e.g. postgresql://user@127.0.0.1:5432/sync")
        from sync_service.state.dsn import parse_query  # a leaf: no SQLAlchemy

        parse_query(query)
        return
    raise ValueError(f"unsupported database {backend!r}: use sqlite:/// or postgresql://")


def async_database_url(url: str) -> URL:
    """Turn ``DATABASE_URL`` into a SQLAlchemy URL with an async driver, or raise ValueError."""
    from sqlalchemy.engine import make_url  # the state store's own import: see check_database_url
    from sqlalchemy.exc import ArgumentError

    check_database_url(url)
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ValueError(
            "is not a database URL (expected sqlite:///path or postgresql://…)"
        ) from None
    if parsed.get_backend_name() == "sqlite":
        return parsed.set(drivername="sqlite+aiosqlite")
    # libpq's parameters become the driver's arguments (state/dsn.py): not the URL's.
    from sync_service.state.dsn import MAPPED

    return parsed.set(drivername="postgresql+asyncpg").difference_update_query(MAPPED)


def describe_validation_error(error: ValidationError) -> list[str]:
    """One readable line per problem, naming the environment variable."""
    lines = []
    for item in error.errors():
        loc = [str(part) for part in item.get("loc", ())]
        message = str(item.get("msg", "invalid value")).removeprefix("Value error, ")[:500]
        if not loc:  # a check of several settings: its message names them
            lines.append(message)
            continue
        name = _ENV_NAMES.get(loc[0], loc[0])
        given = item.get("input")
        shown = "" if given is None or _is_secret(name) else f" (got {brief(given)})"
        lines.append(f"{name}: {message}{shown}")
    return lines


def brief(value: Any, limit: int = 200) -> str:
    """``repr(value)`` cut to about ``limit`` characters: a message may echo what it was given,
    and that may be 100 kB."""
    text = repr(value)
    if len(text) <= limit:
        return text
    size = f" ({len(value)} characters)" if isinstance(value, str) else ""
    return f"{text[:limit]}…{size}"


def _is_secret(name: str) -> bool:
    return name.endswith(("_KEY", "_TOKEN", "_SECRET")) or name == "DATABASE_URL"


def _env_names() -> dict[str, str]:
    names = {}
    for field_name, field in Settings.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices) and isinstance(alias.choices[0], str):
            names[field_name] = alias.choices[0]
            names[alias.choices[0]] = alias.choices[0]
    return names


_ENV_NAMES = _env_names()
