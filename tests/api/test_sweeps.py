"""``/sweeps``: grid × seeds of jobs, validated before any is created, and the table."""

from __future__ import annotations

import statistics

import pytest

from livt_service import state

TINY = {"epochs": 1, "warmup_epochs": 0, "max_steps_per_epoch": 2, "batch_size": 16}


def _finetune_base(pretrain_id: str) -> dict:
    return {"kind": "finetune", "preset": "fashion-mnist-lt", "init": {"job": pretrain_id}, **TINY}


@pytest.fixture
def pretrain(make_job):
    return make_job(kind="pretrain", status="succeeded")


def _post(client, user, body):
    return client.post("/sweeps", json=body, headers=user.headers)


def test_sweep_fans_out_one_job_per_point_and_seed_from_one_pretrain(
    client, user, pretrain, enqueued
):
    body = {
        "name": "loss x tau",
        "base": _finetune_base(pretrain.id),
        "grid": {"loss": ["bal_bce", "bal_ce"], "tau": [0.5, 1.0]},
        "seeds": [0, 1],
    }
    response = _post(client, user, body)
    assert response.status_code == 201, response.text
    sweep = response.json()
    assert sweep["id"].startswith("s_")
    assert sweep["status"] == "running"
    jobs = sweep["jobs"]
    assert len(jobs) == 8
    assert {j["init_job_id"] for j in jobs} == {pretrain.id}
    assert sorted(j["id"] for j in jobs) == sorted(job_id for job_id, _ in enqueued)
    configs = {
        (j["config"]["loss"], j["config"]["tau"], j["config"]["seed"])
        for j in (client.get(f"/jobs/{j['id']}", headers=user.headers).json() for j in jobs)
    }
    assert configs == {
        (loss, tau, seed) for loss in ("bal_bce", "bal_ce") for tau in (0.5, 1.0) for seed in (0, 1)
    }
    table = sweep["table"]
    assert [row["params"] for row in table] == [
        {"loss": "bal_bce", "tau": 0.5},
        {"loss": "bal_bce", "tau": 1.0},
        {"loss": "bal_ce", "tau": 0.5},
        {"loss": "bal_ce", "tau": 1.0},
    ]
    assert all(row["n"] == 0 and row["status"] == {"queued": 2} for row in table)
    listed = client.get("/sweeps", headers=user.headers).json()["items"]
    assert [(s["id"], s["num_jobs"]) for s in listed] == [(sweep["id"], 8)]


def test_pipeline_base_runs_one_pretrain_per_seed_and_fans_the_grid_out(client, user, enqueued):
    stages = [
        {"kind": "pretrain", "preset": "fashion-mnist-lt", **TINY},
        {"kind": "finetune", "preset": "fashion-mnist-lt", **TINY},
        {"kind": "evaluate", "preset": "fashion-mnist-lt", "posthoc_tau": [0, 1]},
    ]
    body = {"base": {"stages": stages}, "grid": {"loss": ["bal_bce", "ce"]}, "seeds": [0, 1]}
    response = _post(client, user, body)
    assert response.status_code == 201, response.text
    jobs = {j["id"]: j for j in response.json()["jobs"]}
    assert len(jobs) == 2 + 2 * 2 * 2
    pretrains = [j for j in jobs.values() if j["kind"] == "pretrain"]
    assert sorted(job_id for job_id, _ in enqueued) == sorted(j["id"] for j in pretrains)
    for row in response.json()["table"]:
        assert len(row["cells"]) == 2
        for cell in row["cells"]:
            evaluate = jobs[cell["job"]]
            finetune = jobs[evaluate["depends_on"]]
            assert evaluate["kind"] == "evaluate"
            assert finetune["loss"] == row["params"]["loss"]
            assert jobs[finetune["depends_on"]]["kind"] == "pretrain"
    # each seed's finetunes start from that seed's pretrain
    for pretrain in pretrains:
        children = [j for j in jobs.values() if j["depends_on"] == pretrain["id"]]
        assert {j["loss"] for j in children} == {"bal_bce", "ce"}


