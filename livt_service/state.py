"""Every change of a job's state, written once: claim, progress, finish, cancel (including the
pipeline stages that wait for a job), retry, requeue and log lines. The API and the worker both
call these functions.

Ownership of a running job is fenced: a worker may write to a job only while the row still says
``worker_id = <this worker>``, ``attempt = <the claimed attempt>`` and ``status`` running or
cancelling. A worker that was declared lost (and whose job was requeued) therefore notices on its
next write and stops, instead of overwriting the new attempt's state.

Messages are sent only after the transaction that justifies them has committed (``enqueue`` is
called last), so a worker can never receive a task for a row it cannot see yet.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import and_, delete, exists, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, aliased

from livt_core import contract
from livt_service.db import begin_write, session_scope
from livt_service.models import (
    ACTIVE_STATUSES,
    TERMINAL_STATUSES,
    Artifact,
    Job,
    JobAttempt,
    LogLine,
    MetricPoint,
    StepPoint,
    Worker,
    WorkerQueue,
    utcnow,
)

logger = logging.getLogger(__name__)

Enqueue = Callable[[str, str], None]

#: A job whose worker was lost this many times fails with reason ``worker_lost`` instead of
#: being requeued once more (a job that kills its worker must not loop forever).
MAX_LOST_ATTEMPTS = 3

#: Files of a run directory registered as artifacts, with their kind.
ARTIFACT_KINDS = contract.ARTIFACT_KINDS


def _default_enqueue(job_id: str, queue: str) -> None:
    from livt_service.queue import enqueue

    enqueue(job_id, queue)


@dataclass(frozen=True)
class ClaimedJob:
    """The part of a job row a worker needs to run it (read once, at claim time)."""

    id: str
    kind: str
    attempt: int
    config: dict[str, Any]
    gpus: int
    queue: str
    artifact_dir: str
    worker_id: str

    @classmethod
    def of(cls, job: Job, worker_id: str) -> ClaimedJob:
        return cls(
            id=job.id,
            kind=job.kind,
            attempt=job.attempt,
            config=dict(job.config),
            gpus=job.gpus,
            queue=job.queue,
            artifact_dir=job.artifact_dir,
            worker_id=worker_id,
        )


@dataclass
class LogRecord:
    """One line for the job's log."""

    message: str
    level: str = "INFO"
    ts: datetime = field(default_factory=utcnow)


@dataclass
class FlushBatch:
    """What a running job produced since the last flush."""

    progress: dict[str, Any] | None = None
    metrics: dict[int, dict[str, Any]] = field(default_factory=dict)
    #: step points by span (``contract.step_bucket``): global_step, epoch, metrics
    steps: dict[int, dict[str, Any]] = field(default_factory=dict)
    logs: list[LogRecord] = field(default_factory=list)
    artifact_dir: str | None = None
    artifact_names: set[str] = field(default_factory=set)

    def empty(self) -> bool:
        return (
            self.progress is None
            and not self.metrics
            and not self.steps
            and not self.logs
            and not self.artifact_names
        )

    def merge_back(self, later: FlushBatch) -> None:
        """Puts a batch that could not be written in front of what arrived since."""
        if later.progress is not None:
            self.progress = later.progress
        self.metrics.update(later.metrics)
        self.steps.update(later.steps)
        self.logs.extend(later.logs)
        self.artifact_names |= later.artifact_names


@dataclass(frozen=True)
class FlushOutcome:
    """``owned`` False: the job was requeued or finished elsewhere; stop touching it."""

    owned: bool
    cancel_requested: bool


def _upsert(session: Session, table: Any, values: Sequence[Mapping[str, Any]], keys: list[str]):
    """INSERT … ON CONFLICT (keys) DO UPDATE of every other given column."""
    if not values:
        return
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        stmt = postgresql.insert(table)
    elif dialect == "sqlite":
        stmt = sqlite.insert(table)
    else:  # pragma: no cover - the service supports SQLite and PostgreSQL only
        raise RuntimeError(f"unsupported database dialect {dialect!r}")
    update_cols = {c: stmt.excluded[c] for c in values[0] if c not in keys}
    session.execute(stmt.on_conflict_do_update(index_elements=keys, set_=update_cols), values)


