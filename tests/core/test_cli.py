"""``python -m livt_core train ...``: the end-to-end pipeline, exit codes and the event stream."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from livt_core.cli import EXIT_CODES, main
from livt_core.engine import failure_reason
from livt_core.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    NonFiniteLossError,
    StopRequested,
)
from livt_core.events import read_events

TINY = [
    "--set",
    "data.num_workers=0",
    "--set",
    "data.img_size=16",
    "--set",
    "batch_size=16",
    "--set",
    "max_steps_per_epoch=2",
    "--set",
    "epochs=2",
    "--set",
    "warmup_epochs=1",
    "--set",
    "model_kwargs={depth: 1, embed_dim: 32, num_heads: 2}",
]
EVENT_FIELDS = {
    "start": {"kind", "epochs", "start_epoch", "steps_per_epoch", "world_size"},
    "step": {
        "epoch",
        "epochs",
        "step",
        "steps",
        "global_step",
        "loss",
        "lr",
        "images_per_sec",
        "eta_seconds",
    },
    "epoch": {"epoch", "metrics"},
    "checkpoint": {"name", "path", "epoch"},
    "result": {"result"},
    "error": {"reason", "message"},
    "end": {"status"},
}


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(name, None)
    cmd = [sys.executable, "-m", "livt_core", "train", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _events(path: Path) -> list[dict]:
    lines = path.read_text().splitlines()
    events = [json.loads(line) for line in lines]  # every line is strict JSON
    assert events == read_events(path)[0]
    for event in events:
        assert isinstance(event["time"], float)
        assert EVENT_FIELDS[event["type"]] <= event.keys(), event
    assert events[0]["type"] == "start"
    assert events[-1]["type"] == "end"
    return events


@pytest.mark.slow
def test_pretrain_finetune_evaluate_on_the_bundled_fashion_mnist_lt(tmp_path):
    pre, ft, ev = tmp_path / "pre", tmp_path / "ft", tmp_path / "ev"
    decoder = [
        "--set",
        "model_kwargs.decoder_embed_dim=32",
        "--set",
        "model_kwargs.decoder_depth=1",
    ]
    proc = _cli(
        "pretrain",
        "--preset",
        "fashion-mnist-lt",
        *TINY,
        *decoder,
        "--output-dir",
        str(pre),
        "--events",
        str(pre / "events.jsonl"),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "results.json" in proc.stdout
    events = _events(pre / "events.jsonl")
    assert events[-1]["status"] == "succeeded"
    assert [e["epoch"] for e in events if e["type"] == "epoch"] == [0, 1]

    proc = _cli(
        "finetune",
        "--preset",
        "fashion-mnist-lt",
        *TINY,
        "--set",
        f"init={pre / 'checkpoint-last.pth'}",
        "--output-dir",
        str(ft),
        "--events",
        str(ft / "events.jsonl"),
        "--no-progress",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for column in ("many", "medium", "few", "overall", "top5", "ECE"):
        assert column in proc.stdout
    assert f"results: {ft}/results.json" in proc.stdout
    results = json.loads((ft / "results.json").read_text())
    for key in (
        "overall",
        "many",
        "medium",
        "few",
        "top5",
        "ece",
        "mce",
        "pdc",
        "per_class",
        "class_counts",
        "split",
        "selection_split",
        "class_counts_source",
        "best_epoch",
    ):
        assert key in results, key
    assert results["split"] == "test" and results["selection_split"] == "val"
    assert all(results[g] is not None for g in ("many", "medium", "few"))
    events = _events(ft / "events.jsonl")
    epoch_metrics = [e["metrics"] for e in events if e["type"] == "epoch"]
    assert len(epoch_metrics) == 2 and all("val_few" in m for m in epoch_metrics)
    assert {e["name"] for e in events if e["type"] == "checkpoint"} == {"last", "best"}
    assert events[-2]["type"] == "result"
    assert "initialised from" in proc.stderr

    proc = _cli(
        "evaluate",
        "--preset",
        "fashion-mnist-lt",
        "--set",
        "data.num_workers=0",
        "--set",
        "data.img_size=16",
        "--set",
        "model_kwargs={depth: 1, embed_dim: 32, num_heads: 2}",
        "--set",
        f"checkpoint={ft / 'checkpoint-best.pth'}",
        "--output-dir",
        str(ev),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    evaluated = json.loads((ev / "results.json").read_text())
    assert evaluated["split"] == "test"
    assert evaluated["overall"] == pytest.approx(results["overall"])

    # a stop file that already exists cancels the resumed run at its first step
    last = pre / "checkpoint-last.pth"
    before = last.read_bytes()
    stop = tmp_path / "STOP"
    stop.touch()
    args = ["train", "pretrain", "--preset", "fashion-mnist-lt", *TINY, *decoder]
    args += ["--set", "epochs=3", "--output-dir", str(pre), "--events", str(pre / "events.jsonl")]
    assert main([*args, "--stop-file", str(stop), "--no-progress"]) == 3
    assert last.read_bytes() == before
    events = _events(pre / "events.jsonl")  # appended to the first run's stream
    assert [e["status"] for e in events if e["type"] == "end"] == ["succeeded", "cancelled"]
    start = max(i for i, e in enumerate(events) if e["type"] == "start")
    assert events[start]["start_epoch"] == 2
    # it repeats the events of the epochs it continues after, then stops before its first step
    after = [(e["type"], e.get("epoch")) for e in events[start + 1 :]]
    assert after == [("epoch", 0), ("epoch", 1), ("end", None)]


def test_invalid_config_exits_2_naming_each_field(tmp_path, capsys):
    events = tmp_path / "events.jsonl"
    code = main(
        [
            "train",
            "finetune",
            "--set",
            "loss=focal",
            "--set",
            "epochs=0",
            "--events",
            str(events),
            "--output-dir",
            str(tmp_path / "run"),
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "loss: unknown loss 'focal'" in err and "bal_bce" in err
    assert "epochs:" in err
    assert [e["type"] for e in read_events(events)[0]] == ["error", "end"]
    assert not (tmp_path / "run").exists()


def test_unknown_preset_exits_2(capsys):
    assert main(["train", "pretrain", "--preset", "mnist"]) == 2
    assert "preset" in capsys.readouterr().err


def test_print_config_merges_preset_file_and_overrides(tmp_path, capsys):
    config_file = tmp_path / "run.yaml"
    config_file.write_text("epochs: 7\ndata:\n  imbalance_factor: 10\n")
    code = main(
        [
            "train",
            "finetune",
            "--preset",
            "fashion-mnist-lt",
            "--config",
            str(config_file),
            "--set",
            "data.imbalance_factor=50",
            "--set",
            "betas=[0.9, 0.95]",
            "--print-config",
        ]
    )
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["kind"] == "finetune" and printed["epochs"] == 7
    assert printed["data"]["imbalance_factor"] == 50 and printed["data"]["img_size"] == 28
    assert printed["betas"] == [0.9, 0.95]


def test_data_error_exits_4(tmp_path, capsys):
    code = main(
        [
            "train",
            "pretrain",
            "--set",
            f"data.root={tmp_path / 'absent'}",
            "--output-dir",
            str(tmp_path / "run"),
            "--no-progress",
        ]
    )
    assert code == 4
    assert "invalid_data" in capsys.readouterr().err


def test_non_finite_loss_exits_5(tmp_path, capsys):
    events = tmp_path / "events.jsonl"
    code = main(
        [
            "train",
            "pretrain",
            "--preset",
            "fashion-mnist-lt",
            *TINY,
            "--set",
            "model_kwargs.decoder_depth=1",
            "--set",
            "lr=1e30",
            "--set",
            "warmup_epochs=0",
            "--set",
            "max_steps_per_epoch=4",
            "--output-dir",
            str(tmp_path / "run"),
            "--events",
            str(events),
            "--no-progress",
        ]
    )
    assert code == 5
    assert "non_finite_loss" in capsys.readouterr().err
    last_two = read_events(events)[0][-2:]
    assert last_two[0]["type"] == "error" and last_two[0]["reason"] == "non_finite_loss"
    assert last_two[1] == {**last_two[1], "type": "end", "status": "failed"}


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (torch.OutOfMemoryError("CUDA out of memory"), 6),
        (NonFiniteLossError(float("nan"), 0, 3), 5),
        (CheckpointError("checkpoint x does not exist"), 4),
        (DataError("no images"), 4),
        (ConfigError("loss", "unknown"), 2),
        (StopRequested("stop"), 3),
        (ValueError("bug"), 1),
    ],
)
def test_exit_status_of_each_failure_class(error, code):
    assert EXIT_CODES.get(failure_reason(error), 1) == code
