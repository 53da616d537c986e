"""Bad input never reaches the database: NUL characters, NaN / Infinity, out-of-range integers,
tampered cursors and racing idempotency keys all get a 4xx naming the field, on SQLite and on
PostgreSQL (which rejects NUL and NaN in JSON and 32-bit overflows where SQLite stores them)."""

from __future__ import annotations

import base64
import json
import threading
from typing import Any

import pytest

PRETRAIN = {"kind": "pretrain", "preset": "fashion-mnist-lt", "epochs": 1}
NUL = "a\x00b"
SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def _post_raw(client, user, url: str, body_text: str):
    headers = {**user.headers, "Content-Type": "application/json"}
    return client.post(url, content=body_text.encode(), headers=headers)


def _assert_422_at(response, loc: list[Any]) -> dict[str, Any]:
    assert response.status_code == 422, response.text
    errors = response.json()["detail"]
    found = [e for e in errors if e["loc"][: len(loc)] == loc]
    assert found, errors
    return found[0]


@pytest.mark.parametrize(
    ("spec", "loc"),
    [
        ({**PRETRAIN, "name": NUL}, ["body", "name"]),
        ({**PRETRAIN, "idempotency_key": NUL}, ["body", "idempotency_key"]),
        ({**PRETRAIN, "dataset": NUL}, ["body", "dataset"]),
        ({**PRETRAIN, "preset": NUL}, ["body", "preset"]),
        ({**PRETRAIN, "data": {"root": NUL}}, ["body", "data", "root"]),
        ({**PRETRAIN, "device": NUL}, ["body", "device"]),
        ({**PRETRAIN, "model_kwargs": {"depth": 1, "note": NUL}}, ["body", "model_kwargs"]),
        ({**PRETRAIN, "model_kwargs": {NUL: 1}}, ["body", "model_kwargs"]),
        ({**PRETRAIN, "resources": {"queue": NUL}}, ["body", "resources", "queue"]),
        (
            {"kind": "finetune", "preset": "fashion-mnist-lt", "init": {"checkpoint": NUL}},
            ["body", "init", "checkpoint"],
        ),
        ({"kind": "finetune", "init": {"job": NUL}}, ["body", "init", "job"]),
    ],
    ids=lambda v: "-".join(map(str, v)) if isinstance(v, list) else None,
)
def test_nul_in_a_job_spec_is_422(client, user, spec, loc) -> None:
    error = _assert_422_at(client.post("/jobs", json=spec, headers=user.headers), loc)
    assert "NUL" in error["msg"] or "pattern" in error["msg"], error


def test_nul_in_a_dataset_or_pipeline_is_422(client, user) -> None:
    body = {"name": "ds", "kind": NUL}
    _assert_422_at(client.post("/datasets", json=body, headers=user.headers), ["body", "kind"])
    body = {"name": "ds", "kind": "splitfile", "root": NUL}
    _assert_422_at(client.post("/datasets", json=body, headers=user.headers), ["body", "root"])
    body = {"name": "ds", "kind": "fashion-mnist-lt", "params": {"train_split": NUL}}
    _assert_422_at(
        client.post("/datasets", json=body, headers=user.headers),
        ["body", "params", "train_split"],
    )
    body = {"name": NUL, "stages": [PRETRAIN]}
    _assert_422_at(client.post("/pipelines", json=body, headers=user.headers), ["body", "name"])
    body = {"stages": [{**PRETRAIN, "idempotency_key": NUL}]}
    _assert_422_at(
        client.post("/pipelines", json=body, headers=user.headers),
        ["body", "stages", 0, "idempotency_key"],
    )


@pytest.mark.parametrize(
    "url",
    [
        "/jobs/a%00",
        "/jobs/a%00/logs",
        "/jobs/a%00/metrics",
        "/jobs/a%00/artifacts",
        "/pipelines/p%00",
    ],
)
def test_nul_in_a_path_parameter_is_422(client, user, url) -> None:
    response = client.get(url, headers=user.headers)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"][0] == "path"


def test_nul_in_an_artifact_name_is_422(client, user, make_job) -> None:
    job = make_job()
    response = client.get(f"/jobs/{job.id}/artifacts/x%00y", headers=user.headers)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["path", "name"]


