"""``/datasets``: registering dataset roots, their class counts and shot groups, and using them."""

from __future__ import annotations

import pytest

from livt_core.data import longtail_counts
from livt_core.data.fashion import CLASSES

FASHION = {"name": "fmnist", "kind": "fashion-mnist-lt", "root": "fashion-mnist-lt"}

#: For checks that do not depend on the database backend: run them on SQLite only.
SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def _groups(counts: list[int]) -> dict[str, list[int]]:
    return {
        "many": [c for c, n in enumerate(counts) if n > 100],
        "medium": [c for c, n in enumerate(counts) if 20 <= n <= 100],
        "few": [c for c, n in enumerate(counts) if n < 20],
    }


def test_register_the_bundled_fashion_subset(client, user, fashion_root):
    response = client.post("/datasets", json=FASHION, headers=user.headers)
    assert response.status_code == 201, response.text
    body = response.json()
    counts = longtail_counts(1000, 10, 100.0)
    assert body["name"] == "fmnist"
    assert body["kind"] == "fashion-mnist-lt"
    assert body["root"] == str(fashion_root)
    assert body["params"] == {}
    assert body["classes"] == list(CLASSES)
    assert body["class_counts"] == counts
    assert body["num_train"] == sum(counts)
    assert body["shot_groups"] == _groups(counts)
    assert body["shot_groups"]["many"] and body["shot_groups"]["medium"]
    assert body["shot_groups"]["few"]


def test_register_with_long_tail_params(client, user, fashion_root):
    spec = {**FASHION, "params": {"imbalance_factor": 10, "n_max": 150, "profile": "step"}}
    body = client.post("/datasets", json=spec, headers=user.headers).json()
    counts = longtail_counts(150, 10, 10.0, "step")
    assert body["class_counts"] == counts
    assert body["params"] == {"imbalance_factor": 10.0, "n_max": 150, "profile": "step"}
    assert body["shot_groups"] == _groups(counts)


def test_list_datasets(client, user, make_user, fashion_root):
    assert client.post("/datasets", json=FASHION, headers=user.headers).status_code == 201
    other = {**FASHION, "name": "fmnist-10", "params": {"imbalance_factor": 10, "n_max": 150}}
    assert client.post("/datasets", json=other, headers=user.headers).status_code == 201
    response = client.get("/datasets", headers=make_user("bob").headers)
    assert response.status_code == 200
    assert [d["name"] for d in response.json()["items"]] == ["fmnist", "fmnist-10"]


def test_register_a_taken_name_is_409(client, user, fashion_root):
    client.post("/datasets", json=FASHION, headers=user.headers)
    response = client.post("/datasets", json=FASHION, headers=user.headers)
    assert response.status_code == 409
    assert "choose another name" in response.json()["detail"]


def _dataset_error(client, user, body):
    response = client.post("/datasets", json=body, headers=user.headers)
    assert response.status_code == 422, response.text
    return response.json()["detail"][0]


def test_register_a_root_outside_the_data_roots_is_422(client, user, tmp_path):
    (tmp_path / "outside").mkdir()
    error = _dataset_error(client, user, {**FASHION, "root": str(tmp_path / "outside")})
    assert error["loc"] == ["body", "root"]
    assert "outside the data roots" in error["msg"]


@SQLITE_ONLY
def test_register_a_missing_root_is_422(client, user, data_root):
    error = _dataset_error(client, user, {**FASHION, "root": "not-there"})
    assert error["loc"] == ["body", "root"]
    assert "not a folder" in error["msg"]


def test_register_a_root_without_the_dataset_files_is_422(client, user, data_root):
    (data_root / "empty").mkdir()
    error = _dataset_error(client, user, {**FASHION, "root": "empty"})
    assert error["loc"] == ["body", "root"]
    assert "train-images-idx3-ubyte.gz" in error["msg"]
    assert error["type"] == "invalid_data"


def test_register_params_the_data_cannot_satisfy_is_422(client, user, fashion_root):
    error = _dataset_error(client, user, {**FASHION, "params": {"n_max": 5000}})
    assert error["loc"] == ["body", "root"]
    assert "lower n_max" in error["msg"]


def test_register_an_unknown_kind_is_422(client, user, fashion_root):
    error = _dataset_error(client, user, {**FASHION, "kind": "mnist"})
    assert error["loc"] == ["body", "kind"]
    assert "use one of" in error["msg"]


@SQLITE_ONLY
@pytest.mark.parametrize(
    ("params", "loc"),
    [
        ({"imbalance_factor": 0.5}, ["body", "params", "imbalance_factor"]),
        ({"n_max": 0}, ["body", "params", "n_max"]),
        ({"colour": "red"}, ["body", "params", "colour"]),
        ({"root": "/elsewhere"}, ["body", "params", "root"]),
    ],
    ids=["gamma-below-1", "zero-n-max", "unknown", "root-in-params"],
)
def test_register_with_bad_params_is_422(client, user, fashion_root, params, loc):
    error = _dataset_error(client, user, {**FASHION, "params": params})
    assert error["loc"] == loc


@SQLITE_ONLY
def test_register_with_a_bad_name_is_422(client, user, fashion_root):
    error = _dataset_error(client, user, {**FASHION, "name": "Has Spaces"})
    assert error["loc"] == ["body", "name"]


def test_job_on_a_registered_dataset_uses_its_root_and_params(client, user, fashion_root):
    spec = {**FASHION, "params": {"imbalance_factor": 10, "n_max": 150}}
    assert client.post("/datasets", json=spec, headers=user.headers).status_code == 201
    job = client.post(
        "/jobs",
        json={"kind": "pretrain", "preset": "fashion-mnist-lt", "dataset": "fmnist"},
        headers=user.headers,
    ).json()
    assert job["dataset"] == "fmnist"
    data = job["config"]["data"]
    assert data["root"] == str(fashion_root)
    assert data["dataset"] == "fashion-mnist-lt"
    assert data["imbalance_factor"] == 10.0
    assert data["img_size"] == 28  # still from the preset


def test_job_spec_data_overrides_the_registered_dataset(client, user, fashion_root):
    client.post("/datasets", json=FASHION, headers=user.headers)
    spec = {"kind": "pretrain", "dataset": "fmnist", "data": {"n_max": 100}}
    data = client.post("/jobs", json=spec, headers=user.headers).json()["config"]["data"]
    assert data["n_max"] == 100
    assert data["root"] == str(fashion_root)
