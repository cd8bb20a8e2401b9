"""The production deployment files: docker-compose.yml, Dockerfile and .env.example.

No Docker engine runs here, so these check the files themselves: the services and their start
order, health checks, secrets, shutdown timing, the non-root image, and that every environment
variable compose sets on the service is one the service reads. When Debian's `docker-compose`
(1.29) is installed, it also validates the file offline, interpolation included.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from pydantic import AliasChoices

from sync_service.settings import Settings

yaml = pytest.importorskip("yaml", reason="PyYAML is needed to parse docker-compose.yml")

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
ENV_EXAMPLE = ROOT / ".env.example"

SERVICES = {
    "qdrant",
    "postgres",
    "migrate",
    "sync-service",
    "mixpeek-emulator",
    "prometheus",
    "grafana",
}
OPTIONAL = {"mixpeek-emulator": "dev", "prometheus": "observability", "grafana": "observability"}
# Our own image's services: compose must only hand them variables the service reads.
OUR_SERVICES = ("sync-service", "migrate")

# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?message}, ${NAME?message}
INTERPOLATION = re.compile(
    r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
)
SECRET_NAME = re.compile(r"(_KEY|_TOKEN|PASSWORD|SECRET)", re.IGNORECASE)
DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(us|ms|s|m|h)")
DURATION_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def _compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def _services() -> dict[str, dict[str, Any]]:
    return _compose()["services"]


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # the `- NAME=value` form
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def _service_env_names() -> set[str]:
    """Every environment variable the service reads, from Settings itself."""
    names = set()
    for field in Settings.model_fields.values():
        alias = field.validation_alias
        assert isinstance(alias, AliasChoices), field
        first = alias.choices[0]
        assert isinstance(first, str)
        names.add(first)
    return names


def _resolve_default(value: str) -> str:
    """A value with ${VAR:-default} replaced by its default (what runs when VAR is unset)."""
    return INTERPOLATION.sub(
        lambda m: m.group("arg") if (m.group("op") or "").endswith("-") else m.group(0), value
    )


def _seconds(duration: str) -> float:
    parts = DURATION_PART.findall(duration)
    assert parts and "".join(n + u for n, u in parts) == duration, f"bad duration {duration!r}"
    return sum(float(n) * DURATION_UNITS[u] for n, u in parts)


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with line continuations joined and comments dropped."""
    logical: list[str] = []
    current = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    if current:
        logical.append(current)
    result = []
    for line in logical:
        instruction, _, args = line.partition(" ")
        result.append((instruction.upper(), args.strip()))
    return result


def _strings(node: Any) -> list[str]:
    """Every string in the parsed file, keys included (comments are not part of it)."""
    if isinstance(node, dict):
        return [s for k, v in node.items() for s in (*_strings(k), *_strings(v))]
    if isinstance(node, list):
        return [s for item in node for s in _strings(item)]
    return [node] if isinstance(node, str) else []


def _interpolations() -> list[re.Match[str]]:
    return [m for text in _strings(_compose()) for m in INTERPOLATION.finditer(text)]


def _required_variables() -> set[str]:
    return {m.group("name") for m in _interpolations() if m.group("op") in (":?", "?")}


# -- services, order, health --------------------------------------------------------------------


def test_the_services_exist() -> None:
    assert set(_services()) == SERVICES


@pytest.mark.parametrize("name", sorted(SERVICES - {"migrate"}))
def test_long_running_services_have_a_healthcheck(name: str) -> None:
    check = _services()[name].get("healthcheck")
    assert check, f"{name} has no healthcheck"
    assert not check.get("disable", False)
    test = check.get("test")
    assert test and test not in (["NONE"], "NONE"), f"{name}: healthcheck without a test"


def test_sync_service_waits_for_healthy_stores_and_a_finished_migration() -> None:
    depends = _services()["sync-service"]["depends_on"]
    assert isinstance(depends, dict), "depends_on needs the long form with conditions"
    assert depends["qdrant"]["condition"] == "service_healthy"
    assert depends["postgres"]["condition"] == "service_healthy"
    assert depends["migrate"]["condition"] == "service_completed_successfully"


def test_migrate_is_a_one_shot_of_the_same_image_after_postgres() -> None:
    services = _services()
    migrate, daemon = services["migrate"], services["sync-service"]
    assert migrate["command"] in ("migrate", ["migrate"])
    assert str(migrate["restart"]) == "no"
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert migrate.get("build") == daemon.get("build") is not None
    assert daemon["command"] in ("run", ["run"])
    assert daemon["restart"] == "unless-stopped"


