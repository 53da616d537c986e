"""The ``livt`` client commands (submit, jobs, show, logs, cancel, retry, wait, results) against
a real ``livt serve``, run in-process through ``livt.cli.main`` with captured output."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from livt.cli import main
from tests.live_server import TINY_FINETUNE, LiveServer, free_port, server_env

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with LiveServer.start(tmp_path_factory.mktemp("livt-cli")) as live:
        yield live


@pytest.fixture
def env(server: LiveServer, monkeypatch: pytest.MonkeyPatch) -> LiveServer:
    monkeypatch.setenv("LIVT_URL", server.url)
    monkeypatch.setenv("LIVT_TOKEN", server.create_token("carol"))
    return server


@pytest.fixture(scope="module")
def spec_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("specs") / "tiny.yaml"
    path.write_text(yaml.safe_dump({**TINY_FINETUNE, "name": "cli-tiny"}))
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def submitted_id(out: str) -> str:
    match = re.search(r"submitted (j_\S+)", out)
    assert match, out
    return match.group(1)


@pytest.fixture(scope="module")
def finished(server: LiveServer, spec_file: Path) -> str:
    """Submits the tiny spec with ``livt submit --wait`` in a subprocess; returns the job id."""
    env = {**server_env(server.data_dir), "LIVT_URL": server.url}
    env["LIVT_TOKEN"] = server.create_token("carol")
    done = subprocess.run(
        [sys.executable, "-m", "livt.cli", "submit", str(spec_file), "--wait", "--poll", "0.5"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert "succeeded" in done.stdout
    assert re.search(r"^overall\s+10\s+\d+\.\d$", done.stdout, re.M), done.stdout
    return submitted_id(done.stdout)


def test_jobs_lists_the_job(env, finished: str, capsys) -> None:
    code, out, _ = run(capsys, "jobs", "--status", "succeeded")
    assert code == 0
    header, *rows = out.strip().splitlines()
    assert header.split()[:4] == ["ID", "KIND", "STATUS", "PROGRESS"]
    row = next(r for r in rows if r.startswith(finished))
    assert "finetune" in row and "succeeded" in row and "cli-tiny" in row


def test_jobs_json(env, finished: str, capsys) -> None:
    code, out, _ = run(capsys, "jobs", "--json", "--limit", "1")
    assert code == 0
    page = json.loads(out)
    assert len(page["items"]) == 1 and "next_cursor" in page


def test_show_prints_fields_and_artifacts(env, finished: str, capsys) -> None:
    code, out, _ = run(capsys, "show", finished)
    assert code == 0
    assert re.search(rf"^id\s+{finished}$", out, re.M)
    assert re.search(r"^status\s+succeeded$", out, re.M)
    assert "checkpoint-best.pth" in out
    assert re.search(r"^result\s+overall \d", out, re.M)


def test_show_config(env, finished: str, capsys) -> None:
    code, out, _ = run(capsys, "show", finished, "--config")
    assert code == 0
    config = json.loads(out[out.index("config:\n") + len("config:\n") :])
    assert config["epochs"] == 2 and config["kind"] == "finetune"


def test_results_table(env, finished: str, capsys) -> None:
    code, out, _ = run(capsys, "results", finished, "--per-class")
    assert code == 0
    for group in ("many", "medium", "few", "overall"):
        assert re.search(rf"^{group}\s+\d+\s+(\d+\.\d|-)$", out, re.M), out
    assert re.search(r"top-5 \d+\.\d%\s+ECE \d+\.\d%\s+MCE \d+\.\d%\s+PDC", out)
    assert (
        len(re.findall(r"^\s*\d+  .+?\s+(many|medium|few)\s+\d+\s+\d+\s+\d+\.\d$", out, re.M)) == 10
    )


def test_logs_prints_every_line(env, finished: str, capsys) -> None:
    code, out, _ = run(capsys, "logs", finished)
    assert code == 0
    lines = out.strip().splitlines()
    assert lines and all(re.match(r"\d\d:\d\d:\d\d (INFO|WARNING|ERROR|DEBUG)", x) for x in lines)
    code, followed, _ = run(capsys, "logs", finished, "-f")
    assert code == 0 and followed == out
    code, tail, _ = run(capsys, "logs", finished, "--offset", "1")
    assert tail.strip().splitlines() == lines[1:]


def test_wait_on_a_succeeded_job(env, finished: str, capsys) -> None:
    code, out, _ = run(capsys, "wait", finished)
    assert code == 0
    assert f"{finished} succeeded" in out


def test_cancel_retry_and_wait_exit_status(env, spec_file: Path, capsys) -> None:
    code, out, _ = run(capsys, "submit", str(spec_file), "--set", "epochs=40", "--set", "name=long")
    assert code == 0
    job_id = submitted_id(out)
    code, out, _ = run(capsys, "cancel", job_id)
    assert code == 0 and re.fullmatch(rf"{job_id}: (cancelling|cancelled)\n", out)
    code, out, err = run(capsys, "wait", job_id, "--poll", "0.5")
    assert code == 3 and f"{job_id} cancelled" in out
    assert "cancelled" in err  # the progress line
    code, out, _ = run(capsys, "retry", job_id)
    assert code == 0 and out == f"{job_id}: queued (attempt 2)\n"
    code, out, _ = run(capsys, "cancel", job_id)
    assert code == 0
    assert run(capsys, "wait", job_id, "--poll", "0.5")[0] == 3
    code, _, err = run(capsys, "cancel", job_id)
    assert code == 1 and "409" in err


def test_results_of_a_cancelled_job(env, spec_file: Path, capsys) -> None:
    _, out, _ = run(capsys, "submit", str(spec_file), "--set", "epochs=40")
    job_id = submitted_id(out)
    run(capsys, "cancel", job_id)
    run(capsys, "wait", job_id, "--poll", "0.5")
    code, _, err = run(capsys, "results", job_id)
    assert code == 1 and f"job {job_id} has no results" in err


def test_invalid_spec_shows_the_field(env, spec_file: Path, capsys) -> None:
    code, out, err = run(capsys, "submit", str(spec_file), "--set", "epochs=0")
    assert code == 2 and out == ""
    assert "HTTP 422" in err
    assert re.search(r"^  epochs: .*positive", err, re.M), err


def test_spec_file_must_exist(env, tmp_path: Path, capsys) -> None:
    code, _, err = run(capsys, "submit", str(tmp_path / "missing.yaml"))
    assert code == 2 and "missing.yaml does not exist" in err


def test_unknown_job_is_404(env, capsys) -> None:
    code, _, err = run(capsys, "show", "j_doesnotexist")
    assert code == 1 and "404" in err


def test_missing_token_explains_what_to_set(server: LiveServer, monkeypatch, capsys) -> None:
    monkeypatch.setenv("LIVT_URL", server.url)
    monkeypatch.delenv("LIVT_TOKEN", raising=False)
    code, _, err = run(capsys, "jobs")
    assert code == 1
    assert "no API token given (HTTP 401): set LIVT_TOKEN or pass --token" in err


def test_bad_token_flag_wins_over_env(env, capsys) -> None:
    code, _, err = run(capsys, "jobs", "--token", "livt_wrong")
    assert code == 1 and "the server rejected the token (HTTP 401)" in err


def test_connection_refused_names_the_url(monkeypatch, capsys) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("LIVT_TOKEN", "livt_x")
    code, _, err = run(capsys, "jobs", "--url", url)
    assert code == 1 and f"is the server running at {url}?" in err


def test_set_amp_off_stays_the_string_off(env, spec_file: Path, capsys) -> None:
    # epochs=0 makes the server answer 422 listing every bad field: amp must not be one
    code, _, err = run(capsys, "submit", str(spec_file), "--set", "amp=off", "--set", "epochs=0")
    assert code == 2 and re.search(r"^  epochs: ", err, re.M), err
    assert "amp" not in err


def test_spec_file_amp_off_stays_the_string_off(env, tmp_path: Path, capsys) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({**TINY_FINETUNE, "epochs": 0}) + "amp: off\n")
    code, _, err = run(capsys, "submit", str(spec))
    assert code == 2 and re.search(r"^  epochs: ", err, re.M), err
    assert "amp" not in err
