"""Gang slots of multi-node jobs: claimed atomically, the last claim starts the job, a gang that
does not fill gives its slots back, and ending an attempt requeues the job once, fenced."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update

from livt_service import slots
from livt_service.models import Job, JobSlot


def _claim_all(job_id: str, workers: list[str], sent: list) -> dict[str, slots.SlotClaim]:
    """Every worker claims at once (one thread each)."""
    barrier = threading.Barrier(len(workers))
    results: dict[str, slots.SlotClaim] = {}

    def claim(worker: str) -> None:
        barrier.wait()
        results[worker] = slots.claim_slot(
            job_id, worker, f"10.0.0.{len(worker)}:29400", enqueue=lambda *m: sent.append(m)
        )

    threads = [threading.Thread(target=claim, args=(w,)) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def test_racing_workers_fill_a_gang_exactly_once(settings, db, make_job):
    job = make_job(nodes=2)
    sent: list = []
    results = _claim_all(job.id, [f"w{i}@host" for i in range(5)], sent)
    held = {w: r.slot for w, r in results.items() if r.slot is not None}
    assert sorted(s.node_rank for s in held.values()) == [0, 1]
    assert sum(r.complete for r in results.values()) == 1
    assert sent == [(job.id, job.queue)]  # one invitation: after the first of the two claims
    owner = next(w for w, s in held.items() if s.node_rank == 0)
    with db() as session:
        row = session.get(Job, job.id)
        assert (row.status, row.worker_id, row.attempt) == ("running", owner, 1)


def test_a_worker_holds_one_slot_of_a_gang(settings, make_job):
    job = make_job(nodes=3)
    first = slots.claim_slot(job.id, "w@host", "h:1", enqueue=lambda *m: None)
    again = slots.claim_slot(job.id, "w@host", "h:1", enqueue=lambda *m: None)
    assert again.already_held and again.slot == first.slot
    assert slots.slot_count(job.id, 1) == 1


def test_a_gang_that_does_not_fill_gives_its_slot_back(settings, db, make_job):
    job = make_job(nodes=2)
    claim = slots.claim_slot(job.id, "w@host", "h:1", enqueue=lambda *m: None)
    assert slots.attempt_state(claim.slot) == "queued"
    assert slots.release_slot(claim.slot)
    assert slots.slot_count(job.id, 1) == 0
    with db() as session:
        assert session.get(Job, job.id).status == "queued"


def test_a_silent_waiting_slot_is_taken_over(settings, db, make_job):
    job = make_job(nodes=2)
    slots.claim_slot(job.id, "gone@host", "h:1", enqueue=lambda *m: None)
    with db() as session:
        session.execute(update(JobSlot).values(heartbeat_at=datetime.now(UTC) - timedelta(hours=1)))
    claim = slots.claim_slot(job.id, "w@host", "h:2", enqueue=lambda *m: None)
    assert claim.slot.node_rank == 0 and not claim.complete


def test_ending_an_attempt_requeues_once_and_a_late_node_finds_nothing(settings, db, make_job):
    job = make_job(nodes=2)
    sent: list = []
    results = _claim_all(job.id, ["a@host", "b@host"], sent)
    member = next(r.slot for r in results.values() if r.slot.node_rank == 1)
    leader = next(r.slot for r in results.values() if r.slot.node_rank == 0)
    assert slots.silent_nodes(leader, 60) == []
    sent.clear()
    assert slots.end_attempt(member, "node 1 lost", enqueue=lambda *m: sent.append(m))
    assert not slots.end_attempt(leader, "node 0 saw it too", enqueue=lambda *m: sent.append(m))
    assert sent == [(job.id, job.queue)]
    with db() as session:
        row = session.get(Job, job.id)
        assert (row.status, row.attempt) == ("queued", 2)
        assert session.scalars(select(JobSlot)).all() == []
    # the nodes of attempt 1 are fenced off: their slot is gone and their attempt is over
    assert not slots.beat_slot(leader) and not slots.beat_slot(member)
    assert slots.attempt_state(leader) is None and slots.running_claim(leader) is None
    # a fresh gang forms for attempt 2
    again = _claim_all(job.id, ["c@host", "a@host"], [])
    assert sorted((r.slot.attempt, r.slot.node_rank) for r in again.values()) == [(2, 0), (2, 1)]


def test_silent_nodes_names_the_node_that_stopped_beating(settings, db, make_job):
    job = make_job(nodes=2)
    results = _claim_all(job.id, ["a@host", "b@host"], [])
    leader = next(r.slot for r in results.values() if r.slot.node_rank == 0)
    with db() as session:
        session.execute(
            update(JobSlot)
            .where(JobSlot.node_rank == 1)
            .values(heartbeat_at=datetime.now(UTC) - timedelta(hours=1))
        )
    assert slots.silent_nodes(leader, 60) == [1]


def test_a_restarted_worker_drops_its_waiting_slots(settings, make_job):
    waiting = make_job(nodes=2)
    slots.claim_slot(waiting.id, "w@host", "h:1", enqueue=lambda *m: None)
    assert slots.drop_worker_slots("w@host") == 1
    assert slots.slot_count(waiting.id, 1) == 0
