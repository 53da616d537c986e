"""``/jobs``: create, idempotency, get, list (keyset pages, filters), cancel and retry."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from api.deps import get_enqueuer
from livt_service.models import Job, LogLine

PRETRAIN = {"kind": "pretrain", "preset": "fashion-mnist-lt", "epochs": 1}


def test_create_pretrain_job(client, user, enqueued, settings):
    response = client.post("/jobs", json=PRETRAIN, headers=user.headers)
    assert response.status_code == 201
    job = response.json()
    assert job["id"].startswith("j_") and len(job["id"]) == 28
    assert job["status"] == "queued"
    assert job["kind"] == "pretrain"
    assert job["owner"] == "alice"
    assert job["attempt"] == 1
    assert job["model"] == "mae_vit_nano_patch4"
    assert job["dataset"] == "fashion-mnist-lt"
    assert job["queue"] == settings.default_queue
    assert job["progress"] is None and job["result"] is None and job["failure"] is None
    assert enqueued == [(job["id"], settings.default_queue)]


def test_create_job_keeps_spec_and_fully_resolved_config(client, user):
    spec = {**PRETRAIN, "mask_ratio": 0.6, "data": {"n_max": 300}}
    job = client.post("/jobs", json=spec, headers=user.headers).json()
    assert job["spec"] == spec
    config = job["config"]
    assert config["epochs"] == 1  # spec
    assert config["mask_ratio"] == 0.6  # spec
    assert config["data"]["n_max"] == 300  # spec, nested
    assert config["data"]["img_size"] == 28  # preset
    assert config["weight_decay"] == 0.05  # default
    assert config["kind"] == "pretrain"


def test_create_job_on_a_named_queue(client, user, enqueued, make_worker):
    make_worker(queues=["gpu-a100"])
    spec = {**PRETRAIN, "name": "on gpu", "resources": {"gpus": 1, "queue": "gpu-a100"}}
    job = client.post("/jobs", json=spec, headers=user.headers).json()
    assert job["name"] == "on gpu"
    assert job["queue"] == "gpu-a100"
    assert job["gpus"] == 1
    assert enqueued == [(job["id"], "gpu-a100")]


def test_create_job_with_more_gpus_than_the_default_when_a_worker_offers_them(
    client, user, make_worker
):
    make_worker(gpus=4)
    spec = {**PRETRAIN, "resources": {"gpus": 4}}
    response = client.post("/jobs", json=spec, headers=user.headers)
    assert response.status_code == 201
    assert response.json()["gpus"] == 4


def test_create_finetune_from_a_pretrain_job(client, user, make_job):
    pretrain = make_job(kind="pretrain", status="succeeded")
    spec = {
        "kind": "finetune",
        "preset": "fashion-mnist-lt",
        "init": {"job": pretrain.id},
        "loss": "bal_bce",
        "epochs": 1,
    }
    response = client.post("/jobs", json=spec, headers=user.headers)
    assert response.status_code == 201
    job = response.json()
    assert job["init_job_id"] == pretrain.id
    assert job["loss"] == "bal_bce"
    assert job["config"]["init"] == f"{pretrain.artifact_dir}/checkpoint-last.pth"
    assert job["spec"]["init"] == {"job": pretrain.id}


def test_create_finetune_from_a_finetune_job_uses_its_best_checkpoint(client, user, make_job):
    previous = make_job(kind="finetune", status="succeeded")
    spec = {"kind": "finetune", "preset": "fashion-mnist-lt", "init": {"job": previous.id}}
    job = client.post("/jobs", json=spec, headers=user.headers).json()
    assert job["config"]["init"] == f"{previous.artifact_dir}/checkpoint-best.pth"


def test_create_finetune_from_a_checkpoint_file(client, user, make_checkpoint):
    path = make_checkpoint("weights/mae.pth")
    spec = {"kind": "finetune", "preset": "fashion-mnist-lt", "init": {"checkpoint": str(path)}}
    response = client.post("/jobs", json=spec, headers=user.headers)
    assert response.status_code == 201
    job = response.json()
    assert job["config"]["init"] == str(path.resolve())
    assert job["init_job_id"] is None


def test_create_finetune_from_a_checkpoint_path_relative_to_the_data_root(
    client, user, make_checkpoint
):
    path = make_checkpoint("weights/mae.pth")
    spec = {"kind": "finetune", "init": {"checkpoint": "weights/mae.pth"}}
    job = client.post("/jobs", json=spec, headers=user.headers).json()
    assert job["config"]["init"] == str(path.resolve())


def test_create_evaluate_copies_model_and_data_from_the_finetune_job(client, user, make_job):
    finetune = make_job(
        kind="finetune",
        status="succeeded",
        config={"model_kwargs": {"depth": 2}, "global_pool": False, "data": {"n_max": 400}},
    )
    spec = {"kind": "evaluate", "preset": "fashion-mnist-lt", "init": {"job": finetune.id}}
    response = client.post("/jobs", json=spec, headers=user.headers)
    assert response.status_code == 201
    config = response.json()["config"]
    assert config["checkpoint"] == f"{finetune.artifact_dir}/checkpoint-best.pth"
    assert config["model"] == finetune.config["model"]
    assert config["model_kwargs"] == {"depth": 2}
    assert config["global_pool"] is False
    assert config["data"] == finetune.config["data"]
    assert config["split"] == "test"


def test_create_evaluate_spec_overrides_what_it_copies(client, user, make_job):
    finetune = make_job(kind="finetune", status="succeeded", config={"data": {"n_max": 400}})
    spec = {
        "kind": "evaluate",
        "init": {"job": finetune.id},
        "data": {"n_max": 200},
        "split": "val",
    }
    config = client.post("/jobs", json=spec, headers=user.headers).json()["config"]
    assert config["data"]["n_max"] == 200
    assert config["data"]["img_size"] == finetune.config["data"]["img_size"]
    assert config["split"] == "val"


def test_repeated_idempotency_key_returns_the_existing_job(client, user, enqueued):
    spec = {**PRETRAIN, "idempotency_key": "nightly-1"}
    first = client.post("/jobs", json=spec, headers=user.headers)
    # the same body in another key order and layout is the same request
    reordered = json.dumps(dict(reversed(list(spec.items()))), indent=2)
    again = client.post(
        "/jobs", content=reordered, headers={**user.headers, "Content-Type": "application/json"}
    )
    assert first.status_code == 201
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["idempotency_key"] == "nightly-1"
    assert len(enqueued) == 1


def test_idempotency_key_with_a_different_body_is_409(client, user, enqueued):
    spec = {**PRETRAIN, "idempotency_key": "nightly-1"}
    first = client.post("/jobs", json=spec, headers=user.headers)
    changed = client.post("/jobs", json={**spec, "epochs": 3}, headers=user.headers)
    assert changed.status_code == 409
    detail = changed.json()["detail"]
    assert "'nightly-1'" in detail and first.json()["id"] in detail
    assert "new idempotency_key" in detail
    assert len(enqueued) == 1
    # the key still answers its own request
    assert client.post("/jobs", json=spec, headers=user.headers).json()["id"] == first.json()["id"]


def test_idempotency_key_of_a_pipeline_stage_is_409_for_a_job(client, user):
    stage = {**PRETRAIN, "idempotency_key": "stage-key"}
    assert (
        client.post("/pipelines", json={"stages": [stage]}, headers=user.headers).status_code == 201
    )
    response = client.post("/jobs", json=stage, headers=user.headers)
    assert response.status_code == 409
    assert "'stage-key'" in response.json()["detail"]
    assert "stage 0 of pipeline p_" in response.json()["detail"]


def test_concurrent_submits_with_one_key_and_different_bodies_make_one_job(client, user, enqueued):
    from concurrent.futures import ThreadPoolExecutor

    def submit(epochs: int) -> tuple[int, str]:
        spec = {**PRETRAIN, "epochs": epochs, "idempotency_key": "race"}
        response = client.post("/jobs", json=spec, headers=user.headers)
        return response.status_code, response.text

    with ThreadPoolExecutor(max_workers=6) as pool:
        outcomes = list(pool.map(submit, [1, 2, 1, 2, 1, 2]))
    codes = sorted(code for code, _ in outcomes)
    assert codes.count(201) == 1, outcomes
    assert set(codes) <= {200, 201, 409}, outcomes
    assert 409 in codes
    assert len(enqueued) == 1


def test_idempotency_keys_are_per_user(client, user, make_user):
    bob = make_user("bob")
    spec = {**PRETRAIN, "idempotency_key": "same"}
    mine = client.post("/jobs", json=spec, headers=user.headers)
    theirs = client.post("/jobs", json=spec, headers=bob.headers)
    assert theirs.status_code == 201
    assert theirs.json()["id"] != mine.json()["id"]


def test_enqueue_failure_marks_the_job_failed_and_answers_503(app, client, user):
    def broken(job_id: str, queue: str) -> None:
        raise ConnectionError("broker down")

    app.dependency_overrides[get_enqueuer] = lambda: broken
    response = client.post("/jobs", json=PRETRAIN, headers=user.headers)
    assert response.status_code == 503
    assert "retry" in response.json()["detail"]
    jobs = client.get("/jobs", headers=user.headers).json()["items"]
    assert jobs[0]["status"] == "failed"
    assert jobs[0]["failure"]["reason"] == "internal"
    assert "broker down" in jobs[0]["failure"]["message"]


# --------------------------------------------------------------------------------------------
# get


def test_get_job(client, user, make_job):
    job = make_job(
        status="running",
        progress={"epoch": 0, "epochs": 1, "step": 3, "steps": 10, "eta_seconds": 4.5},
    )
    response = client.get(f"/jobs/{job.id}", headers=user.headers)
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == job.id
    assert body["status"] == "running"
    assert body["progress"]["step"] == 3
    assert body["progress"]["eta_seconds"] == 4.5
    assert body["config"] == job.config
    assert body["started_at"] is not None


def test_get_finished_job_shows_result_and_failure(client, user, make_job):
    result = {
        "overall": 71.2,
        "many": 88.0,
        "medium": 70.1,
        "few": None,
        "top5": 98.1,
        "ece": 4.2,
        "mce": 12.0,
        "pdc": 0.8,
        "per_class": [{"class": 0, "accuracy": 90.0, "train_count": 1000}],
        "class_counts": [1000, 10],
        "split": "test",
        "class_counts_source": "train split",
    }
    succeeded = make_job(kind="finetune", status="succeeded", result=result)
    failed = make_job(
        failure_reason="non_finite_loss", failure_message="loss is nan", status="failed"
    )
    assert client.get(f"/jobs/{succeeded.id}", headers=user.headers).json()["result"] == result
    assert client.get(f"/jobs/{failed.id}", headers=user.headers).json()["failure"] == {
        "reason": "non_finite_loss",
        "message": "loss is nan",
    }


def test_get_job_not_found(client, user):
    response = client.get("/jobs/j_does_not_exist", headers=user.headers)
    assert response.status_code == 404
    assert "j_does_not_exist" in response.json()["detail"]


def test_get_other_users_job_is_404(client, user, make_user, make_job):
    job = make_job(owner=make_user("bob"))
    assert client.get(f"/jobs/{job.id}", headers=user.headers).status_code == 404


def test_admin_gets_other_users_job(client, admin, make_job):
    job = make_job()
    response = client.get(f"/jobs/{job.id}", headers=admin.headers)
    assert response.status_code == 200
    assert response.json()["owner"] == "alice"


# --------------------------------------------------------------------------------------------
# list


def _pages(client, headers, **params):
    pages, cursor = [], None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        body = client.get("/jobs", params=query, headers=headers).json()
        pages.append([job["id"] for job in body["items"]])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages


def test_list_jobs_newest_first_across_pages(client, user, make_job):
    start = datetime.now(UTC) - timedelta(hours=1)
    ids = [make_job(created_at=start + timedelta(minutes=i)).id for i in range(5)]
    pages = _pages(client, user.headers, limit=2)
    assert pages == [[ids[4], ids[3]], [ids[2], ids[1]], [ids[0]]]


def test_list_jobs_pages_through_equal_timestamps(client, user, make_job):
    same = datetime.now(UTC)
    ids = {make_job(created_at=same).id for _ in range(5)}
    pages = _pages(client, user.headers, limit=2)
    seen = [job_id for page in pages for job_id in page]
    assert sorted(seen, reverse=True) == seen
    assert set(seen) == ids and len(seen) == 5


def test_list_jobs_items_leave_out_spec_and_config(client, user, make_job):
    make_job()
    item = client.get("/jobs", headers=user.headers).json()["items"][0]
    assert "spec" not in item and "config" not in item
    assert item["status"] == "queued"


def test_list_jobs_filters_by_status_and_kind(client, user, make_job):
    running = make_job(kind="pretrain", status="running")
    make_job(kind="pretrain", status="queued")
    finetune = make_job(kind="finetune", status="running")
    by_status = client.get("/jobs", params={"status": "running"}, headers=user.headers).json()
    both = client.get(
        "/jobs", params={"status": "running", "kind": "finetune"}, headers=user.headers
    ).json()
    assert {j["id"] for j in by_status["items"]} == {running.id, finetune.id}
    assert [j["id"] for j in both["items"]] == [finetune.id]


def test_list_jobs_shows_only_own_jobs(client, user, make_user, make_job):
    mine = make_job()
    make_job(owner=make_user("bob"))
    items = client.get("/jobs", headers=user.headers).json()["items"]
    assert [j["id"] for j in items] == [mine.id]


def test_admin_lists_every_users_jobs(client, admin, make_user, make_job):
    ids = {make_job().id, make_job(owner=make_user("bob")).id}
    items = client.get("/jobs", headers=admin.headers).json()["items"]
    assert {j["id"] for j in items} == ids


def test_list_jobs_with_a_bad_cursor_is_422(client, user):
    response = client.get("/jobs", params={"cursor": "not-a-cursor"}, headers=user.headers)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "cursor"]


def test_list_jobs_with_an_unknown_status_is_422(client, user):
    response = client.get("/jobs", params={"status": "done"}, headers=user.headers)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "status"]


# --------------------------------------------------------------------------------------------
# cancel


def test_cancel_queued_job(client, user, make_job):
    job = make_job(status="queued")
    response = client.post(f"/jobs/{job.id}/cancel", headers=user.headers)
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "cancelled"
    assert body["finished_at"] is not None


def test_cancel_running_job_becomes_cancelling(client, user, make_job, db):
    job = make_job(status="running")
    response = client.post(f"/jobs/{job.id}/cancel", headers=user.headers)
    assert response.json()["status"] == "cancelling"
    assert response.json()["finished_at"] is None
    with db() as session:
        assert session.get(Job, job.id).cancel_requested is True


def test_cancel_cancelling_job_keeps_it_cancelling(client, user, make_job):
    job = make_job(status="cancelling")
    response = client.post(f"/jobs/{job.id}/cancel", headers=user.headers)
    assert response.status_code == 200
    assert response.json()["status"] == "cancelling"


@pytest.mark.parametrize("status", ["succeeded", "failed", "cancelled"])
def test_cancel_finished_job_is_409(client, user, make_job, status):
    job = make_job(status=status)
    response = client.post(f"/jobs/{job.id}/cancel", headers=user.headers)
    assert response.status_code == 409
    assert status in response.json()["detail"]


def test_cancel_other_users_job_is_404(client, user, make_user, make_job, db):
    job = make_job(owner=make_user("bob"))
    assert client.post(f"/jobs/{job.id}/cancel", headers=user.headers).status_code == 404
    with db() as session:
        assert session.get(Job, job.id).status == "queued"


def test_admin_cancels_other_users_job(client, admin, make_job):
    job = make_job()
    response = client.post(f"/jobs/{job.id}/cancel", headers=admin.headers)
    assert response.json()["status"] == "cancelled"


def test_cancel_queued_job_cancels_the_jobs_waiting_on_it(client, user, make_job, db):
    first = make_job(status="queued")
    second = make_job(kind="finetune", status="queued", depends_on=first.id)
    third = make_job(kind="evaluate", status="queued", depends_on=second.id)
    client.post(f"/jobs/{first.id}/cancel", headers=user.headers)
    with db() as session:
        assert session.get(Job, second.id).status == "cancelled"
        assert session.get(Job, third.id).status == "cancelled"
        lines = session.scalars(select(LogLine.message).where(LogLine.job_id == second.id)).all()
    assert any(first.id in line for line in lines)


# --------------------------------------------------------------------------------------------
# retry


def test_retry_failed_job(client, user, make_job, enqueued):
    job = make_job(status="failed", progress={"epoch": 3, "epochs": 5})
    response = client.post(f"/jobs/{job.id}/retry", headers=user.headers)
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "queued"
    assert body["attempt"] == 2
    assert body["failure"] is None
    assert body["finished_at"] is None
    assert enqueued == [(job.id, job.queue)]


def test_retry_cancelled_job(client, user, make_job, enqueued):
    job = make_job(status="cancelled", attempt=2)
    body = client.post(f"/jobs/{job.id}/retry", headers=user.headers).json()
    assert body["status"] == "queued"
    assert body["attempt"] == 3
    assert [job_id for job_id, _ in enqueued] == [job.id]


@pytest.mark.parametrize("status", ["queued", "running", "cancelling", "succeeded"])
def test_retry_is_409_unless_failed_or_cancelled(client, user, make_job, enqueued, status):
    job = make_job(status=status)
    response = client.post(f"/jobs/{job.id}/retry", headers=user.headers)
    assert response.status_code == 409
    assert status in response.json()["detail"]
    assert enqueued == []


def test_retry_other_users_job_is_404(client, user, make_user, make_job):
    job = make_job(owner=make_user("bob"), status="failed")
    assert client.post(f"/jobs/{job.id}/retry", headers=user.headers).status_code == 404
