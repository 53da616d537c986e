"""Worker lifecycle: registration, start-up recovery, lost-job detection and shutdown.

Lost jobs are found by a background thread inside every worker process rather than by Celery
beat. Beat would be one more process that must run exactly once per deployment (and is absent in
the embedded mode, which has a single worker process); a thread per worker needs no extra
deployment, keeps working as long as any worker is alive, and is safe to run many times at once
because each requeue is a conditional update that only one janitor can win. The same thread
refreshes the worker's row in ``workers`` (the API's GPU check reads it).

Broker data loss (a FLUSHDB, a Redis without persistence restarted) leaves jobs queued in the
database with no message that would ever run them. The same thread compares the claimable queued
jobs older than ``LIVT_REQUEUE_GRACE_SECONDS`` with the messages the broker holds and sends the
missing ones again; a duplicate is harmless because the claim is atomic.

At start-up (``worker_init``, before any message is consumed) a worker requeues the jobs still
marked running under its own id: they were left by its previous process, which is gone. A warm
shutdown (SIGTERM / Ctrl-C) sets the shutdown flag: each run is stopped at its next step and its
job requeued, to resume from its last checkpoint on the next worker.

The same round looks after dataset profilings (``livt_service.datasets``): a profiling whose
worker stopped reporting gets its next try, one whose message the broker lost is sent again.

The worker's warm-start launcher (``worker.zygote``, unless ``LIVT_WARM_START=0``) starts at
``worker_init``, in the background (jobs start cold until it is ready), and stops at
``worker_shutdown``; each round starts it again if it died.

With ``LIVT_RETENTION_KEEP_BEST_DAYS`` set, the same thread (at most every ten minutes) deletes
the checkpoints of jobs that succeeded that many days ago, except the one later stages start
from (``livt_service.state.prune_checkpoints``); failed and cancelled jobs keep theirs, since a
retry resumes from the last one.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta
from typing import Any

from celery import Celery
from celery.signals import worker_init, worker_ready, worker_shutdown, worker_shutting_down
from sqlalchemy.exc import SQLAlchemyError

from livt_service import datasets, slots, state
from livt_service.queue import PROFILE_DATASET_TASK, live_job_ids
from livt_service.settings import get_settings
from worker import zygote
from worker.context import WorkerContext, configure, get_context, node_name, worker_address

logger = logging.getLogger(__name__)

#: The retention round (``LIVT_RETENTION_KEEP_BEST_DAYS``) runs at most this often per worker.
PRUNE_EVERY_SECONDS = 600.0


class Janitor(threading.Thread):
    """Every ``interval`` seconds: refresh this worker's heartbeat row, requeue the jobs of
    workers silent for longer than ``lost_after`` seconds and re-send the jobs stranded by a
    broker that lost its messages (queued for ``resend_grace`` seconds without one)."""

    def __init__(
        self,
        context: WorkerContext,
        interval: float,
        lost_after: float,
        resend_grace: float = 60.0,
    ) -> None:
        super().__init__(name="livt-janitor", daemon=True)
        self.context = context
        self.interval = interval
        self.lost_after = lost_after
        self.resend_grace = resend_grace
        self._stop_event = threading.Event()
        self._pruned_at = -PRUNE_EVERY_SECONDS

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            self.tick()

    def tick(self) -> list[str]:
        """One round; returns the ids of the jobs it requeued (or ended)."""
        ctx = self.context
        try:
            zygote.keep_alive()
        except Exception:
            logger.exception("janitor: could not restart the warm-start launcher")
        try:
            state.worker_heartbeat(ctx.worker_id, ctx.queues, ctx.gpus, worker_address())
            handled = state.requeue_lost_jobs(self.lost_after)
            return (
                handled
                + self.resend_stranded()
                + self.recover_profilings()
                + self.prune_artifacts()
            )
        except SQLAlchemyError as exc:
            logger.warning("janitor: database unreachable, will retry: %s", exc)
        except Exception:
            logger.exception("janitor: round failed")
        return []

    def resend_stranded(self) -> list[str]:
        """Re-sends the claimable jobs that have been queued for ``resend_grace`` seconds with no
        live message in the broker (after a FLUSHDB, or a Redis without persistence restarted).
        Returns their ids."""
        candidates = state.stranded_candidates(self.resend_grace)
        if not candidates:
            return []
        try:
            live = live_job_ids({queue for _, queue in candidates})
        except Exception as exc:  # the broker's own errors differ by transport
            logger.warning("janitor: broker unreachable, will retry: %s", exc)
            return []
        if live is None:
            return []  # a transport that cannot be inspected: nothing to compare with
        sent = []
        for job_id, _queue in candidates:
            if job_id not in live and state.resend_stranded(job_id, self.resend_grace):
                logger.warning("job %s was queued without a broker message: sent again", job_id)
                sent.append(job_id)
        return sent

    def prune_artifacts(self) -> list[str]:
        """With ``LIVT_RETENTION_KEEP_BEST_DAYS`` set, at most once per
        :data:`PRUNE_EVERY_SECONDS`: deletes the checkpoints of jobs that succeeded that many
        days ago except the one later stages start from (``state.prune_checkpoints``). Returns
        ``artifact:<job id>/<name>`` for each file."""
        days = get_settings().retention_keep_best_days
        now = time.monotonic()
        if days is None or now - self._pruned_at < PRUNE_EVERY_SECONDS:
            return []
        self._pruned_at = now
        pruned = state.prune_checkpoints(timedelta(days=days))
        return [f"artifact:{name}" for name in pruned]

    def recover_profilings(self) -> list[str]:
        """Sends the next try of the dataset profilings whose worker was lost and re-sends the
        unclaimed ones the broker holds no message for (``livt_service.datasets``). Returns
        ``dataset:<id>`` for each one handled."""
        queue = get_settings().default_queue
        handled = []
        for dataset_id, attempt in datasets.lost_profilings(self.lost_after):
            if datasets.retry_lost(dataset_id, attempt, self.lost_after, queue):
                handled.append(f"dataset:{dataset_id}")
        waiting = datasets.unclaimed_profilings(self.resend_grace)
        if not waiting:
            return handled
        try:
            live = live_job_ids([queue], task=PROFILE_DATASET_TASK)
        except Exception as exc:  # the broker's own errors differ by transport
            logger.warning("janitor: broker unreachable, will retry: %s", exc)
            return handled
        if live is None:
            return handled
        for dataset_id, attempt in waiting:
            if str(dataset_id) not in live and datasets.resend_unclaimed(
                dataset_id, attempt, self.resend_grace, queue
            ):
                handled.append(f"dataset:{dataset_id}")
        return handled

    def stop(self) -> None:
        self._stop_event.set()


_janitor: Janitor | None = None


def ensure_context(
    app: Celery, hostname: str | None = None, concurrency: int | None = None
) -> WorkerContext:
    """The worker context, derived from Celery's own options when ``livt worker`` did not set
    one (a worker started with ``celery -A livt_service.queue worker``)."""
    context = get_context()
    if context is not None:
        return context
    queues = list(app.amqp.queues.consume_from or []) or [get_settings().default_queue]
    return configure(node_name(hostname), queues, concurrency=concurrency or 1)


def start_up(context: WorkerContext) -> None:
    """Registers the worker and requeues the jobs its previous process left running."""
    try:
        recovered = state.recover_worker_jobs(context.worker_id)
        if recovered:
            logger.warning("requeued %d job(s) left running by this worker", len(recovered))
        slots.drop_worker_slots(context.worker_id)
        state.register_worker(context.worker_id, context.queues, context.gpus, worker_address())
    except SQLAlchemyError as exc:
        logger.error("could not register worker %s: %s", context.worker_id, exc)


@worker_init.connect
def _on_worker_init(sender: Any = None, **_: Any) -> None:
    context = ensure_context(
        sender.app, getattr(sender, "hostname", None), getattr(sender, "concurrency", None)
    )
    context.shutdown.clear()
    start_up(context)
    if get_settings().warm_start:
        zygote.start_launcher()


@worker_ready.connect
def _on_worker_ready(sender: Any = None, **_: Any) -> None:
    global _janitor
    context = get_context()
    if context is None or _janitor is not None:
        return
    settings = get_settings()
    _janitor = Janitor(
        context,
        settings.heartbeat_seconds,
        settings.worker_lost_seconds,
        resend_grace=settings.requeue_grace_seconds,
    )
    _janitor.start()


@worker_shutting_down.connect
def _on_shutting_down(**_: Any) -> None:
    context = get_context()
    if context is not None:
        context.shutdown.set()


@worker_shutdown.connect
def _on_worker_shutdown(**_: Any) -> None:
    global _janitor
    if _janitor is not None:
        _janitor.stop()
        _janitor = None
    zygote.stop_launcher()
    context = get_context()
    if context is None:
        return
    try:
        state.unregister_worker(context.worker_id)
    except SQLAlchemyError as exc:
        logger.warning("could not unregister worker %s: %s", context.worker_id, exc)
