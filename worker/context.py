"""Who this worker process is: its id, queues and GPUs, and the shutdown flag its runs watch.

``livt worker`` configures the context before the Celery worker starts; a worker started with
``celery -A livt_service.queue worker`` gets one derived from Celery's own options when it
initialises (see ``worker.janitor``).
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from worker.devices import DevicePool

logger = logging.getLogger(__name__)


def node_name(name: str | None = None, default: str = "livt") -> str:
    """A Celery-style worker id ``name@host``; ``name`` may already carry its host part.

    The id must stay the same when the worker restarts (its jobs left running are then requeued
    at once) and differ between workers running at the same time.
    """
    name = name or default
    return name if "@" in name else f"{name}@{socket.gethostname()}"


def detect_gpus() -> list[str]:
    """The GPU ids this process may use: ``CUDA_VISIBLE_DEVICES`` when set, else the GPUs that
    ``nvidia-smi -L`` lists (none when it is missing). Cheap: no CUDA initialisation."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d.strip() for d in visible.split(",") if d.strip() and d.strip() != "-1"]
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20, check=True)
    except (OSError, subprocess.SubprocessError) as exc:
        logger.warning("nvidia-smi failed, assuming no GPU: %s", exc)
        return []
    return [str(i) for i, line in enumerate(out.stdout.splitlines()) if line.startswith("GPU")]


def worker_address() -> str:
    """The address other hosts reach this worker at: ``LIVT_WORKER_ADDRESS``, else what the host
    name resolves to (``127.0.0.1`` when it does not resolve)."""
    from livt_service.settings import get_settings

    configured = get_settings().worker_address
    if configured:
        return configured
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


@dataclass
class WorkerContext:
    """The identity of a worker process and the GPUs it hands out to its jobs."""

    worker_id: str
    queues: list[str]
    devices: list[str]
    shutdown: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.pool = DevicePool(self.devices, owner=self.worker_id)

    @property
    def gpus(self) -> int:
        return len(self.devices)

    def acquire(self, count: int) -> list[str]:
        """Takes ``count`` GPUs for a job, waiting while concurrent jobs hold them (see
        :class:`worker.devices.DevicePool`)."""
        return self.pool.acquire(count)

    def release(self, devices: Sequence[str]) -> None:
        self.pool.release(devices)


_lock = threading.Lock()
_context: WorkerContext | None = None


def configure(worker_id: str, queues: Sequence[str], gpus: int | None = None) -> WorkerContext:
    """Sets this process's worker context. ``gpus``: None detects them, N takes the first N
    detected ids (or ``0..N-1`` when fewer are visible), 0 runs every job on the CPU."""
    global _context
    detected = detect_gpus()
    if gpus is None:
        devices = detected
    elif gpus <= len(detected):
        devices = detected[:gpus]
    else:
        devices = [str(i) for i in range(gpus)]
    with _lock:
        _context = WorkerContext(worker_id=worker_id, queues=list(queues), devices=devices)
        logger.info(
            "worker %s: queues %s, %d GPU(s)%s",
            worker_id,
            ",".join(queues),
            len(devices),
            f" ({','.join(devices)})" if devices else "",
        )
        return _context


def get_context() -> WorkerContext | None:
    """The configured context, or None before the worker has one."""
    return _context
