"""The API process never imports torch, timm or torchvision: not at import, not while it
validates jobs (each test runs a fresh interpreter, since the test process itself has torch)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

HEAVY = ("torch", "timm", "torchvision")


def _run(code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {"LIVT_DATA_DIR": str(tmp_path / "data"), "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**env, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )


def test_importing_the_api_loads_no_torch(tmp_path):
    out = _run("import api.main, sys; assert 'torch' not in sys.modules", tmp_path)
    assert out.returncode == 0, out.stderr


def test_validating_and_submitting_jobs_loads_no_torch(tmp_path):
    code = f"""
    import sys
    from fastapi.testclient import TestClient
    from api.deps import get_enqueuer
    from api.main import create_app
    from api.services.users import create_token, get_or_create_user
    from livt_service.db import session_scope, upgrade_database
    from livt_service.settings import get_settings

    settings = get_settings()
    settings.data_dir.mkdir(parents=True)
    upgrade_database(settings.database_url)
    with session_scope() as session:
        token = create_token(session, get_or_create_user(session, "alice"))
    app = create_app(settings)
    app.dependency_overrides[get_enqueuer] = lambda: lambda job_id, queue: None
    headers = {{"Authorization": f"Bearer {{token}}"}}
    with TestClient(app) as client:
        assert client.get("/presets", headers=headers).status_code == 200
        spec = {{"kind": "finetune", "preset": "fashion-mnist-lt", "epochs": 1}}
        assert client.post("/jobs", json=spec, headers=headers).status_code == 201
        bad = {{**spec, "loss": "ce", "tau": 2.0}}
        assert client.post("/jobs", json=bad, headers=headers).status_code == 422
        assert client.get("/jobs", headers=headers).status_code == 200
    loaded = [m for m in {HEAVY!r} if m in sys.modules]
    assert not loaded, loaded
    """
    out = _run(code, tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]


@pytest.mark.slow
def test_served_api_stays_torch_free(tmp_path):
    """``bench/api_footprint.py`` on this tree: uvicorn serves /presets and /jobs, and the
    process still holds none of the heavy modules."""
    import json

    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, str(root / "bench" / "api_footprint.py"), "--repeats", "1"]
        + ["--label", "test", "--out-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads((tmp_path / "api_footprint-test.json").read_text())
    assert summary["heavy_modules"] == "none"
