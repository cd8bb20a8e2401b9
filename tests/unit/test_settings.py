"""Configuration: contract names, validation with one readable line, secrets kept secret."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from pydantic import ValidationError

from sync_service.settings import Settings, async_database_url, describe_validation_error


def test_defaults_follow_the_contract() -> None:
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    assert s.mixpeek_api_url == "https://api.mixpeek.com"
    assert s.qdrant_url is None and s.qdrant_path == Path("./data/qdrant")
    assert s.qdrant_collection == "{collection_id}"
    assert s.database_url.get_secret_value() == "sqlite:///./data/sync.db"
    assert s.poll_interval == 2 and s.api_host == "127.0.0.1" and s.api_port == 8080


def test_environment_and_dotenv_are_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("SYNC_POLL_INTERVAL=0.5\nMIXPEEK_API_KEY=from-dotenv\n")
    monkeypatch.setenv("QDRANT_COLLECTION", "everything")
    s = Settings()
    assert s.poll_interval == 0.5
    assert s.mixpeek_api_key is not None
    assert s.mixpeek_api_key.get_secret_value() == "from-dotenv"
    assert "from-dotenv" not in repr(s) and "from-dotenv" not in str(s)
    assert s.qdrant_collection_for("abc") == "everything"


def test_collection_template_takes_the_mixpeek_collection_id() -> None:
    s = Settings(_env_file=None, QDRANT_COLLECTION="mx_{collection_id}")  # type: ignore[call-arg]
    assert s.qdrant_collection_for("demo") == "mx_demo"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("SYNC_POLL_INTERVAL", "-1", "SYNC_POLL_INTERVAL: Input should be greater than 0"),
        ("SYNC_POLL_INTERVAL", "often", "SYNC_POLL_INTERVAL: Input should be a valid number"),
        ("DATABASE_URL", "mysql://x/y", "DATABASE_URL: unsupported database 'mysql'"),
        ("DATABASE_URL", "not a url", "DATABASE_URL: is not a database URL"),
        ("DATABASE_URL", "postgresql:///nohost", "DATABASE_URL: needs a host"),
        ("MIXPEEK_API_URL", "ftp://x", "MIXPEEK_API_URL: must be an http:// or https:// URL"),
        ("SYNC_API_PORT", "70000", "SYNC_API_PORT: Input should be less than or equal to 65535"),
        ("SYNC_DISTANCE", "hamming", "SYNC_DISTANCE: Input should be 'cosine', 'dot'"),
        ("SYNC_POLL_SCHEDULE", "fast", "SYNC_POLL_SCHEDULE: Input should be 'learned' or 'back"),
        ("SYNC_DELETE_GUARD", "1.5", "SYNC_DELETE_GUARD: Input should be less than or equal to 1"),
        # nan passed every bound, inf made the check of two intervals blame the other one
        ("SYNC_POLL_INTERVAL", "nan", "SYNC_POLL_INTERVAL: Input should be a finite number"),
        ("SYNC_HTTP_TIMEOUT", "inf", "SYNC_HTTP_TIMEOUT: Input should be a finite number"),
        # bytes that are not UTF-8 reach Python as lone surrogates
        ("SYNC_API_HOST", "\udcff", "SYNC_API_HOST: is not valid UTF-8 text"),
        ("MIXPEEK_API_KEY", "sk key", "MIXPEEK_API_KEY: must be printable ASCII without spaces"),
        ("MIXPEEK_NAMESPACE", "n" * 300, "MIXPEEK_NAMESPACE: String should have at most 255"),
        ("SYNC_WATCH_COLLECTIONS", "a,b\tc", "SYNC_WATCH_COLLECTIONS: collection id 'b\\tc'"),
        ("SYNC_VECTOR_SIZES", "x" * 5000, "SYNC_VECTOR_SIZES: expected name=size pairs"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as info:
        Settings(_env_file=None)  # type: ignore[call-arg]
    (line,) = describe_validation_error(info.value)
    assert line.startswith(message)
    assert len(line) < 600  # a 5,000-character value is not echoed whole
    if name.endswith("_KEY"):
        assert value not in line


def test_bad_database_url_is_not_echoed_because_it_may_hold_a_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATABASE_URL", "oracle://admin:hunter2@db/x")
    with pytest.raises(ValidationError) as info:
        Settings(_env_file=None)  # type: ignore[call-arg]
    assert "hunter2" not in " ".join(describe_validation_error(info.value))


def test_database_urls_get_async_drivers() -> None:
    assert async_database_url("sqlite:///./data/sync.db").drivername == "sqlite+aiosqlite"
    assert async_database_url("postgresql://u@h/db").drivername == "postgresql+asyncpg"
    assert async_database_url("postgres://u@h/db").drivername == "postgresql+asyncpg"


def test_the_database_url_is_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://sync:hunter2@db:5432/sync")
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    assert "hunter2" not in repr(s) + str(s) + s.model_dump_json()
    assert s.database_url.get_secret_value() == "postgresql://sync:hunter2@db:5432/sync"


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///./data/sync.db",
        "sqlite:////abs/path.db",
        "sqlite://",
        "sqlite:///",
        "sqlite+aiosqlite:///x.db",
        "postgresql://u:p@h:5432/db",
        "postgresql://h/db",
        "postgres://u@h/db",
        "postgresql+asyncpg://u@h/db",
        "postgresql:///nohost",
        "postgresql:///db?host=/var/run/postgresql",
        "postgresql://u@[::1]:5432/db",
        "postgresql://@/db",
        "mysql://x/y",
        "not a url",
        "://nothing",
    ],
)
def test_the_light_url_check_agrees_with_sqlalchemy(url: str) -> None:
    """Settings check DATABASE_URL without importing SQLAlchemy (start-up): same verdicts."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    from sync_service.settings import check_database_url

    try:
        parsed = make_url(url)
        backend = parsed.get_backend_name()
        if backend == "sqlite":
            expected = parsed.database not in (None, "")
        elif backend in ("postgresql", "postgres"):
            expected = bool(parsed.host or parsed.query.get("host"))
        else:
            expected = False
    except ArgumentError:
        expected = False
    try:
        check_database_url(url)
        accepted = True
    except ValueError:
        accepted = False
    assert accepted == expected


