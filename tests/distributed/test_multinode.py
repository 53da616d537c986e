"""Two hosts made of network namespaces on this machine, a production-mode ``livt worker`` in each,
and multi-node jobs across them.

Layout: a bridge ``livtbr<id>`` in the root namespace at 10.231.<n>.1/24 with the test's own
PostgreSQL and Redis listening on that address (ports 18310 and 18311), and two namespaces
``livt<id>-h1`` / ``-h2`` joined to it by veth pairs (10.231.<n>.11 and .12). No route leads out:
traffic stays inside the namespaces, the bridge and loopback. The artifact folder is a folder of
the test (the namespaces share the file system, as hosts share an NFS mount).

1. A 2-node × 1-process gloo job gives the same parameters after one step as a 1-node ×
   2-process job of the same config.
2. Killing one node's worker mid-epoch ends the attempt on both hosts (no training process of it
   left), the job is requeued as attempt 2 on a fresh gang (the worker restarted) and resumes
   from its checkpoint: one ``succeeded`` result.

Skips, saying why, only where namespaces cannot be made (not root, no ``ip``, no netns support).
Namespaces, links and processes are removed in every case (finalizers).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.own_services import OwnPostgres, OwnRedis
from tests.worker.test_support import process_gone, wait_until

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
PG_PORT, REDIS_PORT = 18310, 18311
QUEUE = "multinode"
#: One process per node, on the CPU, a tiny model; a few steps per epoch.
RUN = {
    "preset": "fashion-mnist-lt",
    "model_kwargs": {"depth": 1},
    "batch_size": 16,
    "warmup_epochs": 0,
    "device": "cpu",
    "data": {"num_workers": 0},
    "seed": 7,
}


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=check)


def _netns_problem() -> str | None:
    if sys.platform != "linux":
        return "network namespaces exist on Linux only"
    if os.geteuid() != 0:
        return "making network namespaces needs root (run the test as root, as CI does)"
    if shutil.which("ip") is None:
        return "the `ip` program (iproute2) is missing; install iproute2"
    probe = f"livt-probe-{os.getpid()}"
    done = _ip("netns", "add", probe, check=False)
    if done.returncode != 0:
        return f"`ip netns add` failed: {done.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


@dataclass
class Host:
    name: str
    address: str
    device: str
    env: dict[str, str]
    log: Path
    worker_id: str
    process: subprocess.Popen | None = None
    starts: int = 0

    def start_worker(self) -> None:
        self.starts += 1
        out = self.log.open("ab")
        self.process = subprocess.Popen(
            ["ip", "netns", "exec", self.name, sys.executable, "-m", "livt.cli", "worker",
             "--name", self.worker_id, "--queues", QUEUE, "--gpus", "0"],
            env=self.env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        out.close()

    def kill_worker(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop_worker(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


@dataclass
class Cluster:
    hosts: list[Host]
    database_url: str
    broker_url: str
    artifact_dir: Path
    env: dict[str, str] = field(default_factory=dict)


def _pids(name: str) -> set[int]:
    """The live processes of namespace ``name`` (zombies not counted)."""
    done = _ip("netns", "pids", name, check=False)
    return {int(p) for p in done.stdout.split() if not process_gone(int(p))}


def _worker_processes(worker_pid: int) -> set[int]:
    """The worker and its warm-start launcher (``python -m worker.zygote``, a child of the
    worker that outlives the runs it forks): what a host runs between jobs."""
    pids = {worker_pid}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == worker_pid and b"worker.zygote" in cmdline:
            pids.add(int(entry.name))
    return pids


def _kill_namespace_processes(name: str) -> None:
    for pid in _pids(name):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The two hosts and their services, shared by the tests of this module."""
    tmp_path = tmp_path_factory.mktemp("multinode")
    problem = _netns_problem()
    if problem is not None:
        pytest.skip(f"cannot make network namespaces: {problem}")
    tag = uuid.uuid4().hex[:5]
    subnet = f"10.231.{int(tag, 16) % 200 + 20}"
    bridge, gateway = f"livtbr{tag}", f"{subnet}.1"
    with ExitStack() as stack:
        _ip("link", "add", bridge, "type", "bridge")
        stack.callback(_ip, "link", "del", bridge, check=False)
        _ip("addr", "add", f"{gateway}/24", "dev", bridge)
        _ip("link", "set", bridge, "up")
        postgres = OwnPostgres(host=gateway, port=PG_PORT)
        stack.callback(postgres.close)
        postgres.start()
        redis = OwnRedis(host=gateway, port=REDIS_PORT)
        stack.callback(redis.close)
        redis.start()
        artifacts = tmp_path / "shared-artifacts"
        artifacts.mkdir()
        base = {k: v for k, v in os.environ.items() if not k.startswith("LIVT_") or "TEST" in k}
        base.update(
            LIVT_MODE="production",
            LIVT_DATABASE_URL=postgres.url,
            LIVT_BROKER_URL=redis.url,
            LIVT_ARTIFACT_DIR=str(artifacts),
            LIVT_DATA_DIR=str(tmp_path / "data"),
            LIVT_HEARTBEAT_SECONDS="1",
            LIVT_WORKER_LOST_SECONDS="8",
            LIVT_GANG_TIMEOUT_SECONDS="60",
            LIVT_REQUEUE_GRACE_SECONDS="10",
            PYTHONPATH=str(REPO),
            PYTHONUNBUFFERED="1",
            OMP_NUM_THREADS="1",
        )
        hosts = []
        for index in (1, 2):
            name, address = f"livt{tag}-h{index}", f"{subnet}.1{index}"
            outside, inside = f"lv{tag}{index}o", f"lv{tag}{index}i"
            _ip("netns", "add", name)
            stack.callback(_ip, "netns", "del", name, check=False)
            stack.callback(_kill_namespace_processes, name)
            _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
            stack.callback(_ip, "link", "del", outside, check=False)
            _ip("link", "set", inside, "netns", name)
            _ip("link", "set", outside, "master", bridge, "up")
            _ip("netns", "exec", name, "ip", "addr", "add", f"{address}/24", "dev", inside)
            _ip("netns", "exec", name, "ip", "link", "set", inside, "up")
            _ip("netns", "exec", name, "ip", "link", "set", "lo", "up")
            env = dict(base, LIVT_WORKER_ADDRESS=address, GLOO_SOCKET_IFNAME=inside)
            host = Host(
                name, address, inside, env, tmp_path / f"{name}.log", f"node{index}@h{index}"
            )
            stack.callback(host.kill_worker)
            hosts.append(host)
        from livt_service.db import dispose_engines, upgrade_database

        upgrade_database(postgres.url)
        stack.callback(dispose_engines)
        for host in hosts:
            host.start_worker()
        yield Cluster(hosts, postgres.url, redis.url, artifacts, base)


