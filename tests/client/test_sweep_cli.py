"""``livt sweep`` against a real ``livt serve`` with its worker: a tiny loss × seed sweep runs
to the end, and its table is the mean ± std of the jobs' real results."""

from __future__ import annotations

import csv
import io
import re
import statistics
from collections.abc import Iterator

import pytest
import yaml

from livt.cli import main
from livt.client import LivtClient
from tests.live_server import LiveServer

pytestmark = pytest.mark.slow

BASE = {
    "kind": "finetune",
    "preset": "fashion-mnist-lt",
    "epochs": 1,
    "warmup_epochs": 0,
    "max_steps_per_epoch": 2,
    "model_kwargs": {"depth": 1},
    "data": {"num_workers": 0},
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with LiveServer.start(tmp_path_factory.mktemp("livt-sweep")) as live:
        yield live


@pytest.fixture
def token(server: LiveServer, monkeypatch: pytest.MonkeyPatch) -> str:
    value = server.create_token("dana")
    monkeypatch.setenv("LIVT_URL", server.url)
    monkeypatch.setenv("LIVT_TOKEN", value)
    return value


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_sweep_waits_and_prints_the_table_of_real_results(server, token, tmp_path, capsys):
    spec = tmp_path / "sweep.yaml"
    # one grid point × two seeds keeps it to two tiny jobs (the API tests cover larger grids)
    body = {"name": "cli", "base": BASE, "grid": {"loss": ["bal_bce"]}, "seeds": [0, 1]}
    spec.write_text(yaml.safe_dump(body))
    code, out, _ = run(capsys, "sweep", str(spec), "--wait", "--poll", "0.5", "--timeout", "300")
    assert code == 0, out
    sweep_id = re.search(r"submitted (s_\S+) \(2 jobs\)", out).group(1)
    assert f"{sweep_id} cli: succeeded (2/2 jobs finished)" in out
    assert "| loss | n | Overall | Many | Medium | Few | Top-5 | ECE |" in out

    with LivtClient(server.url, token) as client:
        sweep = client.sweep(sweep_id)
        overall = {
            row["params"]["loss"]: [client.job(c["job"]).result.overall for c in row["cells"]]
            for row in sweep.table
        }
    code, out, _ = run(capsys, "sweep", "show", sweep_id, "--format", "csv")
    assert code == 0
    rows = {r["loss"]: r for r in csv.DictReader(io.StringIO(out))}
    for loss, values in overall.items():
        assert rows[loss]["n"] == "2"
        assert float(rows[loss]["overall_mean"]) == pytest.approx(
            statistics.fmean(values), abs=1e-4
        )
        assert float(rows[loss]["overall_std"]) == pytest.approx(statistics.stdev(values), abs=1e-4)

    code, out, _ = run(capsys, "sweep", "show", sweep_id, "--format", "latex")
    assert code == 0 and out.startswith("\\begin{tabular}")
    code, out, _ = run(capsys, "sweep", "list")
    assert code == 0 and sweep_id in out and "succeeded" in out
    code, _, err = run(capsys, "sweep", "cancel", sweep_id)
    assert code == 1 and "409" in err


def test_sweep_with_a_bad_grid_value_exits_2_naming_it(server, token, tmp_path, capsys):
    spec = tmp_path / "bad.yaml"
    spec.write_text(yaml.safe_dump({"base": BASE, "grid": {"loss": ["bal_bce", "nope"]}}))
    code, _, err = run(capsys, "sweep", str(spec))
    assert code == 2
    assert "grid.loss.1" in err
    code, _, err = run(capsys, "sweep", "show", "s_missing")
    assert code == 1 and "404" in err


def test_tag_adds_and_removes_tags_and_sets_notes(server, token, capsys):
    with LivtClient(server.url, token) as client:
        job = client.submit({**BASE, "name": "to-tag", "epochs": 40})
        client.cancel(job.id)
        code, out, _ = run(capsys, "tag", job.id, "mgp", "fmnist", "--note", "baseline")
        assert code == 0 and out == f"{job.id}: tags mgp, fmnist; notes: baseline\n"
        code, out, _ = run(capsys, "tag", job.id, "mgp", "--remove")
        assert code == 0 and out.startswith(f"{job.id}: tags fmnist;")
        assert client.job(job.id).tags == ["fmnist"]
        client.wait(job.id, poll=0.5, timeout=120)
        client.delete(job.id)
        code, _, err = run(capsys, "tag", job.id, "x")
        assert code == 1 and "404" in err
