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


def worker_cpus() -> list[int]:
    """The cores this worker process may run on (its affinity mask; all cores where there is
    none)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return list(range(os.cpu_count() or 1))


def cpu_slots(cpus: Sequence[int], concurrency: int) -> list[tuple[int, ...]]:
    """``cpus`` split into ``concurrency`` disjoint shares of equal size, one per job slot
    (the remainder goes to the first slots); with fewer cores than slots, slots share cores
    one each, round robin. ``cpu_slots([0, 1], 2) == [(0,), (1,)]``."""
    cpus = list(cpus)
    concurrency = max(1, concurrency)
    if not cpus:
        return []
    if len(cpus) < concurrency:
        return [(cpus[i % len(cpus)],) for i in range(concurrency)]
    size, extra = divmod(len(cpus), concurrency)
    slots, start = [], 0
    for index in range(concurrency):
        end = start + size + (1 if index < extra else 0)
        slots.append(tuple(cpus[start:end]))
        start = end
    return slots


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
    """The identity of a worker process and the GPUs and CPU cores it hands out to its jobs.

    ``cpu_slots``: one share of the worker's cores per job it runs at once (``--concurrency``):
    a job runs pinned to its share, with ``LIVT_JOB_CPUS`` set to its size, so that concurrent
    jobs never contend for cores (``livt_core.perf`` sizes the torch threads from it).
    """

    worker_id: str
    queues: list[str]
    devices: list[str]
    shutdown: threading.Event = field(default_factory=threading.Event)
    cpu_slots: list[tuple[int, ...]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.pool = DevicePool(self.devices, owner=self.worker_id)
        self._cond = threading.Condition()
        self._free_cpus = list(self.cpu_slots)

    def acquire_cpus(self) -> tuple[int, ...]:
        """A free share of the cores for a job (empty when the worker hands out none). Never
        waits: the worker runs at most ``concurrency`` jobs at once; should more ask, the
        extra one gets the first share's cores too."""
        with self._cond:
            if self._free_cpus:
                return self._free_cpus.pop(0)
            return self.cpu_slots[0] if self.cpu_slots else ()

    def release_cpus(self, cpus: tuple[int, ...]) -> None:
        with self._cond:
            if cpus and cpus in self.cpu_slots and cpus not in self._free_cpus:
                self._free_cpus.append(cpus)

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


def configure(
    worker_id: str,
    queues: Sequence[str],
    gpus: int | None = None,
    *,
    concurrency: int | None = 1,
) -> WorkerContext:
    """Sets this process's worker context. ``gpus``: None detects them, N takes the first N
    detected ids (or ``0..N-1`` when fewer are visible), 0 runs every job on the CPU.
    ``concurrency``: jobs run at once, each on its share of the cores (:func:`cpu_slots`);
    None: one per GPU (at least one)."""
    global _context
    detected = detect_gpus()
    if gpus is None:
        devices = detected
    elif gpus <= len(detected):
        devices = detected[:gpus]
    else:
        devices = [str(i) for i in range(gpus)]
    if concurrency is None:  # `livt worker` without --concurrency: one job per GPU
        concurrency = max(1, len(devices))
    with _lock:
        slots = cpu_slots(worker_cpus(), concurrency)
        _context = WorkerContext(
            worker_id=worker_id, queues=list(queues), devices=devices, cpu_slots=slots
        )
        logger.info(
            "worker %s: queues %s, %d GPU(s)%s, %d job(s) at once on %s core(s) each",
            worker_id,
            ",".join(queues),
            len(devices),
            f" ({','.join(devices)})" if devices else "",
            max(1, concurrency),
            "/".join(str(len(s)) for s in slots) or "all",
        )
        return _context


def get_context() -> WorkerContext | None:
    """The configured context, or None before the worker has one."""
    return _context
