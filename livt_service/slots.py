"""Gang scheduling of multi-node jobs through the database (``job_slots``).

A job with ``nodes = N`` runs as one attempt on N workers at once. Each worker that receives the
job's message claims one node slot of the current attempt (:func:`claim_slot`): the job row is
locked, the lowest free ``node_rank`` is inserted (the unique ``(job_id, attempt, node_rank)`` and
``(job_id, attempt, worker_id)`` make a slot go to one worker and a worker hold one slot), and
while slots remain one more message is sent so that another worker comes. The claim that fills
the last slot moves the job to ``running`` with node 0's worker as its owner (node 0 writes the
job's progress and outcome; the fence of :mod:`livt_service.state` applies to it unchanged).

A worker that waited ``LIVT_GANG_TIMEOUT_SECONDS`` without the gang filling gives its slot back
(:func:`release_slot`); the job stays queued. Every member heartbeats its slot while it runs
(:func:`beat_slot`), and a member whose slot is gone, or whose attempt is no longer the job's,
stops its processes at once. Ending the attempt (:func:`end_attempt`: a node lost, a training
process that died) requeues the job as ``attempt + 1`` exactly once, fenced by the attempt
number, and deletes the old attempt's slots, so that a node coming back late finds nothing to
write into.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError

from livt_service import state
from livt_service.db import session_scope
from livt_service.models import ACTIVE_STATUSES, Job, JobSlot, utcnow
from livt_service.settings import get_settings
from livt_service.state import ClaimedJob, Enqueue, _default_enqueue, _requeue, _writing

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Slot:
    """A node slot this worker holds: ``node_rank`` of ``nodes`` in attempt ``attempt``."""

    job_id: str
    attempt: int
    node_rank: int
    nodes: int
    worker_id: str
    address: str


@dataclass(frozen=True)
class SlotClaim:
    """The answer of :func:`claim_slot`: the slot (None: none left, or the job cannot run now),
    whether this worker already held it, and whether the gang is complete."""

    slot: Slot | None
    already_held: bool = False
    complete: bool = False


def claim_slot(
    job_id: str, worker_id: str, address: str, *, enqueue: Enqueue | None = None
) -> SlotClaim:
    """Claims the lowest free node slot of the job's current attempt for ``worker_id``.

    Sends one more message for the job while slots remain free (after the commit), so the next
    worker is invited; the claim that takes the last slot moves the job to ``running`` owned by
    node 0's worker.
    """
    now = utcnow()
    invite: tuple[str, str] | None = None
    with _writing() as session:
        job = session.scalar(
            select(Job).where(Job.id == job_id, *state.claimable()).with_for_update()
        )
        if job is None:
            return SlotClaim(None)
        nodes, attempt = int(job.nodes or 1), job.attempt
        # slots of earlier attempts, and of waiting workers that went silent, are free again
        stale = utcnow() - timedelta(seconds=get_settings().worker_lost_seconds)
        session.execute(
            delete(JobSlot).where(
                JobSlot.job_id == job_id,
                or_(JobSlot.attempt < attempt, JobSlot.heartbeat_at < stale),
            )
        )
        held = session.execute(
            select(JobSlot).where(JobSlot.job_id == job_id, JobSlot.attempt == attempt)
        ).scalars()
        slots = {s.node_rank: s for s in held}
        mine = next((s for s in slots.values() if s.worker_id == worker_id), None)
        if mine is not None:
            return SlotClaim(_slot(mine, nodes), already_held=True, complete=len(slots) == nodes)
        free = [rank for rank in range(nodes) if rank not in slots]
        if not free:
            return SlotClaim(None)
        row = JobSlot(
            job_id=job_id,
            attempt=attempt,
            node_rank=free[0],
            worker_id=worker_id,
            address=address,
            claimed_at=now,
            heartbeat_at=now,
        )
        session.add(row)
        try:
            session.flush()
        except IntegrityError:
            session.rollback()
            return SlotClaim(None)
        slots[row.node_rank] = row
        complete = len(slots) == nodes
        state.append_log(
            session,
            job_id,
            attempt,
            f"node {row.node_rank} of {nodes} claimed by worker {worker_id} ({address})"
            + ("; the gang is complete" if complete else ""),
        )
        if complete:
            owner = slots[0].worker_id
            job.status, job.worker_id = "running", owner
            job.started_at = job.started_at or now
            job.heartbeat_at = job.updated_at = now
            state.open_attempt(session, job_id, attempt, owner, now)
        else:
            job.updated_at = now
            invite = (job.id, job.queue)
        claimed = _slot(row, nodes)
    if invite is not None:
        (enqueue or _default_enqueue)(*invite)
    return SlotClaim(claimed, complete=complete)


def _of_attempt(slot: Slot) -> tuple[Any, ...]:
    """The rows of ``slot``'s attempt."""
    return (JobSlot.job_id == slot.job_id, JobSlot.attempt == slot.attempt)