@contextmanager
def _writing() -> Iterator[Session]:
    """A write transaction: on SQLite it holds the write lock from its first statement, so that
    what it reads stays true until it commits."""
    with session_scope() as session:
        begin_write(session)
        yield session


def _fence(job: ClaimedJob) -> Any:
    """The rows this worker still owns: the claimed job, attempt and worker, still active."""
    return and_(
        Job.id == job.id,
        Job.worker_id == job.worker_id,
        Job.attempt == job.attempt,
        Job.status.in_(ACTIVE_STATUSES),
    )


def _update_owned(session: Session, job: ClaimedJob, values: dict[str, Any]) -> bool:
    """Writes ``values`` to the job row if this worker still owns it; otherwise rolls the
    session back and returns False."""
    owned = session.execute(
        update(Job).where(_fence(job)).values(**values).execution_options(synchronize_session=False)
    )
    if owned.rowcount != 1:
        session.rollback()
        return False
    return True


def next_log_seq(session: Session, job_id: str) -> int:
    """The ``seq`` of the job's next log line (lines count from 0 across attempts)."""
    last = session.scalar(select(func.max(LogLine.seq)).where(LogLine.job_id == job_id))
    return 0 if last is None else int(last) + 1


def append_logs(session: Session, job_id: str, attempt: int, records: Iterable[LogRecord]) -> None:
    """Inserts ``records`` as one batch after the job's last line (inside a write transaction,
    which keeps the numbering free of gaps and clashes)."""
    first = next_log_seq(session, job_id)
    rows = [
        {
            "job_id": job_id,
            "seq": first + i,
            "ts": r.ts,
            "level": r.level,
            "message": r.message,
            "attempt": attempt,
        }
        for i, r in enumerate(records)
    ]
    if rows:
        session.execute(insert(LogLine), rows)


def append_log(
    session: Session, job_id: str, attempt: int, message: str, level: str = "INFO"
) -> None:
    """Appends one line to the job's log (inside a write transaction)."""
    append_logs(session, job_id, attempt, [LogRecord(message, level)])


def add_log_line(job_id: str, attempt: int, message: str, level: str = "INFO") -> None:
    """Appends one line to the job's log in a transaction of its own (any status)."""
    with _writing() as session:
        append_log(session, job_id, attempt, message, level)


def upsert_metrics(session: Session, job_id: str, metrics: Mapping[int, Mapping[str, Any]]) -> None:
    """One row per (job, epoch); a repeated epoch (after a resume) replaces the old one."""
    now = utcnow()
    rows = [
        {"job_id": job_id, "epoch": int(epoch), "metrics": dict(values), "created_at": now}
        for epoch, values in sorted(metrics.items())
    ]
    _upsert(session, MetricPoint.__table__, rows, ["job_id", "epoch"])


def upsert_steps(session: Session, job_id: str, steps: Mapping[int, Mapping[str, Any]]) -> None:
    """One row per (job, span of steps); a span a resumed run repeats is replaced."""
    now = utcnow()
    rows = [
        {
            "job_id": job_id,
            "bucket": int(bucket),
            "global_step": int(point["global_step"]),
            "epoch": int(point["epoch"]),
            "metrics": dict(point["metrics"]),
            "created_at": now,
        }
        for bucket, point in sorted(steps.items())
    ]
    _upsert(session, StepPoint.__table__, rows, ["job_id", "bucket"])


