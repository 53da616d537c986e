"""Helpers shared by the worker's end-to-end tests (this module holds no tests).

The end-to-end tests talk to real processes: ``livt serve`` / ``livt worker`` subprocesses and the
training children they start. These helpers wait on HTTP state and inspect those processes
through ``/proc``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx

T = TypeVar("T")

#: A fine-tuning run long enough to be caught mid-way (about a second per epoch on one core).
LONG_FINETUNE: dict[str, Any] = {
    "kind": "finetune",
    "preset": "fashion-mnist-lt",
    "epochs": 10,
    "warmup_epochs": 1,
    "max_steps_per_epoch": 4,
    "model_kwargs": {"depth": 1},
    "data": {"num_workers": 0},
}

_CHILD_LINE = re.compile(r"training process (\d+) started")
_RESUMED_LINE = re.compile(r"resumed from checkpoint-last\.pth: continuing at epoch (\d+)")


def wait_until(
    probe: Callable[[], T | None], *, timeout: float, interval: float = 0.3, what: str = ""
) -> T:
    """Calls ``probe`` until it returns something truthy, which is returned."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {timeout:g} s waiting for {what or probe}")
        time.sleep(interval)


def get_job(http: httpx.Client, job_id: str) -> dict[str, Any]:
    response = http.get(f"/jobs/{job_id}")
    response.raise_for_status()
    return response.json()


def wait_status(
    http: httpx.Client, job_id: str, statuses: set[str], *, timeout: float
) -> dict[str, Any]:
    """Polls the job until its status is one of ``statuses``; returns it."""
    return wait_until(
        lambda: (job := get_job(http, job_id))["status"] in statuses and job,
        timeout=timeout,
        what=f"job {job_id} to become {'/'.join(sorted(statuses))}",
    )


def log_messages(http: httpx.Client, job_id: str) -> list[str]:
    response = http.get(f"/jobs/{job_id}/logs", params={"offset": 0, "limit": 5000})
    response.raise_for_status()
    return [line["message"] for line in response.json()["lines"]]


def metric_epochs(http: httpx.Client, job_id: str) -> list[int]:
    response = http.get(f"/jobs/{job_id}/metrics")
    response.raise_for_status()
    return [point["epoch"] for point in response.json()["items"]]


def training_pids(messages: list[str]) -> list[int]:
    """The pids of the training processes the job's attempts started, in order."""
    return [int(m.group(1)) for line in messages if (m := _CHILD_LINE.search(line))]


def resumed_epochs(messages: list[str]) -> list[int]:
    """The epochs the job's attempts resumed at (from ``checkpoint-last.pth``)."""
    return [int(m.group(1)) for line in messages if (m := _RESUMED_LINE.search(line))]


def wait_checkpoint(run_dir: Path, *, timeout: float) -> Path:
    """Waits until the run has written ``checkpoint-last.pth`` (its first epoch is done)."""
    path = run_dir / "checkpoint-last.pth"
    return wait_until(lambda: path.is_file() and path, timeout=timeout, what=str(path))


def parent_pid(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def worker_of(child: int) -> int:
    """The worker process supervising training process ``child``: its parent, or, for a run
    started warm (forked by the worker's launcher, ``python -m worker.zygote``), the
    launcher's parent."""
    parent = parent_pid(child)
    if b"worker.zygote" in Path(f"/proc/{parent}/cmdline").read_bytes().split(b"\0"):
        return parent_pid(parent)
    return parent


def process_gone(pid: int) -> bool:
    """True once ``pid`` has exited (a zombie waiting to be reaped counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")
