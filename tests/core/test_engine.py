"""The recipes through ``livt_core.engine.run`` on tiny models and the bundled Fashion-MNIST-LT."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from livt_core.checkpoint import load_checkpoint, save_checkpoint
from livt_core.config import resolve_config
from livt_core.engine import RunResult, run
from livt_core.errors import CheckpointError, ConfigError, NonFiniteLossError
from livt_core.events import Callback

DATA = {"img_size": 16, "in_chans": 1, "num_workers": 0, "n_max": 200, "val_per_class": 10}
TINY_VIT = {"depth": 1, "embed_dim": 32, "num_heads": 2}
TINY_MAE = {**TINY_VIT, "decoder_embed_dim": 32, "decoder_depth": 1, "decoder_num_heads": 2}


def _finetune(**overrides: Any):
    values = {
        "data": DATA,
        "model": "vit_nano_patch4",
        "model_kwargs": TINY_VIT,
        "epochs": 2,
        "warmup_epochs": 1,
        "batch_size": 16,
        "max_steps_per_epoch": 3,
        "blr": 1e-3,
        **overrides,
    }
    return resolve_config("finetune", None, values)


def _pretrain(**overrides: Any):
    values = {
        "data": DATA,
        "model": "mae_vit_nano_patch4",
        "model_kwargs": TINY_MAE,
        "epochs": 2,
        "warmup_epochs": 1,
        "batch_size": 16,
        "max_steps_per_epoch": 2,
        **overrides,
    }
    return resolve_config("pretrain", None, values)


class Recorder(Callback):
    """Keeps every event; asks to stop once epoch ``stop_after_epoch`` has ended (-1: at
    once)."""

    def __init__(self, stop_after_epoch: int | None = None) -> None:
        self.events: list[tuple[str, Any]] = []
        self.stop_after_epoch = stop_after_epoch

    def on_start(self, info):
        self.events.append(("start", dict(info)))

    def on_step(self, progress):
        self.events.append(("step", dict(progress)))

    def on_epoch_end(self, epoch, metrics):
        self.events.append(("epoch", (epoch, dict(metrics))))

    def on_checkpoint(self, name, path, epoch):
        self.events.append(("checkpoint", (name, epoch)))

    def on_result(self, result):
        self.events.append(("result", dict(result)))

    def on_error(self, reason, message):
        self.events.append(("error", (reason, message)))

    def on_end(self, status):
        self.events.append(("end", status))

    def should_stop(self) -> bool:
        if self.stop_after_epoch == -1:
            return True
        return self.stop_after_epoch is not None and any(
            kind == "epoch" and value[0] >= self.stop_after_epoch for kind, value in self.events
        )

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.events]


def _without_times(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in h.items() if k != "epoch_seconds"} for h in history]


@pytest.mark.slow
def test_interrupted_and_resumed_finetune_ends_identical_to_an_uninterrupted_one(tmp_path):
    # Mixup/CutMix (numpy), RandAugment (random), random erasing and drop path (torch) all draw
    # random numbers: the resumed run must restore every generator and the sampler order.
    config = _finetune(drop_path=0.1, reprob=0.25)
    straight = run(config, tmp_path / "straight", resume=None)

    recorder = Recorder(stop_after_epoch=0)
    first = run(config, tmp_path / "resumed", callbacks=recorder)
    assert first.status == "cancelled"
    assert recorder.kinds()[-1] == "end" and recorder.events[-1][1] == "cancelled"
    assert load_checkpoint(tmp_path / "resumed" / "checkpoint-last.pth")["epoch"] == 0
    second_recorder = Recorder()
    second = run(config, tmp_path / "resumed", callbacks=second_recorder)
    assert second.status == "succeeded"
    kind, start = second_recorder.events[0]
    assert kind == "start"
    assert start == {
        "kind": "finetune",
        "epochs": 2,
        "start_epoch": 1,
        "steps_per_epoch": 3,
        "world_size": 1,
        # no loader process: the step has the whole share
        "threads": start["cpus"],
        "num_workers": 0,
        "cpus": start["cpus"],
    }
    first_step = next(v for k, v in second_recorder.events if k == "step")
    assert (first_step["epoch"], first_step["global_step"]) == (1, 4)

    a = load_checkpoint(tmp_path / "straight" / "checkpoint-last.pth")
    b = load_checkpoint(tmp_path / "resumed" / "checkpoint-last.pth")
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert a["global_step"] == b["global_step"] == 6
    assert _without_times(straight.history) == _without_times(second.history)
    assert len(second.history) == 2
    saved_history = json.loads((tmp_path / "resumed" / "history.json").read_text())
    assert _without_times(saved_history) == _without_times(straight.history)
    assert straight.result["overall"] == second.result["overall"]
    assert straight.result["best_epoch"] == second.result["best_epoch"]


def test_finetune_writes_the_documented_outputs(tmp_path):
    recorder = Recorder()
    result = run(_finetune(epochs=1, warmup_epochs=0.5), tmp_path, callbacks=recorder)
    assert isinstance(result, RunResult) and result.status == "succeeded"
    for name in ("config.json", "history.json", "results.json", "checkpoint-last.pth"):
        assert (tmp_path / name).is_file(), name
    assert set(result.checkpoints) == {"last", "best"}
    results = json.loads((tmp_path / "results.json").read_text())
    for key in ("overall", "many", "medium", "few", "top5", "ece", "per_class"):
        assert key in results
    assert results["split"] == "test" and results["selection_split"] == "val"
    assert results["class_counts_source"].startswith("fashion-mnist-lt train")
    assert results["best_epoch"] == 0
    assert results["num_samples"] == 1000  # the bundled balanced test set

    epoch, metrics = next(v for k, v in recorder.events if k == "epoch")
    for key in ("train_loss", "lr", "val_overall", "val_many", "val_medium", "val_few", "val_top5"):
        assert key in metrics
    steps = [v for k, v in recorder.events if k == "step"]
    assert [s["step"] for s in steps] == [0, 1, 2]
    assert {"images_per_sec", "eta_seconds", "lr", "loss", "global_step"} <= steps[0].keys()
    assert recorder.kinds()[-4:] == ["checkpoint", "checkpoint", "result", "end"]

    ckpt = load_checkpoint(tmp_path / "checkpoint-last.pth")
    assert {
        "model",
        "optimizer",
        "epoch",
        "scaler",
        "args",
        "global_step",
        "rng",
        "best",
        "kind",
        "livt_version",
    } <= ckpt.keys()
    assert ckpt["kind"] == "finetune" and ckpt["args"]["loss"] == "bal_bce"
    assert ckpt["best"]["epoch"] == 0


def test_non_finite_loss_raises_the_typed_error_and_reports_it(tmp_path):
    recorder = Recorder()
    config = _pretrain(lr=1e30, warmup_epochs=0, max_steps_per_epoch=4, epochs=1)
    with pytest.raises(NonFiniteLossError) as info:
        run(config, tmp_path, callbacks=recorder)
    assert info.value.epoch == 0 and info.value.step > 0
    assert recorder.events[-2][0] == "error" and recorder.events[-2][1][0] == "non_finite_loss"
    assert recorder.events[-1] == ("end", "failed")
    assert not (tmp_path / "checkpoint-last.pth").exists()


def test_stop_request_keeps_the_last_checkpoint_intact(tmp_path):
    config = _pretrain(epochs=3)
    first = run(config, tmp_path, callbacks=Recorder(stop_after_epoch=0))
    assert first.status == "cancelled" and first.result == {}
    last = tmp_path / "checkpoint-last.pth"
    before = last.read_bytes()
    stopping = Recorder(stop_after_epoch=-1)
    again = run(config, tmp_path, callbacks=stopping)
    assert again.status == "cancelled"
    assert last.read_bytes() == before
    # the resumed run repeats epoch 0's event, then stops before its first step
    assert stopping.kinds() == ["start", "epoch", "end"]
    assert not (tmp_path / "results.json").exists()


def test_a_resumed_run_first_repeats_the_epoch_events_it_continues_after(tmp_path):
    # the event stream is the one channel of the metrics: a new attempt's stream carries the
    # epochs of the earlier one too, as its history restored them
    config = _pretrain(epochs=3)
    first = Recorder(stop_after_epoch=0)
    assert run(config, tmp_path, callbacks=first).status == "cancelled"
    second = Recorder()
    assert run(config, tmp_path, callbacks=second).status == "succeeded"
    assert second.kinds()[:3] == ["start", "epoch", "step"]
    assert second.events[0][1]["start_epoch"] == 1
    epochs = [value for kind, value in second.events if kind == "epoch"]
    assert [epoch for epoch, _ in epochs] == [0, 1, 2]
    [earlier] = [value for kind, value in first.events if kind == "epoch"]
    assert epochs[0] == earlier
    history = json.loads((tmp_path / "history.json").read_text())
    assert [{"epoch": epoch, **metrics} for epoch, metrics in epochs] == history


def test_pretrain_resume_none_starts_afresh(tmp_path):
    run(_pretrain(epochs=1, warmup_epochs=0.5), tmp_path)
    recorder = Recorder()
    run(_pretrain(epochs=1, warmup_epochs=0.5), tmp_path, callbacks=recorder, resume=None)
    assert recorder.events[0][1]["start_epoch"] == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["final_loss"] > 0


def test_threads_setting_sets_the_torch_thread_count(tmp_path):
    before = torch.get_num_threads()
    wanted = 3 if before != 3 else 2
    try:
        run(_pretrain(epochs=1, warmup_epochs=0.5, threads=wanted), tmp_path / "set")
        assert torch.get_num_threads() == wanted
        torch.set_num_threads(before)
        run(_pretrain(epochs=1, warmup_epochs=0.5), tmp_path / "default")  # threads None
        assert torch.get_num_threads() == before
    finally:
        torch.set_num_threads(before)


def test_resume_from_a_missing_checkpoint_is_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        run(_pretrain(), tmp_path, resume=str(tmp_path / "nope.pth"))


def test_resume_refuses_a_checkpoint_of_another_stage(tmp_path):
    run(_pretrain(epochs=1, warmup_epochs=0.5), tmp_path / "pre")
    with pytest.raises(CheckpointError, match="pretrain run"):
        run(_finetune(), tmp_path / "ft", resume=str(tmp_path / "pre" / "checkpoint-last.pth"))


def test_batch_size_larger_than_the_training_set_names_the_field(tmp_path):
    with pytest.raises(ConfigError) as info:
        run(_pretrain(batch_size=5000), tmp_path)
    assert info.value.field == "batch_size"


def _evaluate(checkpoint: Path | None, **overrides: Any):
    values = {
        "data": DATA,
        "model": "vit_nano_patch4",
        "model_kwargs": TINY_VIT,
        "checkpoint": None if checkpoint is None else str(checkpoint),
        **overrides,
    }
    return resolve_config("evaluate", None, values)


def test_evaluate_reports_the_split_with_train_counts(tmp_path):
    from livt_core.models import create_model

    model = create_model(
        "vit_nano_patch4", img_size=16, in_chans=1, num_classes=10, global_pool=True, **TINY_VIT
    )
    save_checkpoint(tmp_path / "clf.pth", {"model": model.state_dict()})
    recorder = Recorder()
    result = run(_evaluate(tmp_path / "clf.pth", split="val"), tmp_path / "ev", callbacks=recorder)
    assert result.result["split"] == "val"
    assert result.result["num_samples"] == 100
    assert result.result["class_counts"][0] == 200
    assert json.loads((tmp_path / "ev" / "results.json").read_text())["split"] == "val"
    assert recorder.kinds() == ["start", "result", "end"]


def test_evaluate_without_checkpoint_names_the_field(tmp_path):
    with pytest.raises(ConfigError) as info:
        run(_evaluate(None), tmp_path)
    assert info.value.field == "checkpoint"


def test_evaluate_rejects_a_missing_or_mismatched_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        run(_evaluate(tmp_path / "missing.pth"), tmp_path / "a")
    torch.save({"model": {"weights": [1, 2]}}, tmp_path / "junk.pth")
    with pytest.raises(CheckpointError, match="not a state dict"):
        run(_evaluate(tmp_path / "junk.pth"), tmp_path / "b")
    from livt_core.models import create_model

    deeper = create_model("vit_nano_patch4", img_size=16, in_chans=1, depth=2, embed_dim=32)
    save_checkpoint(tmp_path / "deeper.pth", {"model": deeper.state_dict()})
    with pytest.raises(CheckpointError, match="unexpected weights"):
        run(_evaluate(tmp_path / "deeper.pth"), tmp_path / "c")
    mae = create_model("mae_vit_nano_patch4", img_size=16, in_chans=1, **TINY_MAE)
    save_checkpoint(tmp_path / "mae.pth", {"model": mae.state_dict()})
    recorder = Recorder()
    with pytest.raises(CheckpointError, match="MAE"):
        run(_evaluate(tmp_path / "mae.pth"), tmp_path / "d", callbacks=recorder)
    assert recorder.events[0] == ("error", ("invalid_data", recorder.events[0][1][1]))
