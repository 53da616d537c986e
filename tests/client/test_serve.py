"""The embedded mode end to end: ``livt serve`` (API + Celery worker on the SQLite transport, no
Redis) running real jobs, cancellation, retry with resume, and a worker killed mid-job."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.live_server import TINY_FINETUNE, LiveServer
from tests.worker.test_support import (
    LONG_FINETUNE,
    get_job,
    log_messages,
    metric_epochs,
    process_gone,
    resumed_epochs,
    training_pids,
    wait_checkpoint,
    wait_status,
    wait_until,
    worker_of,
)

pytestmark = pytest.mark.slow

TERMINAL = {"succeeded", "failed", "cancelled"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with LiveServer.start(tmp_path_factory.mktemp("livt-embedded")) as live:
        yield live


@pytest.fixture(scope="module")
def http(server: LiveServer) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {server.create_token('worker-tests')}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=30.0) as client:
        yield client


def _submit(http: httpx.Client, spec: dict) -> dict:
    response = http.post("/jobs", json=spec)
    assert response.status_code == 201, response.text
    return response.json()


def test_job_runs_end_to_end_without_redis(server: LiveServer, http: httpx.Client) -> None:
    assert (server.data_dir / "broker.sqlite").is_file()  # the embedded transport, no Redis
    job = _submit(http, {**TINY_FINETUNE, "name": "embedded-e2e"})
    done = wait_status(http, job["id"], TERMINAL, timeout=240)
    assert done["status"] == "succeeded", done["failure"]
    result = done["result"]
    for group in ("many", "medium", "few", "overall"):
        assert group in result
    assert isinstance(result["overall"], float)
    assert done["progress"]["epochs"] == 2
    assert metric_epochs(http, job["id"]) == [0, 1]
    artifacts = {a["name"]: a for a in http.get(f"/jobs/{job['id']}/artifacts").json()["items"]}
    expected = {"checkpoint-last.pth", "checkpoint-best.pth", "config.json", "results.json"}
    assert expected <= set(artifacts)
    assert artifacts["checkpoint-last.pth"]["kind"] == "checkpoint"
    assert artifacts["checkpoint-last.pth"]["size_bytes"] > 0
    messages = log_messages(http, job["id"])
    assert any("attempt 1 started on worker embedded@" in m for m in messages)


def test_cancel_stops_the_run_and_retry_resumes(server: LiveServer, http: httpx.Client) -> None:
    job = _submit(http, {**LONG_FINETUNE, "name": "embedded-cancel"})
    wait_checkpoint(server.data_dir / "artifacts" / job["id"], timeout=240)
    [child] = training_pids(log_messages(http, job["id"]))

    asked = time.monotonic()
    response = http.post(f"/jobs/{job['id']}/cancel")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelling"
    cancelled = wait_status(http, job["id"], TERMINAL, timeout=30)
    assert cancelled["status"] == "cancelled"
    assert time.monotonic() - asked < 15
    wait_until(lambda: process_gone(child), timeout=10, what=f"training process {child} to exit")

    response = http.post(f"/jobs/{job['id']}/retry")
    assert response.status_code == 200, response.text
    assert (response.json()["status"], response.json()["attempt"]) == ("queued", 2)
    done = wait_status(http, job["id"], TERMINAL, timeout=300)
    assert (done["status"], done["attempt"]) == ("succeeded", 2), done["failure"]
    messages = log_messages(http, job["id"])
    [resumed_at] = resumed_epochs(messages)
    assert resumed_at > 0  # from checkpoint-last.pth, not from scratch
    assert metric_epochs(http, job["id"]) == list(range(LONG_FINETUNE["epochs"]))
    assert done["result"]["overall"] is not None


def test_killed_worker_is_restarted_and_the_job_resumes(
    server: LiveServer, http: httpx.Client
) -> None:
    job = _submit(http, {**LONG_FINETUNE, "name": "embedded-kill"})
    wait_checkpoint(server.data_dir / "artifacts" / job["id"], timeout=240)
    [child] = training_pids(log_messages(http, job["id"]))
    worker = worker_of(child)

    os.kill(worker, signal.SIGKILL)
    # PR_SET_PDEATHSIG: the training process dies with its worker
    wait_until(lambda: process_gone(child), timeout=10, what=f"training process {child} to die")

    # `livt serve` restarts its worker under the same id, which requeues the job at once
    requeued = wait_until(
        lambda: (j := get_job(http, job["id"]))["attempt"] == 2 and j, timeout=60, what="attempt 2"
    )
    assert requeued["status"] in ("queued", "running", "succeeded")
    done = wait_status(http, job["id"], TERMINAL, timeout=300)
    assert (done["status"], done["attempt"]) == ("succeeded", 2), done["failure"]
    messages = log_messages(http, job["id"])
    assert any("restarted while running this job; requeued as attempt 2" in m for m in messages)
    [resumed_at] = resumed_epochs(messages)
    assert resumed_at > 0
    assert len(training_pids(messages)) == 2
    assert sum("training process exited with status 0" in m for m in messages) == 1
    assert metric_epochs(http, job["id"]) == list(range(LONG_FINETUNE["epochs"]))
    assert done["result"]["overall"] is not None
