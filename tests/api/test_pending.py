"""Queued jobs say why they wait (``pending_reason``); a spec naming a queue no worker has served
is refused; CPU jobs read ``CPU``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event

from api.services.pending import pending_reasons
from livt_service import state
from livt_service.db import get_engine
from livt_service.models import Job

PRETRAIN = {"kind": "pretrain", "preset": "fashion-mnist-lt", "epochs": 1}


def _reason(client, user, job_id: str) -> str | None:
    return client.get(f"/jobs/{job_id}", headers=user.headers).json()["pending_reason"]


def test_no_live_worker_serves_the_queue(client, user, make_job, make_worker):
    make_worker(queues=["gpu"], heartbeat_at=datetime.now(UTC) - timedelta(hours=1))
    job = make_job(queue="gpu")
    assert _reason(client, user, job.id) == "no live worker serves queue 'gpu'"


def test_workers_busy_gives_the_position_in_the_queue(client, user, make_job, make_worker):
    make_worker(queues=["default"])
    start = datetime.now(UTC) - timedelta(minutes=5)
    first = make_job(created_at=start)
    make_job(status="running", created_at=start + timedelta(seconds=1))
    third = make_job(created_at=start + timedelta(seconds=2))
    make_job(queue="other", created_at=start)  # other queues do not count
    assert _reason(client, user, first.id) == "workers busy (position 1 in 'default')"
    assert _reason(client, user, third.id) == "workers busy (position 2 in 'default')"


def test_needs_more_gpus_than_the_largest_live_worker(client, user, make_job, make_worker):
    make_worker(gpus=2, queues=["gpu"])
    make_worker(gpus=8, queues=["gpu"], heartbeat_at=datetime.now(UTC) - timedelta(hours=1))
    job = make_job(queue="gpu", gpus=4)
    assert _reason(client, user, job.id) == "needs 4 GPUs, largest live worker has 2"


def test_a_worker_without_gpus_runs_any_job_on_the_cpu(client, user, make_job, make_worker):
    make_worker(gpus=0)
    job = make_job(gpus=4)
    assert _reason(client, user, job.id).startswith("workers busy")


def test_multi_node_job_waits_for_its_nodes(client, user, make_job, make_worker):
    make_worker(gpus=2, queues=["gpu"])
    make_worker(gpus=1, queues=["gpu"])  # too small for a node of 2 GPUs
    job = make_job(queue="gpu", gpus=2, nodes=2)
    assert _reason(client, user, job.id) == "waiting for 2 nodes, 1 available"


def test_pipeline_stage_waits_for_its_predecessor(client, user, make_job, make_worker):
    make_worker()
    first = make_job(status="running")
    second = make_job(kind="finetune", depends_on=first.id)
    assert _reason(client, user, second.id) == f"waiting for {first.id} (pipeline)"


def test_only_queued_jobs_have_a_reason(client, user, make_job):
    for status in ("running", "succeeded", "failed", "cancelled"):
        assert _reason(client, user, make_job(status=status).id) is None


def test_job_list_carries_the_reasons(client, user, make_job, make_worker):
    make_worker(queues=["default"])
    queued, running = make_job(), make_job(status="running")
    items = client.get("/jobs", headers=user.headers).json()["items"]
    reasons = {item["id"]: item["pending_reason"] for item in items}
    assert reasons == {queued.id: "workers busy (position 1 in 'default')", running.id: None}


def test_reasons_of_a_page_cost_one_statement_and_none_without_queued_jobs(
    settings, db, make_job, make_worker
):
    make_worker(queues=["default", "gpu"], gpus=2)
    jobs = [make_job(), make_job(queue="gpu", gpus=4), make_job(status="running")]
    statements: list[str] = []
    engine = get_engine(settings.database_url)

    def count(conn, cursor, statement, *args):
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        with db() as session:
            rows = [session.get(Job, j.id) for j in jobs]
            statements.clear()
            reasons = pending_reasons(session, settings, rows)
            assert len(statements) == 1
            assert reasons == {
                jobs[0].id: "workers busy (position 1 in 'default')",
                jobs[1].id: "needs 4 GPUs, largest live worker has 2",
            }
            statements.clear()
            assert pending_reasons(session, settings, rows[2:]) == {}
            assert statements == []
    finally:
        event.remove(engine, "before_cursor_execute", count)


# --------------------------------------------------------------------------------------------
# known queues


def test_a_queue_no_worker_has_served_is_422_naming_the_known_queues(client, user, make_worker):
    make_worker(queues=["gpu-a100"])
    spec = {**PRETRAIN, "resources": {"queue": "gpu-a10O"}}
    response = client.post("/jobs", json=spec, headers=user.headers)
    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert error["loc"] == ["body", "resources", "queue"]
    assert "default, gpu-a100" in error["msg"]
    assert "LIVT_ALLOW_UNKNOWN_QUEUES" in error["msg"]


def test_a_queue_stays_known_after_its_workers_are_gone(client, user, settings):
    state.register_worker("w@host", ["big"], 8)
    state.unregister_worker("w@host")
    spec = {**PRETRAIN, "resources": {"queue": "big"}}
    response = client.post("/jobs", json=spec, headers=user.headers)
    assert response.status_code == 201
    assert response.json()["pending_reason"] == "no live worker serves queue 'big'"


@pytest.fixture
def allow_unknown_queues(monkeypatch, settings):
    from livt_service.settings import get_settings

    monkeypatch.setenv("LIVT_ALLOW_UNKNOWN_QUEUES", "true")
    get_settings.cache_clear()
    return get_settings()


def test_unknown_queues_are_accepted_when_the_setting_allows_them(
    allow_unknown_queues, enqueued, user
):
    from fastapi.testclient import TestClient

    from api.deps import get_enqueuer
    from api.main import create_app

    app = create_app(allow_unknown_queues)
    app.dependency_overrides[get_enqueuer] = lambda: (
        lambda job_id, queue: enqueued.append((job_id, queue))
    )
    with TestClient(app) as client:
        spec = {**PRETRAIN, "resources": {"queue": "later"}}
        response = client.post("/jobs", json=spec, headers=user.headers)
    assert response.status_code == 201
    assert response.json()["pending_reason"] == "no live worker serves queue 'later'"
    assert enqueued == [(response.json()["id"], "later")]


# --------------------------------------------------------------------------------------------
# labels


def test_cpu_jobs_read_cpu_not_one_gpu(client, user, make_worker):
    make_worker(gpus=2)
    cpu = client.post("/jobs", json={**PRETRAIN, "device": "cpu"}, headers=user.headers).json()
    gpu = client.post("/jobs", json=PRETRAIN, headers=user.headers).json()
    assert (cpu["devices"], gpu["devices"]) == ("CPU", "1 GPU")


def test_jobs_on_a_queue_of_cpu_workers_read_cpu(client, user, make_worker):
    make_worker(gpus=0)
    job = client.post("/jobs", json=PRETRAIN, headers=user.headers).json()
    assert job["devices"] == "CPU"


def test_multi_node_jobs_are_refused_in_the_embedded_mode(client, user):
    spec = {**PRETRAIN, "resources": {"nodes": 2}}
    response = client.post("/jobs", json=spec, headers=user.headers)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "resources", "nodes"]