def register_artifacts(
    session: Session, job_id: str, run_dir: str | Path, names: Iterable[str] | None = None
) -> list[str]:
    """Registers (or refreshes the size of) the known files of ``run_dir`` (``ARTIFACT_KINDS``
    and the TensorBoard event files); returns their names."""
    folder = Path(run_dir)
    now = utcnow()
    rows = []
    if names is None:
        board = folder.glob(f"{contract.TENSORBOARD_PREFIX}*") if folder.is_dir() else ()
        names = [*ARTIFACT_KINDS, *(p.name for p in board)]
    for name in sorted(names):
        path = folder / name
        kind = contract.artifact_kind(name)
        if kind is None or not path.is_file():
            continue
        rows.append(
            {
                "job_id": job_id,
                "name": name,
                "kind": kind,
                "path": str(path),
                "size_bytes": path.stat().st_size,
                "created_at": now,
            }
        )
    _upsert(session, Artifact.__table__, rows, ["job_id", "name"])
    return [r["name"] for r in rows]


def prune_checkpoints(older_than: timedelta, *, limit: int = 100) -> list[str]:
    """Deletes the checkpoints of jobs that succeeded more than ``older_than`` ago, except the
    one a later stage starts from (``contract.INIT_CHECKPOINT``: a finetune keeps its best, a
    pretrain its last); the files first, then their ``artifacts`` rows. A file outside its job's
    artifact folder is left alone (its row goes). Returns ``"<job id>/<name>"`` of each one."""
    cutoff = utcnow() - older_than
    kept = [
        and_(Job.kind == kind, Artifact.name == name)
        for kind, name in contract.INIT_CHECKPOINT.items()
    ]
    with session_scope() as session:
        rows = session.execute(
            select(Artifact.id, Artifact.job_id, Artifact.name, Artifact.path, Job.artifact_dir)
            .join(Job, Job.id == Artifact.job_id)
            .where(
                Job.status == "succeeded",
                Job.finished_at < cutoff,
                Artifact.kind == "checkpoint",
                ~or_(*kept),
            )
            .order_by(Artifact.id)
            .limit(limit)
        ).all()
    if not rows:
        return []
    for row in rows:
        folder = Path(row.artifact_dir).resolve()
        path = Path(row.path).resolve()
        if path.is_relative_to(folder):
            path.unlink(missing_ok=True)
        else:
            logger.warning("artifact %s of %s lies outside its folder: kept", path, row.job_id)
    with _writing() as session:
        session.execute(delete(Artifact).where(Artifact.id.in_([r.id for r in rows])))
    pruned = [f"{r.job_id}/{r.name}" for r in rows]
    logger.info("retention: deleted %d checkpoint(s): %s", len(pruned), ", ".join(pruned))
    return pruned


# --------------------------------------------------------------------------- claim and run


def claimable() -> tuple[Any, ...]:
    """The conditions of a job a worker may take now: queued, no cancel request, and no
    predecessor (pipeline stage) that has not succeeded."""
    parent = aliased(Job)
    predecessor_done = exists().where(parent.id == Job.depends_on, parent.status == "succeeded")
    return (
        Job.status == "queued",
        Job.cancel_requested.is_(False),
        or_(Job.depends_on.is_(None), predecessor_done),
    )


def claim_job(job_id: str, worker_id: str, devices: str | None = None) -> ClaimedJob | None:
    """Atomically moves a queued job to ``running`` on ``worker_id``.

    ``devices``: what the worker hands the attempt (``cpu`` or GPU ids ``0,1``), kept in the row.

    Exactly one of several workers racing for the same job gets it: the conditional UPDATE
    (``status = 'queued' AND NOT cancel_requested`` and, for a pipeline stage, a succeeded
    predecessor) matches for the first writer only. Records the attempt row. Returns None when the
    job cannot be claimed (unknown, already taken, finished, cancelled, or still waiting).
    """
    now = utcnow()
    with _writing() as session:
        claimed = session.execute(
            update(Job)
            .where(Job.id == job_id, *claimable())
            .values(
                status="running",
                worker_id=worker_id,
                started_at=func.coalesce(Job.started_at, now),
                heartbeat_at=now,
                updated_at=now,
                **({} if devices is None else {"devices": devices}),
            )
            .execution_options(synchronize_session=False)
        )
        if claimed.rowcount != 1:
            return None
        job = session.execute(select(Job).where(Job.id == job_id)).scalar_one()
        open_attempt(session, job_id, job.attempt, worker_id, now)
        on = f" ({'CPU' if devices == 'cpu' else f'GPUs {devices}'})" if devices else ""
        append_log(
            session,
            job_id,
            job.attempt,
            f"attempt {job.attempt} started on worker {worker_id}{on}",
            "INFO",
        )
        return ClaimedJob.of(job, worker_id)


