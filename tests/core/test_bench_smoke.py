"""The benchmark scripts still run end to end (``--smoke``: bundled data, tiny models, few steps).

No timing is asserted: only that each script writes its Markdown and JSON results with the
expected columns and finite numbers.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _run(script: str, *args: str) -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / script), "--smoke", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
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
