"""The Celery tasks of the job service: ``livt.run_job(job_id)`` and
``livt.profile_dataset(dataset_id, attempt)`` (reads a registered image folder's files once and
stores its profile, see ``livt_service.datasets``).

The task takes only the job id and re-reads the row; the atomic claim makes it idempotent (a
duplicate or redelivered message finds the job taken or finished and does nothing), which is what
makes ``acks_late`` safe. :class:`LivtTask` gives every task the same policy: one log line at start
and end, retries with exponential backoff for transient database / broker errors only, and
failures reduced to picklable exceptions.
"""

from __future__ import annotations

import logging
import pickle
import time
from typing import Any

from celery import Task, shared_task
from celery.exceptions import Retry
from kombu.exceptions import OperationalError as BrokerOperationalError
from sqlalchemy.exc import DisconnectionError, InterfaceError
from sqlalchemy.exc import OperationalError as DatabaseOperationalError

from livt_service import datasets, state
from livt_service.queue import PROFILE_DATASET_TASK, RUN_JOB_TASK
from livt_service.settings import get_settings
from livt_service.state import Finish
from worker import janitor
from worker.context import get_context
from worker.devices import devices_record, gpus_to_take
from worker.runner import JobRunner

logger = logging.getLogger(__name__)

#: Errors that say "the database or the broker is unreachable right now", and nothing else.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    DatabaseOperationalError,
    InterfaceError,
    DisconnectionError,
    BrokerOperationalError,
    ConnectionError,
    TimeoutError,
)


class TaskError(Exception):
    """A task failure reduced to its type name and message, so that it always pickles."""

    def __init__(self, message: str) -> None:
        super().__init__(message)


def _picklable(exc: BaseException) -> BaseException:
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return TaskError(f"{type(exc).__name__}: {exc}")
    return exc


class LivtTask(Task):
    """Base of every task: shared logging, transient-only retries, picklable failures."""

    autoretry_for = TRANSIENT_ERRORS
    retry_backoff = 2
    retry_backoff_max = 300
    retry_jitter = True
    max_retries = 20
    acks_late = True
    reject_on_worker_lost = True
    ignore_result = True

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        started = time.monotonic()
        delivery = getattr(self.request, "id", None)
        logger.info("%s%s started (message %s)", self.name, list(args), delivery)
        try:
            result = super().__call__(*args, **kwargs)
        except Retry:
            logger.warning("%s%s will be retried after a transient error", self.name, list(args))
            raise
        except Exception as exc:
            logger.exception("%s%s failed", self.name, list(args))
            safe = _picklable(exc)
            if safe is exc:
                raise
            raise safe from None
        logger.info(
            "%s%s finished in %.1f s: %s", self.name, list(args), time.monotonic() - started, result
        )
        return result


@shared_task(bind=True, base=LivtTask, name=RUN_JOB_TASK)
def run_job(self: LivtTask, job_id: str) -> str:
    """Claims job ``job_id`` and runs it to its end; returns the job's status afterwards.

    Does nothing (and returns the current status) when the job cannot be claimed: already taken
    by another worker, finished, cancelled, or a pipeline stage whose predecessor has not
    succeeded yet.
    """
    context = get_context() or janitor.ensure_context(self.app)
    needs = state.job_needs(job_id)
    if needs is None:
        logger.warning("job %s does not exist; dropping its message", job_id)
        return "unknown"
    if needs.nodes > 1:
        from worker.gang import run_gang_member

        return run_gang_member(job_id, needs, context)
    try:
        devices = context.acquire(gpus_to_take(needs.gpus, needs.cpu_only))
    except ValueError as exc:
        job = state.claim_job(job_id, context.worker_id)
        if job is not None:
            state.finish_job(job, Finish("failed", reason="internal", message=str(exc)))
            return "failed"
        return state.job_status(job_id) or "unknown"
    cpus = context.acquire_cpus()
    try:
        job = state.claim_job(job_id, context.worker_id, devices_record(devices))
        if job is None:
            status = state.job_status(job_id)
            logger.info("job %s not claimed: it is %s", job_id, status)
            return status or "unknown"
        runner = JobRunner(
            job,
            shutdown=context.shutdown,
            devices=devices,
            heartbeat_seconds=get_settings().heartbeat_seconds,
            cpus=cpus or None,
        )
        return runner.run()
    finally:
        context.release_cpus(cpus)
        context.release(devices)


@shared_task(bind=True, base=LivtTask, name=PROFILE_DATASET_TASK)
def profile_dataset(self: LivtTask, dataset_id: int, attempt: int) -> str:
    """Profiles a registered image folder in this worker process (PIL and NumPy, no child
    process: it is I/O and decoding, seconds to minutes); returns the dataset's status. A
    message for a try that is done, failed or handed to another worker does nothing."""
    context = get_context() or janitor.ensure_context(self.app)
    return datasets.profile_dataset(int(dataset_id), int(attempt), context.worker_id)