def open_attempt(session: Session, job_id: str, number: int, worker_id: str, now: datetime) -> None:
    """Records attempt ``number`` of the job as started on ``worker_id`` (a fresh row, or the
    row of a claim that was handed back before the run started)."""
    row = session.scalar(
        select(JobAttempt).where(JobAttempt.job_id == job_id, JobAttempt.number == number)
    )
    if row is None:
        session.add(JobAttempt(job_id=job_id, number=number, worker_id=worker_id, started_at=now))
    else:
        row.worker_id, row.started_at = worker_id, now
        row.ended_at = row.outcome = row.message = None


@dataclass(frozen=True)
class JobNeeds:
    """What a job asks of a worker: ``gpus`` processes on each of ``nodes`` hosts, on the CPU
    when its config says ``device: cpu``."""

    gpus: int
    nodes: int
    cpu_only: bool


def job_needs(job_id: str) -> JobNeeds | None:
    """The resources job ``job_id`` asks for (None for an unknown id)."""
    with session_scope() as session:
        row = session.execute(
            select(Job.gpus, Job.nodes, Job.config).where(Job.id == job_id)
        ).first()
    if row is None:
        return None
    device = (row.config or {}).get("device")
    return JobNeeds(gpus=int(row.gpus), nodes=int(row.nodes or 1), cpu_only=device == "cpu")


def job_status(job_id: str) -> str | None:
    """The job's current status (None for an unknown id)."""
    with session_scope() as session:
        return session.scalar(select(Job.status).where(Job.id == job_id))


def flush(job: ClaimedJob, batch: FlushBatch) -> FlushOutcome:
    """Writes one batch (progress, heartbeat, metric points, log lines, artifacts) in one
    transaction and reads back the cancellation flag.

    Nothing is written when the worker no longer owns the job.
    """
    now = utcnow()
    with _writing() as session:
        values: dict[str, Any] = {"heartbeat_at": now, "updated_at": now}
        if batch.progress is not None:
            values["progress"] = {**batch.progress, "updated_at": now.isoformat()}
        if not _update_owned(session, job, values):
            return FlushOutcome(owned=False, cancel_requested=False)
        upsert_metrics(session, job.id, batch.metrics)
        upsert_steps(session, job.id, batch.steps)
        append_logs(session, job.id, job.attempt, batch.logs)
        if batch.artifact_names and batch.artifact_dir:
            register_artifacts(session, job.id, batch.artifact_dir, batch.artifact_names)
        cancel = bool(session.scalar(select(Job.cancel_requested).where(Job.id == job.id)))
    return FlushOutcome(owned=True, cancel_requested=cancel)


def poll(job: ClaimedJob) -> FlushOutcome:
    """Reads, without writing, whether the worker still owns the job and whether a cancel was
    requested."""
    with session_scope() as session:
        row = session.execute(select(Job.cancel_requested).where(_fence(job))).first()
    return FlushOutcome(owned=row is not None, cancel_requested=bool(row is not None and row[0]))


#: The group accuracies of a long-tail result copied into ``jobs`` columns (sorting ``GET /jobs``).
RESULT_COLUMNS = ("overall", "many", "medium", "few")