def test_pipeline_base_grid_over_init_compares_mgp_with_random_weights(client, user, enqueued):
    stages = [
        {"kind": "pretrain", "preset": "fashion-mnist-lt", **TINY},
        {"kind": "finetune", "preset": "fashion-mnist-lt", **TINY},
        {"kind": "evaluate", "preset": "fashion-mnist-lt"},
    ]
    body = {
        "base": {"stages": stages},
        "grid": {"init": ["scratch", "pretrained"], "loss": ["ce", "bal_bce"]},
        "seeds": [0, 1],
    }
    response = _post(client, user, body)
    assert response.status_code == 201, response.text
    sweep = response.json()
    jobs = {j["id"]: j for j in sweep["jobs"]}
    assert len(jobs) == 2 + 2 * 4 * 2
    pretrains = {j["id"] for j in jobs.values() if j["kind"] == "pretrain"}
    finetunes = [j for j in jobs.values() if j["kind"] == "finetune"]
    scratch = [j for j in finetunes if 'init="scratch"' in j["name"]]
    assert len(scratch) == 4
    # from random weights: no init, no wait for the pretrain, enqueued at once
    assert all(j["init_job_id"] is None and j["depends_on"] is None for j in scratch)
    queued = {job_id for job_id, _ in enqueued}
    assert queued == pretrains | {j["id"] for j in scratch}
    pretrained = [j for j in finetunes if j not in scratch]
    assert {j["depends_on"] for j in pretrained} == pretrains
    assert all(j["init_job_id"] in pretrains for j in pretrained)
    assert [row["params"] for row in sweep["table"]] == [
        {"init": i, "loss": loss} for i in ("scratch", "pretrained") for loss in ("ce", "bal_bce")
    ]
    for row in sweep["table"]:  # each cell is the evaluate stage after that row's finetune
        for cell in row["cells"]:
            finetune = jobs[jobs[cell["job"]]["depends_on"]]
            assert (finetune["init_job_id"] is None) == (row["params"]["init"] == "scratch")
    config = client.get(f"/jobs/{scratch[0]['id']}", headers=user.headers).json()["config"]
    assert config["init"] is None


@pytest.mark.parametrize(
    ("base_stages", "grid", "loc"),
    [
        (None, {"init": ["scratch", "mgp"]}, ["body", "grid", "init", 1]),
        (None, {"init": ["scratch", "scratch"]}, ["body", "grid", "init", 1]),
        (None, {"init.job": ["j_x"]}, ["body", "grid", "init.job"]),
        ("own-init", {"init": ["scratch"]}, ["body", "base", "stages", 1, "init"]),
    ],
)
def test_init_grid_values_are_checked(client, user, pretrain, enqueued, base_stages, grid, loc):
    stages = [
        {"kind": "pretrain", "preset": "fashion-mnist-lt", **TINY},
        {"kind": "finetune", "preset": "fashion-mnist-lt", **TINY},
    ]
    if base_stages == "own-init":
        stages[1]["init"] = {"job": pretrain.id}
    response = _post(client, user, {"base": {"stages": stages}, "grid": grid})
    assert response.status_code == 422, response.text
    assert loc in [e["loc"] for e in response.json()["detail"]]
    assert enqueued == []


def test_init_grid_on_a_job_base_is_422_with_the_pipeline_hint(client, user, pretrain):
    body = {"base": _finetune_base(pretrain.id), "grid": {"init": ["scratch", "pretrained"]}}
    response = _post(client, user, body)
    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert error["loc"] == ["body", "grid", "init"]
    assert "pipeline base" in error["msg"]


