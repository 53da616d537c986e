"""Adaptive sweeps: Optuna's ask-and-tell with its study in the service's database."""

from __future__ import annotations

import optuna
import pytest

from livt_service import state

TINY = {"epochs": 1, "warmup_epochs": 0, "max_steps_per_epoch": 2, "batch_size": 16}
SPACE = {"blr": {"low": 1e-4, "high": 1e-2, "log": True}, "tau": {"low": 0.0, "high": 2.0}}


@pytest.fixture
def base(make_job) -> dict:
    pretrain = make_job(kind="pretrain", status="succeeded")
    return {"kind": "finetune", "preset": "fashion-mnist-lt", "init": {"job": pretrain.id}, **TINY}


def _storage(settings):
    # the service's alembic_version is not Optuna's: skip its check, as the service does
    return optuna.storages.RDBStorage(settings.database_url, skip_compatibility_check=True)


def _finish(job_id: str, val_overall: float, val_few: float) -> None:
    """The job runs one epoch (its metric point written through the state layer) and ends."""
    claim = state.claim_job(job_id, "w1@host")
    assert claim is not None
    batch = state.FlushBatch(metrics={0: {"val_overall": val_overall, "val_few": val_few}})
    state.flush(claim, batch)
    result = {"overall": val_overall, "few": val_few, "best_epoch": 0}
    assert state.finish_job(claim, state.Finish(status="succeeded", result=result))


def test_search_asks_tells_and_stops_after_its_trials(client, user, base, settings, enqueued):
    search = {"space": SPACE, "objective": {"val_few": 0.5, "val_overall": 0.5}, "trials": 3}
    response = client.post(
        "/sweeps", json={"name": "tpe", "base": base, "search": search}, headers=user.headers
    )
    assert response.status_code == 201, response.text
    sweep = response.json()
    assert len(sweep["jobs"]) == 2  # parallel: 2
    for row in sweep["table"]:
        assert 1e-4 <= row["params"]["blr"] <= 1e-2 and 0 <= row["params"]["tau"] <= 2
    study = optuna.load_study(study_name=sweep["id"], storage=_storage(settings))
    assert [t.state.name for t in study.trials] == ["RUNNING", "RUNNING"]

    first, second = (row["cells"][0]["job"] for row in sweep["table"])
    _finish(first, 60.0, 20.0)
    _finish(second, 70.0, 40.0)
    after = client.get(f"/sweeps/{sweep['id']}", headers=user.headers).json()
    assert after["status"] == "running"
    assert len(after["jobs"]) == 3
    study = optuna.load_study(study_name=sweep["id"], storage=_storage(settings))
    assert [t.value for t in study.trials[:2]] == [40.0, 55.0]
    assert after["best"]["objective"] == 55.0 and after["best"]["job"] == second
    third = next(j["id"] for j in after["jobs"] if j["id"] not in (first, second))
    job = client.get(f"/jobs/{third}", headers=user.headers).json()
    assert job["config"]["blr"] == pytest.approx(study.trials[2].params["blr"])

    _finish(third, 80.0, 60.0)
    done = client.get(f"/sweeps/{sweep['id']}", headers=user.headers).json()
    assert done["status"] == "succeeded"
    assert len(done["jobs"]) == 3
    assert done["best"]["objective"] == 70.0
    assert sorted(r["objective"] for r in done["table"]) == [40.0, 55.0, 70.0]
    assert len(enqueued) == 3
    md = client.get(f"/sweeps/{sweep['id']}/table", headers=user.headers).text
    assert md.splitlines()[0].startswith("| blr | tau | n | Overall |")


@pytest.mark.parametrize(
    ("change", "loc"),
    [
        ({"grid": {"loss": ["ce"]}}, ["body", "grid"]),
        ({"seeds": [0, 1]}, ["body", "seeds"]),
        ({"search": {"space": {"blr": {"low": 0, "high": 1, "log": True}}}}, "space"),
        ({"search": {"space": {"blr": {"low": 1, "high": 2}}, "objective": "few"}}, "objective"),
        (
            {"search": {"space": {"seed": {"low": 1, "high": 2}}}},
            ["body", "search", "space", "seed"],
        ),
        (
            {"search": {"space": {"epochs": {"low": -5, "high": -1}}}},
            ["body", "search", "space", "epochs"],
        ),
    ],
)
def test_a_bad_search_is_422_and_makes_nothing(client, user, base, enqueued, change, loc):
    body = {"base": base, "search": {"space": SPACE}, **change}
    response = client.post("/sweeps", json=body, headers=user.headers)
    assert response.status_code == 422, response.text
    locs = [e["loc"] for e in response.json()["detail"]]
    assert any(loc == got or (isinstance(loc, str) and loc in got) for got in locs), locs
    assert enqueued == []
    assert client.get("/sweeps", headers=user.headers).json()["items"] == []