def result_columns(result: Mapping[str, Any] | None) -> dict[str, float | None]:
    """``{"overall", "many", "medium", "few"}`` of a finished run's result: its accuracies, None
    for a pretrain summary, a run without a result or an empty group."""
    if not result or result.get("kind") == "pretrain":
        return dict.fromkeys(RESULT_COLUMNS)
    values: dict[str, float | None] = {}
    for name in RESULT_COLUMNS:
        value = result.get(name)
        number = isinstance(value, int | float) and not isinstance(value, bool)
        values[name] = float(value) if number else None
    return values


@dataclass(frozen=True)
class Finish:
    """The end of an attempt. ``status``: succeeded, failed or cancelled."""

    status: str
    result: dict[str, Any] | None = None
    reason: str | None = None
    message: str | None = None
    progress: dict[str, Any] | None = None


def finish_job(
    job: ClaimedJob,
    outcome: Finish,
    *,
    logs: Sequence[LogRecord] = (),
    enqueue: Enqueue | None = None,
) -> bool:
    """Records the end of the job: status, result or typed failure, the attempt's outcome, the
    remaining log lines and artifacts; then releases (success) or cancels (failure, cancel) the
    pipeline stages that wait for it. Returns False when the worker no longer owned the job."""
    now = utcnow()
    release: list[tuple[str, str]] = []
    with _writing() as session:
        values: dict[str, Any] = {
            "status": outcome.status,
            "finished_at": now,
            "heartbeat_at": now,
            "updated_at": now,
            "result": outcome.result,
            **result_columns(outcome.result),
            "failure_reason": outcome.reason,
            "failure_message": outcome.message,
        }
        if outcome.progress is not None:
            values["progress"] = {**outcome.progress, "updated_at": now.isoformat()}
        if not _update_owned(session, job, values):
            return False
        append_logs(session, job.id, job.attempt, logs)
        _close_attempt(session, job.id, job.attempt, outcome.status, outcome.message)
        register_artifacts(session, job.id, job.artifact_dir)
        if outcome.status == "succeeded":
            release = _waiting_dependents(session, job.id)
        else:
            cancel_dependents(session, job.id, outcome.status)
    for dependent_id, queue in release:
        (enqueue or _default_enqueue)(dependent_id, queue)
        logger.info("released pipeline stage %s (after %s)", dependent_id, job.id)
    return True


def _close_attempt(
    session: Session, job_id: str, number: int, outcome: str, message: str | None
) -> None:
    session.execute(
        update(JobAttempt)
        .where(JobAttempt.job_id == job_id, JobAttempt.number == number)
        .values(ended_at=utcnow(), outcome=outcome, message=message)
        .execution_options(synchronize_session=False)
    )


def _waiting_dependents(session: Session, job_id: str) -> list[tuple[str, str]]:
    rows = session.execute(
        select(Job.id, Job.queue).where(Job.depends_on == job_id, Job.status == "queued")
    ).all()
    return [(r.id, r.queue) for r in rows]


def cancel_dependents(session: Session, job_id: str, status: str) -> list[str]:
    """Cancels the queued pipeline stages that (transitively) wait for ``job_id``, which has just
    become ``status`` (failed or cancelled). Each stage gets a failure message and a log line
    (at its own attempt) naming the job it starts from. Returns the cancelled ids."""
    now = utcnow()
    cancelled: list[str] = []
    frontier = [(job_id, status)]
    while frontier:
        parent_id, parent_status = frontier.pop()
        waiting = session.execute(
            select(Job.id, Job.attempt).where(Job.depends_on == parent_id, Job.status == "queued")
        ).all()
        for dependent_id, attempt in waiting:
            message = f"cancelled: job {parent_id}, which it starts from, is {parent_status}"
            session.execute(
                update(Job)
                .where(Job.id == dependent_id, Job.status == "queued")
                .values(
                    status="cancelled",
                    cancel_requested=True,
                    finished_at=now,
                    updated_at=now,
                    failure_message=message,
                )
                .execution_options(synchronize_session="fetch")
            )
            append_log(session, dependent_id, attempt, message, "WARNING")
            cancelled.append(dependent_id)
            frontier.append((dependent_id, "cancelled"))
    if cancelled:
        logger.info("cancelled waiting pipeline stages %s", ", ".join(cancelled))
    return cancelled


