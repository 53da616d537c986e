"""The database goes away and comes back: every endpoint that needs it answers 503 with
``Retry-After`` and a JSON body while it is down (never a 500), and works again by itself once it
is back. The test stops and restarts a PostgreSQL server of its own, never the machine's."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from livt_service.db import dispose_engines, upgrade_database
from tests.own_services import OwnPostgres

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


@pytest.fixture(scope="module")
def own_postgres() -> Iterator[OwnPostgres]:
    server = OwnPostgres()
    server.start()
    try:
        upgrade_database(server.url)
        dispose_engines()
        yield server
    finally:
        dispose_engines()
        server.close()


@pytest.fixture
def database_url(own_postgres: OwnPostgres) -> str:
    return own_postgres.url


def _requests(job_id: str, pipeline_id: str) -> list[tuple[str, str, dict | None]]:
    """(method, path, JSON body) of every endpoint that reads or writes the database."""
    spec = {"kind": "pretrain", "preset": "fashion-mnist-lt", "epochs": 1}
    return [
        ("GET", "/jobs", None),
        ("POST", "/jobs", spec),
        ("GET", f"/jobs/{job_id}", None),
        ("POST", f"/jobs/{job_id}/cancel", None),
        ("POST", f"/jobs/{job_id}/retry", None),
        ("GET", f"/jobs/{job_id}/metrics", None),
        ("GET", f"/jobs/{job_id}/logs", None),
        ("GET", f"/jobs/{job_id}/logs/stream", None),
        ("GET", f"/jobs/{job_id}/artifacts", None),
        ("GET", f"/jobs/{job_id}/artifacts/config.json", None),
        ("GET", "/datasets", None),
        ("GET", "/datasets/x", None),
        ("POST", "/datasets", {"name": "x", "kind": "imagefolder", "root": "x"}),
        ("POST", "/pipelines", {"stages": [spec]}),
        ("GET", f"/pipelines/{pipeline_id}", None),
        ("GET", "/presets", None),
        ("GET", "/metrics", None),
    ]


def test_database_outage_answers_503_and_recovers(
    own_postgres: OwnPostgres, client: TestClient, user, make_job
) -> None:
    job = make_job(status="succeeded")
    requests = _requests(job.id, "p_missing")
    assert client.get(f"/jobs/{job.id}", headers=user.headers).status_code == 200
    assert client.get("/readyz").status_code == 200

    own_postgres.stop()
    try:
        answers = {}
        for method, path, body in requests:
            response = client.request(method, path, json=body, headers=user.headers)
            answers[(method, path)] = response
        bad = {k: r.status_code for k, r in answers.items() if r.status_code != 503}
        assert not bad, f"expected 503 while the database is down, got {bad}"
        for response in answers.values():
            assert int(response.headers["Retry-After"]) > 0
            assert "database is unreachable" in response.json()["detail"]
        ready = client.get("/readyz")
        assert ready.status_code == 503 and int(ready.headers["Retry-After"]) > 0
        assert ready.json()["database"].startswith("down")
    finally:
        own_postgres.start()

    back = time.monotonic()
    while client.get(f"/jobs/{job.id}", headers=user.headers).status_code != 200:
        assert time.monotonic() - back < 10, "the API did not recover within 10 s"
        time.sleep(0.05)
    recovered_after = time.monotonic() - back
    assert client.get("/readyz").status_code == 200
    assert client.get("/jobs", headers=user.headers).status_code == 200
    print(f"recovered {recovered_after:.2f} s after the database was back")


def test_polling_reads_survive_a_database_restart(
    own_postgres: OwnPostgres, client: TestClient, user, make_job
) -> None:
    """The API's pools do not pre-ping; the polling reads retry once on a connection found
    dead, so the first ``GET /jobs/{id}``, ``GET /jobs`` and log page after a restart answer."""
    job = make_job(status="running")
    paths = [f"/jobs/{job.id}", "/jobs", f"/jobs/{job.id}/logs"]
    for path in paths:  # pooled connections now exist
        assert client.get(path, headers=user.headers).status_code == 200
    own_postgres.stop()
    own_postgres.start()
    for path in paths:
        response = client.get(path, headers=user.headers)
        assert response.status_code == 200, (path, response.text)
