"""The weights export (``model.safetensors`` + timm's ``config.json``) and the TensorBoard event
files of a run: timm loads the export with ``strict=True`` and gives the run's logits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from timm.models.vision_transformer import VisionTransformer as TimmViT

from livt_core.checkpoint import extract_model_state, load_checkpoint
from livt_core.cli import main as core_main
from livt_core.contract import TENSORBOARD_PREFIX, step_bucket
from livt_core.engine import run
from livt_core.errors import CheckpointError
from livt_core.export import export_checkpoint, read_config, read_metadata, write_timm_folder
from livt_core.models import create_model, load_encoder_into_classifier
from livt_core.tensorboard import TensorBoardWriter
from tests.core.test_engine import TINY_VIT, _finetune, _pretrain


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("finetune")
    config = _finetune(epochs=2, warmup_epochs=1)
    board = TensorBoardWriter(out, config.model_dump(mode="json"), attempt=1)
    assert run(config, out, callbacks=board).status == "succeeded"
    return out


def _livt_classifier(run_dir: Path) -> torch.nn.Module:
    """The run's classifier as livt builds it, with the weights that gave the result."""
    model = create_model(
        "vit_nano_patch4", img_size=16, in_chans=1, num_classes=10, **TINY_VIT
    ).eval()
    model.load_state_dict(extract_model_state(load_checkpoint(run_dir / "checkpoint-best.pth")))
    return model


def test_finetune_export_loads_into_timm_strict_with_the_runs_logits(finetuned, tmp_path):
    weights = finetuned / "model.safetensors"
    meta = read_metadata(weights)
    assert meta["kind"] == "finetune" and meta["format"] == "pt"
    config = read_config(weights)
    cfg = config["pretrained_cfg"]
    assert config["num_classes"] == cfg["num_classes"] == 10
    assert cfg["input_size"] == [1, 16, 16] and len(cfg["mean"]) == len(cfg["std"]) == 1
    assert len(cfg["label_names"]) == 10 and cfg["label_names"][0] == "T-shirt/top"
    state = load_file(weights)
    assert not any(k.startswith(("decoder_", "mask_token")) for k in state)

    x = torch.randn(3, 1, 16, 16)
    with torch.no_grad():
        expected = _livt_classifier(finetuned)(x)
    # timm's VisionTransformer with the exported kwargs, strict
    direct = TimmViT(num_classes=config["num_classes"], **config["model_args"]).eval()
    direct.load_state_dict(state, strict=True)
    # timm's own loader of a local folder (config.json + model.safetensors), strict by default
    folder = write_timm_folder(weights, tmp_path / "timm")
    assert json.loads((folder / "config.json").read_text()) == config
    loaded = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    # and through pretrained_cfg_overlay(file=...)
    overlay = timm.create_model(
        config["architecture"],
        pretrained=True,
        pretrained_cfg_overlay={"file": str(weights), "num_classes": 10},
        num_classes=10,
        **config["model_args"],
    ).eval()
    with torch.no_grad():
        for model in (direct, loaded, overlay):
            torch.testing.assert_close(model(x), expected, rtol=0, atol=1e-6)


def test_export_of_a_local_checkpoint_matches_the_runs_export(finetuned, tmp_path, capsys):
    assert core_main(["export", str(finetuned / "checkpoint-best.pth"), "-o", str(tmp_path)]) == 0
    assert "exported" in capsys.readouterr().out
    ours, runs = (
        load_file(tmp_path / "model.safetensors"),
        load_file(finetuned / "model.safetensors"),
    )
    assert ours.keys() == runs.keys()
    assert all(torch.equal(ours[k], runs[k]) for k in ours)
    assert (
        json.loads((tmp_path / "config.json").read_text())["model_args"]
        == (read_config(finetuned / "model.safetensors")["model_args"])
    )


def test_export_refuses_a_file_without_the_run_config(tmp_path):
    bare = tmp_path / "bare.pth"
    torch.save({"model": {"w": torch.zeros(1)}}, bare)
    with pytest.raises(CheckpointError, match="run config"):
        export_checkpoint(bare, tmp_path / "out")
    with pytest.raises(ValueError, match="not a safetensors file"):
        read_metadata(bare)


def test_pretrain_export_is_the_encoder(tmp_path):
    assert run(_pretrain(epochs=1, warmup_epochs=0.5), tmp_path).status == "succeeded"
    weights = tmp_path / "model.safetensors"
    config = read_config(weights)
    assert config["num_classes"] == 0 and config["model_args"]["global_pool"] == "token"
    state = load_file(weights)
    assert "norm.weight" in state and not any(
        k.startswith(("decoder_", "mask_token")) for k in state
    )
    encoder = TimmViT(num_classes=0, **config["model_args"]).eval()
    encoder.load_state_dict(state, strict=True)
    # the same encoder as livt's fine-tuning initialisation from the MAE checkpoint
    livt = create_model(
        "vit_nano_patch4", img_size=16, in_chans=1, global_pool=False, **TINY_VIT
    ).eval()
    load_encoder_into_classifier(livt, load_checkpoint(tmp_path / "checkpoint-last.pth"))
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(encoder.forward_features(x), livt.forward_features(x))


def test_tensorboard_event_file_holds_steps_epochs_and_hparams(finetuned):
    files = sorted(finetuned.glob(f"{TENSORBOARD_PREFIX}*"))
    assert len(files) == 1 and files[0].name.endswith(".attempt1")
    acc = EventAccumulator(str(finetuned), size_guidance={"scalars": 0})
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/lr", "epoch/train_loss"} <= tags
    assert {"val/overall", "val/many", "val/medium", "val/few"} <= tags
    assert [e.step for e in acc.Scalars("val/overall")] == [0, 1]
    history = json.loads((finetuned / "history.json").read_text())
    assert [round(e.value, 4) for e in acc.Scalars("val/few")] == [
        round(h["val_few"], 4) for h in history
    ]
    assert [e.step for e in acc.Scalars("train/loss")] == list(range(1, 7))  # 2 epochs × 3
    result = json.loads((finetuned / "results.json").read_text())
    assert acc.Scalars("final/overall")[0].value == pytest.approx(result["overall"])
    plugins = acc.PluginTagToContent("hparams")
    assert "_hparams_/experiment" in plugins and "_hparams_/session_start_info" in plugins


def test_step_buckets_bound_the_points_of_any_run_length():
    for total in (1, 7, 2000, 2001, 123_457):
        buckets = {step_bucket(s, total) for s in range(1, total + 1)}
        assert len(buckets) == min(total, 2000)
        assert min(buckets) == 0 and max(buckets) == min(total, 2000) - 1
    assert step_bucket(10**9, 100) == 99  # a step beyond the plan stays in the last span
    assert step_bucket(2001, 4000) == step_bucket(2002, 4000) == 1000
