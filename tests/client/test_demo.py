"""``livt demo --exit``: the whole MGP → BFT → evaluate pipeline through a server it starts."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from livt_core.config import resolve_config
from tests.live_server import free_port, server_env

pytestmark = pytest.mark.slow


def test_demo_runs_the_pipeline_and_prints_the_table(tmp_path: Path) -> None:
    port = free_port()
    command = [sys.executable, "-m", "livt.cli", "demo", "--exit", "--port", str(port)]
    done = subprocess.run(
        [*command, "--epochs-scale", "0.02", "--timeout", "600"],
        env=server_env(tmp_path / "data"),
        capture_output=True,
        text=True,
        timeout=900,
    )
    output = done.stdout
    assert done.returncode == 0, f"{output}\n{done.stderr}"
    pre, fine = (
        max(1, round(resolve_config(kind, "fashion-mnist-lt").epochs * 0.02))
        for kind in ("pretrain", "finetune")
    )
    assert (
        f"submitting the pipeline on fashion-mnist-lt: pretrain {pre}, finetune {fine}, evaluate"
        in output
    )
    for stage in ("MGP pretraining", "BFT fine-tuning (Bal-BCE)", "evaluation"):
        assert re.search(rf"\[\d/3 {re.escape(stage)}\] j_\w+ succeeded", output), stage
    for group in ("many", "medium", "few", "overall"):
        assert re.search(rf"^{group}\s+\d+\s+\d+\.\d\d$", output, re.MULTILINE), group
    assert re.search(rf"dashboard: http://127\.0\.0\.1:{port}/\?token=livt_\S+", output)
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
