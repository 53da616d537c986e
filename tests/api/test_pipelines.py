"""``/pipelines``: pretrain → finetune → evaluate chains."""

from __future__ import annotations

from livt_service.models import Job

STAGES = [
    {"kind": "pretrain", "preset": "fashion-mnist-lt", "epochs": 1},
    {"kind": "finetune", "preset": "fashion-mnist-lt", "epochs": 1, "loss": "bal_bce"},
    {"kind": "evaluate", "preset": "fashion-mnist-lt"},
]


def test_create_pipeline_chains_the_stages(client, user, enqueued):
    response = client.post(
        "/pipelines", json={"name": "fmnist", "stages": STAGES}, headers=user.headers
    )
    assert response.status_code == 201
    body = response.json()
    assert body["id"].startswith("p_")
    assert body["name"] == "fmnist"
    pretrain, finetune, evaluate = body["jobs"]
    assert [j["stage"] for j in body["jobs"]] == [0, 1, 2]
    assert {j["pipeline_id"] for j in body["jobs"]} == {body["id"]}
    assert {j["status"] for j in body["jobs"]} == {"queued"}
    assert pretrain["depends_on"] is None
    assert finetune["depends_on"] == finetune["init_job_id"] == pretrain["id"]
    assert evaluate["depends_on"] == evaluate["init_job_id"] == finetune["id"]
    assert finetune["config"]["init"].endswith(f"/{pretrain['id']}/checkpoint-last.pth")
    assert evaluate["config"]["checkpoint"].endswith(f"/{finetune['id']}/checkpoint-best.pth")
    assert evaluate["config"]["model"] == finetune["config"]["model"]
    assert evaluate["config"]["data"] == finetune["config"]["data"]
    assert enqueued == [(pretrain["id"], pretrain["queue"])]


def test_pipeline_stage_with_its_own_init_starts_from_it(client, user, make_job):
    pretrain = make_job(kind="pretrain", status="succeeded")
    stages = [
        {"kind": "finetune", "init": {"job": pretrain.id}, "epochs": 1},
        {"kind": "evaluate"},
    ]
    body = client.post("/pipelines", json={"stages": stages}, headers=user.headers).json()
    assert body["name"] is None
    assert body["jobs"][0]["init_job_id"] == pretrain.id
    assert body["jobs"][0]["depends_on"] is None
    assert body["jobs"][1]["depends_on"] == body["jobs"][0]["id"]


def test_get_pipeline(client, user):
    created = client.post("/pipelines", json={"stages": STAGES}, headers=user.headers).json()
    response = client.get(f"/pipelines/{created['id']}", headers=user.headers)
    assert response.status_code == 200
    assert [j["id"] for j in response.json()["jobs"]] == [j["id"] for j in created["jobs"]]


def test_get_other_users_pipeline_is_404(client, user, make_user):
    created = client.post("/pipelines", json={"stages": STAGES}, headers=user.headers).json()
    bob = make_user("bob")
    assert client.get(f"/pipelines/{created['id']}", headers=bob.headers).status_code == 404


def test_admin_gets_other_users_pipeline(client, user, admin):
    created = client.post("/pipelines", json={"stages": STAGES}, headers=user.headers).json()
    assert client.get(f"/pipelines/{created['id']}", headers=admin.headers).status_code == 200


def test_get_unknown_pipeline_is_404(client, user):
    assert client.get("/pipelines/p_nope", headers=user.headers).status_code == 404


def test_invalid_stage_is_422_naming_the_stage_and_nothing_is_created(client, user, enqueued):
    stages = [STAGES[0], {**STAGES[1], "loss": "nope"}, STAGES[2]]
    response = client.post("/pipelines", json={"stages": stages}, headers=user.headers)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "stages", 1, "loss"]
    assert client.get("/jobs", headers=user.headers).json()["items"] == []
    assert enqueued == []


def test_pipeline_stage_schema_error_names_the_stage(client, user):
    stages = [{**STAGES[0], "resources": {"gpus": 0}}]
    response = client.post("/pipelines", json={"stages": stages}, headers=user.headers)
    assert response.json()["detail"][0]["loc"] == ["body", "stages", 0, "resources", "gpus"]


def test_evaluate_right_after_pretrain_is_422(client, user):
    stages = [STAGES[0], STAGES[2]]
    response = client.post("/pipelines", json={"stages": stages}, headers=user.headers)
    assert response.status_code == 422
    error = response.json()["detail"][0]
    assert error["loc"] == ["body", "stages", 1, "init"]
    assert error["type"] == "init_job_wrong_kind"


