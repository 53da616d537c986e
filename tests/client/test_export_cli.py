"""A real tiny job through ``livt serve``: ``livt export`` (both formats) gives the folder timm
loads with ``strict=True`` and the job's logits; the job's TensorBoard event file and weights
export are artifacts; its step metrics are stored and bounded."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import timm
import torch
from safetensors.torch import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from livt.cli import main
from livt.client import Job, LivtClient
from livt_core.checkpoint import extract_model_state, load_checkpoint
from livt_core.contract import MAX_STEP_POINTS
from livt_core.models import create_model
from tests.live_server import TINY_FINETUNE, LiveServer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with LiveServer.start(tmp_path_factory.mktemp("livt-export")) as live:
        yield live


@pytest.fixture(scope="module")
def token(server: LiveServer) -> str:
    return server.create_token("erin")


@pytest.fixture(scope="module")
def finished(server: LiveServer, token: str) -> Job:
    with LivtClient(server.url, token) as client:
        job = client.submit({**TINY_FINETUNE, "name": "export-tiny"})
        done = client.wait(job.id, poll=0.5, timeout=300)
    assert done.status == "succeeded", done
    return done


@pytest.fixture
def env(server: LiveServer, token: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIVT_URL", server.url)
    monkeypatch.setenv("LIVT_TOKEN", token)


def _jobs_classifier(server: LiveServer, token: str, job: Job, folder: Path) -> torch.nn.Module:
    """livt's classifier with the job's best checkpoint (the weights its result came from)."""
    with LivtClient(server.url, token) as client:
        path = client.download_artifact(job.id, "checkpoint-best.pth", folder)
    config = job.config
    model = create_model(
        config["model"],
        img_size=config["data"]["img_size"],
        in_chans=1,
        num_classes=10,
        global_pool=config["global_pool"],
        **config["model_kwargs"],
    ).eval()
    model.load_state_dict(extract_model_state(load_checkpoint(path)))
    return model


def test_livt_export_loads_into_timm_with_the_jobs_logits(
    env, server, token, finished, tmp_path, capsys
):
    timm_dir, st_dir = tmp_path / "timm", tmp_path / "st"
    assert main(["export", finished.id, "--format", "timm", "-o", str(timm_dir)]) == 0
    assert main(["export", finished.id, "-o", str(st_dir)]) == 0
    out = capsys.readouterr().out
    assert f"exported {finished.id}" in out
    for folder in (timm_dir, st_dir):
        assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((timm_dir / "config.json").read_text())
    assert json.loads((st_dir / "config.json").read_text()) == config
    assert config["pretrained_cfg"]["label_names"][0] == "T-shirt/top"
    a, b = load_file(timm_dir / "model.safetensors"), load_file(st_dir / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    loaded = timm.create_model(f"local-dir:{timm_dir}", pretrained=True).eval()
    livt = _jobs_classifier(server, token, finished, tmp_path)
    x = torch.randn(4, *config["pretrained_cfg"]["input_size"])
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), livt(x), rtol=0, atol=1e-6)


def test_livt_export_of_a_local_checkpoint_and_of_an_unknown_job(
    env, server, token, finished, tmp_path, capsys
):
    with LivtClient(server.url, token) as client:
        ckpt = client.download_artifact(finished.id, "checkpoint-best.pth", tmp_path)
    assert main(["export", str(ckpt), "-o", str(tmp_path / "local")]) == 0
    assert (tmp_path / "local" / "config.json").is_file()
    assert main(["export", "j_nosuchjob", "-o", str(tmp_path / "none")]) == 1
    assert "j_nosuchjob" in capsys.readouterr().err


def test_tensorboard_file_and_export_are_artifacts_and_steps_are_stored(
    server, token, finished, tmp_path
):
    with LivtClient(server.url, token) as client:
        artifacts = {a.name: a.kind for a in client.artifacts(finished.id)}
        assert artifacts["model.safetensors"] == "export"
        [board] = [name for name, kind in artifacts.items() if kind == "tensorboard"]
        assert board.startswith("events.out.tfevents.") and board.endswith(".attempt1")
        client.download_artifact(finished.id, board, tmp_path)
    acc = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0})
    acc.Reload()
    assert [e.step for e in acc.Scalars("val/overall")] == [0, 1]
    assert {"train/loss", "train/lr", "val/many", "val/medium", "val/few"} <= set(
        acc.Tags()["scalars"]
    )
    assert acc.Scalars("final/overall")[0].value == pytest.approx(finished.result.overall)

    steps = httpx.get(
        f"{server.url}/jobs/{finished.id}/metrics",
        params={"level": "step"},
        headers={"Authorization": f"Bearer {token}"},
    ).json()["items"]
    assert 1 <= len(steps) <= MAX_STEP_POINTS
    assert [p["global_step"] for p in steps] == sorted({p["global_step"] for p in steps})
    assert all({"loss", "lr", "images_per_sec"} <= p["metrics"].keys() for p in steps)
