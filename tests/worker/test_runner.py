"""Pieces of the worker that need no training run: the Celery configuration and ``enqueue`` on the
embedded broker, the child's command line, the failure mapping, the parent-death tie, GPU hand-out
and one janitor round."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from livt_service.models import Job, LogLine, Worker
from livt_service.queue import (
    RUN_JOB_TASK,
    celery_config,
    enqueue,
    get_celery_app,
    live_job_ids,
)
from livt_service.settings import Settings
from livt_service.state import ClaimedJob
from tests.worker.test_support import process_gone, wait_until
from worker.context import WorkerContext, configure
from worker.janitor import Janitor
from worker.runner import failure_from_exit, training_command


@pytest.fixture
def database_url(sqlite_database_url: str) -> str:
    """These tests need one database only: SQLite."""
    return sqlite_database_url


def _claim(tmp_path: Path, gpus: int = 1) -> ClaimedJob:
    return ClaimedJob(
        id="j_test",
        kind="finetune",
        attempt=1,
        config={},
        gpus=gpus,
        queue="default",
        artifact_dir=str(tmp_path),
        worker_id="w@host",
    )


def _next_message(queue: str) -> dict:
    with get_celery_app().connection_for_read() as connection:
        message = connection.default_channel.basic_get(queue, no_ack=True)
        assert message is not None, f"no message in queue {queue}"
        return {"task": message.headers["task"], "args": message.decode()[0]}


# --------------------------------------------------------------------------- configuration


def test_embedded_config_uses_the_sqlite_transport(settings: Settings) -> None:
    config = celery_config(settings)
    assert config["broker_url"] == f"sqla+sqlite:///{settings.data_dir / 'broker.sqlite'}"
    assert (config["task_acks_late"], config["task_reject_on_worker_lost"]) == (True, True)
    assert config["worker_prefetch_multiplier"] == 1
    assert config["task_serializer"] == "json" and config["accept_content"] == ["json"]
    assert config["task_routes"] == {RUN_JOB_TASK: {"queue": settings.default_queue}}
    assert config["worker_enable_remote_control"] is False


def test_production_config_uses_redis_with_a_long_visibility_timeout(tmp_path: Path) -> None:
    settings = Settings(
        mode="production",
        database_url="postgresql+psycopg://db/livt",
        broker_url="redis://redis:6379/0",
        data_dir=tmp_path,
        default_queue="cpu",
    )
    config = celery_config(settings)
    assert config["broker_url"] == "redis://redis:6379/0"
    assert config["broker_transport_options"]["visibility_timeout"] >= 3600
    assert config["task_default_queue"] == "cpu"
    assert config["worker_enable_remote_control"] is True


def test_enqueue_sends_the_job_id_to_the_named_queue(settings: Settings) -> None:
    enqueue("j_first", "gpu")
    enqueue("j_second", settings.default_queue)
    assert _next_message("gpu") == {"task": RUN_JOB_TASK, "args": ["j_first"]}
    assert _next_message(settings.default_queue) == {"task": RUN_JOB_TASK, "args": ["j_second"]}


def test_the_app_follows_the_settings(settings: Settings) -> None:
    app = get_celery_app()
    assert get_celery_app() is app
    assert app.conf.broker_url == settings.broker_url


# --------------------------------------------------------------------------- the child


def test_single_process_command(tmp_path: Path) -> None:
    argv = training_command(_claim(tmp_path), tmp_path, nproc=1)
    assert argv[:5] == [sys.executable, "-m", "livt_core", "train", "finetune"]
    assert argv[argv.index("--config") + 1] == str(tmp_path / "config.json")
    assert argv[argv.index("--output-dir") + 1] == str(tmp_path)
    # the event stream and the stop signal are the attempt's own, and its writes are fenced
    assert argv[argv.index("--events") + 1] == str(tmp_path / "attempts/1/events.jsonl")
    assert argv[argv.index("--stop-file") + 1] == str(tmp_path / "attempts/1/STOP")
    assert argv[argv.index("--attempt") + 1] == "1"
    assert argv[argv.index("--resume") + 1] == "auto"
    assert "--no-progress" in argv


def test_several_processes_run_under_torchrun(tmp_path: Path) -> None:
    argv = training_command(_claim(tmp_path, gpus=4), tmp_path, nproc=4)
    assert argv[:5] == [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=4",
    ]
    assert argv[5:10] == ["-m", "livt_core", "train", "finetune", "--config"]


@pytest.mark.parametrize(
    ("code", "reason"),
    [(4, "invalid_data"), (5, "non_finite_loss"), (6, "out_of_memory"), (1, "internal")],
)
def test_exit_status_maps_to_the_failure_reason(code: int, reason: str) -> None:
    assert failure_from_exit(code, None, ["some output"])[0] == reason


def test_error_event_wins_over_the_exit_status() -> None:
    event = {"type": "error", "reason": "non_finite_loss", "message": "loss is nan at epoch 0"}
    assert failure_from_exit(1, event, []) == ("non_finite_loss", "loss is nan at epoch 0")


def test_out_of_memory_is_recognised_in_the_output() -> None:
    tail = ["RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB"]
    reason, message = failure_from_exit(1, None, tail)
    assert reason == "out_of_memory" and "Tried to allocate" in message


def test_a_killed_run_counts_as_out_of_memory() -> None:
    reason, message = failure_from_exit(-signal.SIGKILL, None, [])
    assert reason == "out_of_memory" and "SIGKILL" in message


def test_child_dies_with_its_parent(tmp_path: Path) -> None:
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                """
                import time
                from worker.runner import spawn_tied_to_parent
                child = spawn_tied_to_parent(["/bin/sleep", "120"], start_new_session=True)
                print(child.pid, flush=True)
                time.sleep(120)
                """
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    child = int(parent.stdout.readline())
    assert not process_gone(child)
    parent.kill()
    parent.wait()
    wait_until(lambda: process_gone(child), timeout=10, what="the orphaned child to die")


# --------------------------------------------------------------------------- worker context


def test_gpus_are_handed_out_and_returned() -> None:
    context = WorkerContext(worker_id="w@host", queues=["gpu"], devices=["0", "1", "2"])
    first = context.acquire(2)
    assert first == ["0", "1"]
    with pytest.raises(ValueError, match="asks for 4 GPUs"):
        context.acquire(4)
    context.release(first)
    assert sorted(context.acquire(3)) == ["0", "1", "2"]


def test_a_cpu_worker_hands_out_no_gpu() -> None:
    assert WorkerContext(worker_id="w@host", queues=["default"], devices=[]).acquire(2) == []


def test_configure_takes_the_given_gpu_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("worker.context._context", None)  # restored after the test
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert configure("w@host", ["gpu"], gpus=None).devices == ["3", "5"]
    assert configure("w@host", ["gpu"], gpus=1).devices == ["3"]
    assert configure("w@host", ["gpu"], gpus=0).devices == []


# --------------------------------------------------------------------------- janitor


def test_janitor_round_requeues_a_lost_job_and_beats(settings: Settings, db, make_job) -> None:
    lost = make_job(
        status="running", worker_id="gone@host", heartbeat_at=datetime.now(UTC) - timedelta(hours=1)
    )
    context = WorkerContext(worker_id="w@host", queues=["default"], devices=[])
    janitor = Janitor(context, interval=60, lost_after=settings.worker_lost_seconds)
    assert janitor.tick() == [lost.id]
    with db() as session:
        assert session.get(Job, lost.id).status == "queued"
        assert session.scalars(select(Worker.id)).all() == ["w@host"]
    assert _next_message(lost.queue) == {"task": RUN_JOB_TASK, "args": [lost.id]}


def test_live_job_ids_sees_waiting_messages_only(settings: Settings) -> None:
    enqueue("j_waiting", settings.default_queue)
    enqueue("j_taken", "other")
    _next_message("other")  # delivered: no longer waiting in the embedded broker
    assert live_job_ids([settings.default_queue, "other"]) == {"j_waiting"}


def test_janitor_resends_a_queued_job_whose_message_was_lost(
    settings: Settings, db, make_job
) -> None:
    old = datetime.now(UTC) - timedelta(minutes=5)
    stranded = make_job(updated_at=old)  # queued, and the broker holds nothing for it
    waiting = make_job(updated_at=old)
    enqueue(waiting.id, waiting.queue)  # its message is still there: left alone
    fresh = make_job()  # inside the grace period: the API may be sending it right now
    later_stage = make_job(updated_at=old, depends_on=fresh.id)  # released by its predecessor
    context = WorkerContext(worker_id="w@host", queues=["default"], devices=[])
    janitor = Janitor(context, interval=60, lost_after=60, resend_grace=30)

    assert janitor.tick() == [stranded.id]
    assert janitor.tick() == []  # its message is live now (and its grace period restarted)
    ids = {_next_message("default")["args"][0] for _ in range(2)}
    assert ids == {stranded.id, waiting.id}
    with db() as session:
        messages = session.scalars(select(LogLine.message).where(LogLine.job_id == stranded.id))
        assert any("no message in the broker" in m for m in messages)
    assert later_stage.status == "queued"
