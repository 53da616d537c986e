"""Structure and wiring of docker-compose.yml, the two Dockerfiles and the pinned dependency files
(no Docker engine runs here; `docker compose config` runs where Compose v2 is installed)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "docker" / "Dockerfile.worker"
API_DOCKERFILE = ROOT / "docker" / "Dockerfile.api"
CONSTRAINTS = ROOT / "constraints.txt"
API_REQUIREMENTS = ROOT / "docker" / "requirements-api.txt"
COMPOSE_SH = ROOT / "scripts" / "compose.sh"
#: Distributions only CUDA torch needs: the API image must not carry them.
CUDA_ONLY = re.compile(r"^(triton|nvidia-.*|cuda-.*)$")
LIVT_SERVICES = ("migrate", "api", "worker")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _env(service: dict) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


MONITORING = ROOT / "docker" / "monitoring"


def test_compose_has_every_service(compose):
    services = compose["services"]
    core = {name for name, s in services.items() if "profiles" not in s}
    assert core == {"postgres", "redis", "migrate", "api", "worker"}
    monitoring = {name for name, s in services.items() if s.get("profiles") == ["monitoring"]}
    assert monitoring == {"prometheus", "grafana"}
    assert set(services) == core | monitoring


def test_long_running_services_have_healthchecks(compose):
    for name in ("postgres", "redis", "api", "worker", "prometheus", "grafana"):
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


@pytest.mark.parametrize("dockerfile", [DOCKERFILE, API_DOCKERFILE], ids=["worker", "api"])
def test_dockerfile_builds_the_package_and_runs_unprivileged(dockerfile):
    text = dockerfile.read_text()
    assert "FROM python:3.11" in text
    assert re.search(r"^USER (?!root)\w+", text, re.M)
    for package in ("livt_core", "livt_service", "api", "worker", "migrations", "livt"):
        assert f"COPY {package} " in text
    assert "pip install" in text


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#") or line.startswith("--extra-index-url "):
            continue
        match = re.fullmatch(r"([a-z0-9][a-z0-9-]*)==([0-9][^\s]*)", line)
        assert match, f"{path.name}: {line!r} is not a lowercase `name==version` pin"
        pins[match.group(1)] = match.group(2)
    return pins


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_constraints_pin_every_dependency_of_the_project():
    from packaging.requirements import Requirement

    pins = _pins(CONSTRAINTS)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for text in project["dependencies"]:
        req = Requirement(text)
        name = _canonical(req.name)
        assert name in pins, f"{name} is not in constraints.txt: run scripts/freeze_constraints.py"
        assert req.specifier.contains(pins[name], prereleases=True), (name, pins[name])
    dev = {_canonical(Requirement(r).name) for r in project["optional-dependencies"]["dev"]}
    assert not dev & set(pins), "test/lint tools do not belong in the images"


def test_api_requirements_are_the_constraints_with_cpu_torch():
    pins, api = _pins(CONSTRAINTS), _pins(API_REQUIREMENTS)
    assert any(CUDA_ONLY.match(n) for n in pins)  # the worker gets CUDA torch
    cuda = [n for n in api if CUDA_ONLY.match(n)]
    assert not cuda, f"the API image would install {cuda}"
    assert "+" not in "".join(pins.values())  # PyPI versions for the worker
    assert api["torch"] == pins["torch"] + "+cpu"
    assert api["torchvision"] == pins["torchvision"] + "+cpu"
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in API_REQUIREMENTS.read_text()
    for name, version in api.items():
        if name not in ("torch", "torchvision"):
            assert pins.get(name) == version, f"{name}=={version} differs from constraints.txt"
    assert set(api) == {n for n in pins if not CUDA_ONLY.match(n)}


def test_api_requirements_cover_what_the_api_and_migrations_import(tmp_path):
    code = (
        "import sys\n"
        "from importlib.metadata import packages_distributions\n"
        "import api.main, api.commands, api.services.datasets, livt.serve\n"
        "from livt_service.db import upgrade_database\n"
        f"upgrade_database('sqlite:///{tmp_path}/m.db')\n"
        "dists = packages_distributions()\n"
        "names = {d for m in list(sys.modules) for d in dists.get(m.split('.')[0], ())}\n"
        "print('\\n'.join(sorted(names)))\n"
    )
    env = {"LIVT_DATA_DIR": str(tmp_path / "data"), "PATH": os.environ.get("PATH", "")}
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**env, "PYTHONPATH": str(ROOT)},
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    # Only what the project's dependencies require counts: a package that is merely installed
    # here gets imported opportunistically (httpx loads rich / pygments for its CLI when they
    # are present, mako pygments) and is not needed in the image.
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from freeze_constraints import closure, project_requirements
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    required = set(closure(project_requirements()))
    used = {_canonical(n) for n in out.stdout.split()} & required
    assert {"fastapi", "sqlalchemy", "alembic", "httpx"} <= used
    missing = used - set(_pins(API_REQUIREMENTS))
    assert not missing, f"the API imports {missing}, not in docker/requirements-api.txt"


def test_images_install_from_the_pinned_files():
    worker = DOCKERFILE.read_text()
    assert "COPY pyproject.toml README.md constraints.txt" in worker
    assert re.search(r"pip install -c constraints\.txt \.", worker)
    api = API_DOCKERFILE.read_text()
    assert "COPY docker/requirements-api.txt" in api
    assert re.search(r"pip install --no-deps -r requirements-api\.txt", api)
    assert re.search(r"pip install --no-deps \.", api)
    assert "constraints.txt" not in re.sub(r"#.*", "", api)  # no CUDA torch by accident
    assert "assert torch.version.cuda is None" in api  # the build fails if CUDA torch got in
    assert "assert 'torch' not in sys.modules" in api


def test_services_use_the_image_of_their_role(compose):
    services = compose["services"]
    for name in ("migrate", "api"):
        assert services[name]["build"]["dockerfile"] == "docker/Dockerfile.api"
        assert services[name]["image"].startswith("livt-api:")
    assert services["worker"]["build"]["dockerfile"] == "docker/Dockerfile.worker"
    assert services["worker"]["image"].startswith("livt-worker:")


def test_gpu_reservation_agrees_with_the_worker_gpus(compose):
    worker = compose["services"]["worker"]
    (device,) = worker["deploy"]["resources"]["reservations"]["devices"]
    command = worker["command"]
    offered = command[command.index("--gpus") + 1]
    assert str(device["count"]) == offered == "${LIVT_WORKER_GPUS:-1}"
    assert _env(worker)["LIVT_MAX_GPUS"] == "${LIVT_WORKER_GPUS:-1}"


def test_compose_states_v2_and_its_wrapper_checks_the_version(compose, tmp_path):
    header = COMPOSE.read_text().split("\nname:")[0]
    assert "Docker Compose v2.21 or newer" in header and "scripts/compose.sh" in header
    assert "version" not in compose  # obsolete in v2
    assert os.access(COMPOSE_SH, os.X_OK)
    fake = tmp_path / "docker"
    fake.write_text(
        '#!/bin/sh\nif [ "$2" = version ]; then [ -n "$FAKE_VERSION" ] || exit 1;'
        ' echo "$FAKE_VERSION"; exit 0; fi\necho "ran: $*"\n'
    )
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:/usr/bin:/bin"}
    for version, ok in (("1.29.2", False), ("v2.20.3", False), ("", False), ("2.21.0", True)):
        done = subprocess.run(
            ["sh", str(COMPOSE_SH), "up", "-d"],
            env={**env, "FAKE_VERSION": version},
            capture_output=True,
            text=True,
            timeout=30,
        )
        if ok:
            assert done.returncode == 0, done.stderr
            assert done.stdout == f"ran: compose -f {COMPOSE} up -d\n"
        else:
            assert done.returncode == 2 and "v2.21 or newer" in done.stderr, done.stderr


def test_docker_compose_config_where_compose_v2_runs(tmp_path):
    docker = shutil.which("docker")
    probe = docker and subprocess.run(
        [docker, "compose", "version", "--short"], capture_output=True, text=True, timeout=30
    )
    if not probe or probe.returncode != 0:
        pytest.skip("Docker Compose v2 is not installed here")
    env = {**os.environ, "POSTGRES_PASSWORD": "x" * 24, "LIVT_WORKER_GPUS": "2"}
    done = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE), "config", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    import json

    worker = json.loads(done.stdout)["services"]["worker"]
    assert worker["deploy"]["resources"]["reservations"]["devices"][0]["count"] == 2


def test_compose_commands_exist_in_the_cli():
    from livt.cli import build_parser

    commands = build_parser()._subparsers._group_actions[0].choices  # noqa: SLF001
    for name in ("serve", "worker", "db"):
        assert name in commands


# --------------------------------------------------------------------------------------------
# the `monitoring` profile: Prometheus + Grafana, provisioned


def _host_mounts(service: dict) -> list[tuple[Path, str]]:
    mounts = []
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("./"):
            mounts.append((ROOT / source, target))
    return mounts


def test_monitoring_mounts_files_of_the_repository(compose):
    for name in ("prometheus", "grafana"):
        mounts = _host_mounts(compose["services"][name])
        assert mounts, name
        for source, _ in mounts:
            assert source.exists(), f"{name} mounts {source}, which is not in the repository"
    assert {"promdata", "grafanadata"} <= set(compose["volumes"])


def test_prometheus_scrapes_the_api_with_the_token_and_the_worker_exporter(compose):
    services = compose["services"]
    prometheus = services["prometheus"]
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    api = jobs["livt-api"]
    assert api["static_configs"][0]["targets"] == ["api:8000"]
    token_file = api["authorization"]["credentials_file"]
    entry = prometheus["command"][0]
    assert f'printf %s "$$LIVT_METRICS_TOKEN" > {token_file}' in entry
    assert '[ -n "$$LIVT_METRICS_TOKEN" ] || {' in entry  # refuses to start without the token
    assert _env(prometheus)["LIVT_METRICS_TOKEN"] == "${LIVT_METRICS_TOKEN:-}"
    worker_cmd = services["worker"]["command"]
    port = worker_cmd[worker_cmd.index("--metrics-port") + 1]
    assert jobs["livt-worker"]["static_configs"][0]["targets"] == [f"worker:{port}"]
    assert ("./docker/monitoring/prometheus.yml", "/etc/prometheus/prometheus.yml") in {
        (v.split(":")[0], v.split(":")[1]) for v in prometheus["volumes"]
    }


def test_grafana_is_provisioned_with_the_datasource_and_the_dashboard(compose):
    grafana = compose["services"]["grafana"]
    assert '[ -n "$$GF_SECURITY_ADMIN_PASSWORD" ] || {' in grafana["command"][0]
    assert _env(grafana)["GF_SECURITY_ADMIN_PASSWORD"] == "${GRAFANA_ADMIN_PASSWORD:-}"
    mounts = dict((str(s.relative_to(ROOT)), t) for s, t in _host_mounts(grafana))
    assert mounts["docker/monitoring/grafana/provisioning"] == "/etc/grafana/provisioning"
    provisioning = MONITORING / "grafana" / "provisioning"
    (source,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ]
    assert source["url"] == "http://prometheus:9090" and source["type"] == "prometheus"
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "livt.yml").read_text())[
        "providers"
    ]
    assert mounts["docker/monitoring/grafana/dashboards"] == provider["options"]["path"]
    import json

    dashboard = json.loads((MONITORING / "grafana" / "dashboards" / "livt.json").read_text())
    assert dashboard["uid"] and dashboard["panels"]
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == source["uid"], panel["title"]
        assert panel["targets"] and all(t["expr"] for t in panel["targets"]), panel["title"]


def _exported_metric_names() -> set[str]:
    from prometheus_client import PROCESS_COLLECTOR

    from api.telemetry import _families
    from worker.exporter import GPU_METRICS

    names = {"livt_http_requests_total"}
    names |= {f"livt_http_request_duration_seconds_{s}" for s in ("bucket", "count", "sum")}
    for family in _families().values():
        if family.type == "histogram":
            names |= {f"{family.name}_{s}" for s in ("bucket", "count", "sum")}
        else:
            names.add(family.name)

    names |= set(GPU_METRICS)
    names |= {s.name for f in PROCESS_COLLECTOR.collect() for s in f.samples}
    return names


def test_dashboard_queries_only_metrics_the_service_exports():
    import json

    dashboard = json.loads((MONITORING / "grafana" / "dashboards" / "livt.json").read_text())
    exported = _exported_metric_names()
    used = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\b((?:livt|process)_[a-z_]+)\b", target["expr"])
    }
    assert used and used <= exported, used - exported
    families = {n.removesuffix("_bucket") for n in used}
    for needed in (
        "livt_jobs",
        "livt_queue_depth",
        "livt_job_duration_seconds",
        "livt_worker_heartbeat_age_seconds",
        "livt_job_images_per_second",
        "livt_gpu_utilization_ratio",
        "livt_gpu_memory_used_bytes",
    ):
        assert needed in families, f"no panel shows {needed}"