def test_empty_pipeline_is_422(client, user):
    response = client.post("/pipelines", json={"stages": []}, headers=user.headers)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "stages"]


def test_repeated_idempotency_key_in_a_pipeline_is_422(client, user):
    stages = [
        {**STAGES[0], "idempotency_key": "k"},
        {**STAGES[1], "idempotency_key": "k"},
    ]
    response = client.post("/pipelines", json={"stages": stages}, headers=user.headers)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "stages", 1, "idempotency_key"]


def _keyed(*keys: str | None) -> list[dict]:
    return [
        {**stage, "idempotency_key": key} if key else dict(stage)
        for stage, key in zip(STAGES, keys, strict=True)
    ]


def test_repeated_pipeline_with_the_same_stage_keys_returns_it(client, user, enqueued):
    body = {"name": "nightly", "stages": _keyed("pre-1", None, "eval-1")}
    first = client.post("/pipelines", json=body, headers=user.headers)
    again = client.post("/pipelines", json=body, headers=user.headers)
    assert first.status_code == 201
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert [j["id"] for j in again.json()["jobs"]] == [j["id"] for j in first.json()["jobs"]]
    assert len(enqueued) == 1


def test_pipeline_stage_key_with_a_different_body_is_409(client, user, enqueued):
    body = {"stages": _keyed("pre-1", "ft-1", None)}
    first = client.post("/pipelines", json=body, headers=user.headers).json()
    changed = _keyed("pre-1", "ft-1", None)
    changed[1]["epochs"] = 5
    response = client.post("/pipelines", json={"stages": changed}, headers=user.headers)
    assert response.status_code == 409
    detail = response.json()["detail"]
    assert "stages[0].idempotency_key 'pre-1'" in detail
    assert first["id"] in detail
    assert len(enqueued) == 1


def test_pipeline_stage_key_taken_by_a_job_is_409(client, user):
    job = client.post(
        "/jobs", json={**STAGES[0], "idempotency_key": "pre-1"}, headers=user.headers
    ).json()
    response = client.post(
        "/pipelines", json={"stages": _keyed("pre-1", None, None)}, headers=user.headers
    )
    assert response.status_code == 409
    assert "stages[0].idempotency_key 'pre-1'" in response.json()["detail"]
    assert job["id"] in response.json()["detail"]


def test_concurrent_identical_pipelines_with_stage_keys_make_one(client, user, enqueued):
    from concurrent.futures import ThreadPoolExecutor

    body = {"stages": _keyed("pre-r", "ft-r", None)}

    def submit(_: int) -> tuple[int, str]:
        response = client.post("/pipelines", json=body, headers=user.headers)
        return response.status_code, response.json().get("id", response.text)

    with ThreadPoolExecutor(max_workers=4) as pool:
        outcomes = list(pool.map(submit, range(4)))
    assert sorted(code for code, _ in outcomes) == [200, 200, 200, 201], outcomes
    assert len({pipeline for _, pipeline in outcomes}) == 1
    assert len(enqueued) == 1


def test_cancelling_the_first_stage_cancels_the_waiting_ones(client, user):
    body = client.post("/pipelines", json={"stages": STAGES}, headers=user.headers).json()
    client.post(f"/jobs/{body['jobs'][0]['id']}/cancel", headers=user.headers)
    after = client.get(f"/pipelines/{body['id']}", headers=user.headers).json()
    assert [j["status"] for j in after["jobs"]] == ["cancelled"] * 3


def test_retry_stage_whose_predecessor_failed_is_409(client, user, db):
    body = client.post("/pipelines", json={"stages": STAGES[:2]}, headers=user.headers).json()
    first, second = (j["id"] for j in body["jobs"])
    with db() as session:
        session.get(Job, first).status = "failed"
        session.get(Job, second).status = "cancelled"
    response = client.post(f"/jobs/{second}/retry", headers=user.headers)
    assert response.status_code == 409
    assert f"retry {first} first" in response.json()["detail"]


def test_retry_stage_waits_while_its_predecessor_runs_again(client, user, db, enqueued):
    body = client.post("/pipelines", json={"stages": STAGES[:2]}, headers=user.headers).json()
    first, second = (j["id"] for j in body["jobs"])
    with db() as session:
        session.get(Job, first).status = "running"
        session.get(Job, second).status = "cancelled"
    enqueued.clear()
    response = client.post(f"/jobs/{second}/retry", headers=user.headers)
    assert response.json()["status"] == "queued"
    assert enqueued == []  # the worker releases it when the predecessor succeeds