def test_emulator_and_monitoring_only_in_their_profiles() -> None:
    services = _services()
    for name, profile in OPTIONAL.items():
        assert services[name]["profiles"] == [profile], name
    for name in SERVICES - set(OPTIONAL):
        assert "profiles" not in services[name], f"{name} must start with a plain `up`"
    command = services["mixpeek-emulator"]["command"]
    words = command.split() if isinstance(command, str) else command
    assert words[0] == "emulator"
    assert words[words.index("--host") + 1] == "0.0.0.0"


def test_published_ports_are_loopback_only() -> None:
    for name, service in _services().items():
        for port in service.get("ports", []):
            loopback = (
                port.get("host_ip") == "127.0.0.1"
                if isinstance(port, dict)
                else str(port).startswith("127.0.0.1:")
            )
            assert loopback, f"{name} publishes {port!r} beyond loopback"


# -- the observability profile ------------------------------------------------------------------


def _mounts(name: str) -> dict[str, str]:
    """A service's bind mounts: container path -> path in this repository."""
    mounts = {}
    for volume in _services()[name].get("volumes", []):
        source, target, *_ = str(volume).split(":")
        if source.startswith("./"):
            mounts[target] = source
    return mounts


def test_prometheus_gets_the_scrape_config_rules_and_tokens() -> None:
    prometheus = _services()["prometheus"]
    mounts = _mounts("prometheus")
    config_path = "/etc/prometheus/prometheus.yml"
    assert mounts[config_path] == "./deploy/prometheus/prometheus.yml"
    command = " ".join(prometheus["command"])
    assert f"--config.file={config_path}" in command
    config = yaml.safe_load((ROOT / mounts[config_path]).read_text())
    for rule_file in config["rule_files"]:  # relative to the config file, in both places
        target = f"/etc/prometheus/{rule_file}"
        assert target in mounts and (ROOT / mounts[target]).is_file(), rule_file
    # every bearer token file the scrape config reads is written at start from the environment
    env = _environment(prometheus)
    for job in config["scrape_configs"]:
        token_file = job["authorization"]["credentials_file"]
        assert token_file.startswith("/run/secrets/")
        assert "/run/secrets" in prometheus["tmpfs"][0], "the tokens belong in a tmpfs"
        assert f"> {token_file}" in command, f"nothing writes {token_file}"
    assert {"SYNC_API_TOKEN", "QDRANT_API_KEY"} <= set(env)


def test_prometheus_scrapes_every_replica_and_qdrant_where_compose_runs_them() -> None:
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    daemon_port = _environment(_services()["sync-service"])["SYNC_API_PORT"]
    [sd] = jobs["sync-service"]["dns_sd_configs"]  # one A record per replica
    assert sd["names"] == ["sync-service"] and str(sd["port"]) == daemon_port
    assert jobs["sync-service"]["metrics_path"] == "/metrics"
    assert jobs["qdrant"]["static_configs"][0]["targets"] == ["qdrant:6333"]


