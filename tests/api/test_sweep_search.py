"""Adaptive sweeps: Optuna's ask-and-tell with its study in the service's database."""

from __future__ import annotations

import threading
import time

import anyio
import optuna
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from api.deps import app_enqueuer, get_enqueuer
from api.main import create_app
from api.services import sweep_search
from api.services.sweeps import _trial_builder, sweep_status
from api.sweep_advance import SweepAdvancer
from livt_service import state
from livt_service.models import Job, Sweep

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


# --------------------------------------------------------------------------------------------
# the sweep advancer: sweeps move on without a read


@pytest.fixture
def settings(settings):
    """No advancer thread in this module's apps: the tests below run rounds themselves (one
    test starts an app of its own with the thread)."""
    return settings.model_copy(update={"sweep_advance_seconds": 0})


def _advancer(app, enqueue=None, poll: float = 0.05) -> SweepAdvancer:
    """An advancer as the app's lifespan makes one, with the app's enqueuer."""
    return SweepAdvancer(
        app.state.sessionmaker,
        app.state.settings,
        enqueue or anyio.run(app_enqueuer, app),
        poll_seconds=poll,
    )


def _stored(db, sweep_id: str) -> dict:
    """The sweep as the database holds it (no read through the API, which would advance it)."""
    with db() as session:
        sweep = session.get(Sweep, sweep_id)
        return {
            "cells": sweep.cells,
            "jobs": [j.id for j in sweep.jobs],
            "status": sweep_status(sweep),
            "open": sweep.search_open,
        }


def _submit(client, user, base, trials: int = 3, parallel: int = 1) -> dict:
    search = {"space": SPACE, "objective": "val_few", "trials": trials, "parallel": parallel}
    response = client.post("/sweeps", json={"base": base, "search": search}, headers=user.headers)
    assert response.status_code == 201, response.text
    return response.json()


def _new_job(stored: dict, known: list[str]) -> str:
    (job_id,) = [j for j in stored["jobs"] if j not in known]
    return job_id


def test_an_unread_search_is_advanced_by_the_advancer(
    app, client, user, base, settings, db, enqueued
):
    sweep = _submit(client, user, base)
    first = sweep["jobs"][0]["id"]
    advancer = _advancer(app)
    assert advancer.run_once() == 0  # its one trial still runs: nothing to do
    assert _stored(db, sweep["id"])["jobs"] == [first]

    _finish(first, 60.0, 20.0)
    assert advancer.run_once() == 1
    stored = _stored(db, sweep["id"])
    second = _new_job(stored, [first])
    assert enqueued[-1][0] == second and len(enqueued) == 2
    assert stored["cells"][0]["told"] and stored["cells"][0]["value"] == 20.0
    assert stored["status"] == "running" and stored["open"]
    study = optuna.load_study(study_name=sweep["id"], storage=_storage(settings))
    assert [t.state.name for t in study.trials] == ["COMPLETE", "RUNNING"]
    with db() as session:
        job = session.get(Job, second)
        assert job.owner_id == user.id and job.status == "queued"
        assert job.config["blr"] == pytest.approx(study.trials[1].params["blr"])

    _finish(second, 70.0, 40.0)
    assert advancer.run_once() == 1
    third = _new_job(_stored(db, sweep["id"]), [first, second])
    _finish(third, 80.0, 30.0)
    # every job finished, but the last trial is not told: the search is not over yet
    assert _stored(db, sweep["id"])["status"] == "running"
    assert advancer.run_once() == 1
    done = _stored(db, sweep["id"])
    assert done["status"] == "succeeded" and not done["open"]
    assert [c["value"] for c in done["cells"]] == [20.0, 40.0, 30.0]
    assert advancer.run_once() == 0 and advancer._due() == {}
    assert [e[0] for e in enqueued] == [first, second, third]
    read = client.get(f"/sweeps/{sweep['id']}", headers=user.headers).json()
    assert read["status"] == "succeeded" and read["best"]["job"] == second


def test_two_advances_of_one_sweep_make_one_trial(app, client, user, base, settings, db, enqueued):
    """Another API process advances the sweep between this one's read and its write: the later
    advance writes nothing, creates no job, sends nothing, and tells its own trial as failed."""
    sweep = _submit(client, user, base)
    first = sweep["jobs"][0]["id"]
    _finish(first, 60.0, 20.0)
    factory = app.state.sessionmaker
    with factory() as late:
        stale = late.get(Sweep, sweep["id"])
        assert len(stale.cells) == 1  # read before the other process's advance
        assert _advancer(app).run_once() == 1  # the other process
        second = _new_job(_stored(db, sweep["id"]), [first])
        build = _trial_builder(late, settings, stale.owner, stale.spec["base"], stale.name)
        enqueue = anyio.run(app_enqueuer, app)
        after = sweep_search._advance(late, settings, stale.owner, stale, build, enqueue)
        assert [c["job"] for c in after.cells] == [first, second]  # what the first one made
    stored = _stored(db, sweep["id"])
    assert stored["jobs"] == sorted([first, second])
    with db() as session:
        finetunes = select(func.count()).select_from(Job).where(Job.kind == "finetune")
        assert session.scalar(finetunes) == 2  # the loser's job was never created
    assert [e[0] for e in enqueued] == [first, second]
    study = optuna.load_study(study_name=sweep["id"], storage=_storage(settings))
    assert [t.state.name for t in study.trials] == ["COMPLETE", "RUNNING", "FAIL"]


