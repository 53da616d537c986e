"""One node of a multi-node job: its torchrun command line, and the attempt ending on every node
when a member goes silent or the attempt is ended elsewhere (no process left behind)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select, update

from livt_service import slots
from livt_service.models import Job, JobAttempt, JobSlot
from livt_service.slots import Slot
from livt_service.state import ClaimedJob
from tests.live_server import free_port
from tests.worker.test_support import process_gone, wait_until
from worker.gang import GangRunner, gang_command

JOB = ClaimedJob(
    id="j_x",
    kind="pretrain",
    attempt=3,
    config={},
    gpus=4,
    queue="gpu",
    artifact_dir="/shared/j_x",
    worker_id="a@h",
)


def _flags(rank: int) -> list[str]:
    slot = Slot("j_x", 3, rank, 2, "w@h", f"10.0.0.{rank + 1}:{29400 + rank}")
    return gang_command(JOB, Path("/shared/j_x"), 4, slot, "10.0.0.1:29400", join_timeout=90)


def test_every_node_joins_node_0s_rendezvous_with_its_own_rank_and_address() -> None:
    for rank in (0, 1):
        argv = _flags(rank)
        assert argv[1:3] == ["-m", "torch.distributed.run"]
        assert "--standalone" not in argv
        for flag in (
            "--nnodes=2",
            f"--node_rank={rank}",
            "--nproc_per_node=4",
            "--rdzv_backend=c10d",
            "--rdzv_endpoint=10.0.0.1:29400",
            "--rdzv_id=j_x-3",
            f"--local_addr=10.0.0.{rank + 1}",
            f"--rdzv_conf=is_host={1 if rank == 0 else 0},join_timeout=90",
            "--max_restarts=0",
        ):
            assert flag in argv, (flag, argv)
        train = argv[argv.index("livt_core") - 1 :]
        assert train[:4] == ["-m", "livt_core", "train", "pretrain"]
        assert train[train.index("--attempt") + 1] == "3"


# --------------------------------------------------------------------------------------------
# the attempt ends on every node (real torchrun processes waiting in the rendezvous)


def _gang_of_two(make_job) -> tuple[Job, Slot, Slot, str]:
    """A 2-node job whose gang is complete on workers a@h (node 0) and b@h (node 1)."""
    job = make_job(nodes=2, config={"device": "cpu", "data": {"num_workers": 0}})
    endpoint = f"127.0.0.1:{free_port()}"
    first = slots.claim_slot(job.id, "a@h", endpoint, enqueue=lambda *m: None)
    second = slots.claim_slot(job.id, "b@h", f"127.0.0.1:{free_port()}", enqueue=lambda *m: None)
    assert second.complete
    return job, first.slot, second.slot, endpoint


def test_node_0_ends_the_attempt_when_a_member_goes_silent(settings, db, make_job) -> None:
    job, leader, _, endpoint = _gang_of_two(make_job)
    with db() as session:  # the member's host froze: its slot stopped beating long ago
        session.execute(
            update(JobSlot)
            .where(JobSlot.node_rank == 1)
            .values(heartbeat_at=datetime.now(UTC) - timedelta(hours=1))
        )
    sent: list = []
    runner = GangRunner(
        slots.running_claim(leader), leader, endpoint, devices=[], heartbeat_seconds=0.5,
        enqueue=lambda *m: sent.append(m),
    )  # fmt: skip
    assert runner.run() == "queued"
    assert runner.proc is not None and process_gone(runner.proc.pid)
    assert sent == [(job.id, job.queue)]
    with db() as session:
        row = session.get(Job, job.id)
        assert (row.status, row.attempt) == ("queued", 2)
        attempt = session.scalars(
            select(JobAttempt).where(JobAttempt.job_id == job.id, JobAttempt.number == 1)
        ).one()
        assert attempt.outcome == "worker_lost" and "node 1" in attempt.message
    assert slots.slot_count(job.id, 1) == 0


def test_a_member_stops_its_processes_once_the_attempt_is_ended(settings, make_job) -> None:
    _, leader, member, endpoint = _gang_of_two(make_job)
    runner = GangRunner(
        slots.running_claim(member), member, endpoint, devices=[], heartbeat_seconds=0.5,
        enqueue=lambda *m: None,
    )  # fmt: skip
    result: list[str] = []
    thread = threading.Thread(target=lambda: result.append(runner.run()))
    thread.start()
    wait_until(lambda: runner.proc is not None, timeout=30, what="the member's torchrun")
    assert slots.end_attempt(leader, "node 0 lost", enqueue=lambda *m: None)
    thread.join(timeout=30)
    assert result == ["queued"]
    assert process_gone(runner.proc.pid)
