"""Image folders registered with ``POST /datasets``: the profile stored with them, profiling on
a worker for large folders (progress, the janitor's recovery of a lost or unsent profiling),
and jobs naming a folder that is not ready."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import update

from livt_service import datasets as profiling
from livt_service.models import Dataset, utcnow
from livt_service.queue import PROFILE_DATASET_TASK, live_job_ids
from tests.folders import make_imagefolder
from worker.context import WorkerContext
from worker.janitor import Janitor

#: For checks that do not depend on the database backend: run them on SQLite only.
SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@pytest.fixture
def folder(data_root):
    """A small set in the data root: 10 classes, 40 training images (8 → 2), 3 a class in
    val, 28 px grey PNG."""
    return make_imagefolder(
        data_root / "shirts", n_max=8, imbalance=4, per_class=3, size=28, colour=False
    )


@pytest.fixture
def on_a_worker(settings, monkeypatch):
    """Every image folder is profiled by a worker (no inline profiling)."""
    monkeypatch.setattr(settings, "profile_inline_images", 0)
    monkeypatch.setattr(profiling, "REPORT_SECONDS", 0.0)
    return settings


def _register(client, user, name="shirts", root="shirts"):
    return client.post(
        "/datasets", json={"name": name, "kind": "imagefolder", "root": root}, headers=user.headers
    )


def _age(db, name, seconds=3600):
    with db() as session:
        session.execute(
            update(Dataset)
            .where(Dataset.name == name)
            .values(updated_at=utcnow() - timedelta(seconds=seconds))
        )


def _janitor(settings):
    context = WorkerContext(worker_id="janitor@test", queues=[settings.default_queue], devices=[])
    return Janitor(context, interval=1.0, lost_after=60.0, resend_grace=60.0)


def test_a_small_folder_is_profiled_in_the_request(client, user, folder):
    response = _register(client, user)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["status"] == "ready" and body["status_reason"] is None
    profile = body["profile"]
    assert profile["images"] == {"train": 40, "val": 30}
    assert (profile["colour"], profile["channels"], profile["sizes"]["median_side"]) == (
        "grey",
        1,
        28,
    )
    assert body["class_counts"] == [profile["splits"]["train"][c] for c in body["classes"]]
    assert body["num_train"] == 40 and body["progress"] == {"done": 70, "total": 70}
    again = client.get("/datasets/shirts", headers=user.headers)
    assert again.status_code == 200 and again.json() == body
    assert client.get("/datasets/nope", headers=user.headers).status_code == 404


def test_a_large_folder_is_profiled_by_a_worker_with_progress(
    client, user, folder, on_a_worker, profiles_enqueued, db
):
    response = _register(client, user)
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["status"] == "profiling" and body["profile"] is None
    assert body["progress"] == {"done": 0, "total": 70}
    assert body["num_train"] == 40  # counted from the file names already
    with db() as session:
        dataset_id = session.query(Dataset.id).filter_by(name="shirts").scalar()
    assert profiles_enqueued == [(dataset_id, 1, on_a_worker.default_queue)]

    job = client.post("/jobs", json={"kind": "finetune", "dataset": "shirts"}, headers=user.headers)
    assert job.status_code == 422
    [error] = job.json()["detail"]
    assert error["loc"] == ["body", "dataset"] and error["type"] == "dataset_not_ready"
    assert "still being profiled (0 of 70 images read)" in error["msg"]

    seen = []
    original = profiling._report

    def spy(*args):
        original(*args)
        with db() as session:
            seen.append(session.get(Dataset, dataset_id).progress_done)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(profiling, "_report", spy)
        assert profiling.profile_dataset(dataset_id, 1, "w1@test") == "ready"
    assert seen == list(range(1, 71))  # a report per image here (REPORT_SECONDS = 0)
    body = client.get("/datasets/shirts", headers=user.headers).json()
    assert body["status"] == "ready" and body["profile"]["images"] == {"train": 40, "val": 30}
    # a duplicate message of the same try does nothing
    assert profiling.profile_dataset(dataset_id, 1, "w2@test") == "not claimed"
    job = client.post("/jobs", json={"kind": "finetune", "dataset": "shirts"}, headers=user.headers)
    assert job.status_code == 201, job.text


def test_a_lost_profiling_gets_another_try_then_fails(
    client, user, folder, on_a_worker, db, settings
):
    _register(client, user)
    with db() as session:
        dataset_id = session.query(Dataset.id).filter_by(name="shirts").scalar()
    janitor = _janitor(settings)
    for attempt in (1, 2, 3):
        assert profiling.claim_profiling(dataset_id, attempt, f"dies-{attempt}@test")
        assert janitor.recover_profilings() == []  # reporting recently: not lost
        _age(db, "shirts")
        assert janitor.recover_profilings() == [f"dataset:{dataset_id}"]
        # the lost try is fenced off: its worker cannot report or finish any more
        with pytest.raises(profiling._Superseded):
            profiling._report(dataset_id, attempt, f"dies-{attempt}@test", 1, 70)
        body = client.get("/datasets/shirts", headers=user.headers).json()
        if attempt < 3:
            assert body["status"] == "profiling"
            assert f"try {attempt} stopped" in body["status_reason"]
            assert live_job_ids([settings.default_queue], task=PROFILE_DATASET_TASK) == {
                str(dataset_id)
            }
    assert body["status"] == "failed"
    assert "lost 3 times" in body["status_reason"]
    job = client.post("/jobs", json={"kind": "finetune", "dataset": "shirts"}, headers=user.headers)
    [error] = job.json()["detail"]
    assert (error["loc"], error["type"]) == (["body", "dataset"], "dataset_failed")
    assert "register it again" in error["msg"]
    # the failed name can be registered again
    assert _register(client, user).status_code == 202


@SQLITE_ONLY
def test_an_unsent_profiling_is_sent_again(client, user, folder, on_a_worker, db, settings):
    _register(client, user)  # the recording enqueuer sent nothing to the real broker
    with db() as session:
        dataset_id = session.query(Dataset.id).filter_by(name="shirts").scalar()
    janitor = _janitor(settings)
    assert janitor.recover_profilings() == []  # within the grace period
    _age(db, "shirts")
    assert janitor.recover_profilings() == [f"dataset:{dataset_id}"]
    assert live_job_ids([settings.default_queue], task=PROFILE_DATASET_TASK) == {str(dataset_id)}
    _age(db, "shirts")
    assert janitor.recover_profilings() == []  # its message is in the broker now
    assert profiling.profile_dataset(dataset_id, 1, "w1@test") == "ready"


@SQLITE_ONLY
def test_a_folder_gone_before_its_profiling_fails_it(client, user, folder, on_a_worker, db):
    import shutil

    _register(client, user)
    with db() as session:
        dataset_id = session.query(Dataset.id).filter_by(name="shirts").scalar()
    shutil.rmtree(folder / "train")
    assert profiling.profile_dataset(dataset_id, 1, "w1@test") == "failed"
    body = client.get("/datasets/shirts", headers=user.headers).json()
    assert body["status"] == "failed"
    assert body["status_reason"].startswith("the folder could not be read")


@SQLITE_ONLY
@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda root: None, "has no train/ folder"),
        (lambda root: (root / "train").mkdir(), "train/ has no class folders"),
    ],
    ids=["no-train", "no-classes"],
)
def test_a_folder_without_the_layout_is_422(client, user, data_root, make, message):
    (data_root / "bad").mkdir()
    make(data_root / "bad")
    response = _register(client, user, name="bad", root="bad")
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "root"] and message in error["msg"]


@SQLITE_ONLY
def test_an_image_linked_from_outside_the_data_roots_is_422(client, user, folder, tmp_path):
    outside = tmp_path / "secret.png"
    (folder / "train" / "tee" / "0000.png").rename(outside)
    (folder / "train" / "tee" / "0000.png").symlink_to(outside)
    response = _register(client, user)
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert "train/tee/0000.png is a link that leads outside" in error["msg"]
