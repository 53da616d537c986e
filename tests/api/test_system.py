"""Auth, health, readiness, Prometheus metrics, presets, OpenAPI and the dashboard files."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

import api.main
from api.main import create_app
from livt_service.models import ApiToken

#: For checks that do not depend on the database backend: run them on SQLite only.
SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

# --------------------------------------------------------------------------------------------
# auth


@SQLITE_ONLY
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/jobs"),
        ("POST", "/jobs"),
        ("GET", "/jobs/j_x"),
        ("POST", "/jobs/j_x/cancel"),
        ("GET", "/jobs/j_x/logs/stream"),
        ("GET", "/pipelines/p_x"),
        ("GET", "/datasets"),
        ("GET", "/presets"),
        ("GET", "/metrics"),
    ],
)
def test_endpoints_need_a_token(client, method, path):
    response = client.request(method, path)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert "livt token create" in response.json()["detail"]


def test_unknown_token_is_401(client):
    response = client.get("/jobs", headers={"Authorization": "Bearer livt_not-a-real-token"})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


@SQLITE_ONLY
def test_other_scheme_is_401(client, user):
    response = client.get("/jobs", headers={"Authorization": f"Basic {user.token}"})
    assert response.status_code == 401


def test_revoked_token_is_401(client, user, db):
    with db() as session:
        session.query(ApiToken).filter_by(user_id=user.id).update({"revoked_at": datetime.now(UTC)})
    assert client.get("/jobs", headers=user.headers).status_code == 401


def test_tokens_are_stored_hashed_and_their_use_recorded(client, user, db):
    assert client.get("/jobs", headers=user.headers).status_code == 200
    with db() as session:
        row = session.query(ApiToken).filter_by(user_id=user.id).one()
    assert user.token not in (row.token_hash, row.prefix)
    assert len(row.token_hash) == 64
    assert user.token.startswith(row.prefix)
    assert row.last_used_at is not None


# --------------------------------------------------------------------------------------------
# health and readiness


def test_healthz_needs_no_token(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_when_database_and_broker_answer(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"database": "ok", "broker": "ok"}


def test_readyz_names_an_unreachable_broker(settings):
    broken = settings.model_copy(update={"broker_url": "redis://127.0.0.1:1/0"})
    with TestClient(create_app(broken)) as client:
        response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["database"] == "ok"
    assert body["broker"].startswith("down: ")


def test_readyz_names_an_unreachable_database(settings, tmp_path):
    folder = tmp_path / "a-folder"
    folder.mkdir()
    broken = settings.model_copy(update={"database_url": f"sqlite:///{folder}"})
    broken.data_dir.mkdir(parents=True)  # the embedded broker's file lives there
    client = TestClient(create_app(broken))  # no lifespan: it would migrate the database
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["database"].startswith("down: ")
    assert body["broker"] == "ok"


# --------------------------------------------------------------------------------------------
# Prometheus


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_count_jobs_by_status_and_ready_queue_depth(client, admin, make_job):
    first = make_job(status="queued")
    make_job(status="queued", depends_on=first.id)  # waiting: not ready to run
    make_job(status="running")
    make_job(status="failed")
    response = client.get("/metrics", headers=admin.headers)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = _samples(response.text)
    pretrain = ("kind", "pretrain")
    assert samples[("livt_jobs", (pretrain, ("status", "queued")))] == 2
    assert samples[("livt_jobs", (pretrain, ("status", "running")))] == 1
    assert samples[("livt_jobs", (pretrain, ("status", "failed")))] == 1
    assert samples[("livt_jobs", (pretrain, ("status", "succeeded")))] == 0
    assert samples[("livt_jobs", (("kind", "finetune"), ("status", "queued")))] == 0
    assert samples[("livt_queue_depth", (("queue", "default"),))] == 1
    assert samples[("livt_workers_live", ())] == 0


def test_metrics_count_requests_by_route_template(client, user, admin, make_job):
    job = make_job()
    client.get(f"/jobs/{job.id}", headers=user.headers)
    client.get("/jobs/j_missing", headers=user.headers)
    samples = _samples(client.get("/metrics", headers=admin.headers).text)
    route = "/jobs/{job_id}"
    ok = (("method", "GET"), ("route", route), ("status", "200"))
    missing = (("method", "GET"), ("route", route), ("status", "404"))
    assert samples[("livt_http_requests_total", ok)] == 1
    assert samples[("livt_http_requests_total", missing)] == 1
    latency = (("method", "GET"), ("route", route))
    assert samples[("livt_http_request_duration_seconds_count", latency)] == 2


def test_metrics_are_refused_to_a_user_who_is_not_an_admin(client, user, make_job):
    make_job(status="queued")
    response = client.get("/metrics", headers=user.headers)
    assert response.status_code == 403
    assert "livt_jobs" not in response.text
    assert "LIVT_METRICS_TOKEN" in response.json()["detail"]


METRICS_TOKEN = "metrics-scrape-secret-0123456789"


@pytest.fixture
def metrics_client(settings, monkeypatch):
    monkeypatch.setenv("LIVT_METRICS_TOKEN", METRICS_TOKEN)
    from livt_service.settings import Settings

    with TestClient(create_app(Settings())) as client:
        yield client


def test_metrics_token_reads_metrics_and_nothing_else(metrics_client, make_job):
    make_job(status="running")
    headers = {"Authorization": f"Bearer {METRICS_TOKEN}"}
    response = metrics_client.get("/metrics", headers=headers)
    assert response.status_code == 200
    running = (("kind", "pretrain"), ("status", "running"))
    assert _samples(response.text)[("livt_jobs", running)] == 1
    assert metrics_client.get("/jobs", headers=headers).status_code == 401
    wrong = {"Authorization": f"Bearer {METRICS_TOKEN[:-1]}x"}
    assert metrics_client.get("/metrics", headers=wrong).status_code == 401


@SQLITE_ONLY
def test_metrics_token_must_be_long(settings, monkeypatch):
    from pydantic import ValidationError

    from livt_service.settings import Settings

    monkeypatch.setenv("LIVT_METRICS_TOKEN", "short")
    with pytest.raises(ValidationError, match="metrics_token"):
        Settings()


# --------------------------------------------------------------------------------------------
# presets, OpenAPI, dashboard


def test_presets_list_resolved_configs_per_kind(client, user):
    response = client.get("/presets", headers=user.headers)
    assert response.status_code == 200
    body = response.json()
    presets = {p["name"]: p["configs"] for p in body["items"]}
    assert "fashion-mnist-lt" in presets and "imagenet-lt" in presets
    fashion = presets["fashion-mnist-lt"]
    assert fashion["pretrain"]["model"] == "mae_vit_nano_patch4"
    assert fashion["finetune"]["loss"] == "bal_bce"
    assert fashion["evaluate"]["data"]["img_size"] == 28
    assert body["defaults"]["pretrain"]["mask_ratio"] == 0.75
    assert "mae_vit_nano_patch4" in body["models"]["pretrain"]
    assert "vit_nano_patch4" in body["models"]["finetune"]
    assert "bal_bce" in body["losses"]
    assert "fashion-mnist-lt" in body["datasets"]


@SQLITE_ONLY
def test_openapi_documents_the_job_spec_union(client):
    assert client.get("/docs").status_code == 200
    schema = client.get("/openapi.json").json()
    assert {"/jobs", "/jobs/{job_id}", "/pipelines", "/datasets", "/readyz"} <= set(schema["paths"])
    body = schema["paths"]["/jobs"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"]["discriminator"]["propertyName"] == "kind"


@SQLITE_ONLY
def test_openapi_documents_the_413_of_every_operation_that_takes_a_body(client):
    paths = client.get("/openapi.json").json()["paths"]
    taking = {
        (method.upper(), path): operation["responses"]
        for path, operations in paths.items()
        for method, operation in operations.items()
        if "requestBody" in operation
    }
    assert {("POST", "/jobs"), ("POST", "/pipelines"), ("POST", "/datasets")} <= set(taking)
    for operation, responses in taking.items():
        assert "413" in responses, operation
        assert "LIVT_MAX_BODY_BYTES" in responses["413"]["description"], operation
        schema = responses["413"]["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/ErrorMessage"}, operation


def test_dashboard_and_static_files_need_no_token(settings, tmp_path, monkeypatch):
    static = tmp_path / "static"
    static.mkdir()
    (static / "index.html").write_text("<!doctype html><title>LiVT</title>")
    (static / "app.js").write_text("console.log('livt')")
    monkeypatch.setattr(api.main, "STATIC_DIR", static)
    with TestClient(create_app(settings)) as client:
        index = client.get("/")
        script = client.get("/static/app.js")
    assert index.status_code == 200
    assert "<title>LiVT</title>" in index.text
    assert index.headers["content-type"].startswith("text/html")
    assert script.status_code == 200
    assert script.text == "console.log('livt')"


@SQLITE_ONLY
def test_static_files_stay_inside_the_static_folder(settings, tmp_path, monkeypatch):
    static = tmp_path / "static"
    static.mkdir()
    (tmp_path / "secret.txt").write_text("no")
    monkeypatch.setattr(api.main, "STATIC_DIR", static)
    with TestClient(create_app(settings)) as client:
        assert client.get("/static/../secret.txt").status_code == 404
        assert client.get("/static/%2e%2e/secret.txt").status_code == 404