@pytest.fixture
def service(cluster: Cluster, monkeypatch: pytest.MonkeyPatch):
    """This process as the API of the cluster: its settings point at the cluster's services."""
    from livt_service.db import dispose_engines
    from livt_service.settings import get_settings

    for name in ("LIVT_MODE", "LIVT_DATABASE_URL", "LIVT_BROKER_URL", "LIVT_ARTIFACT_DIR",
                 "LIVT_DATA_DIR", "LIVT_WORKER_LOST_SECONDS"):  # fmt: skip
        monkeypatch.setenv(name, cluster.env[name])
    get_settings.cache_clear()
    _wait_workers(2)
    yield get_settings()
    get_settings.cache_clear()
    dispose_engines()


def _wait_workers(count: int, timeout: float = 90) -> None:
    from sqlalchemy import select

    from livt_service.db import session_scope
    from livt_service.models import Worker

    def live() -> bool:
        with session_scope() as session:
            return len(session.scalars(select(Worker.id)).all()) >= count

    wait_until(live, timeout=timeout, what=f"{count} workers to register")


def _submit(settings, spec: dict) -> str:
    from api.schemas import PretrainJobCreate
    from api.services.jobs import create_job
    from api.services.users import get_or_create_user
    from livt_service.db import session_scope
    from livt_service.queue import enqueue

    with session_scope() as session:
        user = get_or_create_user(session, "mn")
        job, _ = create_job(session, settings, user, PretrainJobCreate(**spec), enqueue)
        return job.id


def _job(job_id: str):
    from livt_service.db import session_scope
    from livt_service.models import Job

    with session_scope() as session:
        job = session.get(Job, job_id)
        session.expunge(job)
        return job


def _wait_finished(job_id: str, timeout: float):
    return wait_until(
        lambda: (job := _job(job_id)).status in ("succeeded", "failed", "cancelled") and job,
        timeout=timeout,
        interval=1.0,
        what=f"job {job_id} to finish",
    )


