"""Real runs through the real runner: a failing run's typed error becomes the job's failure
reason, the attempt is closed, and the pipeline stage waiting for it is cancelled; a job asking
for two processes runs under ``torch.distributed.run`` (gloo on CPU) and succeeds."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from livt_service import state
from livt_service.models import Job, JobAttempt, LogLine
from livt_service.settings import Settings
from worker.runner import JobRunner

pytestmark = pytest.mark.slow


@pytest.fixture
def database_url(sqlite_database_url: str) -> str:
    """Real runs on SQLite only (PostgreSQL is covered by the state tests)."""
    return sqlite_database_url


def test_non_finite_loss_fails_the_job_with_its_reason(settings: Settings, db, make_job) -> None:
    job = make_job(
        kind="pretrain",
        config={
            "lr": 1e30,
            "max_steps_per_epoch": 4,
            "model_kwargs": {"depth": 1, "decoder_depth": 1},
            "data": {"num_workers": 0, "img_size": 16},
        },
    )
    waiting = make_job(kind="finetune", depends_on=job.id)
    claim = state.claim_job(job.id, "w@host")
    assert claim is not None

    assert JobRunner(claim, heartbeat_seconds=1).run() == "failed"

    with db() as session:
        row = session.get(Job, job.id)
        assert (row.status, row.failure_reason) == ("failed", "non_finite_loss")
        assert "lower the learning rate" in row.failure_message
        assert row.result is None
        assert session.get(Job, waiting.id).status == "cancelled"
        [attempt] = session.scalars(select(JobAttempt).where(JobAttempt.job_id == job.id))
        assert attempt.outcome == "failed" and attempt.ended_at is not None
        messages = session.scalars(select(LogLine.message).where(LogLine.job_id == job.id)).all()
    assert any("training process exited with status 5" in m for m in messages)


def test_a_two_process_job_runs_under_torchrun_and_succeeds(
    settings: Settings, db, make_job
) -> None:
    # gpus=2 on a CPU worker: the runner starts torch.distributed.run with two gloo processes
    job = make_job(
        kind="pretrain",
        gpus=2,
        config={
            "epochs": 2,
            "max_steps_per_epoch": 2,
            "batch_size": 8,
            "model_kwargs": {"depth": 1, "decoder_depth": 1},
            "data": {"num_workers": 0, "img_size": 16},
        },
    )
    claim = state.claim_job(job.id, "w@host")
    assert claim is not None and claim.gpus == 2

    assert JobRunner(claim, heartbeat_seconds=1).run() == "succeeded"

    with db() as session:
        row = session.get(Job, job.id)
        assert row.status == "succeeded" and row.failure_reason is None
        assert row.result["final_loss"] > 0
        messages = session.scalars(select(LogLine.message).where(LogLine.job_id == job.id)).all()
    text = "\n".join(messages)
    assert "torch.distributed.run" in text and "--nproc_per_node=2" in text
    assert "rank 0 of 2" in text  # the engine joined a 2-process group
    assert (settings.job_artifact_dir(job.id) / "checkpoint-last.pth").is_file()