def test_racing_advancers_never_duplicate_a_trial(app, client, user, base, db, enqueued):
    sweep = _submit(client, user, base, trials=4, parallel=2)
    advancers = [_advancer(app), _advancer(app)]
    known = [j["id"] for j in sweep["jobs"]]
    for value in (10.0, 20.0, 30.0, 40.0):
        stored = _stored(db, sweep["id"])
        running = [c["job"] for c in stored["cells"] if not c.get("told")]
        if not running:
            break
        _finish(running[0], value, value)
        start = threading.Barrier(2)

        def go(advancer: SweepAdvancer, barrier: threading.Barrier = start) -> None:
            barrier.wait()
            advancer.run_once()

        threads = [threading.Thread(target=go, args=(a,)) for a in advancers]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        known = _stored(db, sweep["id"])["jobs"]
        cells = _stored(db, sweep["id"])["cells"]
        assert sorted(c["job"] for c in cells) == known  # no job outside the cells
        assert len({c["trial"] for c in cells}) == len(cells)
    assert len(known) == 4
    assert sorted(e[0] for e in enqueued) == sorted(known)


def test_a_cancelled_search_asks_nothing(app, client, user, base, db, enqueued):
    sweep = _submit(client, user, base)
    first = sweep["jobs"][0]["id"]
    _finish(first, 60.0, 20.0)
    # every job finished but the search has trials left: the cancel stops it (no 409)
    cancelled = client.post(f"/sweeps/{sweep['id']}/cancel", headers=user.headers)
    assert cancelled.status_code == 200, cancelled.text
    assert _advancer(app).run_once() == 0
    stored = _stored(db, sweep["id"])
    assert stored["jobs"] == [first] and not stored["open"]
    assert stored["status"] == "succeeded"  # its one job did
    assert [e[0] for e in enqueued] == [first]
    again = client.post(f"/sweeps/{sweep['id']}/cancel", headers=user.headers)
    assert again.status_code == 409


def test_a_trial_whose_job_was_deleted_is_told_failed(app, client, user, base, db, settings):
    sweep = _submit(client, user, base)
    first = sweep["jobs"][0]["id"]
    _finish(first, 60.0, 20.0)
    assert client.delete(f"/jobs/{first}", headers=user.headers).status_code == 204
    assert _advancer(app).run_once() == 1
    stored = _stored(db, sweep["id"])
    assert stored["cells"][0]["told"] and stored["cells"][0]["value"] is None
    assert len(stored["jobs"]) == 1 and stored["jobs"][0] != first
    study = optuna.load_study(study_name=sweep["id"], storage=_storage(settings))
    assert [t.state.name for t in study.trials] == ["FAIL", "RUNNING"]


def test_the_advancer_waits_after_the_broker_refused_a_trial(app, client, user, base, db, caplog):
    sweep = _submit(client, user, base)
    first = sweep["jobs"][0]["id"]
    _finish(first, 60.0, 20.0)

    def broken(job_id: str, queue: str) -> None:
        raise ConnectionError("broker down")

    advancer = _advancer(app, broken, poll=0.5)
    assert advancer.run_once() == 0
    assert "broker down" in caplog.text
    stored = _stored(db, sweep["id"])
    (second,) = [j for j in stored["jobs"] if j != first]
    with db() as session:
        assert session.get(Job, second).status == "failed"  # sent nowhere: failed, visibly
    # the failed trial is due again, but the advancer waits (2 × 0.5 s) before asking another
    assert advancer.run_once() == 0
    assert len(_stored(db, sweep["id"])["jobs"]) == 2
    time.sleep(1.1)
    advancer.run_once()
    assert len(_stored(db, sweep["id"])["jobs"]) == 3


def test_a_read_by_an_admin_asks_trials_for_the_owner(client, user, admin, base, db):
    sweep = _submit(client, user, base)
    first = sweep["jobs"][0]["id"]
    _finish(first, 60.0, 20.0)
    read = client.get(f"/sweeps/{sweep['id']}", headers=admin.headers)
    assert read.status_code == 200 and len(read.json()["jobs"]) == 2
    second = _new_job(_stored(db, sweep["id"]), [first])
    with db() as session:
        assert session.get(Job, second).owner_id == user.id


def test_the_app_advances_an_unread_search_in_its_thread(settings, user, base, db):
    """The app's own thread (``LIVT_SWEEP_ADVANCE_SECONDS``), with its overridden enqueuer."""
    sent: list[str] = []
    application = create_app(settings.model_copy(update={"sweep_advance_seconds": 0.05}))
    application.dependency_overrides[get_enqueuer] = lambda: (
        lambda job_id, _queue: sent.append(job_id)
    )

    def wait_for(check, what: str) -> dict:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            stored = _stored(db, sweep["id"])
            if check(stored):
                return stored
            time.sleep(0.05)
        raise AssertionError(f"{what} did not happen: {_stored(db, sweep['id'])}")

    with TestClient(application) as test_client:
        sweep = _submit(test_client, user, base, trials=2, parallel=1)
        first = sweep["jobs"][0]["id"]
        _finish(first, 60.0, 20.0)
        stored = wait_for(lambda s: len(s["jobs"]) == 2, "the second trial")
        second = _new_job(stored, [first])
        assert sent == [first, second]
        _finish(second, 70.0, 40.0)
        wait_for(lambda s: s["status"] == "succeeded" and not s["open"], "the end")
    assert sent == [first, second]