def _logs(job_id: str) -> list[str]:
    from sqlalchemy import select

    from livt_service.db import session_scope
    from livt_service.models import LogLine

    with session_scope() as session:
        rows = session.scalars(
            select(LogLine.message).where(LogLine.job_id == job_id).order_by(LogLine.seq)
        )
        return list(rows)


def _model(path: Path) -> dict:
    import torch

    return torch.load(path, map_location="cpu", weights_only=False)["model"]


def test_two_nodes_of_one_process_train_like_one_node_of_two(cluster, service) -> None:
    import torch

    one_step = {**RUN, "kind": "pretrain", "epochs": 1, "max_steps_per_epoch": 1}
    resources = {"queue": QUEUE, "gpus": 1}
    gang = _submit(service, {**one_step, "resources": {**resources, "nodes": 2}})
    local = _submit(service, {**one_step, "resources": {**resources, "gpus": 2}})
    jobs = {name: _wait_finished(i, 150) for name, i in (("gang", gang), ("local", local))}
    assert {n: j.status for n, j in jobs.items()} == {"gang": "succeeded", "local": "succeeded"}, [
        (j.failure_message, _logs(j.id)[-10:]) for j in jobs.values()
    ]
    messages = _logs(gang)
    assert any("the gang is complete" in m for m in messages)
    launched = next(m for m in messages if "training process" in m and "--nnodes=2" in m)
    assert "--rdzv_backend=c10d" in launched and "--nproc_per_node=1" in launched
    a = _model(Path(jobs["gang"].artifact_dir) / "checkpoint-last.pth")
    b = _model(Path(jobs["local"].artifact_dir) / "checkpoint-last.pth")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), key
    assert jobs["gang"].result is not None and jobs["local"].result is not None


_CHILD = re.compile(r"training process (\d+) started")


def test_a_killed_node_ends_the_attempt_everywhere_and_the_job_resumes(cluster, service) -> None:
    from sqlalchemy import select

    from livt_service.db import session_scope
    from livt_service.models import JobAttempt, JobSlot

    spec = {**RUN, "kind": "pretrain", "epochs": 3, "max_steps_per_epoch": 5}
    job_id = _submit(service, {**spec, "resources": {"queue": QUEUE, "gpus": 1, "nodes": 2}})
    run_dir = cluster.artifact_dir / job_id
    wait_until(
        lambda: (run_dir / "checkpoint-last.pth").is_file(), timeout=150, what="the first epoch"
    )
    with session_scope() as session:
        member = session.scalar(
            select(JobSlot.worker_id).where(JobSlot.job_id == job_id, JobSlot.node_rank == 1)
        )
    victim = next(h for h in cluster.hosts if h.worker_id == member)
    survivor = next(h for h in cluster.hosts if h is not victim)
    victim_children = [int(p) for p in _CHILD.findall(victim.log.read_text(errors="replace"))]
    leader_children = [int(p) for p in _CHILD.findall("\n".join(_logs(job_id)))]
    assert victim_children and leader_children
    victim.kill_worker()
    # the attempt ends on both hosts: nothing of it keeps running anywhere
    wait_until(lambda: _job(job_id).attempt >= 2, timeout=60, what="the attempt to end")
    wait_until(
        lambda: all(process_gone(p) for p in victim_children + leader_children),
        timeout=30,
        what="every training process of attempt 1 to exit",
    )
    # no orphan on either host: the victim's namespace is empty, the survivor's holds its worker
    # (and the worker's warm-start launcher)
    wait_until(lambda: not _pids(victim.name), timeout=30, what=f"{victim.name} to be empty")
    wait_until(
        lambda: _pids(survivor.name) <= _worker_processes(survivor.process.pid),
        timeout=30,
        what=f"only the worker and its launcher to be left in {survivor.name}",
    )
    victim.start_worker()  # the host comes back: a fresh gang forms for attempt 2
    job = _wait_finished(job_id, 180)
    assert job.status == "succeeded", (job.failure_message, _logs(job_id)[-15:])
    assert job.attempt == 2 and job.result is not None
    messages = _logs(job_id)
    assert any("resumed from checkpoint-last.pth" in m for m in messages), messages[-20:]
    with session_scope() as session:
        outcomes = session.scalars(
            select(JobAttempt.outcome)
            .where(JobAttempt.job_id == job_id)
            .order_by(JobAttempt.number)
        ).all()
    assert outcomes == ["worker_lost", "succeeded"]
    assert survivor.process is not None and survivor.process.poll() is None
