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


def _run(script: str, *args: str, timeout: float = 300) -> None:
    # the scripts import the project and tests/folders.py from the repository root
    path = os.pathsep.join(filter(None, (str(REPO), os.environ.get("PYTHONPATH"))))
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / script), "--smoke", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": path},
    )
    assert proc.returncode == 0, proc.stderr[-4000:]


def test_speed_smoke(tmp_path: Path) -> None:
    _run("speed.py", "--device", "cpu", "--out-dir", str(tmp_path), "--compile", "auto,off")
    report = json.loads((tmp_path / "speed-cpu.json").read_text())
    assert report["device"]["type"] == "cpu"
    assert report["device"]["isa"]["torch_capability"]  # e.g. AVX512 / AVX2 / DEFAULT
    assert report["command"].startswith("python bench/speed.py --smoke")
    assert all(v > 0 for v in report["gemm_peak"]["gflop_s"].values())
    assert {r["stage"] for r in report["rows"]} == {"mgp", "bft"}
    for row in report["rows"]:
        assert set(row["variants"]) == {"engine[compile=auto]", "engine[compile=off]", "timm"}
        assert row["threads"] == 1  # the fashion-mnist-lt preset's threads
        for key in ("images_per_s", "gflop_per_step", "achieved_gflop_s", "fraction_of_peak"):
            assert math.isfinite(row[key]) and row[key] > 0, (row["model"], key)
        for name, variant in row["variants"].items():
            for key in ("images_per_s", "speedup_vs_timm", "cpu_speedup_vs_timm",
                        "fraction_of_peak_cpu"):  # fmt: skip
                assert math.isfinite(variant[key]) and variant[key] > 0, (name, key)
        assert row["variants"]["timm"]["speedup_vs_timm"] == 1.0
    assert {r["stage"] for r in report["loader"]} == {"mgp", "bft"}
    assert all(r["current_images_per_s"] > 0 for r in report["loader"])
    lines = (tmp_path / "speed-cpu.md").read_text().splitlines()
    header = next(line for line in lines if "images/s" in line and "variant" in line)
    for column in ("stage", "model", "batch", "threads", "images/s", "GFLOP/step", "GFLOP/s"):
        assert column in header
    for column in ("% of peak", "× timm (wall)", "× timm (CPU)"):
        assert column in header
    assert any("current img/s" in line for line in lines)


def test_timm_mae_baseline_has_the_engines_geometry_and_flops() -> None:
    """The baseline is a fair one: same parameter count and FLOPs as the project's MAE."""
    speed = _load_bench("speed.py", "bench_speed")
    model = speed.create_model("mae_vit_nano_patch4", img_size=28, in_chans=1, norm_pix_loss=True)
    geo = speed.geometry(model)
    timm_mae = speed.TimmMAE(img_size=28, in_chans=1, mask_ratio=0.75, **geo)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(timm_mae) == count(model)
    x = torch.randn(2, 1, 28, 28)
    ours = speed.count_flops(lambda: model(x)[0], model)
    theirs = speed.count_flops(lambda: timm_mae(x), timm_mae)
    assert abs(ours - theirs) / ours < 0.01


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


@pytest.mark.slow
def test_quality_smoke_runs_both_sweeps_and_the_posthoc_curve_through_the_service(
    tmp_path: Path,
) -> None:
    import socket

    with socket.socket() as probe:  # a free port for the service the benchmark starts
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    args = ("--out-dir", str(tmp_path), "--work-dir", str(tmp_path / "w"), "--poll", "1")
    _run("quality.py", *args, "--port", str(port), timeout=600)
    report = json.loads((tmp_path / "quality.json").read_text())
    ablation = report["ablation"]
    assert [r["params"] for r in ablation["table"]] == [
        {"init": i, "loss": loss}
        for i in ("scratch", "pretrained")
        for loss in ("ce", "bal_ce", "bal_bce")
    ]
    assert ablation["jobs"] == 1 + 6  # one MGP run, six fine-tunes
    assert all(r["n"] == 1 and 0 <= r["overall"]["mean"] <= 100 for r in ablation["table"])
    assert {b["init"] for b in report["bar"]} == {"scratch", "pretrained"}
    taus = [r["params"] for r in report["tau"]["table"]]
    assert taus == [{"loss": lo, "tau": t} for lo in ("bal_ce", "bal_bce") for t in (0.5, 1.5)]
    # the post-hoc curve of the CE model from the MGP run the τ sweep starts from
    assert list(report["posthoc"]) == ["ce"]
    curve = [p for p in report["posthoc"]["ce"] if "tau" in p]
    assert [p["tau"] for p in curve] == [i / 4 for i in range(9)]
    assert all(0 <= p["overall"]["mean"] <= 100 for p in curve)
    markdown = (tmp_path / "quality.md").read_text()
    # the tables are the sweeps' own Markdown exports
    assert ablation["table_md"].strip() in markdown
    assert report["tau"]["table_md"].strip() in markdown
    assert "| init | loss | n | Overall |" in markdown

    # a second invocation finds the finished sweeps and evaluations instead of training again
    _run("quality.py", *args, "--port", str(port), timeout=300)
    again = json.loads((tmp_path / "quality.json").read_text())
    assert again["ablation"]["id"] == ablation["id"]
    assert again["tau"]["id"] == report["tau"]["id"]
    assert again["posthoc_jobs"] == report["posthoc_jobs"]


