"""Jobs and pipelines on a registered image folder: the ``auto`` recipe from the stored profile
by default (a named preset wins), the default evaluate split, every stage of a pipeline checked
at once, and a 422 at submit for each problem the profile shows (so no run fails on it with
``invalid_data``)."""

from __future__ import annotations

import shutil

import pytest

from tests.folders import make_imagefolder

#: These checks do not depend on the database backend.
pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

ZERO_CONFIG = [
    {"kind": "pretrain", "dataset": "own"},
    {"kind": "finetune", "dataset": "own"},
    {"kind": "evaluate", "dataset": "own"},
]


def _folder(root, **kwargs):
    options = {"n_max": 8, "imbalance": 4, "per_class": 2, "size": 32, "colour": True}
    return make_imagefolder(root, **{**options, **kwargs})


def _register(client, user, root, name="own"):
    response = client.post(
        "/datasets",
        json={"name": name, "kind": "imagefolder", "root": root.name},
        headers=user.headers,
    )
    assert response.status_code == 201, response.text
    return response.json()


def _pipeline(client, user, stages):
    return client.post("/pipelines", json={"stages": stages}, headers=user.headers)


def _errors(response) -> dict[tuple, dict]:
    assert response.status_code == 422, response.text
    return {tuple(e["loc"]): e for e in response.json()["detail"]}


def test_zero_config_pipeline_takes_the_auto_recipe_from_the_stored_profile(
    client, user, data_root, enqueued
):
    _register(client, user, _folder(data_root / "own"))
    response = _pipeline(client, user, ZERO_CONFIG)
    assert response.status_code == 201, response.text
    mgp, bft, evaluate = (job["config"] for job in response.json()["jobs"])
    assert (mgp["model"], bft["model"], evaluate["model"]) == (
        "mae_vit_nano_patch4",
        "vit_nano_patch4",
        "vit_nano_patch4",
    )
    for config in (mgp, bft):
        assert config["recipe_notes"][0] == "auto recipe from the dataset profile:"
        assert config["data"]["img_size"] == 32 and config["data"]["in_chans"] == 3
        assert config["warmup_epochs"] < config["epochs"]
        assert config["batch_size"] <= 40
    assert evaluate["split"] == "val"  # no test split: the split the fine-tune reports on
    assert any(n.startswith("split=val") for n in evaluate["recipe_notes"])
    assert len(enqueued) == 1


def test_named_preset_wins_and_the_evaluate_split_follows_the_data(client, user, data_root):
    _register(client, user, _folder(data_root / "own", splits=("train", "val", "test")))
    stages = [{**stage, "preset": "fashion-mnist-lt"} for stage in ZERO_CONFIG]
    stages[0]["batch_size"] = stages[1]["batch_size"] = 16
    response = _pipeline(client, user, stages)
    assert response.status_code == 201, response.text
    mgp, bft, evaluate = (job["config"] for job in response.json()["jobs"])
    assert mgp["epochs"] == 40 and mgp["data"]["img_size"] == 28  # the preset's
    assert mgp["recipe_notes"][0] == "preset fashion-mnist-lt: its settings replace the auto recipe"
    assert mgp["data"]["in_chans"] == 1 and len(mgp["data"]["mean"]) == 1  # fitted to the model
    assert evaluate["split"] == "test"


def test_every_stage_is_checked_before_any_job_is_made(client, user, data_root, enqueued):
    _register(client, user, _folder(data_root / "own"))
    stages = [
        {"kind": "pretrain", "dataset": "own", "epochs": 4, "warmup_epochs": 4},
        {"kind": "finetune", "dataset": "own", "batch_size": 64},
        {"kind": "evaluate", "dataset": "own", "split": "test"},
    ]
    errors = _errors(_pipeline(client, user, stages))
    assert set(errors) == {
        ("body", "stages", 0, "warmup_epochs"),
        ("body", "stages", 1, "batch_size"),
        ("body", "stages", 2, "split"),
    }
    assert "never reach its peak" in errors[("body", "stages", 0, "warmup_epochs")]["msg"]
    assert "more than the 40 training images" in errors[("body", "stages", 1, "batch_size")]["msg"]
    split = errors[("body", "stages", 2, "split")]["msg"]
    assert split == "the data set has no test split (it has train, val); use split=val"
    assert enqueued == []
    assert client.get("/jobs", headers=user.headers).json()["items"] == []


