"""Structure and wiring of docker-compose.yml and the Dockerfile (no Docker engine runs here)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
LIVT_SERVICES = ("migrate", "api", "worker")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _env(service: dict) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def test_compose_has_every_service(compose):
    assert set(compose["services"]) == {"postgres", "redis", "migrate", "api", "worker"}


def test_long_running_services_have_healthchecks(compose):
    for name in ("postgres", "redis", "api", "worker"):
        check = compose["services"][name].get("healthcheck")
        assert check and check.get("test"), f"{name} has no healthcheck"


def test_worker_reserves_nvidia_gpus_and_shared_memory(compose):
    worker = compose["services"]["worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    assert worker["shm_size"]
    assert worker["command"][:2] == ["livt", "worker"]


def test_migration_runs_before_api_and_worker(compose):
    services = compose["services"]
    assert services["migrate"]["command"] == ["livt", "db", "upgrade"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("api", "worker"):
        deps = services[name]["depends_on"]
        assert deps["migrate"]["condition"] == "service_completed_successfully"
        assert deps["redis"]["condition"] == "service_healthy"


def test_services_share_production_settings(compose):
    for name in LIVT_SERVICES:
        env = _env(compose["services"][name])
        assert env["LIVT_MODE"] == "production"
        assert env["LIVT_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert "@postgres:5432/" in env["LIVT_DATABASE_URL"]
        assert env["LIVT_BROKER_URL"].startswith("redis://redis:6379/")


def test_environment_names_are_settings_fields(compose):
    from livt_service.settings import Settings

    fields = {name.upper() for name in Settings.model_fields}
    for name in LIVT_SERVICES:
        for key in _env(compose["services"][name]):
            assert key.removeprefix("LIVT_") in fields, f"{key} is not a setting"


def test_no_secret_has_a_default(compose):
    text = COMPOSE.read_text()
    for match in re.finditer(r"\$\{(POSTGRES_PASSWORD)([^}]*)\}", text):
        assert match.group(2).startswith(":?"), "POSTGRES_PASSWORD must be required, not defaulted"
    pg_env = _env(compose["services"]["postgres"])
    assert pg_env["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")


def test_metrics_token_reaches_only_the_api_and_has_no_default(compose):
    services = compose["services"]
    assert _env(services["api"])["LIVT_METRICS_TOKEN"] == "${LIVT_METRICS_TOKEN:-}"
    for name in ("migrate", "worker"):
        assert "LIVT_METRICS_TOKEN" not in _env(services[name])


def test_state_lives_in_named_volumes(compose):
    assert {"pgdata", "redisdata", "artifacts"} <= set(compose["volumes"])
    for name in ("api", "worker"):
        mounts = compose["services"][name]["volumes"]
        assert any(m.startswith("artifacts:") for m in mounts)


def test_api_publishes_its_port(compose):
    ports = compose["services"]["api"]["ports"]
    assert any(p.endswith(":8000") for p in ports)


def test_dockerfile_builds_the_package_and_runs_unprivileged():
    text = DOCKERFILE.read_text()
    assert text.startswith("#") or "FROM python:3.11" in text
    assert "FROM python:3.11" in text
    assert re.search(r"^USER (?!root)\w+", text, re.M)
    for package in ("livt_core", "livt_service", "api", "worker", "migrations", "livt"):
        assert f"COPY {package} " in text
    assert "pip install" in text


def test_compose_commands_exist_in_the_cli():
    from livt.cli import build_parser

    commands = build_parser()._subparsers._group_actions[0].choices  # noqa: SLF001
    for name in ("serve", "worker", "db"):
        assert name in commands
