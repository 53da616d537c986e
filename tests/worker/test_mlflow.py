"""MLflow tracking of finished jobs against a real ``mlflow server`` (SQLite back end) started
here, and a tracking server that is down: the job's end is never affected."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from livt.client import LivtClient
from livt_service.state import ClaimedJob, Finish
from tests.live_server import TINY_FINETUNE, LiveServer
from worker.mlflow_tracking import MlflowTracker, experiment_name

mlflow = pytest.importorskip(
    "mlflow", reason="mlflow is not installed: pip install 'livt[mlflow]' to test the tracking"
)

#: Ports of the tracking server started here, and of one that nothing listens on.
MLFLOW_PORT = int(os.environ.get("LIVT_TEST_MLFLOW_PORT", "18431"))
DOWN_PORT = int(os.environ.get("LIVT_TEST_MLFLOW_DOWN_PORT", "18432"))


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("mlflow")
    exe = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or "mlflow"
    log = (root / "server.log").open("wb")
    proc = subprocess.Popen(
        [
            exe,
            "server",
            "--backend-store-uri",
            f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination",
            str(root / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(MLFLOW_PORT),
            "--workers",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{MLFLOW_PORT}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((root / "server.log").read_text()[-3000:])
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)
        log.close()


@pytest.mark.slow
def test_a_finished_job_is_an_mlflow_run_with_params_metrics_and_the_model(
    mlflow_server: str, tmp_path: Path
) -> None:
    from mlflow.tracking import MlflowClient

    env = {"LIVT_MLFLOW_TRACKING_URI": mlflow_server}
    with LiveServer.start(tmp_path / "livt", env=env) as server:
        with LivtClient(server.url, server.create_token("fay")) as client:
            job = client.submit({**TINY_FINETUNE, "name": "mlflow-tiny"})
            done = client.wait(job.id, poll=0.5, timeout=300)
            assert done.status == "succeeded"
            deadline = time.monotonic() + 60  # the worker logs right after recording the end
            while not any("logged to MLflow" in line.message for line in _lines(client, job.id)):
                assert time.monotonic() < deadline, [x.message for x in _lines(client, job.id)]
                time.sleep(0.5)
            exported = client.download_artifact(job.id, "model.safetensors", tmp_path)

    tracking = MlflowClient(tracking_uri=mlflow_server)
    experiment = tracking.get_experiment_by_name("livt/fashion-mnist-lt")
    assert experiment is not None
    [run] = tracking.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`livt.job_id` = '{job.id}'"
    )
    assert run.info.status == "FINISHED"
    assert run.data.tags["livt.status"] == "succeeded" and run.data.tags["livt.kind"] == "finetune"
    assert run.data.params["epochs"] == "2" and run.data.params["loss"] == "bal_bce"
    assert run.data.params["data.dataset"] == "fashion-mnist-lt"
    history = tracking.get_metric_history(run.info.run_id, "val_overall")
    assert sorted(m.step for m in history) == [0, 1]
    assert run.data.metrics["final/overall"] == pytest.approx(done.result.overall)
    assert tracking.get_metric_history(run.info.run_id, "step/loss")
    names = {a.path for a in tracking.list_artifacts(run.info.run_id, "model")}
    assert names == {"model/model.safetensors", "model/config.json"}
    local = mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id,
        artifact_path="model/model.safetensors",
        dst_path=str(tmp_path / "dl"),
        tracking_uri=mlflow_server,
    )
    assert Path(local).read_bytes() == exported.read_bytes()


def _lines(client: LivtClient, job_id: str):
    return client.logs(job_id, 0, limit=5000).lines


def test_an_unreachable_tracking_server_is_logged_and_never_raises(tmp_path: Path) -> None:
    job = ClaimedJob(
        id="j_down",
        kind="finetune",
        attempt=1,
        config={"data": {"dataset": "fashion-mnist-lt"}, "epochs": 1},
        gpus=1,
        queue="default",
        artifact_dir=str(tmp_path),
        worker_id="w",
    )
    lines: list[tuple[str, str]] = []
    tracker = MlflowTracker(f"http://127.0.0.1:{DOWN_PORT}", attempts=2, backoff=0.1)
    started = time.monotonic()
    run_id = tracker.log_job(
        job,
        Finish("succeeded", result={"overall": 50.0}),
        {0: {"train_loss": 1.0}},
        {},
        lambda message, level: lines.append((message, level)),
    )
    assert run_id is None
    assert time.monotonic() - started < 60
    [(message, level)] = lines
    assert level == "WARNING" and "after 2 tries" in message and "unaffected" in message


def test_experiment_per_data_set() -> None:
    assert experiment_name({"data": {"dataset": "cifar100-lt"}}) == "livt/cifar100-lt"
    assert (
        experiment_name({"data": {"dataset": "imagefolder", "root": "/data/birds"}})
        == "livt/imagefolder:birds"
    )
