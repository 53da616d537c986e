"""How a job's resources read to people (API, CLI and dashboard say the same)."""

from __future__ import annotations

from typing import Protocol

#: ``jobs.devices`` of a job that runs on the CPU.
CPU = "cpu"


class _Resources(Protocol):
    gpus: int
    nodes: int | None
    devices: str | None


def cpu_only(job: _Resources) -> bool:
    """Whether the job runs on the CPU: its config says ``device: cpu``, or the worker that took
    it had no GPU to hand out (``jobs.devices``)."""
    return job.devices == CPU


def device_label(job: _Resources) -> str:
    """What the job runs on: ``CPU``, ``1 GPU``, ``2 nodes × 4 GPUs``, ``CPU × 2 processes``."""
    gpus, nodes = int(job.gpus), int(job.nodes or 1)
    if cpu_only(job):
        each = "CPU" if gpus == 1 else f"CPU × {gpus} processes"
    else:
        each = f"{gpus} GPU{'s' if gpus != 1 else ''}"
    return each if nodes == 1 else f"{nodes} nodes × {each}"
