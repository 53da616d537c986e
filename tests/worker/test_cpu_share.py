"""Each job gets its share of the worker's cores: disjoint slots per ``--concurrency``, the
training process pinned to its slot with ``LIVT_JOB_CPUS`` set, and inside it torch's threads
and the loader workers' threads within that share."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from worker.context import WorkerContext, cpu_slots, worker_cpus
from worker.runner import job_cpu_env, pin_to_cpus, site_env, spawn_tied_to_parent

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="Linux only")


def test_slots_split_the_cores_between_the_jobs_run_at_once() -> None:
    assert cpu_slots([0, 1], 1) == [(0, 1)]
    assert cpu_slots([0, 1], 2) == [(0,), (1,)]  # 2 jobs on 2 cores: one core each
    assert cpu_slots([0, 1, 2], 2) == [(0, 1), (2,)]
    assert cpu_slots([4, 5, 6, 7], 2) == [(4, 5), (6, 7)]
    assert cpu_slots([0], 3) == [(0,), (0,), (0,)]  # more jobs than cores: they share
    assert cpu_slots([], 2) == []


def test_context_hands_each_running_job_its_own_slot() -> None:
    context = WorkerContext("w@h", ["default"], [], cpu_slots=cpu_slots([0, 1], 2))
    first, second = context.acquire_cpus(), context.acquire_cpus()
    assert {first, second} == {(0,), (1,)}
    context.release_cpus(first)
    assert context.acquire_cpus() == first
    context.release_cpus(first)
    context.release_cpus(first)  # released twice: still one slot
    assert context.acquire_cpus() == first and context.acquire_cpus() == (0,)


def test_configure_splits_the_worker_cores_by_concurrency(monkeypatch) -> None:
    import worker.context as ctx

    monkeypatch.setattr(ctx, "_context", None)
    monkeypatch.setattr(ctx, "worker_cpus", lambda: [0, 1])
    context = ctx.configure("w@h", ["default"], 0, concurrency=2)
    assert context.cpu_slots == [(0,), (1,)]
    monkeypatch.setattr(ctx, "_context", None)


def test_without_a_concurrency_a_worker_runs_one_job_per_gpu(monkeypatch) -> None:
    # `livt worker` without --concurrency passes None
    import worker.context as ctx

    monkeypatch.setattr(ctx, "worker_cpus", lambda: [0, 1, 2, 3])
    monkeypatch.setattr(ctx, "detect_gpus", lambda: [])
    assert ctx.configure("w@h", ["default"], 0, concurrency=None).cpu_slots == [(0, 1, 2, 3)]
    slots = ctx.configure("w@h", ["default"], 2, concurrency=None).cpu_slots
    assert slots == [(0, 1), (2, 3)]
    monkeypatch.setattr(ctx, "_context", None)


def test_env_gives_the_job_its_core_count() -> None:
    assert job_cpu_env({"A": "1"}, None) == {"A": "1"}
    assert job_cpu_env({}, (2, 3)) == {"LIVT_JOB_CPUS": "2", "OMP_NUM_THREADS": "2"}
    assert job_cpu_env({"OMP_NUM_THREADS": "1"}, (2, 3))["OMP_NUM_THREADS"] == "1"


def test_env_gives_the_job_the_sites_loader_limit(settings, monkeypatch) -> None:
    """The run's auto loader processes stay within ``LIVT_MAX_DATA_WORKERS`` as explicit
    values must at submit: the worker passes the site's limit on."""
    from livt_core.perf import plan_cpus
    from livt_service.settings import get_settings

    monkeypatch.setenv("LIVT_MAX_DATA_WORKERS", "1")
    get_settings.cache_clear()
    env = site_env()
    assert env == {"LIVT_MAX_DATA_WORKERS": "1"}
    monkeypatch.setenv("LIVT_JOB_CPUS", "16")
    assert plan_cpus(None, None).num_workers == 1  # 4 without the limit
    assert plan_cpus(None, None).threads == 15


#: In the training process: its affinity, torch's default threads for a run with 2 loader
#: workers, and the threads each of those workers runs (the engine's worker_init_fn).
_CHILD = """
import json, os, torch
from torch.utils.data import DataLoader, Dataset
from livt_core.perf import configure_threads, loader_worker_init

class Threads(Dataset):
    def __len__(self):
        return 4
    def __getitem__(self, index):
        return torch.tensor([torch.get_num_threads(), len(os.sched_getaffinity(0))])

threads = configure_threads(None, 2)
loader = DataLoader(Threads(), batch_size=1, num_workers=2, worker_init_fn=loader_worker_init,
                    multiprocessing_context="fork")
seen = [batch[0].tolist() for batch in loader]
print(json.dumps({"affinity": sorted(os.sched_getaffinity(0)), "threads": threads,
                  "torch": torch.get_num_threads(), "job_cpus": os.environ["LIVT_JOB_CPUS"],
                  "loader": seen}))
"""


def test_a_job_on_one_core_with_two_loader_workers_stays_on_it() -> None:
    """The launch path of ``JobRunner._launch``: environment, tied spawn, pinning."""
    core = worker_cpus()[-1]
    env = {k: v for k, v in os.environ.items() if k not in ("LIVT_JOB_CPUS", "OMP_NUM_THREADS")}
    env = job_cpu_env({**env, "PYTHONPATH": str(REPO)}, (core,))
    proc = spawn_tied_to_parent(
        [sys.executable, "-c", _CHILD], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    pin_to_cpus(proc.pid, (core,))
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err.decode()[-3000:]
    seen = json.loads(out.decode().strip().splitlines()[-1])
    assert seen["affinity"] == [core] and seen["job_cpus"] == "1"
    assert seen["threads"] == 1 and seen["torch"] == 1
    # every loader worker: one torch thread, on the job's core only
    assert seen["loader"] == [[1, 1]] * 4
