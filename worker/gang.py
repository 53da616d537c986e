"""One node of a multi-node job: claim a slot, wait for the gang, run ``torchrun`` on this host.

A job with ``resources.nodes = N`` reaches N workers (see :mod:`livt_service.slots`: each claim
invites the next worker with one more message). Each worker takes the job's GPUs on its host,
claims a node slot with its address (``LIVT_WORKER_ADDRESS`` or what the host name resolves to)
and a free port, and waits up to ``LIVT_GANG_TIMEOUT_SECONDS`` for the other nodes; then every
node starts::

    python -m torch.distributed.run --nnodes=N --node_rank=k --nproc_per_node=G \\
        --rdzv_backend=c10d --rdzv_endpoint=<node 0 host:port> --rdzv_id=<job>-<attempt> \\
        --rdzv_conf=is_host=<k == 0>,join_timeout=<gang timeout> --local_addr=<this host> \
        --max_restarts=0 ...

torch's own elastic rendezvous forms the process group; the engine needs nothing else (global
rank 0, on node 0, writes checkpoints, results and the event stream into the shared artifact
folder, fenced by the attempt like every run).

Node 0's supervisor is the ordinary :class:`~worker.runner.JobRunner` (it owns the job row:
progress, logs, cancel, outcome) that also beats its slot and watches the others' slots. The
other nodes' supervisors write nothing but their slot's heartbeat. The attempt ends on every node
when any of them is lost or its training process dies without a typed failure
(:func:`livt_service.slots.end_attempt`): the job is requeued as ``attempt + 1`` and resumes from
``checkpoint-last.pth`` on a fresh gang; each member sees its slot gone on its next beat and
kills its processes, so no orphan is left, and a node that comes back late owns nothing.
"""

from __future__ import annotations

import logging
import signal
import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from livt_service import slots, state
from livt_service.settings import get_settings
from livt_service.slots import Slot
from livt_service.state import ClaimedJob, JobNeeds
from worker.context import WorkerContext, worker_address
from worker.devices import devices_record, gpus_to_take
from worker.observer import Conclusion
from worker.runner import TORCHRUN, JobRunner, training_command

logger = logging.getLogger(__name__)

#: Seconds between two looks at the gang while it fills.
GANG_POLL_SECONDS = 0.5
#: Seconds between two checks of the other nodes' slots by node 0.
GANG_CHECK_SECONDS = 2.0
#: Seconds a worker that received a second message of a gang it is waiting in waits before
#: passing the message on (to another worker).
PASS_ON_DELAY = 1.0


def free_port(host: str) -> int:
    """A TCP port free on ``host`` right now (node 0's rendezvous store listens there)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def gang_command(
    job: ClaimedJob,
    run_dir: Path,
    nproc: int,
    slot: Slot,
    endpoint: str,
    *,
    paths=None,
    join_timeout: float = 300.0,
) -> list[str]:
    """The ``torchrun`` command line of node ``slot.node_rank`` (see the module docstring)."""
    single = training_command(job, run_dir, 2, paths)
    train = single[single.index("--nproc_per_node=2") + 1 :]
    return [
        single[0],
        "-m",
        TORCHRUN,
        f"--nnodes={slot.nodes}",
        f"--node_rank={slot.node_rank}",
        f"--nproc_per_node={nproc}",
        "--rdzv_backend=c10d",
        f"--rdzv_endpoint={endpoint}",
        f"--rdzv_id={job.id}-{job.attempt}",
        f"--local_addr={slot.address.rsplit(':', 1)[0]}",
        f"--rdzv_conf=is_host={'1' if slot.node_rank == 0 else '0'},"
        f"join_timeout={int(join_timeout)}",
        "--max_restarts=0",
        *train,
    ]


class GangRunner(JobRunner):
    """The supervisor of one node of a multi-node attempt (see the module docstring)."""

    def __init__(self, job: ClaimedJob, slot: Slot, endpoint: str, **kwargs) -> None:
        super().__init__(job, **kwargs)
        self.slot = slot
        self.endpoint = endpoint
        self.lost_after = get_settings().worker_lost_seconds
        self.join_timeout = get_settings().gang_timeout_seconds
        self._checked_at = 0.0
        self._beat_at = 0.0
        self._ended = False

    @property
    def leader(self) -> bool:
        return self.slot.node_rank == 0

    def _command(self, nproc: int) -> list[str]:
        return gang_command(
            self.job,
            self.run_dir,
            nproc,
            self.slot,
            self.endpoint,
            paths=self.paths,
            join_timeout=self.join_timeout,
        )

    def _end(self, message: str) -> None:
        """Ends the attempt on every node (once) and stops this node's processes."""
        if not self._ended:
            self._ended = True
            try:
                slots.end_attempt(self.slot, message, enqueue=self.enqueue)
            except SQLAlchemyError as exc:
                logger.warning("job %s: could not end the attempt: %s", self.job.id, exc)
        self._request_stop("lost", message)

    def _gang_healthy(self) -> bool | None:
        """Beats this node's slot and, on node 0, checks the others'. False: the attempt is
        over for this node; None: the database could not be reached."""
        now = time.monotonic()
        try:
            if now - self._beat_at >= self.heartbeat_seconds:
                if not slots.beat_slot(self.slot):
                    return False
                self._beat_at = now
            if self.leader and now - self._checked_at >= GANG_CHECK_SECONDS:
                self._checked_at = now
                silent = slots.silent_nodes(self.slot, self.lost_after)
                if silent:
                    names = ", ".join(str(r) for r in silent)
                    self._end(
                        f"node {names} of the gang lost (no heartbeat for {self.lost_after:g} s)"
                    )
                    return False
        except SQLAlchemyError as exc:
            logger.warning("job %s: gang check failed, will retry: %s", self.job.id, exc)
            return None
        return True

    def _flush(self) -> tuple[bool | None, bool]:
        return self._step(super()._flush)

    def _poll(self) -> tuple[bool | None, bool]:
        return self._step(super()._poll)

    def _step(self, leader_step: Callable[[], tuple[bool | None, bool]]):
        """Node 0 checks the gang, then writes or reads the job row as on one node; the other
        nodes only beat their slot and watch the attempt."""
        if not self.leader:
            return self._member_poll()
        if self._gang_healthy() is False:
            return False, False
        return leader_step()

    def _member_poll(self) -> tuple[bool | None, bool]:
        """A member writes nothing to the job: its output goes to the worker's log only."""
        for record in self.observer.take_batch().logs:
            logger.info("job %s node %d: %s", self.job.id, self.slot.node_rank, record.message)
        healthy = self._gang_healthy()
        if healthy is None:
            return None, False
        try:
            alive = healthy and slots.attempt_state(self.slot) in ("running", "cancelling")
        except SQLAlchemyError:
            return None, False
        return alive, False

    def _conclude(self, proc) -> str:
        if self.leader:
            return super()._conclude(proc)
        rc = proc.returncode
        self._signal_group(signal.SIGKILL)
        for reader in self.readers:
            reader.join(timeout=5.0)
        if self.stop is not None and self.stop.why == "lost":
            return self._leave()
        if rc != 0:
            self._end(f"the training process of node {self.slot.node_rank} exited with status {rc}")
            return self._leave()
        return "succeeded"

    def _apply(self, conclusion: Conclusion) -> str:
        outcome = conclusion.outcome
        # a process of the gang that died without saying why (a peer lost, a connection cut)
        # ends the attempt; a typed failure (bad data, out of memory, ...) fails the job
        if (
            conclusion.action == "finish"
            and outcome is not None
            and outcome.status == "failed"
            and outcome.reason == "internal"
        ):
            self._write_pending()
            self._end(f"the gang's training stopped: {outcome.message}")
            return self._leave()
        return super()._apply(conclusion)

    def _leave(self) -> str:
        try:
            return state.job_status(self.job.id) or "unknown"
        except SQLAlchemyError:
            return "unknown"