def _no_val(root):
    shutil.rmtree(root / "val")


def _empty_val(root):
    for image in (root / "val").rglob("*.png"):
        image.unlink()


def _empty_train_class(root):
    for image in (root / "train" / "bag").iterdir():
        image.unlink()


def _extra_val_class(root):
    (root / "val" / "stray").mkdir()
    shutil.copy(next((root / "val" / "bag").iterdir()), root / "val" / "stray" / "x.png")


def _corrupt(root):
    (root / "train" / "coat" / "0000.png").write_bytes(b"not a png")


@pytest.mark.parametrize(
    ("spoil", "stage", "field", "words"),
    [
        (_no_val, 1, "dataset", "has no val/ split, which picks the best fine-tuning epoch"),
        (_empty_val, 1, "dataset", "the val/ folder holds no images; add images to val/<class>/"),
        (_empty_train_class, 0, "dataset", "the training classes 'bag' hold no images"),
        (_extra_val_class, 0, "dataset", "val/ has class folders that train/ lacks: 'stray'"),
        (_corrupt, 0, "dataset", "1 image cannot be read ('train/coat/0000.png')"),
    ],
    ids=["no-val", "empty-val", "empty-train-class", "extra-val-class", "unreadable-file"],
)
def test_each_problem_the_profile_shows_is_a_422_at_submit(
    client, user, data_root, enqueued, spoil, stage, field, words
):
    root = _folder(data_root / "own")
    spoil(root)
    _register(client, user, root)
    errors = _errors(_pipeline(client, user, ZERO_CONFIG))
    error = errors[("body", "stages", stage, field)]
    assert words in error["msg"], error
    assert error["msg"].endswith(
        "then register the folder again (POST /datasets with the same name and root reads it anew)"
    )
    assert enqueued == []


def test_registering_the_same_folder_again_reads_it_anew(client, user, data_root):
    root = _folder(data_root / "own")
    _corrupt(root)
    assert _register(client, user, root)["profile"]["unreadable_count"] == 1
    (root / "train" / "coat" / "0000.png").unlink()  # the user fixes the folder
    assert _register(client, user, root)["profile"]["unreadable_count"] == 0
    response = _pipeline(client, user, ZERO_CONFIG)
    assert response.status_code == 201, response.text
    # now that jobs name it, it is not replaced; another folder under the name never is
    body = {"name": "own", "kind": "imagefolder", "root": "own"}
    again = client.post("/datasets", json=body, headers=user.headers)
    assert again.status_code == 409 and "used by jobs" in again.json()["detail"]
    other = _folder(data_root / "other")
    body = {"name": "own", "kind": "imagefolder", "root": other.name}
    response = client.post("/datasets", json=body, headers=user.headers)
    assert response.status_code == 409 and "choose another name" in response.json()["detail"]


def test_statistics_that_disagree_with_the_channels_are_a_422(client, user, data_root):
    _register(client, user, _folder(data_root / "own"))
    spec = {"kind": "pretrain", "dataset": "own", "data": {"in_chans": 1, "mean": [0.5] * 3}}
    errors = _errors(client.post("/jobs", json=spec, headers=user.headers))
    [(loc, error)] = errors.items()
    assert loc == ("body", "data", "mean")
    assert error["msg"] == "has 3 values for in_chans=1; give 1 value"


def test_a_grey_model_on_colour_images_takes_the_statistics_from_the_data(client, user, data_root):
    _register(client, user, _folder(data_root / "own"))
    spec = {"kind": "pretrain", "dataset": "own", "data": {"in_chans": 1}}
    response = client.post("/jobs", json=spec, headers=user.headers)
    assert response.status_code == 201, response.text
    data = response.json()["config"]["data"]
    assert data["in_chans"] == 1 and len(data["mean"]) == len(data["std"]) == 1


def test_a_spec_pointing_data_elsewhere_is_not_judged_by_the_profile(client, user, data_root):
    _register(client, user, _folder(data_root / "own"))
    other = _folder(data_root / "other", size=28, colour=False)
    spec = {"kind": "pretrain", "dataset": "own", "data": {"root": str(other)}, "epochs": 2}
    response = client.post("/jobs", json=spec, headers=user.headers)
    assert response.status_code == 201, response.text
    assert "recipe_notes" not in response.json()["config"] or not any(
        "auto recipe" in n for n in response.json()["config"]["recipe_notes"]
    )
