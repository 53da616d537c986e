"""The job state changes (``livt_service.state``) on SQLite and PostgreSQL: the atomic claim,
fenced writes, requeue of lost jobs, start-up recovery, pipeline release and cancellation, retry
and the worker registry.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from livt_service import state
from livt_service.models import Artifact, Job, JobAttempt, LogLine, MetricPoint, Worker
from livt_service.state import ClaimedJob, Finish, FlushBatch, LogRecord

#: every test works on the migrated database of the ``settings`` fixture (SQLite, PostgreSQL)
pytestmark = pytest.mark.usefixtures("settings")

LONG_AGO = datetime.now(UTC) - timedelta(hours=1)


@pytest.fixture
def sent() -> list[tuple[str, str]]:
    """``(job_id, queue)`` of every task message the worker code sent."""
    return []


@pytest.fixture
def enqueue(sent: list[tuple[str, str]]) -> Callable[[str, str], None]:
    return lambda job_id, queue: sent.append((job_id, queue))


def _job(db, job_id: str) -> Job:
    with db() as session:
        return session.get(Job, job_id)


def _attempts(db, job_id: str) -> list[JobAttempt]:
    with db() as session:
        query = select(JobAttempt).where(JobAttempt.job_id == job_id).order_by(JobAttempt.number)
        return list(session.scalars(query))


def _log_messages(db, job_id: str) -> list[str]:
    with db() as session:
        query = select(LogLine.message).where(LogLine.job_id == job_id).order_by(LogLine.seq)
        return list(session.scalars(query))


def test_claim_job_moves_it_to_running(db, make_job) -> None:
    job = make_job(kind="finetune")
    claim = state.claim_job(job.id, "w1@host")
    assert claim is not None
    assert (claim.id, claim.kind, claim.attempt, claim.worker_id) == (
        job.id,
        "finetune",
        1,
        "w1@host",
    )
    assert claim.config == job.config
    row = _job(db, job.id)
    assert row.status == "running" and row.worker_id == "w1@host"
    assert row.started_at is not None and row.heartbeat_at is not None
    [attempt] = _attempts(db, job.id)
    assert (attempt.number, attempt.worker_id, attempt.ended_at) == (1, "w1@host", None)


def test_claim_race_has_exactly_one_winner(db, make_job) -> None:
    job = make_job()
    contenders = 8
    barrier = threading.Barrier(contenders)
    claims: list[ClaimedJob | None] = []
    lock = threading.Lock()

    def contend(index: int) -> None:
        barrier.wait()
        claim = state.claim_job(job.id, f"w{index}@host")
        with lock:
            claims.append(claim)

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(contenders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [c for c in claims if c is not None]
    assert len(claims) == contenders and len(winners) == 1
    assert _job(db, job.id).worker_id == winners[0].worker_id
    assert len(_attempts(db, job.id)) == 1


@pytest.mark.parametrize("status", ["running", "succeeded", "failed", "cancelled"])
def test_claim_refuses_a_job_that_is_not_queued(make_job, status: str) -> None:
    job = make_job(status=status)
    assert state.claim_job(job.id, "w1@host") is None


def test_claim_refuses_a_cancel_requested_job(make_job) -> None:
    job = make_job(cancel_requested=True)
    assert state.claim_job(job.id, "w1@host") is None


def test_claim_refuses_an_unknown_job() -> None:
    assert state.claim_job("j_does_not_exist", "w1@host") is None


def test_claim_waits_for_the_pipeline_predecessor(db, make_job) -> None:
    first = make_job(kind="pretrain", status="running")
    second = make_job(kind="finetune", depends_on=first.id)
    assert state.claim_job(second.id, "w1@host") is None
    with db() as session:
        session.get(Job, first.id).status = "succeeded"
    assert state.claim_job(second.id, "w1@host") is not None


def test_flush_writes_progress_metrics_logs_and_artifacts(db, make_job, tmp_path) -> None:
    job = make_job(kind="finetune")
    claim = state.claim_job(job.id, "w1@host")
    (tmp_path / "checkpoint-last.pth").write_bytes(b"x" * 10)
    batch = FlushBatch(
        progress={"epoch": 0, "epochs": 2, "step": 1, "steps": 3},
        metrics={0: {"train_loss": 1.5}},
        logs=[LogRecord("line one"), LogRecord("line two", "WARNING")],
        artifact_dir=str(tmp_path),
        artifact_names={"checkpoint-last.pth"},
    )
    outcome = state.flush(claim, batch)
    assert outcome.owned and not outcome.cancel_requested
    row = _job(db, job.id)
    assert row.progress["step"] == 1 and "updated_at" in row.progress
    assert _log_messages(db, job.id)[-2:] == ["line one", "line two"]
    with db() as session:
        [artifact] = session.scalars(select(Artifact).where(Artifact.job_id == job.id))
        assert (artifact.name, artifact.kind, artifact.size_bytes) == (
            "checkpoint-last.pth",
            "checkpoint",
            10,
        )


def test_repeated_epoch_metrics_replace_the_old_point(db, make_job) -> None:
    job = make_job(kind="finetune")
    claim = state.claim_job(job.id, "w1@host")
    state.flush(claim, FlushBatch(metrics={0: {"train_loss": 2.0}}))
    state.flush(claim, FlushBatch(metrics={0: {"train_loss": 1.0}, 1: {"train_loss": 0.5}}))
    with db() as session:
        points = session.execute(
            select(MetricPoint.epoch, MetricPoint.metrics)
            .where(MetricPoint.job_id == job.id)
            .order_by(MetricPoint.epoch)
        ).all()
    assert [(p.epoch, p.metrics["train_loss"]) for p in points] == [(0, 1.0), (1, 0.5)]


def test_flush_reports_a_cancel_request(db, make_job) -> None:
    job = make_job()
    claim = state.claim_job(job.id, "w1@host")
    with db() as session:
        row = session.get(Job, job.id)
        row.cancel_requested, row.status = True, "cancelling"
    outcome = state.flush(claim, FlushBatch())
    assert outcome.owned and outcome.cancel_requested
    assert state.poll(claim).cancel_requested


def test_finish_succeeded_records_result_and_releases_the_next_stage(
    db, make_job, enqueue, sent
) -> None:
    first = make_job(kind="finetune")
    second = make_job(kind="evaluate", depends_on=first.id)
    claim = state.claim_job(first.id, "w1@host")
    result = {"overall": 50.0, "many": 60.0, "medium": 40.0, "few": 10.0}
    assert state.finish_job(claim, Finish("succeeded", result=result), enqueue=enqueue)
    row = _job(db, first.id)
    assert (row.status, row.result, row.finished_at is not None) == ("succeeded", result, True)
    assert (row.overall, row.many, row.medium, row.few) == (50.0, 60.0, 40.0, 10.0)
    assert _attempts(db, first.id)[0].outcome == "succeeded"
    assert sent == [(second.id, second.queue)]


def test_finish_failed_records_reason_and_cancels_waiting_stages(
    db, make_job, enqueue, sent
) -> None:
    first = make_job(kind="pretrain")
    second = make_job(kind="finetune", depends_on=first.id)
    third = make_job(kind="evaluate", depends_on=second.id)
    claim = state.claim_job(first.id, "w1@host")
    outcome = Finish("failed", reason="non_finite_loss", message="loss is nan")
    assert state.finish_job(claim, outcome, enqueue=enqueue)
    row = _job(db, first.id)
    assert (row.status, row.failure_reason, row.failure_message) == (
        "failed",
        "non_finite_loss",
        "loss is nan",
    )
    assert [_job(db, j.id).status for j in (second, third)] == ["cancelled", "cancelled"]
    assert sent == []


def _log_lines(db, job_id: str) -> list[LogLine]:
    with db() as session:
        query = select(LogLine).where(LogLine.job_id == job_id).order_by(LogLine.seq)
        return list(session.scalars(query))


def test_waiting_stage_cancelled_by_a_failure_logs_at_its_own_attempt(
    db, make_job, enqueue
) -> None:
    first = make_job(kind="pretrain")
    second = make_job(kind="finetune", depends_on=first.id, attempt=3)
    claim = state.claim_job(first.id, "w1@host")
    assert state.finish_job(claim, Finish("failed", reason="internal"), enqueue=enqueue)
    [line] = _log_lines(db, second.id)
    assert line.attempt == 3
    assert line.message == f"cancelled: job {first.id}, which it starts from, is failed"


def test_cancelling_a_queued_job_gives_its_waiting_stages_a_message(db, make_job) -> None:
    first = make_job(kind="pretrain")
    second = make_job(kind="finetune", depends_on=first.id)
    third = make_job(kind="evaluate", depends_on=second.id)
    with db() as session:
        state.request_cancel(session, session.get(Job, first.id), by="alice")
    assert _job(db, second.id).failure_message == (
        f"cancelled: job {first.id}, which it starts from, is cancelled"
    )
    assert _job(db, third.id).failure_message == (
        f"cancelled: job {second.id}, which it starts from, is cancelled"
    )


def test_requeue_and_retry_reset_the_same_fields(db, make_job, enqueue) -> None:
    progress = {"epoch": 3, "step": 10}
    lost = make_job(
        status="running", worker_id="gone@host", heartbeat_at=LONG_AGO, progress=progress
    )
    failed = make_job(
        status="failed", worker_id="w@host", progress=progress, result={"x": 1}, few=3.0
    )
    state.requeue_lost_jobs(60, enqueue=enqueue)
    with db() as session:
        assert state.retry(session, session.get(Job, failed.id), by="alice")
    fields = (
        "status",
        "attempt",
        "worker_id",
        "heartbeat_at",
        "progress",
        "result",
        "few",
        "failure_reason",
        "failure_message",
        "started_at",
        "finished_at",
        "cancel_requested",
    )
    requeued, retried = _job(db, lost.id), _job(db, failed.id)
    assert [getattr(requeued, f) for f in fields] == [getattr(retried, f) for f in fields]
    assert (requeued.status, requeued.attempt, requeued.progress) == ("queued", 2, None)


def test_retry_refuses_a_running_job(db, make_job) -> None:
    job = make_job(status="running")
    with db() as session, pytest.raises(state.TransitionError, match="only failed or cancelled"):
        state.retry(session, session.get(Job, job.id), by="alice")


def test_requeue_lost_job_increments_attempt_and_enqueues(db, make_job, enqueue, sent) -> None:
    lost = make_job(status="running", worker_id="gone@host", heartbeat_at=LONG_AGO)
    alive = make_job(status="running", worker_id="alive@host", heartbeat_at=datetime.now(UTC))
    with db() as session:
        session.add(JobAttempt(job_id=lost.id, number=1, worker_id="gone@host"))
    assert state.requeue_lost_jobs(60, enqueue=enqueue) == [lost.id]
    row = _job(db, lost.id)
    assert (row.status, row.attempt, row.worker_id) == ("queued", 2, None)
    assert _attempts(db, lost.id)[0].outcome == "worker_lost"
    assert sent == [(lost.id, lost.queue)]
    assert _job(db, alive.id).status == "running"
    assert any("requeued as attempt 2" in m for m in _log_messages(db, lost.id))


def test_requeue_is_won_by_one_janitor(db, make_job, enqueue, sent) -> None:
    lost = make_job(status="running", worker_id="gone@host", heartbeat_at=LONG_AGO)
    barrier = threading.Barrier(4)

    def janitor() -> None:
        barrier.wait()
        state.requeue_lost_jobs(60, enqueue=enqueue)

    threads = [threading.Thread(target=janitor) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert _job(db, lost.id).attempt == 2
    assert sent == [(lost.id, lost.queue)]


def test_lost_cancelling_job_becomes_cancelled(db, make_job, enqueue, sent) -> None:
    lost = make_job(status="cancelling", worker_id="gone@host", heartbeat_at=LONG_AGO)
    state.requeue_lost_jobs(60, enqueue=enqueue)
    row = _job(db, lost.id)
    assert (row.status, row.attempt) == ("cancelled", 1)
    assert sent == []


def test_job_losing_its_worker_too_often_fails(db, make_job, enqueue, sent) -> None:
    lost = make_job(
        status="running",
        worker_id="gone@host",
        heartbeat_at=LONG_AGO,
        attempt=state.MAX_LOST_ATTEMPTS,
    )
    with db() as session:
        for number in range(1, state.MAX_LOST_ATTEMPTS):
            session.add(JobAttempt(job_id=lost.id, number=number, outcome="worker_lost"))
        session.add(JobAttempt(job_id=lost.id, number=state.MAX_LOST_ATTEMPTS))
    state.requeue_lost_jobs(60, enqueue=enqueue)
    row = _job(db, lost.id)
    assert (row.status, row.failure_reason) == ("failed", "worker_lost")
    assert sent == []


def test_worker_restart_requeues_its_own_jobs_at_once(db, make_job, enqueue, sent) -> None:
    mine = make_job(status="running", worker_id="w1@host")  # fresh heartbeat
    other = make_job(status="running", worker_id="w2@host")
    assert state.recover_worker_jobs("w1@host", enqueue=enqueue) == [mine.id]
    assert (_job(db, mine.id).status, _job(db, mine.id).attempt) == ("queued", 2)
    assert _job(db, other.id).status == "running"
    assert sent == [(mine.id, mine.queue)]


def test_requeued_job_fences_off_the_old_worker(db, make_job, enqueue) -> None:
    job = make_job()
    old = state.claim_job(job.id, "w1@host")
    assert state.recover_worker_jobs("w1@host", enqueue=enqueue) == [job.id]
    new = state.claim_job(job.id, "w2@host")
    assert new is not None and new.attempt == 2
    outcome = state.flush(old, FlushBatch(logs=[LogRecord("stale")]))
    assert not outcome.owned
    assert not state.finish_job(old, Finish("succeeded", result={}), enqueue=enqueue)
    assert "stale" not in _log_messages(db, job.id)
    assert _job(db, job.id).worker_id == "w2@host"


def test_interrupted_job_is_handed_back(db, make_job, enqueue, sent) -> None:
    job = make_job()
    claim = state.claim_job(job.id, "w1@host")
    assert state.requeue_interrupted(claim, enqueue=enqueue)
    assert (_job(db, job.id).status, _job(db, job.id).attempt) == ("queued", 2)
    assert _attempts(db, job.id)[0].outcome == "interrupted"
    assert sent == [(job.id, job.queue)]


def test_worker_registry(db) -> None:
    state.register_worker("w1@host", ["gpu", "default"], 8)
    with db() as session:
        row = session.get(Worker, "w1@host")
        first_beat = row.heartbeat_at
    assert (row.queues, row.gpus) == (["gpu", "default"], 8)
    state.worker_heartbeat("w1@host", ["gpu", "default"], 8)
    with db() as session:
        assert session.get(Worker, "w1@host").heartbeat_at >= first_beat
    state.unregister_worker("w1@host")
    state.worker_heartbeat("w1@host", ["default"], 0)  # re-registers a removed row
    with db() as session:
        assert session.scalar(select(func.count()).select_from(Worker)) == 1
        assert session.get(Worker, "w1@host").gpus == 0


def test_step_points_are_upserted_per_span_and_bounded(db, make_job) -> None:
    from livt_service.models import StepPoint

    job = make_job(kind="finetune")
    claim = state.claim_job(job.id, "w1@host")

    def point(step: int, loss: float) -> dict:
        return {"global_step": step, "epoch": 0, "metrics": {"loss": loss, "lr": 0.1}}

    state.flush(claim, FlushBatch(steps={0: point(0, 2.0), 1: point(5, 1.5)}))
    # a resumed attempt reports span 1 again (another step of it) and span 2
    state.flush(claim, FlushBatch(steps={1: point(6, 1.4), 2: point(10, 1.0)}))
    with db() as session:
        rows = session.execute(
            select(StepPoint.bucket, StepPoint.global_step, StepPoint.metrics)
            .where(StepPoint.job_id == job.id)
            .order_by(StepPoint.bucket)
        ).all()
    assert [(r.bucket, r.global_step, r.metrics["loss"]) for r in rows] == [
        (0, 0, 2.0),
        (1, 6, 1.4),
        (2, 10, 1.0),
    ]


def test_tensorboard_event_files_and_the_export_are_artifacts(db, make_job, tmp_path) -> None:
    job = make_job(kind="finetune")
    (tmp_path / "events.out.tfevents.1.host.2.0.attempt1").write_bytes(b"x" * 3)
    (tmp_path / "model.safetensors").write_bytes(b"y" * 5)
    (tmp_path / "notes.txt").write_text("not an artifact")
    with db() as session:
        names = state.register_artifacts(session, job.id, tmp_path)
    assert names == ["events.out.tfevents.1.host.2.0.attempt1", "model.safetensors"]
    with db() as session:
        kinds = dict(
            session.execute(
                select(Artifact.name, Artifact.kind).where(Artifact.job_id == job.id)
            ).all()
        )
    assert kinds["model.safetensors"] == "export"
    assert kinds["events.out.tfevents.1.host.2.0.attempt1"] == "tensorboard"
