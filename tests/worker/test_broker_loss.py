"""The broker loses its messages (FLUSHDB) while a job is queued: the janitor of a real worker
notices the queued job has no message, sends it again, and the job runs to success exactly once,
also when more duplicate messages arrive. Uses a Redis server of its own, never the machine's."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from api.main import create_app
from api.services.users import create_token, get_or_create_user
from livt_service.db import dispose_engines, session_scope, upgrade_database
from livt_service.models import Job, JobAttempt, LogLine
from livt_service.queue import RUN_JOB_TASK, get_celery_app
from livt_service.settings import get_settings
from tests.live_server import TINY_FINETUNE
from tests.own_services import OwnRedis
from tests.worker.test_support import training_pids, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.postgres]

GRACE_SECONDS = 3


@pytest.fixture
def own_redis() -> Iterator[OwnRedis]:
    server = OwnRedis()
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def production_env(
    tmp_path: Path,
    own_redis: OwnRedis,
    postgres_schema_factory: Callable[[], str],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[dict[str, str]]:
    database_url = postgres_schema_factory()
    upgrade_database(database_url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVT_")}
    env.update(
        LIVT_MODE="production",
        LIVT_DATABASE_URL=database_url,
        LIVT_BROKER_URL=own_redis.url,
        LIVT_DATA_DIR=str(tmp_path / "data"),
        LIVT_HEARTBEAT_SECONDS="1",
        LIVT_REQUEUE_GRACE_SECONDS=str(GRACE_SECONDS),
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        PYTHONUNBUFFERED="1",
    )
    for name in [n for n in os.environ if n.startswith("LIVT_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        if name.startswith("LIVT_"):
            monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    yield env
    get_settings.cache_clear()
    dispose_engines()


def test_jobs_stranded_by_a_flushed_broker_run_exactly_once(
    tmp_path: Path, own_redis: OwnRedis, production_env: dict[str, str]
) -> None:
    settings = get_settings()
    with session_scope(settings.database_url) as session:
        token = create_token(session, get_or_create_user(session, "broker-loss"))
    with TestClient(create_app(settings)) as api:  # the real enqueue, to the test's Redis
        response = api.post(
            "/jobs", json=TINY_FINETUNE, headers={"Authorization": f"Bearer {token}"}
        )
    assert response.status_code == 201, response.text
    job_id = response.json()["id"]
    broker = own_redis.client()
    assert broker.llen(settings.default_queue) == 1

    broker.flushdb()  # the broker loses the message; no worker has seen it
    assert broker.llen(settings.default_queue) == 0

    log = (tmp_path / "worker.log").open("ab")
    worker = subprocess.Popen(
        [sys.executable, "-m", "livt.cli", "worker", "--name", "w-flush", "--gpus", "0"],
        env=production_env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:

        def status() -> str:
            with session_scope(settings.database_url) as session:
                return session.get(Job, job_id).status

        wait_until(lambda: status() != "queued", timeout=180, what="the job to be picked up")
        # duplicates of the re-sent message reach the worker too: the claim refuses them
        app = get_celery_app()
        for _ in range(2):
            app.send_task(RUN_JOB_TASK, args=[job_id], queue=settings.default_queue)
        wait_until(
            lambda: status() in ("succeeded", "failed", "cancelled"),
            timeout=300,
            what="the job to end",
        )
        assert status() == "succeeded"
        wait_until(
            lambda: (tmp_path / "worker.log").read_text().count(f"job {job_id} not claimed") >= 2,
            timeout=60,
            what="the worker to refuse both duplicates",
        )
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
        log.close()

    with session_scope(settings.database_url) as session:
        attempts = session.scalars(select(JobAttempt).where(JobAttempt.job_id == job_id)).all()
        messages = session.scalars(select(LogLine.message).where(LogLine.job_id == job_id)).all()
    assert [(a.number, a.outcome) for a in attempts] == [(1, "succeeded")]
    assert sum("no message in the broker" in m for m in messages) == 1
    assert len(training_pids(list(messages))) == 1
    assert sum("started on worker" in m for m in messages) == 1
