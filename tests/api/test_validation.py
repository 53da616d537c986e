"""Every bad job spec gets 422 with entries that name the field (``loc``) and the fix (``msg``)."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import pytest

PRETRAIN = {"kind": "pretrain", "preset": "fashion-mnist-lt", "epochs": 1}
FINETUNE = {"kind": "finetune", "preset": "fashion-mnist-lt", "epochs": 1}

#: For checks that do not depend on the database backend: run them on SQLite only.
SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def _errors(client, user, spec):
    response = client.post("/jobs", json=spec, headers=user.headers)
    assert response.status_code == 422, response.text
    return response.json()["detail"]


def _error_at(client, user, spec, loc):
    """The one error at ``loc``; fails listing all errors when there is none."""
    errors = _errors(client, user, spec)
    found = [e for e in errors if e["loc"] == loc]
    assert found, errors
    return found[0]


@SQLITE_ONLY
@pytest.mark.parametrize(
    ("spec", "loc", "fix"),
    [
        ({**PRETRAIN, "model": "mae_vit_gigantic"}, ["body", "model"], "use one of"),
        ({**PRETRAIN, "model": "vit_nano_patch4"}, ["body", "model"], "mae_vit_nano_patch4"),
        ({**FINETUNE, "loss": "focal-ish"}, ["body", "loss"], "use one of: bal_bce"),
        ({**PRETRAIN, "preset": "mnist-lt"}, ["body", "preset"], "fashion-mnist-lt"),
        ({**PRETRAIN, "epochs": 0}, ["body", "epochs"], "set epochs to 1 or more"),
        ({**PRETRAIN, "epochs": -3}, ["body", "epochs"], "set epochs to 1 or more"),
        ({**FINETUNE, "blr": 0}, ["body", "blr"], "set blr"),
        ({**FINETUNE, "lr": -0.1}, ["body", "lr"], "set lr"),
        ({**PRETRAIN, "mask_ratio": 0.0}, ["body", "mask_ratio"], "0.75"),
        ({**PRETRAIN, "mask_ratio": 1.0}, ["body", "mask_ratio"], "0.75"),
        ({**PRETRAIN, "mask_ratio": 1.5}, ["body", "mask_ratio"], "0.75"),
        ({**PRETRAIN, "epoch": 3}, ["body", "epoch"], "check its spelling"),
        ({**PRETRAIN, "data": {"dataset": "mnist"}}, ["body", "data", "dataset"], "use one of"),
        ({**PRETRAIN, "data": {"img_size": 4}}, ["body", "data", "img_size"], "set data.img_size"),
    ],
    ids=[
        "unknown-model",
        "classifier-for-pretrain",
        "unknown-loss",
        "unknown-preset",
        "zero-epochs",
        "negative-epochs",
        "zero-blr",
        "negative-lr",
        "mask-ratio-0",
        "mask-ratio-1",
        "mask-ratio-above-1",
        "unknown-field",
        "unknown-data-kind",
        "tiny-image",
    ],
)
def test_bad_run_field_is_422_naming_field_and_fix(client, user, enqueued, spec, loc, fix):
    error = _error_at(client, user, spec, loc)
    assert fix in error["msg"]
    assert enqueued == []


def test_every_bad_field_is_reported_at_once(client, user):
    errors = _errors(client, user, {**FINETUNE, "epochs": 0, "loss": "nope", "blr": -1})
    assert {tuple(e["loc"]) for e in errors} >= {
        ("body", "epochs"),
        ("body", "loss"),
        ("body", "blr"),
    }


def test_nothing_is_stored_for_a_bad_spec(client, user):
    _errors(client, user, {**PRETRAIN, "epochs": 0})
    assert client.get("/jobs", headers=user.headers).json()["items"] == []


# --------------------------------------------------------------------------------------------
# request shape


@SQLITE_ONLY
def test_unknown_kind_is_422_at_kind(client, user):
    error = _error_at(client, user, {"kind": "train"}, ["body", "kind"])
    assert "'pretrain', 'finetune', 'evaluate'" in error["msg"]


@SQLITE_ONLY
def test_missing_kind_is_422_at_kind(client, user):
    error = _error_at(client, user, {"preset": "fashion-mnist-lt"}, ["body", "kind"])
    assert '"kind": "pretrain"' in error["msg"]


@SQLITE_ONLY
def test_zero_gpus_is_422(client, user):
    error = _error_at(
        client, user, {**PRETRAIN, "resources": {"gpus": 0}}, ["body", "resources", "gpus"]
    )
    assert "at least 1" in error["msg"]


@SQLITE_ONLY
def test_bad_queue_name_is_422(client, user):
    _error_at(
        client, user, {**PRETRAIN, "resources": {"queue": "a b"}}, ["body", "resources", "queue"]
    )


@SQLITE_ONLY
def test_init_as_a_string_is_422(client, user):
    error = _error_at(client, user, {**FINETUNE, "init": "j_123"}, ["body", "init"])
    assert '{"job": "<job id>"}' in error["msg"]


@SQLITE_ONLY
def test_init_with_both_job_and_checkpoint_is_422(client, user):
    spec = {**FINETUNE, "init": {"job": "j_1", "checkpoint": "a.pth"}}
    assert "exactly one" in _error_at(client, user, spec, ["body", "init"])["msg"]


@SQLITE_ONLY
def test_init_on_a_pretrain_job_is_an_unknown_setting(client, user):
    _error_at(client, user, {**PRETRAIN, "init": {"job": "j_1"}}, ["body", "init"])


@SQLITE_ONLY
def test_evaluate_checkpoint_run_field_points_to_init(client, user):
    spec = {"kind": "evaluate", "preset": "fashion-mnist-lt", "checkpoint": "/x.pth"}
    assert "init" in _error_at(client, user, spec, ["body", "checkpoint"])["msg"]


# --------------------------------------------------------------------------------------------
# GPUs


def test_more_gpus_than_any_worker_offers_is_422(client, user, make_worker):
    make_worker(gpus=2)
    error = _error_at(
        client, user, {**PRETRAIN, "resources": {"gpus": 3}}, ["body", "resources", "gpus"]
    )
    assert "set resources.gpus to 2 or less" in error["msg"]


def test_gpus_of_a_lost_worker_do_not_count(client, user, make_worker):
    make_worker(gpus=8, heartbeat_at=datetime.now(UTC) - timedelta(hours=1))
    error = _error_at(
        client, user, {**PRETRAIN, "resources": {"gpus": 8}}, ["body", "resources", "gpus"]
    )
    assert "set resources.gpus to 1 or less" in error["msg"]


def test_gpus_of_a_worker_on_another_queue_do_not_count(client, user, make_worker):
    make_worker(gpus=8, queues=["big"])
    spec = {**PRETRAIN, "resources": {"gpus": 8, "queue": "default"}}
    _error_at(client, user, spec, ["body", "resources", "gpus"])


# --------------------------------------------------------------------------------------------
# paths


def test_data_root_outside_the_data_roots_is_422(client, user, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    spec = {**PRETRAIN, "data": {"root": str(outside)}}
    error = _error_at(client, user, spec, ["body", "data", "root"])
    assert "outside the data roots" in error["msg"]
    assert "LIVT_DATA_ROOTS" in error["msg"]


@SQLITE_ONLY
def test_data_root_escaping_with_dotdot_is_422(client, user):
    spec = {**PRETRAIN, "data": {"root": "../elsewhere"}}
    _error_at(client, user, spec, ["body", "data", "root"])


@SQLITE_ONLY
def test_data_root_symlink_leading_outside_is_422(client, user, data_root, tmp_path):
    outside = tmp_path / "secret"
    outside.mkdir()
    os.symlink(outside, data_root / "link")
    spec = {**PRETRAIN, "data": {"root": str(data_root / "link")}}
    assert "outside" in _error_at(client, user, spec, ["body", "data", "root"])["msg"]


@SQLITE_ONLY
def test_missing_data_root_folder_is_422(client, user, data_root):
    spec = {**PRETRAIN, "data": {"root": str(data_root / "nothing-here")}}
    assert "not a folder" in _error_at(client, user, spec, ["body", "data", "root"])["msg"]


def test_data_root_inside_the_data_roots_is_accepted(client, user, data_root):
    (data_root / "fmnist").mkdir()
    spec = {**PRETRAIN, "data": {"root": "fmnist"}}
    response = client.post("/jobs", json=spec, headers=user.headers)
    assert response.status_code == 201
    assert response.json()["config"]["data"]["root"] == str(data_root / "fmnist")


def test_missing_checkpoint_is_422(client, user, data_root):
    spec = {**FINETUNE, "init": {"checkpoint": str(data_root / "nope.pth")}}
    error = _error_at(client, user, spec, ["body", "init", "checkpoint"])
    assert "does not exist" in error["msg"]


@SQLITE_ONLY
def test_checkpoint_outside_the_data_roots_is_422(client, user, tmp_path):
    path = tmp_path / "outside.pth"
    path.write_bytes(b"x")
    spec = {**FINETUNE, "init": {"checkpoint": str(path)}}
    assert "outside" in _error_at(client, user, spec, ["body", "init", "checkpoint"])["msg"]


def test_checkpoint_that_is_not_a_state_dict_is_422(client, user, make_checkpoint):
    path = make_checkpoint("list.pth", payload=[1, 2, 3])
    spec = {**FINETUNE, "init": {"checkpoint": str(path)}}
    error = _error_at(client, user, spec, ["body", "init", "checkpoint"])
    assert "not a dict" in error["msg"]
    assert "model state dict" in error["msg"]


@SQLITE_ONLY
def test_checkpoint_dict_without_tensors_is_422(client, user, make_checkpoint):
    path = make_checkpoint("args.pth", payload={"epoch": 3, "args": {"lr": 1}})
    spec = {**FINETUNE, "init": {"checkpoint": str(path)}}
    error = _error_at(client, user, spec, ["body", "init", "checkpoint"])
    assert "not a state dict" in error["msg"]


@SQLITE_ONLY
def test_checkpoint_that_is_not_a_torch_file_is_422(client, user, data_root):
    path = data_root / "notes.pth"
    path.write_text("hello")
    spec = {**FINETUNE, "init": {"checkpoint": str(path)}}
    error = _error_at(client, user, spec, ["body", "init", "checkpoint"])
    assert "not a readable PyTorch file" in error["msg"]


# --------------------------------------------------------------------------------------------
# init jobs


@pytest.mark.parametrize("status", ["queued", "running", "failed", "cancelled"])
def test_finetune_from_an_unfinished_job_is_422(client, user, make_job, status):
    pretrain = make_job(kind="pretrain", status=status)
    spec = {**FINETUNE, "init": {"job": pretrain.id}}
    error = _error_at(client, user, spec, ["body", "init", "job"])
    assert f"is {status}, not succeeded" in error["msg"]
    assert "pipeline" in error["msg"]


def test_evaluate_from_a_pretrain_job_is_422(client, user, make_job):
    pretrain = make_job(kind="pretrain", status="succeeded")
    spec = {"kind": "evaluate", "init": {"job": pretrain.id}}
    error = _error_at(client, user, spec, ["body", "init", "job"])
    assert error["type"] == "init_job_wrong_kind"
    assert "finetune" in error["msg"]


def test_finetune_from_an_evaluate_job_is_422(client, user, make_job):
    evaluate = make_job(kind="evaluate", status="succeeded")
    spec = {**FINETUNE, "init": {"job": evaluate.id}}
    assert _error_at(client, user, spec, ["body", "init", "job"])["type"] == "init_job_wrong_kind"


def test_init_from_another_users_job_is_422_not_found(client, user, make_user, make_job):
    theirs = make_job(owner=make_user("bob"), kind="pretrain", status="succeeded")
    spec = {**FINETUNE, "init": {"job": theirs.id}}
    assert "not found" in _error_at(client, user, spec, ["body", "init", "job"])["msg"]


def test_init_from_an_unknown_job_is_422(client, user):
    spec = {**FINETUNE, "init": {"job": "j_00000000000000000000000000"}}
    assert "not found" in _error_at(client, user, spec, ["body", "init", "job"])["msg"]


def test_evaluate_without_init_is_422(client, user):
    error = _error_at(client, user, {"kind": "evaluate"}, ["body", "init"])
    assert '{"job": "<finetune job id>"}' in error["msg"]


def test_unknown_registered_dataset_is_422(client, user):
    error = _error_at(client, user, {**PRETRAIN, "dataset": "imagenet"}, ["body", "dataset"])
    assert "POST /datasets" in error["msg"]


@SQLITE_ONLY
def test_bad_loss_option_value_is_422_at_submit(client, user, enqueued):
    spec = {**FINETUNE, "loss": "cb_ce", "mixup": 0, "cutmix": 0, "loss_kwargs": {"beta": 2.0}}
    error = _error_at(client, user, spec, ["body", "loss_kwargs", "beta"])
    assert "(0, 1)" in error["msg"] and "0.9999" in error["msg"]
    assert enqueued == []


@SQLITE_ONLY
def test_unknown_loss_option_is_422_at_submit(client, user, enqueued):
    spec = {**FINETUNE, "loss": "bal_bce", "loss_kwargs": {"beta": 0.9}}
    error = _error_at(client, user, spec, ["body", "loss_kwargs"])
    assert "it takes no options" in error["msg"]