class TransitionError(Exception):
    """A requested change that the job's current status does not allow (the API's 409)."""


def _start_next_attempt(job: Job, now: datetime) -> None:
    """Puts ``job`` back in the queue as its next attempt; the one list of the fields a new
    attempt starts without (used by retry and by every requeue)."""
    job.status, job.attempt = "queued", job.attempt + 1
    job.cancel_requested = False
    job.failure_reason = job.failure_message = None
    job.result = job.progress = None
    job.overall = job.many = job.medium = job.few = None
    job.worker_id = job.heartbeat_at = None
    job.started_at = job.finished_at = None
    job.updated_at = now


def fail_unsent(session: Session, job_id: str, message: str) -> None:
    """A queued job whose message could not be sent to the workers fails with ``internal``."""
    now = utcnow()
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == "queued")
        .values(
            status="failed",
            failure_reason="internal",
            failure_message=message,
            finished_at=now,
            updated_at=now,
        )
    )


def request_cancel(session: Session, job: Job, by: str) -> None:
    """Queued → cancelled (with the stages waiting on it); running → cancelling, which the worker
    turns into cancelled once the run has stopped. ``job`` is locked by the caller.

    Raises :class:`TransitionError` for a finished job."""
    if job.status in TERMINAL_STATUSES:
        raise TransitionError(f"job {job.id} is already {job.status}; there is nothing to cancel")
    job.cancel_requested = True
    if job.status == "queued":
        job.status = "cancelled"
        job.finished_at = job.updated_at = utcnow()
        append_log(session, job.id, job.attempt, f"cancelled by {by} before it started")
        session.flush()
        cancel_dependents(session, job.id, "cancelled")
    elif job.status == "running":
        job.status = "cancelling"


def retry(session: Session, job: Job, by: str) -> bool:
    """Puts a failed or cancelled job back in the queue with ``attempt + 1``; the run resumes
    from the last checkpoint in its artifact folder. ``job`` is locked by the caller. Returns
    whether it can be enqueued now (False while the stage it starts from has not succeeded).

    Raises :class:`TransitionError` for any other status, or when the stage it starts from
    failed or was cancelled."""
    if job.status not in ("failed", "cancelled"):
        raise TransitionError(
            f"job {job.id} is {job.status}; only failed or cancelled jobs can be retried"
        )
    waits = False
    if job.depends_on is not None:
        parent = session.get(Job, job.depends_on)
        if parent is not None and parent.status in ("failed", "cancelled"):
            raise TransitionError(
                f"job {job.id} starts from job {parent.id}, which is {parent.status}; "
                f"retry {parent.id} first"
            )
        waits = parent is not None and parent.status != "succeeded"
    _start_next_attempt(job, utcnow())
    append_log(session, job.id, job.attempt, f"retry requested by {by}: attempt {job.attempt}")
    return not waits


# --------------------------------------------------------------------------- lost workers