def test_a_short_token_is_refused_on_a_non_loopback_bind() -> None:
    exposed = {"SYNC_API_HOST": "0.0.0.0", "SYNC_API_PORT": 8080}
    short = Settings(_env_file=None, SYNC_API_TOKEN="x" * 15, **exposed)  # type: ignore[arg-type]
    problem = short.api_exposure_problem()
    assert problem is not None and problem.startswith("SYNC_API_TOKEN: at least 16 characters")
    assert "x" * 15 not in problem
    long_enough = Settings(_env_file=None, SYNC_API_TOKEN="x" * 16, **exposed)  # type: ignore[arg-type]
    assert long_enough.api_exposure_problem() is None
    loopback = Settings(_env_file=None, SYNC_API_TOKEN="short")  # type: ignore[call-arg]
    assert loopback.api_exposure_problem() is None


def test_library_warnings_go_through_the_json_log(capsys: pytest.CaptureFixture[str]) -> None:
    import json
    import warnings

    with configured_logs("INFO", "json"):
        warnings.warn("Api key is used with an insecure connection.", UserWarning, stacklevel=1)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert lines and all(json.loads(line) for line in lines)
    assert "insecure connection" in lines[-1]


def test_a_path_under_a_file_is_refused_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("")
    with pytest.raises(ValidationError) as info:
        Settings(  # type: ignore[call-arg]
            _env_file=None,
            QDRANT_PATH=str(tmp_path / "afile" / "q"),  # as the environment gives it
            DATABASE_URL=f"sqlite:///{tmp_path / 'afile' / 'sync.db'}",
        )
    lines = describe_validation_error(info.value)
    where = repr(str(tmp_path / "afile"))
    assert lines == [
        f"QDRANT_PATH: {where} is a file, so no folder can be made under it "
        f"(got {str(tmp_path / 'afile' / 'q')!r})",
        f"DATABASE_URL: {where} is a file, so {str(tmp_path / 'afile' / 'sync.db')!r} cannot "
        "be made under it",
    ]


@pytest.mark.parametrize(("level", "traceback"), [("INFO", False), ("DEBUG", True)])
@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_logged_exception_has_its_traceback_only_at_debug(
    capsys: pytest.CaptureFixture[str], level: str, traceback: bool, fmt: str
) -> None:
    import logging

    with configured_logs(level, fmt):
        try:
            raise KeyError("the key")
        except KeyError:
            logging.getLogger("sync_service").exception("unexpected error")
    text = capsys.readouterr().err
    assert "KeyError: 'the key'" in text
    assert ("Traceback" in text) is traceback
    assert len(text.strip().splitlines()) == 1 or traceback


def test_apschedulers_by_design_skips_are_not_logged_but_its_errors_are(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import logging

    with configured_logs("INFO", "text"):
        apscheduler = logging.getLogger("apscheduler.scheduler")
        apscheduler.warning(
            'Execution of job "Daemon.tick" skipped: maximum number of running instances reached'
        )
        logging.getLogger("apscheduler.executors.default").error('Job "x" raised an exception')
    text = capsys.readouterr().err
    assert "maximum number of running instances" not in text
    assert 'Job "x" raised an exception' in text


@contextmanager
def configured_logs(level: str, fmt: str) -> Iterator[None]:
    """The service's logging (control/logs.py) for the block; the root logger as it was after."""
    import logging

    from sync_service.control import logs

    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        logs.configure(level, fmt)
        yield
    finally:
        logging.captureWarnings(False)
        root.handlers[:], saved_level = saved
        root.setLevel(saved_level)