@pytest.mark.parametrize(
    ("raw", "loc"),
    [
        ('"lr": NaN', ["body", "lr"]),
        ('"lr": Infinity', ["body", "lr"]),
        ('"weight_decay": -Infinity', ["body", "weight_decay"]),
        ('"min_lr": NaN', ["body", "min_lr"]),
        ('"warmup_epochs": Infinity', ["body", "warmup_epochs"]),
        ('"blr": NaN', ["body", "blr"]),
        ('"data": {"mean": [NaN], "std": [1.0]}', ["body", "data", "mean"]),
        ('"data": {"imbalance_factor": Infinity}', ["body", "data", "imbalance_factor"]),
        ('"model_kwargs": {"mlp_ratio": NaN}', ["body", "model_kwargs"]),
    ],
)
def test_nan_or_infinity_in_a_job_spec_is_422(client, user, raw, loc) -> None:
    body = '{"kind": "pretrain", "preset": "fashion-mnist-lt", "epochs": 1, ' + raw + "}"
    error = _assert_422_at(_post_raw(client, user, "/jobs", body), loc)
    assert "finite" in error["msg"] or "number" in error["msg"], error


def test_nan_in_a_finetune_loss_setting_or_dataset_param_is_422(client, user) -> None:
    body = (
        '{"kind": "finetune", "preset": "fashion-mnist-lt", "epochs": 1, "tau": NaN, '
        '"loss_kwargs": {"x": Infinity}}'
    )
    response = _post_raw(client, user, "/jobs", body)
    _assert_422_at(response, ["body", "tau"])
    body = '{"name": "ds", "kind": "fashion-mnist-lt", "params": {"imbalance_factor": NaN}}'
    _assert_422_at(
        _post_raw(client, user, "/datasets", body), ["body", "params", "imbalance_factor"]
    )


def test_log_offset_beyond_32_bits_is_422(client, user, make_job) -> None:
    job = make_job()
    for url in (
        f"/jobs/{job.id}/logs?offset={2**31}",
        f"/jobs/{job.id}/logs/stream?offset={2**31}",
    ):
        response = client.get(url, headers=user.headers)
        _assert_422_at(response, ["query", "offset"])


@pytest.mark.parametrize("value", ["99999999999", "2147483647", "-1", "12a", "0x10"])
def test_bad_last_event_id_is_422(client, user, make_job, value) -> None:
    job = make_job(status="succeeded")
    headers = {**user.headers, "Last-Event-ID": value}
    response = client.get(f"/jobs/{job.id}/logs/stream", headers=headers)
    error = _assert_422_at(response, ["header", "last-event-id"])
    assert "Last-Event-ID" in error["msg"]


def test_a_good_last_event_id_still_resumes(client, user, make_job) -> None:
    job = make_job(status="succeeded")
    headers = {**user.headers, "Last-Event-ID": "5"}
    assert client.get(f"/jobs/{job.id}/logs/stream", headers=headers).status_code == 204


def _cursor(created: str, job_id: Any) -> str:
    raw = json.dumps([created, job_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        _cursor("2026-01-01T00:00:00", "j_x"),  # naive timestamp
        _cursor("2026-01-01T00:00:00+00:00", NUL),
        _cursor("2026-01-01T00:00:00+00:00", 5),
        _cursor("9999-12-31T23:59:59-23:59", "j_x"),
        "not-base64!",
    ],
    ids=["naive", "nul-id", "int-id", "overflow", "garbage"],
)
def test_tampered_cursor_is_422(client, user, make_job, cursor) -> None:
    make_job()
    response = client.get("/jobs", params={"cursor": cursor}, headers=user.headers)
    _assert_422_at(response, ["query", "cursor"])


def test_a_real_cursor_still_pages(client, user, make_job) -> None:
    for _ in range(3):
        make_job()
    first = client.get("/jobs", params={"limit": 2}, headers=user.headers).json()
    second = client.get(
        "/jobs", params={"limit": 2, "cursor": first["next_cursor"]}, headers=user.headers
    )
    assert second.status_code == 200 and len(second.json()["items"]) == 1