def _load_bench(script: str, name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "bench" / script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _load_runs():
    return _load_bench("runs.py", "bench_runs")


def test_runs_match_run_directories_with_defaults_filled_in() -> None:
    runs = _load_runs()
    config = resolve_config("finetune", "fashion-mnist-lt", {"loss": "ce"})
    on_disk = config.model_dump(mode="json")
    assert runs.same_config(config, on_disk)
    # a run written before a setting existed still matches while the setting keeps its default
    older = {k: v for k, v in on_disk.items() if k != "crop_scale"}
    assert not runs.same_config(config, older)  # the preset changes crop_scale
    default_crop = resolve_config(
        "finetune", "fashion-mnist-lt", {"loss": "ce", "crop_scale": [0.08, 1.0]}
    )
    assert runs.same_config(default_crop, older)
    assert not runs.same_config(config, {**on_disk, "epochs": on_disk["epochs"] + 1})
    assert not runs.same_config(config, {"bogus": 1})
    # the notes only explain the settings: reworded notes do not orphan a run
    assert runs.same_config(config, {**on_disk, "recipe_notes": ["an older wording"]})
    # a stored loader-worker count matches the same count, not auto (which may differ)
    fixed = resolve_config(
        "finetune", "fashion-mnist-lt", {"loss": "ce", "data": {"num_workers": 1}}
    )
    assert on_disk["data"]["num_workers"] is None and not runs.same_config(
        config, fixed.model_dump(mode="json")
    )
    assert runs.same_config(fixed, fixed.model_dump(mode="json"))


def test_runs_reject_a_dependency_on_a_missing_run(tmp_path: Path) -> None:
    runs = _load_runs()
    job = runs.Job("finetune", {}, tmp_path, after="mgp-seed9")
    with pytest.raises(ValueError, match="mgp-seed9"):
        runs.run_all({"bft": job}, 2, 1)


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


@pytest.mark.slow
def test_service_smoke(tmp_path: Path) -> None:
    # the real `livt serve` (API + worker), the baseline app and the load generator, for real
    _run("service.py", "--out-dir", str(tmp_path), "--port", "18150")
    report = json.loads((tmp_path / "service.json").read_text())
    assert report["command"].startswith("python bench/service.py --smoke")
    (mode,) = report["modes"]
    assert mode["mode"] == "embedded"
    endpoints = {r["endpoint"] for r in mode["rows"]}
    assert endpoints == {
        "GET /jobs/{id}",
        "GET /jobs (first page)",
        "GET /jobs (deep page)",
        "GET /jobs/{id}/logs",
        "GET /healthz",
    }
    for row in mode["rows"]:
        assert row["errors"] == 0 and row["requests"] > 0, row
        assert math.isfinite(row["rps"]) and row["p99_ms"] >= row["p50_ms"] > 0, row
        if row["endpoint"] in ("GET /jobs/{id}", "GET /healthz"):
            assert row["baseline"]["requests"] > 0 and row["rps_ratio"] > 0, row
    assert mode["warm_start"] is True  # the default
    submits = mode["submits"]
    assert 0 < submits["running_median_s"] <= submits["first_progress_median_s"]
    assert set(mode["summary"]) == {
        "get_job_min_rps_ratio",
        "get_job_max_p99_ratio",
        "deep_over_first_p50",
    }
    assert "GET /jobs/{id}" in (tmp_path / "service.md").read_text()


@pytest.mark.slow
def test_first_step_smoke(tmp_path: Path) -> None:
    # two real `livt serve`, warm start on and off, one timed job each
    _run("first_step.py", "--out-dir", str(tmp_path), "--port", "18170")
    report = json.loads((tmp_path / "first_step.json").read_text())
    assert report["command"].startswith("python bench/first_step.py --smoke")
    assert report["launcher_ready_s"] > 0
    for how in ("warm", "cold"):
        [row] = report["rows"][how]
        assert row["start"] == how, row
        assert 0 < row["running_s"] <= row["first_progress_s"], row
    assert math.isfinite(report["cold_over_warm"]) and report["cold_over_warm"] > 0
    assert "cold / warm" in (tmp_path / "first_step.md").read_text()


@pytest.mark.slow
def test_owndata_quality_smoke(tmp_path: Path) -> None:
    # tiny generated folder, two steps per stage: the zero-config pipeline, CE, LR and SVC
    _run("owndata_quality.py", "--variants", "rgb32", "--work-dir", str(tmp_path / "runs"),
         "--out-dir", str(tmp_path))  # fmt: skip
    report = json.loads((tmp_path / "owndata_quality-smoke.json").read_text())
    variant = report["variants"]["rgb32"]
    assert set(variant["rows"]) == {"auto", "ce", "lr", "svc"}
    for method, row in variant["rows"].items():
        assert 0 <= row["overall"]["mean"] <= 100, method
    config = variant["recipe"]["finetune"]
    assert config["loss"] == "bal_bce" and config["recipe_notes"][0].startswith("auto recipe")
    assert config["data"]["in_chans"] == 3
    assert all(t is not None for t in variant["targets"]["pipeline_s"])
    assert report["command"].startswith("python bench/owndata_quality.py --smoke")
