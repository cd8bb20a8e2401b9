"""PostgreSQL URLs as people write them: libpq's parameters, mapped to the async driver.

Every managed PostgreSQL documents ``postgresql://…?sslmode=require``; libpq reads such
parameters, asyncpg (under SQLAlchemy) takes keyword arguments instead and fails on unknown ones
(``connect() got an unexpected keyword argument 'sslmode'``). This module reads the query of a
``DATABASE_URL``: libpq parameters become the driver's arguments, the ones the driver reads
itself stay in the URL, and anything else is a one-line configuration error.

A leaf with no SQLAlchemy: ``settings`` validates with it when the settings load.
"""

from __future__ import annotations

import shlex
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl

#: libpq's parameters this module maps (https://www.postgresql.org/docs/current/libpq-connect.html).
MAPPED = (
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "application_name",
    "options",
    "connect_timeout",
)
#: Parameters SQLAlchemy's asyncpg dialect reads from the URL itself (host: a socket directory
#: or host list; the others are asyncpg's own keyword arguments).
KEPT = ("host", "port", "user", "password", "target_session_attrs", "prepared_statement_cache_size")
SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
#: Server settings the service sets from SYNC_DB_STATEMENT_TIMEOUT: ``options`` may not.
OWN_SETTINGS = ("statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout")


@dataclass(frozen=True)
class PgOptions:
    """What a PostgreSQL URL's query asks for, read and checked."""

    sslmode: str | None = None
    sslrootcert: str | None = None
    sslcert: str | None = None
    sslkey: str | None = None
    server_settings: dict[str, str] = field(default_factory=dict)
    connect_timeout: float | None = None
    #: The parameters left in the URL, for SQLAlchemy and asyncpg.
    kept: dict[str, str] = field(default_factory=dict)

    def ssl_argument(self) -> ssl.SSLContext | str | None:
        """asyncpg's ``ssl`` argument: a mode name, or a context when certificates are given
        (libpq's meaning: ``require`` with a root certificate verifies like ``verify-ca``)."""
        mode = self.sslmode
        certs = self.sslrootcert or self.sslcert
        if not certs:
            return mode
        if mode in (None, "prefer", "require") and self.sslrootcert:
            mode = "verify-ca"
        context = ssl.create_default_context(cafile=self.sslrootcert)
        if mode not in ("verify-ca", "verify-full"):  # require with a client certificate only
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        elif mode == "verify-ca":
            context.check_hostname = False
        if self.sslcert:
            context.load_cert_chain(self.sslcert, self.sslkey)
        return context


def parse_query(query: str) -> PgOptions:
    """Read a PostgreSQL URL's query; ValueError naming the parameter when it cannot be used."""
    pairs = parse_qsl(query, keep_blank_values=True)
    seen: dict[str, str] = {}
    for name, value in pairs:
        if name in seen:
            raise ValueError(f"gives the parameter {name!r} twice")
        if name not in MAPPED and name not in KEPT:
            supported = ", ".join((*MAPPED, *KEPT))
            raise ValueError(f"parameter {name!r} is not supported (supported: {supported})")
        seen[name] = value
    mode = seen.get("sslmode")
    if mode is not None and mode not in SSLMODES:
        raise ValueError(f"sslmode={mode!r} is not one of {', '.join(SSLMODES)}")
    for name in ("sslrootcert", "sslcert", "sslkey"):
        path = seen.get(name)
        if path is not None and not Path(path).expanduser().is_file():
            raise ValueError(f"{name}: no such file {path!r}")
    if "sslkey" in seen and "sslcert" not in seen:
        raise ValueError("sslkey needs sslcert (the client certificate it belongs to)")
    certs = any(n in seen for n in ("sslrootcert", "sslcert"))
    if certs and mode in ("disable", "allow", "prefer"):
        raise ValueError(
            f"sslrootcert/sslcert with sslmode={mode} are not supported: "
            "use sslmode=require, verify-ca or verify-full"
        )
    settings = _options(seen.get("options", ""))
    if "application_name" in seen:
        settings["application_name"] = seen["application_name"]
    return PgOptions(
        sslmode=mode,
        sslrootcert=_path(seen.get("sslrootcert")),
        sslcert=_path(seen.get("sslcert")),
        sslkey=_path(seen.get("sslkey")),
        server_settings=settings,
        connect_timeout=_timeout(seen.get("connect_timeout")),
        kept={k: v for k, v in seen.items() if k in KEPT},
    )


def _path(value: str | None) -> str | None:
    return None if value is None else str(Path(value).expanduser())


def _timeout(value: str | None) -> float | None:
    """libpq's ``connect_timeout``: whole seconds, 0 or absent for the driver's default."""
    if value is None:
        return None
    if not value.strip().isdigit():
        raise ValueError(f"connect_timeout={value!r} must be a whole number of seconds")
    seconds = int(value)
    return float(seconds) if seconds > 0 else None


def _options(value: str) -> dict[str, str]:
    """libpq's ``options`` (``-c name=value`` or ``--name=value``, repeated) as server settings."""
    try:
        words = shlex.split(value)
    except ValueError:
        raise ValueError(f"options={value!r} cannot be read (unbalanced quotes?)") from None
    settings: dict[str, str] = {}
    while words:
        word = words.pop(0)
        if word == "-c" and words:
            pair = words.pop(0)
        elif word.startswith("-c") and len(word) > 2:
            pair = word[2:]
        elif word.startswith("--") and "=" in word:
            name, _, setting = word[2:].partition("=")
            pair = f"{name.replace('-', '_')}={setting}"
        else:
            raise ValueError(f"options: {word!r} is not -c name=value")
        name, sep, setting = pair.partition("=")
        if not sep or not name:
            raise ValueError(f"options: {pair!r} is not name=value")
        if name in OWN_SETTINGS:
            raise ValueError(f"options: {name} is set by SYNC_DB_STATEMENT_TIMEOUT")
        settings[name] = setting
    return settings