def run_gang_member(
    job_id: str,
    needs: JobNeeds,
    context: WorkerContext,
    *,
    enqueue: Callable[[str, str], None] | None = None,
    heartbeat_seconds: float | None = None,
) -> str:
    """Takes part in job ``job_id``'s gang on this worker; returns the job's status afterwards."""
    settings = get_settings()
    try:
        devices = context.acquire(gpus_to_take(needs.gpus, needs.cpu_only))
    except ValueError as exc:
        logger.warning("job %s: %s", job_id, exc)
        return state.job_status(job_id) or "unknown"
    try:
        host = worker_address()
        claim = slots.claim_slot(
            job_id, context.worker_id, f"{host}:{free_port(host)}", enqueue=enqueue
        )
        if claim.slot is None:
            return state.job_status(job_id) or "unknown"
        if claim.already_held:
            # a second invitation to a gang this worker waits in: pass it on to another worker
            time.sleep(PASS_ON_DELAY)
            status = slots.attempt_state(claim.slot)
            if status == "queued":
                (enqueue or _enqueue)(job_id, _queue_of(job_id))
            return status or state.job_status(job_id) or "unknown"
        return _wait_and_run(claim.slot, devices, context, settings, enqueue, heartbeat_seconds)
    finally:
        context.release(devices)


def _enqueue(job_id: str, queue: str) -> None:
    from livt_service.queue import enqueue

    enqueue(job_id, queue)


def _queue_of(job_id: str) -> str:
    from livt_service.db import session_scope
    from livt_service.models import Job

    with session_scope() as session:
        return str(session.get(Job, job_id).queue)


def _wait_and_run(
    slot: Slot,
    devices: Sequence[str],
    context: WorkerContext,
    settings,
    enqueue,
    heartbeat_seconds: float | None,
) -> str:
    deadline = time.monotonic() + settings.gang_timeout_seconds
    beaten = time.monotonic()
    while True:
        status = slots.attempt_state(slot)
        if status is None:
            return state.job_status(slot.job_id) or "unknown"
        if status != "queued":
            break
        if time.monotonic() > deadline and slots.release_slot(slot):
            logger.warning(
                "job %s: the gang of %d nodes did not fill within %g s; slot released",
                slot.job_id,
                slot.nodes,
                settings.gang_timeout_seconds,
            )
            return "queued"
        if context.shutdown.is_set() and slots.release_slot(slot):
            return "queued"
        if time.monotonic() - beaten >= settings.heartbeat_seconds:
            slots.beat_slot(slot)  # a silent waiting slot is taken over by the next claim
            beaten = time.monotonic()
        time.sleep(GANG_POLL_SECONDS)
    members = slots.gang(slot)
    claimed = slots.running_claim(slot)
    if claimed is None or len(members) != slot.nodes:
        return state.job_status(slot.job_id) or "unknown"
    endpoint = members[0].address
    logger.info(
        "job %s: node %d of %d on %s (rendezvous at %s, devices %s)",
        slot.job_id,
        slot.node_rank,
        slot.nodes,
        slot.address,
        endpoint,
        devices_record(devices),
    )
    runner = GangRunner(
        claimed,
        slot,
        endpoint,
        shutdown=context.shutdown,
        devices=devices,
        heartbeat_seconds=heartbeat_seconds or settings.heartbeat_seconds,
        enqueue=enqueue,
    )
    return runner.run()