@pytest.mark.parametrize(
    ("grid", "seeds", "loc"),
    [
        ({"loss": ["bal_bce", "nope"]}, [0], ["body", "grid", "loss", 1]),
        ({"blr": [1e-3, -1.0]}, [0], ["body", "grid", "blr", 1]),
        ({"seed": [1, 2]}, [0], ["body", "grid", "seed"]),
        ({"loss": ["bal_bce", "bal_bce"]}, [0], ["body", "grid", "loss", 1]),
        ({"blr": [1e-4 * (i + 1) for i in range(50)]}, [0, 1, 2, 3, 4], ["body", "grid"]),
        ({}, [0, 0], ["body", "seeds", 1]),
    ],
)
def test_a_bad_child_is_422_before_any_job_is_created(
    client, user, pretrain, enqueued, grid, seeds, loc
):
    body = {"base": _finetune_base(pretrain.id), "grid": grid, "seeds": seeds}
    response = _post(client, user, body)
    assert response.status_code == 422, response.text
    assert loc in [e["loc"] for e in response.json()["detail"]]
    assert enqueued == []
    assert client.get("/jobs", headers=user.headers).json()["items"][1:] == []  # only pretrain
    assert client.get("/sweeps", headers=user.headers).json()["items"] == []


def test_a_bad_base_is_422_naming_the_base_field(client, user, pretrain):
    base = {**_finetune_base(pretrain.id), "epochs": 0}
    response = _post(client, user, {"base": base, "grid": {"loss": ["bal_bce", "ce"]}})
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert [e["loc"] for e in detail] == [["body", "base", "epochs"]]  # reported once
    missing_kind = _post(client, user, {"base": {"preset": "fashion-mnist-lt"}})
    assert missing_kind.status_code == 422
    assert missing_kind.json()["detail"][0]["loc"] == ["body", "base", "kind"]


def _finish(job_id: str, result: dict | None, *, failed: bool = False) -> None:
    claim = state.claim_job(job_id, "w1@host")
    assert claim is not None
    if failed:
        outcome = state.Finish(status="failed", reason="internal", message="it broke")
    else:
        outcome = state.Finish(status="succeeded", result=result)
    assert state.finish_job(claim, outcome, enqueue=lambda *_: None)


def _result(overall: float, few: float) -> dict:
    return {"overall": overall, "many": 90.0, "medium": None, "few": few, "top5": 99.0, "ece": 5.0}


def test_table_has_mean_and_std_over_seeds_and_shows_a_failed_child(client, user, pretrain):
    body = {
        "name": "loss",
        "base": _finetune_base(pretrain.id),
        "grid": {"loss": ["bal_bce", "ce"]},
        "seeds": [0, 1, 2],
    }
    sweep = _post(client, user, body).json()
    rows = {row["params"]["loss"]: row for row in sweep["table"]}
    bal, ce = rows["bal_bce"]["cells"], rows["ce"]["cells"]
    for cell, overall in zip(bal, (70.0, 72.0, 77.0), strict=True):
        _finish(cell["job"], _result(overall, overall - 20))
    _finish(ce[0]["job"], _result(60.0, 10.0))
    _finish(ce[1]["job"], _result(62.0, 14.0))
    running = client.get(f"/sweeps/{sweep['id']}", headers=user.headers).json()
    assert running["status"] == "running"
    _finish(ce[2]["job"], None, failed=True)

    done = client.get(f"/sweeps/{sweep['id']}", headers=user.headers).json()
    assert done["status"] == "failed"
    rows = {row["params"]["loss"]: row for row in done["table"]}
    bal_row, ce_row = rows["bal_bce"], rows["ce"]
    assert bal_row["n"] == 3 and bal_row["status"] == {"succeeded": 3}
    assert bal_row["overall"]["mean"] == pytest.approx(73.0)
    assert bal_row["overall"]["std"] == pytest.approx(statistics.stdev([70.0, 72.0, 77.0]))
    assert bal_row["few"]["mean"] == pytest.approx(53.0)
    assert bal_row["medium"] == {"mean": None, "std": None, "n": 0}
    assert ce_row["n"] == 2 and ce_row["status"] == {"succeeded": 2, "failed": 1}
    assert ce_row["overall"]["mean"] == pytest.approx(61.0)
    failed = [c for c in ce_row["cells"] if c["status"] == "failed"]
    assert [c["failure_message"] for c in failed] == ["it broke"]

    url = f"/sweeps/{sweep['id']}/table"
    md = client.get(url, params={"format": "md"}, headers=user.headers)
    assert md.headers["content-type"].startswith("text/markdown")
    lines = md.text.splitlines()
    assert lines[0] == "| loss | n | Overall | Many | Medium | Few | Top-5 | ECE |"
    assert lines[2].startswith("| bal_bce | 3 | **73.00 ± 3.61** |")
    assert lines[3].startswith("| ce | 2 | 61.00 ± 1.41 |")
    csv = client.get(url, params={"format": "csv"}, headers=user.headers).text.splitlines()
    assert csv[0].startswith("loss,n,overall_mean,overall_std,many_mean")
    assert csv[1].startswith("bal_bce,3,73.0000,3.6056,90.0000,0.0000")
    latex = client.get(url, params={"format": "latex"}, headers=user.headers).text
    assert "\\begin{tabular}" in latex and "\\textbf{$73.00 \\pm 3.61$}" in latex
    bad = client.get(url, params={"format": "xlsx"}, headers=user.headers)
    assert bad.status_code == 422


