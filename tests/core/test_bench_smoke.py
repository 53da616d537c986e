"""The benchmark scripts still run end to end (``--smoke``: bundled data, tiny models, few steps).

No timing is asserted: only that each script writes its Markdown and JSON results with the
expected columns and finite numbers.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from livt_core.config import resolve_config

REPO = Path(__file__).resolve().parents[2]


def _run(script: str, *args: str) -> None:
    # the scripts import the project and tests/folders.py from the repository root
    path = os.pathsep.join(filter(None, (str(REPO), os.environ.get("PYTHONPATH"))))
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / script), "--smoke", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": path},
    )
    assert proc.returncode == 0, proc.stderr[-4000:]


def test_speed_smoke(tmp_path: Path) -> None:
    _run("speed.py", "--device", "cpu", "--out-dir", str(tmp_path))
    report = json.loads((tmp_path / "speed-cpu.json").read_text())
    assert report["device"]["type"] == "cpu"
    assert report["device"]["torch_threads"] >= 1
    assert report["gemm_peak"]["gflop_s"] > 0
    assert {r["stage"] for r in report["rows"]} == {"mgp", "bft"}
    for row in report["rows"]:
        for key in ("images_per_s", "gflop_per_step", "achieved_gflop_s", "fraction_of_peak"):
            assert math.isfinite(row[key]) and row[key] > 0, (row["model"], key)
    header = next(
        line for line in (tmp_path / "speed-cpu.md").read_text().splitlines() if "images/s" in line
    )
    for column in ("stage", "model", "batch", "images/s", "GFLOP/step", "GFLOP/s", "% of peak"):
        assert column in header


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_speed_asks_for_cpu_when_cuda_is_missing(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "speed.py"), "--smoke", "--device", "cuda"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert (
        "--device: cuda asked for but CUDA is not available; run with --device cpu" in proc.stderr
    )
    assert "Traceback" not in proc.stderr


def test_quality_smoke(tmp_path: Path) -> None:
    _run("quality.py", "--out-dir", str(tmp_path), "--work-dir", str(tmp_path / "runs"))
    report = json.loads((tmp_path / "quality.json").read_text())
    cells = {(r["loss"], r["init"]) for r in report["rows"]}
    assert cells == {
        (loss, init) for loss in ("ce", "bal_ce", "bal_bce") for init in ("scratch", "mgp")
    }
    for row in report["rows"]:
        for metric in ("many", "medium", "few", "overall"):
            assert 0.0 <= row[metric]["mean"] <= 100.0
    assert {c["init"] for c in report["bar"]} == {"scratch", "mgp"}
    table = (tmp_path / "quality.md").read_text()
    assert "| loss | init | many | medium | few | overall |" in table
    assert report["budget"]["epochs"] == 1

    # a second invocation skips every finished run and rewrites the same table
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").glob("*/results.json")}
    _run("quality.py", "--out-dir", str(tmp_path), "--work-dir", str(tmp_path / "runs"))
    after = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").glob("*/results.json")}
    assert before == after and len(before) == 7
    assert json.loads((tmp_path / "quality.json").read_text())["rows"] == report["rows"]


def _load_quality():
    spec = importlib.util.spec_from_file_location("bench_quality", REPO / "bench" / "quality.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_quality_matches_run_directories_with_defaults_filled_in() -> None:
    quality = _load_quality()
    config = resolve_config("finetune", "fashion-mnist-lt", {"loss": "ce"})
    on_disk = config.model_dump(mode="json")
    assert quality.same_config(config, on_disk)
    # a run written before a setting existed still matches while the setting keeps its default
    older = {k: v for k, v in on_disk.items() if k != "crop_scale"}
    assert not quality.same_config(config, older)  # the preset changes crop_scale
    default_crop = resolve_config(
        "finetune", "fashion-mnist-lt", {"loss": "ce", "crop_scale": [0.08, 1.0]}
    )
    assert quality.same_config(default_crop, older)
    assert not quality.same_config(config, {**on_disk, "epochs": on_disk["epochs"] + 1})
    assert not quality.same_config(config, {"bogus": 1})


def test_quality_rejects_a_dependency_on_a_missing_run(tmp_path: Path) -> None:
    quality = _load_quality()
    job = quality.Job("finetune", {}, tmp_path, after="mgp-seed9")
    with pytest.raises(ValueError, match="mgp-seed9"):
        quality.run_all({"bft": job}, 2, 1)


@pytest.mark.slow
def test_folder_speed_smoke(tmp_path: Path) -> None:
    _run("folder_speed.py", "--out-dir", str(tmp_path))
    report = json.loads((tmp_path / "folder-speed-cpu-32.json").read_text())
    assert {(r["stage"], r["folder"]) for r in report["rows"]} == {
        ("mgp", "png-32"),
        ("bft", "png-32"),
    }
    for row in report["rows"]:
        for key in ("in_memory_images_per_s", "folder_images_per_s", "ratio"):
            assert math.isfinite(row[key]) and row[key] > 0, (row["stage"], key)
    assert "ratio" in (tmp_path / "folder-speed-cpu-32.md").read_text()