def _requeue(
    session: Session,
    job: Job,
    *,
    outcome: str,
    message: str,
    count_as_lost: bool,
) -> tuple[str, str] | None:
    """Requeues (or, for a cancelling job, cancels; or, after too many losses, fails) one job
    that its worker left. The caller's WHERE clause already matched; returns (id, queue) to
    enqueue after the commit, or None."""
    now = utcnow()
    number = job.attempt
    lost_before = 0
    if count_as_lost:
        lost_before = session.scalar(
            select(func.count())
            .select_from(JobAttempt)
            .where(JobAttempt.job_id == job.id, JobAttempt.outcome == "worker_lost")
        )
    _close_attempt(session, job.id, number, outcome, message)
    if job.status == "cancelling":
        job.status, job.finished_at = "cancelled", now
        job.worker_id, job.updated_at = None, now
        append_log(
            session,
            job.id,
            number,
            f"{message}; the job was being cancelled: it is now cancelled",
            "WARNING",
        )
        cancel_dependents(session, job.id, "cancelled")
        return None
    if count_as_lost and lost_before + 1 >= MAX_LOST_ATTEMPTS:
        job.status, job.finished_at, job.updated_at = "failed", now, now
        job.failure_reason = "worker_lost"
        job.failure_message = (
            f"{message}; the job lost its worker {lost_before + 1} times and is not requeued "
            "again; check the worker's memory and logs, then retry the job"
        )
        job.worker_id = None
        append_log(session, job.id, number, job.failure_message, "ERROR")
        cancel_dependents(session, job.id, "failed")
        return None
    _start_next_attempt(job, now)
    append_log(session, job.id, number, f"{message}; requeued as attempt {number + 1}", "WARNING")
    return job.id, job.queue


def requeue_lost_jobs(lost_after_seconds: float, *, enqueue: Enqueue | None = None) -> list[str]:
    """Requeues every running job whose heartbeat is older than ``lost_after_seconds``.

    Safe to run from every worker at once: each job is re-checked under a row lock (``FOR UPDATE``
    on PostgreSQL, the database write lock on SQLite) inside its own transaction.
    """
    cutoff = utcnow() - timedelta(seconds=lost_after_seconds)
    stale = or_(Job.heartbeat_at.is_(None), Job.heartbeat_at < cutoff)
    with session_scope() as session:
        candidates = session.scalars(
            select(Job.id).where(Job.status.in_(ACTIVE_STATUSES), stale)
        ).all()
    return _requeue_each(
        candidates,
        extra=stale,
        message_for=lambda job: (
            f"worker {job.worker_id} lost (no heartbeat for {lost_after_seconds:g} s)"
        ),
        outcome="worker_lost",
        count_as_lost=True,
        enqueue=enqueue,
    )


def recover_worker_jobs(worker_id: str, *, enqueue: Enqueue | None = None) -> list[str]:
    """At a worker's start: its own jobs still marked running were left by its previous process
    (killed, or the machine rebooted) and are requeued at once instead of after the timeout."""
    with session_scope() as session:
        candidates = session.scalars(
            select(Job.id).where(Job.status.in_(ACTIVE_STATUSES), Job.worker_id == worker_id)
        ).all()
    return _requeue_each(
        candidates,
        extra=Job.worker_id == worker_id,
        message_for=lambda job: f"worker {worker_id} restarted while running this job",
        outcome="worker_lost",
        count_as_lost=True,
        enqueue=enqueue,
    )


def requeue_interrupted(job: ClaimedJob, *, enqueue: Enqueue | None = None) -> bool:
    """A worker shutting down hands its job back (it resumes from its last checkpoint)."""
    requeued = _requeue_each(
        [job.id],
        extra=_fence(job),
        message_for=lambda _: f"worker {job.worker_id} shut down",
        outcome="interrupted",
        count_as_lost=False,
        enqueue=enqueue,
    )
    return bool(requeued)


def requeue_host_lost(job: ClaimedJob, message: str, *, enqueue: Enqueue | None = None) -> bool:
    """The process that hosted the job's run died under it (the worker's warm-start launcher,
    whose runs die with it): the attempt ends as ``worker_lost`` and counts as one of the job's
    lost workers (the third fails it); the job resumes from its last checkpoint."""
    requeued = _requeue_each(
        [job.id],
        extra=_fence(job),
        message_for=lambda _: message,
        outcome="worker_lost",
        count_as_lost=True,
        enqueue=enqueue,
    )
    return bool(requeued)


