"""``LIVT_RETENTION_KEEP_BEST_DAYS``: the janitor deletes the checkpoints of jobs that succeeded
that long ago, except the one later stages start from; younger, failed and unconfigured ones
keep theirs. Files written and registered as a worker does (``state.register_artifacts``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from livt_core import contract
from livt_service import state
from livt_service.models import Artifact
from livt_service.settings import get_settings
from worker.context import WorkerContext
from worker.janitor import Janitor

FILES = (contract.BEST_CHECKPOINT, contract.LAST_CHECKPOINT, contract.RESULTS_FILE)


@pytest.fixture
def database_url(sqlite_database_url: str) -> str:
    return sqlite_database_url


def _job_with_files(db, make_job, kind: str, status: str, finished_days_ago: float):
    finished = datetime.now(UTC) - timedelta(days=finished_days_ago)
    job = make_job(kind=kind, status=status, finished_at=finished)
    folder = Path(job.artifact_dir)
    folder.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        (folder / name).write_bytes(b"x" * 16)
    with db() as session:
        state.register_artifacts(session, job.id, folder)
    return job


def _left(db, job) -> tuple[list[str], list[str]]:
    with db() as session:
        rows = session.scalars(
            select(Artifact.name).where(Artifact.job_id == job.id).order_by(Artifact.name)
        ).all()
    return list(rows), sorted(p.name for p in Path(job.artifact_dir).iterdir())


def _janitor() -> Janitor:
    return Janitor(WorkerContext(worker_id="w@host", queues=["default"], devices=[]), 60, 60)


def test_old_succeeded_jobs_keep_only_the_checkpoint_later_stages_use(
    settings, db, make_job, monkeypatch
) -> None:
    monkeypatch.setenv("LIVT_RETENTION_KEEP_BEST_DAYS", "7")
    get_settings.cache_clear()
    old_finetune = _job_with_files(db, make_job, "finetune", "succeeded", 8)
    old_pretrain = _job_with_files(db, make_job, "pretrain", "succeeded", 8)
    young = _job_with_files(db, make_job, "finetune", "succeeded", 6)
    failed = _job_with_files(db, make_job, "finetune", "failed", 30)  # a retry resumes from last

    janitor = _janitor()
    pruned = janitor.tick()
    assert sorted(pruned) == sorted(
        [
            f"artifact:{old_finetune.id}/{contract.LAST_CHECKPOINT}",
            f"artifact:{old_pretrain.id}/{contract.BEST_CHECKPOINT}",
        ]
    )
    expected_finetune = sorted([contract.BEST_CHECKPOINT, contract.RESULTS_FILE])
    assert _left(db, old_finetune) == (expected_finetune, expected_finetune)
    expected_pretrain = sorted([contract.LAST_CHECKPOINT, contract.RESULTS_FILE])
    assert _left(db, old_pretrain) == (expected_pretrain, expected_pretrain)
    for job in (young, failed):
        assert _left(db, job) == (sorted(FILES), sorted(FILES))
    assert janitor.prune_artifacts() == []  # once per PRUNE_EVERY_SECONDS
    janitor._pruned_at = -1e9
    assert janitor.prune_artifacts() == []  # nothing left to delete


def test_without_the_setting_nothing_is_deleted(settings, db, make_job) -> None:
    assert get_settings().retention_keep_best_days is None
    old = _job_with_files(db, make_job, "finetune", "succeeded", 400)
    assert _janitor().prune_artifacts() == []
    assert _left(db, old) == (sorted(FILES), sorted(FILES))