def _mine(slot: Slot) -> tuple[Any, ...]:
    """The row of ``slot`` itself."""
    return (*_of_attempt(slot), JobSlot.worker_id == slot.worker_id)


def _slot(row: JobSlot, nodes: int) -> Slot:
    return Slot(row.job_id, row.attempt, row.node_rank, nodes, row.worker_id, row.address)


def gang(slot: Slot) -> list[Slot]:
    """The slots of ``slot``'s attempt, by node rank (fewer than ``nodes`` while filling)."""
    with session_scope() as session:
        rows = session.scalars(
            select(JobSlot).where(*_of_attempt(slot)).order_by(JobSlot.node_rank)
        ).all()
        return [_slot(r, slot.nodes) for r in rows]


def running_claim(slot: Slot) -> ClaimedJob | None:
    """The job as node 0 owns it, once the gang of ``slot`` is complete and the attempt runs;
    None while it fills (or once the attempt is over)."""
    with session_scope() as session:
        job = session.scalar(
            select(Job).where(
                Job.id == slot.job_id,
                Job.attempt == slot.attempt,
                Job.status.in_(ACTIVE_STATUSES),
            )
        )
        return None if job is None else ClaimedJob.of(job, str(job.worker_id))


def attempt_state(slot: Slot) -> str | None:
    """``queued`` (still filling), ``running`` / ``cancelling`` or None: the attempt is over
    (the job has a later attempt, or it finished)."""
    with session_scope() as session:
        status = session.scalar(
            select(Job.status).where(Job.id == slot.job_id, Job.attempt == slot.attempt)
        )
    return status if status in ("queued", *ACTIVE_STATUSES) else None


def release_slot(slot: Slot) -> bool:
    """Gives a slot of a gang that did not fill back; the job stays queued. False when the
    gang started meanwhile (the slot is then kept)."""
    with _writing() as session:
        queued = session.scalar(
            select(Job.id)
            .where(Job.id == slot.job_id, Job.attempt == slot.attempt, Job.status == "queued")
            .with_for_update()
        )
        if queued is None:
            return False
        session.execute(delete(JobSlot).where(*_mine(slot)))
        state.append_log(
            session,
            slot.job_id,
            slot.attempt,
            f"worker {slot.worker_id} gave node {slot.node_rank} back: the gang of "
            f"{slot.nodes} nodes did not fill in time",
            "WARNING",
        )
    return True


def beat_slot(slot: Slot) -> bool:
    """Refreshes the slot's heartbeat; False when the slot is gone (the attempt was ended)."""
    with _writing() as session:
        touched = session.execute(
            update(JobSlot)
            .where(*_mine(slot))
            .values(heartbeat_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        return touched.rowcount == 1


def silent_nodes(slot: Slot, lost_after_seconds: float) -> list[int]:
    """Node ranks of ``slot``'s attempt whose slot is missing or has not beaten for
    ``lost_after_seconds``."""
    cutoff = utcnow() - timedelta(seconds=lost_after_seconds)
    members = gang(slot)
    with session_scope() as session:
        fresh = set(
            session.scalars(
                select(JobSlot.node_rank).where(*_of_attempt(slot), JobSlot.heartbeat_at >= cutoff)
            )
        )
    present = {m.node_rank for m in members}
    return sorted({r for r in range(slot.nodes) if r not in present or r not in fresh})


def end_attempt(slot: Slot, message: str, *, enqueue: Enqueue | None = None) -> bool:
    """Ends ``slot``'s attempt on every node: the job is requeued as ``attempt + 1`` (or, after
    too many losses, fails; a cancelling job becomes cancelled) and the attempt's slots are
    deleted, which every other member sees on its next heartbeat. Only the first caller of an
    attempt changes anything (the update is fenced by the attempt number)."""
    send = None
    with _writing() as session:
        job = session.scalar(
            select(Job)
            .where(
                Job.id == slot.job_id,
                Job.attempt == slot.attempt,
                Job.status.in_(("queued", *ACTIVE_STATUSES)),
            )
            .with_for_update()
        )
        if job is None:
            return False
        session.execute(delete(JobSlot).where(*_of_attempt(slot)))
        logger.warning("job %s: %s", slot.job_id, message)
        send = _requeue(session, job, outcome="worker_lost", message=message, count_as_lost=True)
    if send is not None:
        (enqueue or _default_enqueue)(*send)
    return True


def slot_count(job_id: str, attempt: int) -> int:
    with session_scope() as session:
        return int(
            session.scalar(
                select(func.count())
                .select_from(JobSlot)
                .where(JobSlot.job_id == job_id, JobSlot.attempt == attempt)
            )
            or 0
        )


def drop_worker_slots(worker_id: str) -> int:
    """At a worker's start: the slots its previous process held in gangs still filling are
    free again. Returns how many were dropped."""
    with _writing() as session:
        waiting = select(Job.id).where(Job.status == "queued")
        dropped = session.execute(
            delete(JobSlot).where(JobSlot.worker_id == worker_id, JobSlot.job_id.in_(waiting))
        )
        return int(dropped.rowcount or 0)
