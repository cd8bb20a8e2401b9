"""DATABASE_URL as people write it: each libpq parameter maps to the async driver's argument."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from pathlib import Path

import pytest
from pydantic import ValidationError

from sync_service.settings import Settings, async_database_url, describe_validation_error
from sync_service.state.connect import _pg_arguments
from sync_service.state.dsn import parse_query

CA_BUNDLE = Path(ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt")
BASE = "postgresql://app@db.example.com:5432/sync"


def arguments(query: str) -> dict[str, object]:
    return _pg_arguments(f"{BASE}?{query}", statement_timeout=30.0)


@pytest.mark.parametrize(
    "mode", ["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]
)
def test_sslmode_becomes_the_drivers_ssl_mode(mode: str) -> None:
    assert arguments(f"sslmode={mode}")["ssl"] == mode
    # ...and leaves the URL: asyncpg has no keyword argument of that name.
    url = async_database_url(f"{BASE}?sslmode={mode}&application_name=x")
    assert dict(url.query) == {} and url.drivername == "postgresql+asyncpg"


def test_no_sslmode_leaves_the_drivers_default() -> None:
    assert "ssl" not in arguments("application_name=x")


@pytest.mark.skipif(not CA_BUNDLE.is_file(), reason="no CA bundle on this machine")
@pytest.mark.parametrize(
    ("mode", "hostname"), [("verify-full", True), ("verify-ca", False), ("require", False)]
)
def test_sslrootcert_gives_a_verifying_context(mode: str, hostname: bool) -> None:
    context = arguments(f"sslmode={mode}&sslrootcert={CA_BUNDLE}")["ssl"]
    assert isinstance(context, ssl.SSLContext)
    # libpq: require with a root certificate verifies the chain, like verify-ca.
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is hostname
    assert context.cert_store_stats()["x509_ca"] > 0


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_sslcert_and_sslkey_are_the_client_certificate(tmp_path: Path) -> None:
    cert, key = tmp_path / "client.crt", tmp_path / "client.key"
    command = [
        "openssl",
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=app",
        "-days",
        "1",
    ]
    subprocess.run(
        [*command, "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    context = arguments(f"sslmode=require&sslcert={cert}&sslkey={key}")["ssl"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_NONE  # require without a root: encrypt only
    with pytest.raises(ValueError, match="sslkey needs sslcert"):
        parse_query(f"sslmode=require&sslkey={key}")


def test_application_name_options_and_connect_timeout() -> None:
    args = arguments(
        "application_name=sync-prod&connect_timeout=7"
        "&options=-c%20search_path%3Dsync%20-cwork_mem%3D8MB%20--jit%3Doff"
    )
    settings = args["server_settings"]
    assert isinstance(settings, dict)
    assert settings["application_name"] == "sync-prod"
    assert settings["search_path"] == "sync" and settings["work_mem"] == "8MB"
    assert settings["jit"] == "off"
    assert settings["statement_timeout"] == "30000"  # the service's own stay
    assert args["timeout"] == 7.0
    assert arguments("connect_timeout=0")["timeout"] == 10  # 0: the default deadline


def test_a_socket_directory_host_stays_for_the_dialect() -> None:
    url = async_database_url("postgresql://postgres@/sync?host=/var/run/postgresql&sslmode=disable")
    assert dict(url.query) == {"host": "/var/run/postgresql"}


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("gssencmode=disable", "parameter 'gssencmode' is not supported (supported: sslmode"),
        ("sslmode=sometimes", "sslmode='sometimes' is not one of disable, allow, prefer"),
        ("sslmode=require&sslrootcert=/no/such.crt", "sslrootcert: no such file '/no/such.crt'"),
        ("connect_timeout=soon", "connect_timeout='soon' must be a whole number of seconds"),
        ("options=-c%20statement_timeout%3D0", "statement_timeout is set by SYNC_DB_STATEMENT"),
        ("options=--foo", "options: '--foo' is not -c name=value"),
        ("options=%27unbalanced", "cannot be read (unbalanced quotes?)"),
        ("sslmode=require&sslmode=disable", "gives the parameter 'sslmode' twice"),
    ],
)
def test_what_cannot_be_used_is_one_configuration_line(query: str, message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(_env_file=None, DATABASE_URL=f"postgresql://u:hunter2@h/db?{query}")
    (line,) = describe_validation_error(caught.value)
    assert line.startswith("DATABASE_URL: ") and message in line
    assert "hunter2" not in line