def _requeue_each(
    job_ids: Iterable[str],
    *,
    extra: Any,
    message_for: Callable[[Job], str],
    outcome: str,
    count_as_lost: bool,
    enqueue: Enqueue | None,
) -> list[str]:
    handled: list[str] = []
    for job_id in job_ids:
        with _writing() as session:
            job = session.scalar(
                select(Job)
                .where(Job.id == job_id, Job.status.in_(ACTIVE_STATUSES), extra)
                .with_for_update()
            )
            if job is None:
                continue
            message = message_for(job)
            logger.warning("job %s: %s", job_id, message)
            send = _requeue(
                session, job, outcome=outcome, message=message, count_as_lost=count_as_lost
            )
        handled.append(job_id)
        if send is not None:
            (enqueue or _default_enqueue)(*send)
    return handled


# --------------------------------------------------------------------------- stranded jobs


def stranded_candidates(grace_seconds: float) -> list[tuple[str, str]]:
    """``(id, queue)`` of the jobs a worker could claim (queued, no cancel request, no
    unfinished predecessor) that have not changed for ``grace_seconds``: if the broker holds no
    message for one of them (its data was lost), nothing will ever run it."""
    cutoff = utcnow() - timedelta(seconds=grace_seconds)
    with session_scope() as session:
        rows = session.execute(
            select(Job.id, Job.queue).where(*claimable(), Job.updated_at < cutoff)
        ).all()
    return [(r.id, r.queue) for r in rows]


def resend_stranded(job_id: str, grace_seconds: float, *, enqueue: Enqueue | None = None) -> bool:
    """Sends a stranded job's message again (see :func:`stranded_candidates`).

    The job's ``updated_at`` is moved forward in the same conditional update that re-checks it,
    so of several janitors finding the same job only one sends, and the next re-send waits for
    another grace period. A duplicate message is harmless anyway: the claim is atomic.
    """
    now = utcnow()
    cutoff = now - timedelta(seconds=grace_seconds)
    with _writing() as session:
        job = session.scalar(
            select(Job)
            .where(Job.id == job_id, Job.status == "queued", Job.updated_at < cutoff)
            .with_for_update()
        )
        if job is None:
            return False
        job.updated_at = now
        queue, attempt = job.queue, job.attempt
        append_log(
            session,
            job_id,
            attempt,
            f"queued for over {grace_seconds:g} s with no message in the broker (its data was "
            "lost?): sent again",
            "WARNING",
        )
    (enqueue or _default_enqueue)(job_id, queue)
    return True


# --------------------------------------------------------------------------- worker registry


def register_worker(
    worker_id: str, queues: Sequence[str], gpus: int, address: str | None = None
) -> None:
    """Announces (or re-announces) a worker, its queues, GPU count and host address (for the
    API's checks and the rendezvous of multi-node jobs); its queues count as served from now on
    (``worker_queues``, which the API checks a spec's ``resources.queue`` against)."""
    now = utcnow()
    with _writing() as session:
        _upsert(
            session,
            Worker.__table__,
            [
                {
                    "id": worker_id,
                    "hostname": socket.gethostname(),
                    "queues": list(queues),
                    "gpus": int(gpus),
                    "address": address,
                    "started_at": now,
                    "heartbeat_at": now,
                }
            ],
            ["id"],
        )
        _upsert(
            session,
            WorkerQueue.__table__,
            [{"name": name, "last_served_at": now} for name in dict.fromkeys(queues)],
            ["name"],
        )


def worker_heartbeat(
    worker_id: str, queues: Sequence[str], gpus: int, address: str | None = None
) -> None:
    """Refreshes the worker's heartbeat (re-registering it if its row was removed)."""
    with _writing() as session:
        touched = session.execute(
            update(Worker)
            .where(Worker.id == worker_id)
            .values(heartbeat_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        if touched.rowcount == 1:
            return
    register_worker(worker_id, queues, gpus, address)


def unregister_worker(worker_id: str) -> None:
    with _writing() as session:
        session.execute(delete(Worker).where(Worker.id == worker_id))
