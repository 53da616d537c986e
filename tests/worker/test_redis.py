"""The production mode end to end: the API (``livt serve --no-worker``) and two ``livt worker``
processes on a real Redis broker and a fresh PostgreSQL schema.

Skipped, saying why, when Redis or PostgreSQL cannot be reached.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from api.services.users import create_token, get_or_create_user
from livt_service.db import dispose_engines, session_scope, upgrade_database
from livt_service.models import JobAttempt
from livt_service.queue import RUN_JOB_TASK, create_celery_app
from livt_service.settings import Settings
from tests.live_server import TINY_FINETUNE, free_port
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
)

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.postgres]

REDIS_URL = os.environ.get("LIVT_TEST_REDIS_URL", "redis://127.0.0.1:6379/11")
TERMINAL = {"succeeded", "failed", "cancelled"}
#: Short heartbeats so that the surviving worker's janitor notices a killed one quickly.
LOST_AFTER_SECONDS = 8


def _redis_problem(url: str) -> str | None:
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


@dataclass
class Deployment:
    """The processes of one production-mode deployment and how to reach them."""

    url: str
    database_url: str
    settings: Settings
    env: dict[str, str]
    folder: Path
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    def start(self, name: str, *args: str) -> subprocess.Popen:
        log = (self.folder / f"{name}.log").open("ab")
        process = subprocess.Popen(
            [sys.executable, "-m", "livt.cli", *args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.processes[name] = process
        return process

    def start_worker(self, name: str) -> subprocess.Popen:
        return self.start(name, "worker", "--name", name, "--queues", "default", "--gpus", "0")

    def log(self, name: str) -> str:
        return (self.folder / f"{name}.log").read_text(errors="replace")

    def stop_all(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@pytest.fixture(scope="module")
def deployment(
    tmp_path_factory: pytest.TempPathFactory, postgres_schema_factory: Callable[[], str]
) -> Iterator[Deployment]:
    problem = _redis_problem(REDIS_URL)
    if problem is not None:
        pytest.skip(
            f"Redis at {REDIS_URL} is unreachable ({problem}); start it or set LIVT_TEST_REDIS_URL"
        )
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()
    database_url = postgres_schema_factory()
    upgrade_database(database_url)
    folder = tmp_path_factory.mktemp("livt-production")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVT_")}
    env.update(
        LIVT_MODE="production",
        LIVT_DATABASE_URL=database_url,
        LIVT_BROKER_URL=REDIS_URL,
        LIVT_DATA_DIR=str(folder / "data"),
        LIVT_HEARTBEAT_SECONDS="1",
        LIVT_WORKER_LOST_SECONDS=str(LOST_AFTER_SECONDS),
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        PYTHONUNBUFFERED="1",
    )
    settings = Settings(
        mode="production",
        database_url=database_url,
        broker_url=REDIS_URL,
        data_dir=folder / "data",
    )
    port = free_port()
    live = Deployment(f"http://127.0.0.1:{port}", database_url, settings, env, folder)
    try:
        api = live.start("api", "serve", "--no-worker", "--host", "127.0.0.1", "--port", str(port))
        live.start_worker("w-a")
        live.start_worker("w-b")

        def healthy() -> bool:
            if api.poll() is not None:
                raise RuntimeError(f"the API exited:\n{live.log('api')[-3000:]}")
            try:
                return httpx.get(f"{live.url}/healthz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(healthy, timeout=120, what="the API")
        yield live
    finally:
        live.stop_all()
        redis.Redis.from_url(REDIS_URL).flushdb()
        dispose_engines()


@pytest.fixture(scope="module")
def http(deployment: Deployment) -> Iterator[httpx.Client]:
    with session_scope(deployment.database_url) as session:
        token = create_token(session, get_or_create_user(session, "prod-tests"))
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=deployment.url, headers=headers, timeout=30.0) as client:
        yield client


def _attempts(deployment: Deployment, job_id: str) -> list[JobAttempt]:
    with session_scope(deployment.database_url) as session:
        query = select(JobAttempt).where(JobAttempt.job_id == job_id).order_by(JobAttempt.number)
        return list(session.scalars(query))


def test_job_runs_once_despite_a_repeated_key_and_duplicate_messages(
    deployment: Deployment, http: httpx.Client
) -> None:
    spec = {**TINY_FINETUNE, "name": "prod-e2e", "idempotency_key": "prod-e2e-1"}
    first = http.post("/jobs", json=spec)
    assert first.status_code == 201, first.text
    again = http.post("/jobs", json=spec)
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    job_id = first.json()["id"]

    # duplicate messages reach both workers: the atomic claim lets exactly one of them run it
    app = create_celery_app(deployment.settings)
    for _ in range(3):
        app.send_task(RUN_JOB_TASK, args=[job_id], queue="default")

    done = wait_status(http, job_id, TERMINAL, timeout=300)
    assert done["status"] == "succeeded", done["failure"]
    assert {"many", "medium", "few", "overall"} <= set(done["result"])
    assert metric_epochs(http, job_id) == [0, 1]
    [attempt] = _attempts(deployment, job_id)
    assert (attempt.number, attempt.outcome) == (1, "succeeded")
    assert attempt.worker_id.split("@")[0] in ("w-a", "w-b")
    messages = log_messages(http, job_id)
    assert sum("started on worker" in m for m in messages) == 1
    assert len(training_pids(messages)) == 1
    wait_until(
        lambda: sum(f"job {job_id} not claimed" in deployment.log(w) for w in ("w-a", "w-b")),
        timeout=30,
        what="a worker to refuse a duplicate message",
    )


def test_lost_worker_job_is_requeued_and_resumed_by_another_worker(
    deployment: Deployment, http: httpx.Client
) -> None:
    response = http.post("/jobs", json={**LONG_FINETUNE, "name": "prod-lost-worker"})
    assert response.status_code == 201, response.text
    job_id = response.json()["id"]
    wait_checkpoint(deployment.settings.job_artifact_dir(job_id), timeout=300)
    owner = get_job(http, job_id)
    assert owner["status"] == "running"
    [child] = training_pids(log_messages(http, job_id))
    [victim] = [a.worker_id for a in _attempts(deployment, job_id)]
    name = victim.split("@")[0]
    survivor = "w-b" if name == "w-a" else "w-a"

    deployment.processes[name].send_signal(signal.SIGKILL)
    wait_until(lambda: process_gone(child), timeout=10, what=f"training process {child} to die")

    # no heartbeat for LOST_AFTER_SECONDS: the survivor's janitor requeues the job, then runs it
    done = wait_status(http, job_id, TERMINAL, timeout=300)
    assert (done["status"], done["attempt"]) == ("succeeded", 2), done["failure"]
    attempts = _attempts(deployment, job_id)
    assert [(a.number, a.outcome) for a in attempts] == [(1, "worker_lost"), (2, "succeeded")]
    assert attempts[1].worker_id.split("@")[0] == survivor
    messages = log_messages(http, job_id)
    assert any("requeued as attempt 2" in m for m in messages)
    [resumed_at] = resumed_epochs(messages)
    assert resumed_at > 0
    assert sum("training process exited with status 0" in m for m in messages) == 1
    assert metric_epochs(http, job_id) == list(range(LONG_FINETUNE["epochs"]))


def test_a_frozen_worker_is_fenced_off_and_the_job_succeeds_once(
    deployment: Deployment, http: httpx.Client
) -> None:
    for worker in ("w-a", "w-b"):  # two live workers (an earlier test may have killed one)
        if deployment.processes[worker].poll() is not None:
            offset = len(deployment.log(worker))
            deployment.start_worker(worker)
            wait_until(
                lambda w=worker, o=offset: " ready" in deployment.log(w)[o:],
                timeout=120,
                what=f"worker {worker} to restart",
            )
    # long enough that the frozen worker's child is still training when attempt 2 takes over
    spec = {
        **LONG_FINETUNE,
        "epochs": 20,
        "max_steps_per_epoch": 30,
        "name": "prod-frozen-worker",
    }
    response = http.post("/jobs", json=spec)
    assert response.status_code == 201, response.text
    job_id = response.json()["id"]
    run_dir = deployment.settings.job_artifact_dir(job_id)
    wait_checkpoint(run_dir, timeout=300)
    [old_child] = training_pids(log_messages(http, job_id))
    [victim] = [a.worker_id for a in _attempts(deployment, job_id)]
    name = victim.split("@")[0]
    survivor = "w-b" if name == "w-a" else "w-a"
    frozen = deployment.processes[name]

    frozen.send_signal(signal.SIGSTOP)  # the worker freezes; its training child runs on
    frozen_at = time.monotonic()
    try:
        running = wait_until(
            lambda: (
                (job := get_job(http, job_id))["attempt"] == 2
                and job["status"] == "running"
                and job
            ),
            timeout=120,
            what="attempt 2 to run on the other worker",
        )
        requeued_after = time.monotonic() - frozen_at
        assert running["status"] == "running"
        wait_until(
            lambda: resumed_epochs(log_messages(http, job_id)),
            timeout=120,
            what="attempt 2's child to resume training",
        )
        # attempt 2 owns the folder: the old child has stopped by itself (its worker is still
        # frozen), so two trainings never share the folder
        wait_until(
            lambda: process_gone(old_child), timeout=5, what="the frozen worker's child to stop"
        )
        fenced_after = time.monotonic() - frozen_at
    finally:
        # the old worker resumes while attempt 2 trains
        frozen.send_signal(signal.SIGCONT)

    done = wait_status(http, job_id, TERMINAL, timeout=400)
    assert (done["status"], done["attempt"]) == ("succeeded", 2), done["failure"]
    assert {"many", "medium", "few", "overall"} <= set(done["result"])
    attempts = _attempts(deployment, job_id)
    assert [(a.number, a.outcome) for a in attempts] == [(1, "worker_lost"), (2, "succeeded")]
    assert attempts[1].worker_id.split("@")[0] == survivor
    epochs = list(range(spec["epochs"]))
    assert metric_epochs(http, job_id) == epochs
    history = json.loads((run_dir / "history.json").read_text())
    assert [entry["epoch"] for entry in history] == epochs
    messages = log_messages(http, job_id)
    assert sum("training process exited with status 0" in m for m in messages) == 1
    assert len(training_pids(messages)) == 2
    [resumed_at] = resumed_epochs(messages)
    assert 0 < resumed_at < spec["epochs"]  # the old child was stopped mid-way
    # the resumed worker notices that it lost the job and leaves it alone
    wait_until(
        lambda: f"job {job_id}: ownership lost" in deployment.log(name),
        timeout=60,
        what="the resumed worker to give the job up",
    )
    after = get_job(http, job_id)
    assert (after["status"], after["result"]) == ("succeeded", done["result"])
    print(
        f"frozen worker: requeued after {requeued_after:.1f} s, old child fenced off after "
        f"{fenced_after:.1f} s, attempt 2 resumed at epoch {resumed_at}"
    )