def test_cancel_sweep_cancels_its_jobs(client, user, pretrain):
    sweep = _post(
        client, user, {"base": _finetune_base(pretrain.id), "grid": {"blr": [1e-3, 2e-3]}}
    ).json()
    _finish(sweep["jobs"][0]["id"], _result(50.0, 10.0))
    response = client.post(f"/sweeps/{sweep['id']}/cancel", headers=user.headers)
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "cancelled"
    assert sorted(j["status"] for j in body["jobs"]) == ["cancelled", "succeeded"]
    again = client.post(f"/sweeps/{sweep['id']}/cancel", headers=user.headers)
    assert again.status_code == 409


def test_other_users_sweep_is_404(client, user, pretrain, make_user):
    sweep = _post(client, user, {"base": _finetune_base(pretrain.id)}).json()
    bob = make_user("bob")
    assert client.get(f"/sweeps/{sweep['id']}", headers=bob.headers).status_code == 404
    assert client.post(f"/sweeps/{sweep['id']}/cancel", headers=bob.headers).status_code == 404
    assert client.get("/sweeps/s_nope", headers=user.headers).status_code == 404


def test_pipeline_base_errors_name_the_grid_value_and_the_stage(client, user, enqueued):
    stages = [
        {"kind": "pretrain", "preset": "fashion-mnist-lt", **TINY},
        {"kind": "finetune", "preset": "fashion-mnist-lt", **TINY},
    ]
    bad_value = _post(client, user, {"base": {"stages": stages}, "grid": {"loss": ["ce", "nope"]}})
    assert bad_value.status_code == 422
    assert [e["loc"] for e in bad_value.json()["detail"]] == [["body", "grid", "loss", 1]]
    bad_stage = {"stages": [stages[0], {**stages[1], "epochs": 0}]}
    response = _post(client, user, {"base": bad_stage, "grid": {"loss": ["ce"]}})
    assert response.json()["detail"][0]["loc"] == ["body", "base", "stages", 1, "epochs"]
    one_stage = _post(client, user, {"base": {"stages": stages[:1]}})
    assert one_stage.json()["detail"][0]["loc"] == ["body", "base", "stages"]
    assert enqueued == []


def test_dotted_grid_field_sets_the_nested_run_field(client, user, pretrain):
    body = {"base": _finetune_base(pretrain.id), "grid": {"data.imbalance_factor": [10, 50]}}
    sweep = _post(client, user, body).json()
    factors = sorted(
        client.get(f"/jobs/{j['id']}", headers=user.headers).json()["config"]["data"][
            "imbalance_factor"
        ]
        for j in sweep["jobs"]
    )
    assert factors == [10.0, 50.0]
    bad = _post(client, user, {**body, "grid": {"data.imbalance_factor": [10, 0.5]}})
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["body", "grid", "data.imbalance_factor", 1]
