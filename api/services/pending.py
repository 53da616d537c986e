"""Why a queued job waits (``pending_reason``), and which queues a spec may name.

Reasons are computed on read from the live workers (``workers``, heartbeat within
``LIVT_WORKER_LOST_SECONDS``), the queue positions and the pipeline dependencies. For a page of
jobs they cost no extra statement: each queued job's position and its predecessor's status are
columns of the page's own query (:func:`pending_columns`), and an API process reads the live
workers at most every ``LIVT_PENDING_WORKERS_TTL_SECONDS`` (2 s; heartbeats come every 5 s, so
this adds little staleness). With the TTL at 0, or without the columns, the facts and the
workers come back in one ``UNION ALL`` (:func:`pending_reasons`). In order of precedence:

- ``waiting for j_… (pipeline)``: the stage it starts from has not succeeded yet;
- ``no live worker serves queue 'gpu'``;
- ``waiting for 2 nodes, 1 available``: a multi-node job, fewer live workers of its queue with
  enough GPUs than nodes;
- ``needs 4 GPUs, largest live worker has 2``: every live worker of the queue has GPUs, none
  enough (a worker without GPUs runs any job on the CPU);
- ``workers busy (position 3 in 'default')``: 1 is the next job the queue's workers take.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import (
    Integer,
    String,
    Text,
    and_,
    case,
    cast,
    exists,
    func,
    literal,
    or_,
    select,
)
from sqlalchemy.orm import Session, aliased

from livt_service.labels import cpu_only
from livt_service.models import Job, Worker, WorkerQueue, utcnow
from livt_service.settings import Settings


@dataclass(frozen=True)
class LiveWorker:
    id: str
    queues: tuple[str, ...]
    gpus: int


def live_workers(session: Session, settings: Settings) -> list[LiveWorker]:
    """The workers whose heartbeat is younger than ``LIVT_WORKER_LOST_SECONDS``."""
    cutoff = utcnow() - timedelta(seconds=settings.worker_lost_seconds)
    rows = session.execute(
        select(Worker.id, Worker.queues, Worker.gpus).where(Worker.heartbeat_at >= cutoff)
    ).all()
    return [LiveWorker(r.id, tuple(r.queues or ()), int(r.gpus)) for r in rows]


def known_queues(session: Session, settings: Settings) -> list[str]:
    """The queues a spec may name: the default queue, every queue a worker has served
    (``worker_queues``) and those of the registered workers, sorted."""
    names = {settings.default_queue, *session.scalars(select(WorkerQueue.name))}
    for queues in session.scalars(select(Worker.queues)):
        names.update(queues or ())
    return sorted(names)


def reason_for(job: Job, workers: Sequence[LiveWorker], position: int, parent: str | None) -> str:
    """The pending reason of one queued job (see the module docstring).

    ``position``: its 1-based place among the claimable queued jobs of its queue; ``parent``:
    the status of the job it depends on (None without one)."""
    if job.depends_on is not None and parent != "succeeded":
        return f"waiting for {job.depends_on} (pipeline)"
    serving = [w for w in workers if job.queue in w.queues]
    if not serving:
        return f"no live worker serves queue '{job.queue}'"
    nodes, gpus = int(job.nodes or 1), int(job.gpus)
    fits = [w for w in serving if cpu_only(job) or w.gpus == 0 or w.gpus >= gpus]
    if nodes > 1 and len(fits) < nodes:
        return f"waiting for {nodes} nodes, {len(fits)} available"
    if not fits:
        largest = max(w.gpus for w in serving)
        return f"needs {gpus} GPUs, largest live worker has {largest}"
    return f"workers busy (position {position} in '{job.queue}')"


#: ``(position, parent status)`` of a queued job, as :func:`pending_columns` read them.
Facts = dict[str, tuple[int, str | None]]

_cache_lock = threading.Lock()
_workers_cache: dict[tuple[str, float], tuple[float, list[LiveWorker]]] = {}


def cached_live_workers(session: Session, settings: Settings) -> list[LiveWorker]:
    """:func:`live_workers`, reused for ``LIVT_PENDING_WORKERS_TTL_SECONDS`` per database."""
    ttl = settings.pending_workers_ttl_seconds
    if ttl <= 0:
        return live_workers(session, settings)
    key = (str(session.get_bind().url), settings.worker_lost_seconds)
    now = time.monotonic()
    with _cache_lock:
        hit = _workers_cache.get(key)
    if hit is not None and now - hit[0] < ttl:
        return hit[1]
    workers = live_workers(session, settings)
    with _cache_lock:
        _workers_cache[key] = (now, workers)
    return workers


def _position_and_parent() -> tuple[Any, Any]:
    """Correlated subqueries on ``Job``: its 1-based place among the claimable queued jobs of
    its queue, and the status of the job it depends on."""
    ahead, parent, ahead_parent = aliased(Job), aliased(Job), aliased(Job)
    ahead_claimable = or_(
        ahead.depends_on.is_(None),
        exists().where(ahead_parent.id == ahead.depends_on, ahead_parent.status == "succeeded"),
    )
    position = (
        select(func.count())
        .select_from(ahead)
        .where(
            ahead.status == "queued",
            ahead.queue == Job.queue,
            ahead.cancel_requested.is_(False),
            or_(
                ahead.created_at < Job.created_at,
                and_(ahead.created_at == Job.created_at, ahead.id <= Job.id),
            ),
            ahead_claimable,
        )
        .scalar_subquery()
    )
    parent_status = select(parent.status).where(parent.id == Job.depends_on).scalar_subquery()
    return position, parent_status


def pending_columns() -> tuple[Any, Any]:
    """Two columns to add to a ``SELECT`` of jobs: the position and the predecessor's status of
    each queued row (NULL for the other rows, whose subqueries are not evaluated)."""
    position, parent_status = _position_and_parent()
    queued = Job.status == "queued"
    return (
        case((queued, cast(position, Integer)), else_=None).label("pending_position"),
        case((queued, cast(parent_status, Text)), else_=None).label("pending_parent"),
    )


def facts_of(rows: Sequence[Any]) -> Facts:
    """:data:`Facts` from rows ``(job, position, parent status)`` of a query with
    :func:`pending_columns`."""
    return {job.id: (int(position or 0), parent) for job, position, parent in rows if position}


def pending_reasons(
    session: Session, settings: Settings, jobs: Sequence[Job], facts: Facts | None = None
) -> dict[str, str]:
    """``{job id: reason}`` for the queued jobs among ``jobs``. None without a queued job;
    with ``facts`` (read with the jobs) only the live workers, from the cache; else one
    ``UNION ALL`` of the facts and the live workers."""
    queued = [j for j in jobs if j.status == "queued"]
    if not queued:
        return {}
    if facts is None or settings.pending_workers_ttl_seconds <= 0:
        facts, workers = _read_facts(session, settings, queued)
    else:
        workers = cached_live_workers(session, settings)
    reasons = {}
    for job in queued:
        number, parent_info = facts.get(job.id, (0, None))
        reasons[job.id] = reason_for(job, workers, max(number, 1), parent_info)
    return reasons


def _read_facts(
    session: Session, settings: Settings, queued: Sequence[Job]
) -> tuple[Facts, list[LiveWorker]]:
    cutoff = utcnow() - timedelta(seconds=settings.worker_lost_seconds)
    position, parent_status = _position_and_parent()
    job_rows = select(
        literal("j").label("row"),
        Job.id.label("key"),
        cast(parent_status, Text).label("info"),
        cast(position, Integer).label("number"),
    ).where(Job.id.in_([j.id for j in queued]))
    worker_rows = select(
        literal("w").label("row"),
        cast(Worker.id, String).label("key"),
        cast(Worker.queues, Text).label("info"),
        cast(Worker.gpus, Integer).label("number"),
    ).where(Worker.heartbeat_at >= cutoff)
    rows = session.execute(job_rows.union_all(worker_rows)).all()
    workers = [
        LiveWorker(r.key, tuple(_queues(r.info)), int(r.number)) for r in rows if r.row == "w"
    ]
    facts = {r.key: (int(r.number or 0), r.info) for r in rows if r.row == "j"}
    return facts, workers


def _queues(raw: Any) -> list[str]:
    if isinstance(raw, list):
        return [str(q) for q in raw]
    try:
        value = json.loads(raw) if raw else []
    except ValueError:
        return []
    return [str(q) for q in value] if isinstance(value, list) else []


def pending_reason(
    session: Session, settings: Settings, job: Job, facts: Facts | None = None
) -> str | None:
    """The pending reason of one job (None unless it is queued)."""
    return pending_reasons(session, settings, [job], facts).get(job.id)
