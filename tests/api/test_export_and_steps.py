"""``GET /jobs/{id}/export`` (the weights for timm) and ``GET /jobs/{id}/metrics?level=step``."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load

from livt_core.export import export_model, read_config
from livt_core.models import create_model
from livt_service import state
from livt_service.models import StepPoint


@pytest.fixture
def exported_job(make_job, db):
    """A succeeded finetune job whose folder holds a real export of a tiny classifier."""
    job = make_job(kind="finetune", status="succeeded")
    folder = Path(job.artifact_dir)
    model = create_model("vit_nano_patch4", img_size=16, in_chans=1, depth=1, embed_dim=32)
    export_model(
        model,
        folder / "model.safetensors",
        model_name="vit_nano_patch4",
        kind="finetune",
        mean=(0.3,),
        std=(0.3,),
        label_names=[f"c{i}" for i in range(10)],
    )
    with db() as session:
        state.register_artifacts(session, job.id, folder)
    return job, model


def test_export_safetensors_is_the_weights_file(client, user, exported_job, tmp_path):
    job, model = exported_job
    response = client.get(f"/jobs/{job.id}/export?format=safetensors", headers=user.headers)
    assert response.status_code == 200, response.text
    assert "model.safetensors" in response.headers["content-disposition"]
    tensors = load(response.content)
    assert tensors.keys() == model.state_dict().keys()
    assert torch.equal(tensors["head.weight"], model.state_dict()["head.weight"])
    saved = tmp_path / "m.safetensors"
    saved.write_bytes(response.content)
    assert read_config(saved)["pretrained_cfg"]["label_names"][3] == "c3"
    # safetensors is the default format
    default = client.get(f"/jobs/{job.id}/export", headers=user.headers)
    assert default.status_code == 200 and default.content == response.content


def test_export_timm_is_a_zip_of_weights_and_config(client, user, exported_job):
    job, _ = exported_job
    response = client.get(f"/jobs/{job.id}/export?format=timm", headers=user.headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        assert sorted(archive.namelist()) == ["config.json", "model.safetensors"]
        config = json.loads(archive.read("config.json"))
    assert config["architecture"] == "vit_tiny_patch16_224"
    assert config["model_args"]["embed_dim"] == 32 and config["num_classes"] == 10
    assert config["pretrained_cfg"]["mean"] == [0.3]


def test_export_of_an_unfinished_job_is_409_and_of_another_users_404(
    client, user, make_user, make_job, exported_job
):
    running = make_job(kind="finetune", status="running")
    response = client.get(f"/jobs/{running.id}/export", headers=user.headers)
    assert response.status_code == 409
    assert "running" in response.json()["detail"] and "succeeds" in response.json()["detail"]
    job, _ = exported_job
    bob = make_user("bob")
    assert client.get(f"/jobs/{job.id}/export", headers=bob.headers).status_code == 404


def test_export_of_a_job_without_the_file_is_404_and_a_bad_format_422(client, user, make_job):
    job = make_job(kind="finetune", status="succeeded")
    response = client.get(f"/jobs/{job.id}/export", headers=user.headers)
    assert response.status_code == 404 and "model.safetensors" in response.json()["detail"]
    bad = client.get(f"/jobs/{job.id}/export?format=onnx", headers=user.headers)
    assert bad.status_code == 422
    assert "format" in json.dumps(bad.json())


def test_step_metrics_in_step_order(client, user, make_job, db):
    job = make_job(kind="finetune", status="running")
    with db() as session:
        for bucket, step in ((2, 30), (0, 1), (1, 12)):
            session.add(
                StepPoint(
                    job_id=job.id,
                    bucket=bucket,
                    global_step=step,
                    epoch=step // 20,
                    metrics={"loss": 1.0 / step, "lr": 1e-3, "images_per_sec": 50.0},
                )
            )
    response = client.get(f"/jobs/{job.id}/metrics?level=step", headers=user.headers)
    assert response.status_code == 200
    body = response.json()
    assert body["level"] == "step"
    assert [(p["global_step"], p["epoch"]) for p in body["items"]] == [(1, 0), (12, 0), (30, 1)]
    assert body["items"][0]["metrics"]["loss"] == 1.0
    # the epoch level stays the default
    epochs = client.get(f"/jobs/{job.id}/metrics", headers=user.headers).json()
    assert epochs["level"] == "epoch" and epochs["items"] == []
    bad = client.get(f"/jobs/{job.id}/metrics?level=batch", headers=user.headers)
    assert bad.status_code == 422
