"""Organising runs: a job's name, tags and notes (``PATCH /jobs/{id}``), and deleting a
finished job with its artifacts (``DELETE /jobs/{id}``)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from api.errors import ConflictError
from api.services.jobs import get_job
from livt_core.contract import TERMINAL_STATUSES
from livt_service.db import begin_write
from livt_service.models import Job, User
from livt_service.settings import Settings

logger = logging.getLogger(__name__)


def update_job(session: Session, user: User, job_id: str, changes: dict[str, object]) -> Job:
    """Sets the fields of ``changes`` (``name``, ``tags``, ``notes``) on the job; 404 when the
    user may not see it."""
    begin_write(session)
    job = get_job(session, user, job_id, for_update=True)
    for key, value in changes.items():
        setattr(job, key, value)
    session.commit()
    return job


def delete_job(session: Session, settings: Settings, user: User, job_id: str) -> None:
    """Deletes a finished job, its rows (attempts, metrics, logs, artifacts) and its artifact
    folder. 409 while it is not finished, and while another job starts from it (a later
    pipeline stage, a sweep child, a finetune or evaluate of it)."""
    begin_write(session)
    job = get_job(session, user, job_id, for_update=True)
    if job.status not in TERMINAL_STATUSES:
        session.rollback()
        raise ConflictError(f"job {job_id} is {job.status}; cancel it and wait until it stops")
    dependents = list(
        session.scalars(
            select(Job.id)
            .where(or_(Job.depends_on == job.id, Job.init_job_id == job.id), Job.id != job.id)
            .order_by(Job.id)
        )
    )
    if dependents:
        session.rollback()
        shown = ", ".join(dependents[:5]) + (" ..." if len(dependents) > 5 else "")
        raise ConflictError(
            f"job {job_id} is the start of {len(dependents)} other job(s) ({shown}); delete "
            "those first"
        )
    folder = Path(job.artifact_dir).resolve()
    session.delete(job)
    session.commit()
    if folder.is_relative_to(settings.artifact_dir.resolve()) and folder.is_dir():
        shutil.rmtree(folder, ignore_errors=True)
    logger.info("job %s deleted by %s", job_id, user.name)