def _race_pipelines(client, user, bodies: list[dict]) -> list[tuple[int, str]]:
    """``(status, text)`` of ``POST /pipelines`` of every body, sent at once from threads."""
    outcomes: list[tuple[int, str]] = []
    barrier = threading.Barrier(len(bodies))

    def submit(body: dict) -> None:
        barrier.wait()
        response = client.post("/pipelines", json=body, headers=user.headers)
        outcomes.append((response.status_code, response.text))

    threads = [threading.Thread(target=submit, args=(body,)) for body in bodies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return outcomes


def test_concurrent_identical_pipelines_on_a_stage_key_make_one(client, user, enqueued) -> None:
    body = {"stages": [{**PRETRAIN, "idempotency_key": "shared-stage"}]}
    outcomes = _race_pipelines(client, user, [body] * 6)
    assert sorted(status for status, _ in outcomes) == [200] * 5 + [201], outcomes
    assert len({json.loads(text)["id"] for _, text in outcomes}) == 1
    assert len(enqueued) == 1


def test_concurrent_pipelines_reusing_a_stage_key_with_other_bodies_are_409(
    client, user, enqueued
) -> None:
    bodies = [
        {"stages": [{**PRETRAIN, "epochs": epochs, "idempotency_key": "shared-stage"}]}
        for epochs in range(1, 7)
    ]
    outcomes = _race_pipelines(client, user, bodies)
    assert sorted(status for status, _ in outcomes) == [201] + [409] * 5, outcomes
    for status, text in outcomes:
        if status == 409:
            assert "stages[0].idempotency_key 'shared-stage'" in json.loads(text)["detail"]
    assert len(enqueued) == 1


# --------------------------------------------------------------------------------------------
# upper bounds


@SQLITE_ONLY
@pytest.mark.parametrize(
    ("fields", "loc", "fix"),
    [
        ({"epochs": 10**12}, ["body", "epochs"], "set epochs to 10000 or less"),
        ({"epochs": True}, ["body", "epochs"], "whole number"),
        ({"epochs": 2.0}, ["body", "epochs"], "whole number"),
        ({"batch_size": 10**9}, ["body", "batch_size"], "set batch_size to 16384 or less"),
        ({"accum_iter": 10**9}, ["body", "accum_iter"], "set accum_iter to 4096 or less"),
        ({"seed": 10**30}, ["body", "seed"], "set seed to 2147483647 or less"),
        ({"seed": -1}, ["body", "seed"], "set seed to 0 or more"),
        ({"lr": True}, ["body", "lr"], "not true/false"),
        ({"data": {"img_size": 10**9}}, ["body", "data", "img_size"], "2048 or less"),
        ({"data": {"num_workers": 10**6}}, ["body", "data", "num_workers"], "256 or less"),
        ({"data": {"lt_seed": -1}}, ["body", "data", "lt_seed"], "set data.lt_seed to 0 or more"),
        ({"data": {"lt_seed": 2**40}}, ["body", "data", "lt_seed"], "or less"),
        ({"model_kwargs": {"depth": 10**6}}, ["body", "model_kwargs", "depth"], "[1, 64]"),
        ({"model_kwargs": {"depth": True}}, ["body", "model_kwargs", "depth"], "whole number"),
        ({"resources": {"gpus": 10**12}}, ["body", "resources", "gpus"], "1024"),
        ({"resources": {"gpus": True}}, ["body", "resources", "gpus"], "integer"),
    ],
    ids=lambda v: json.dumps(v) if isinstance(v, dict) else None,
)
def test_out_of_bounds_run_settings_are_422(client, user, fields, loc, fix) -> None:
    response = client.post("/jobs", json={**PRETRAIN, **fields}, headers=user.headers)
    error = _assert_422_at(response, loc)
    assert fix in error["msg"], error


@SQLITE_ONLY
@pytest.mark.parametrize(
    ("env", "fields", "ok", "loc"),
    [
        ("LIVT_MAX_EPOCHS", {"epochs": 51}, {"epochs": 50}, ["body", "epochs"]),
        ("LIVT_MAX_BATCH_SIZE", {"batch_size": 51}, {"batch_size": 50}, ["body", "batch_size"]),
        (
            "LIVT_MAX_IMG_SIZE",
            {"data": {"img_size": 64}},
            {"data": {"img_size": 32}},
            ["body", "data", "img_size"],
        ),
        (
            "LIVT_MAX_DATA_WORKERS",
            {"data": {"num_workers": 51}},
            {"data": {"num_workers": 50}},
            ["body", "data", "num_workers"],
        ),
    ],
)
def test_site_limits_are_422_naming_the_setting(
    monkeypatch, settings, make_user, env, fields, ok, loc
) -> None:
    from fastapi.testclient import TestClient

    from api.deps import get_enqueuer
    from api.main import create_app
    from livt_service.settings import get_settings

    monkeypatch.setenv(env, "50")
    get_settings.cache_clear()
    app = create_app(get_settings())
    app.dependency_overrides[get_enqueuer] = lambda: lambda job_id, queue: None
    user = make_user()
    with TestClient(app) as client:
        response = client.post("/jobs", json={**PRETRAIN, **fields}, headers=user.headers)
        error = _assert_422_at(response, loc)
        assert f"above this site's limit of 50 ({env})" in error["msg"]
        assert "or less" in error["msg"]
        response = client.post("/jobs", json={**PRETRAIN, **ok}, headers=user.headers)
        assert response.status_code == 201, response.text