def test_grafana_is_provisioned_with_prometheus_and_the_dashboard() -> None:
    mounts = _mounts("grafana")
    provisioning = ROOT / mounts["/etc/grafana/provisioning"]
    [datasource] = yaml.safe_load((provisioning / "datasources/prometheus.yml").read_text())[
        "datasources"
    ]
    assert datasource["url"] == "http://prometheus:9090" and datasource["uid"] == "prometheus"
    [provider] = yaml.safe_load((provisioning / "dashboards/sync-service.yml").read_text())[
        "providers"
    ]
    dashboards = provider["options"]["path"]
    assert (ROOT / mounts[dashboards] / "sync-service.json").is_file()
    home = _environment(_services()["grafana"])["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{dashboards}/sync-service.json"


# -- shutdown, replicas -------------------------------------------------------------------------


def test_stop_grace_period_outlasts_the_shutdown_grace() -> None:
    daemon = _services()["sync-service"]
    env = _environment(daemon)
    if "SYNC_SHUTDOWN_GRACE" in env:
        grace = float(_resolve_default(env["SYNC_SHUTDOWN_GRACE"]))
    else:
        grace = float(Settings.model_fields["shutdown_grace"].default)
    stop = _seconds(str(daemon["stop_grace_period"]))
    assert stop > grace, f"stop_grace_period {stop}s must exceed SYNC_SHUTDOWN_GRACE {grace}s"


def test_replicas_are_settable() -> None:
    replicas = _services()["sync-service"]["deploy"]["replicas"]
    assert INTERPOLATION.fullmatch(str(replicas)), "deploy.replicas should come from a variable"
    assert int(_resolve_default(str(replicas))) >= 1
    assert "container_name" not in _services()["sync-service"], "a fixed name forbids replicas"


# -- configuration and secrets ------------------------------------------------------------------


@pytest.mark.parametrize("name", OUR_SERVICES)
def test_every_variable_compose_sets_is_one_the_service_reads(name: str) -> None:
    unknown = set(_environment(_services()[name])) - _service_env_names()
    assert not unknown, f"{name} sets variables the service never reads: {sorted(unknown)}"


def test_daemon_is_pointed_at_the_compose_stores_and_listens_for_the_healthcheck() -> None:
    env = _environment(_services()["sync-service"])
    assert env["QDRANT_URL"] == "http://qdrant:6333"
    assert env["DATABASE_URL"].startswith("postgresql://")
    assert "@postgres:5432/" in env["DATABASE_URL"]
    assert env["SYNC_API_HOST"] == "0.0.0.0"
    # a non-loopback control API refuses to start without a token
    assert "SYNC_API_TOKEN" in env
    assert env["SYNC_LOG_FORMAT"] == "json"


def test_secrets_are_required_interpolations_never_literals() -> None:
    for name, service in _services().items():
        for key, value in _environment(service).items():
            if SECRET_NAME.search(key):
                match = INTERPOLATION.fullmatch(value)
                assert match and match.group("op") == ":?", (
                    f"{name}.{key} must be ${{VAR:?message}}, got {value!r}"
                )
    # and wherever a secret variable is interpolated (e.g. inside DATABASE_URL) it is required
    for m in _interpolations():
        if SECRET_NAME.search(m.group("name")):
            assert m.group("op") == ":?" and m.group("arg").strip(), m.group(0)
    assert {"MIXPEEK_API_KEY", "SYNC_API_TOKEN", "POSTGRES_PASSWORD"} <= _required_variables()


def test_env_example_lists_every_interpolated_variable_without_a_secret() -> None:
    listed = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            listed[key.strip()] = value.strip()
    used = {m.group("name") for m in _interpolations()}
    assert used - set(listed) == set(), "interpolated but missing from .env.example"
    for key, value in listed.items():
        if SECRET_NAME.search(key):
            assert value == "", f".env.example must not carry a value for {key}"


# -- the image ----------------------------------------------------------------------------------


def test_image_runs_as_a_non_root_user() -> None:
    users = [args for instruction, args in _dockerfile_instructions() if instruction == "USER"]
    assert users, "the Dockerfile never leaves root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), f"final USER is {users[-1]!r}"
    for name in OUR_SERVICES:
        override = str(_services()[name].get("user", "")).split(":")[0]
        assert override not in ("root", "0"), f"{name} overrides the user to root"


def test_dockerfile_bakes_no_secret() -> None:
    for instruction, args in _dockerfile_instructions():
        if instruction not in ("ENV", "ARG"):
            continue
        # ENV A=1 B=2, ENV A 1 (legacy), ARG A[=default]
        names = re.findall(r"(?:^|\s)([A-Za-z_][A-Za-z0-9_]*)=", args) or [args.split()[0]]
        secret = [n for n in names if SECRET_NAME.search(n)]
        assert not secret, f"{instruction} {args!r} bakes a secret into the image"


def test_dockerfile_runs_the_daemon_and_stops_gracefully() -> None:
    instructions = dict(_dockerfile_instructions())  # the last of each kind wins, as in Docker
    assert instructions["FROM"].startswith("python:3.11-slim")
    assert instructions["ENTRYPOINT"] == '["sync-service"]'
    assert instructions["CMD"] == '["run"]'
    assert instructions["STOPSIGNAL"] == "SIGTERM"
    assert "/healthz" in instructions["HEALTHCHECK"]
    env = " ".join(args for i, args in _dockerfile_instructions() if i == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env and "PYTHONUNBUFFERED=1" in env
    copied = " ".join(args for i, args in _dockerfile_instructions() if i == "COPY")
    for needed in ("alembic.ini", "migrations/", "sync_service/", "pyproject.toml"):
        assert needed in copied, f"the image needs {needed}"


def test_dockerignore_keeps_local_state_and_secrets_out() -> None:
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".env", ".venv", ".git", "data"} <= ignored


# -- offline validation with docker-compose ------------------------------------------------------


def _docker_compose(tmp_path: Path, extra_env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not installed (apt-get install docker-compose)")
    empty_env_file = tmp_path / "empty.env"  # so a developer's own .env cannot mask a problem
    empty_env_file.write_text("")
    env = {k: v for k, v in os.environ.items() if k not in _required_variables()}
    env.update(extra_env)
    return subprocess.run(
        [binary, "--env-file", str(empty_env_file), "-f", str(COMPOSE), "config", "-q"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_docker_compose_validates_the_file_offline(tmp_path: Path) -> None:
    dummies = {name: f"dummy-{name.lower()}" for name in _required_variables()}
    result = _docker_compose(tmp_path, dummies)
    assert result.returncode == 0, result.stderr


def test_docker_compose_refuses_to_start_without_the_secrets(tmp_path: Path) -> None:
    result = _docker_compose(tmp_path, {})
    assert result.returncode != 0
    assert any(name in result.stderr for name in _required_variables()), result.stderr
