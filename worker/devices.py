"""GPU hand-out: each job gets exactly its GPUs, jobs run side by side while GPUs are free, and
no GPU is ever handed to two jobs at once.

A worker owns a fixed list of device ids (``CUDA_VISIBLE_DEVICES`` or ``nvidia-smi -L`` at start,
or ``livt worker --gpus N``). :class:`DevicePool` hands them out: a job that needs more than are
free waits (its message stays unacknowledged, the job stays queued) until a running job returns
its GPUs; a job that needs more than the worker has is refused at once. A CPU job (its config
says ``device: cpu``) and every job of a worker without GPUs gets none, and runs with
``CUDA_VISIBLE_DEVICES`` empty, so that it cannot touch a GPU another job holds. With several
Celery threads (``livt worker --concurrency``, default: one per GPU) the worker runs as many jobs
at once as its GPUs allow.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from livt_service.labels import CPU


class DevicePool:
    """The GPUs of one worker and who holds them; thread-safe."""

    def __init__(self, devices: Sequence[str], owner: str = "this worker") -> None:
        self.devices = list(devices)
        self.owner = owner
        self._free = list(self.devices)
        self._cond = threading.Condition()

    @property
    def free(self) -> list[str]:
        with self._cond:
            return list(self._free)

    def acquire(self, count: int, *, timeout: float | None = None) -> list[str]:
        """Takes ``count`` GPUs, waiting while other jobs hold them; returns their ids.

        Returns ``[]`` at once for ``count == 0`` and on a worker without GPUs (the job runs on
        the CPU). Raises ValueError when ``count`` exceeds the worker's GPUs (the job was sent to
        the wrong queue) and TimeoutError when ``timeout`` passes first.
        """
        if count <= 0 or not self.devices:
            return []
        if count > len(self.devices):
            raise ValueError(
                f"the job asks for {count} GPUs but worker {self.owner} has "
                f"{len(self.devices)}; send it to a queue whose workers have enough GPUs"
            )
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._free) >= count, timeout=timeout):
                raise TimeoutError(f"{count} GPUs did not become free within {timeout:g} s")
            taken, self._free = self._free[:count], self._free[count:]
            return taken

    def release(self, devices: Sequence[str]) -> None:
        """Gives GPUs back (ids this pool handed out and that are not free already)."""
        if not devices:
            return
        with self._cond:
            for device in devices:
                if device in self.devices and device not in self._free:
                    self._free.append(device)
            self._free.sort(key=self.devices.index)
            self._cond.notify_all()


def gpus_to_take(gpus: int, cpu_only: bool) -> int:
    """How many GPUs a job of ``gpus`` processes takes: none when it runs on the CPU."""
    return 0 if cpu_only else max(1, int(gpus))


def devices_record(devices: Sequence[str]) -> str:
    """What the job row keeps (``jobs.devices``): ``cpu`` or the ids, ``0,1``."""
    return ",".join(devices) if devices else CPU


def device_env(devices: Sequence[str] | None) -> dict[str, str]:
    """The environment a training child gets for ``devices``: exactly those GPUs visible (none:
    an empty ``CUDA_VISIBLE_DEVICES``, so a CPU job cannot reach another job's GPU). ``None``
    leaves the environment alone."""
    if devices is None:
        return {}
    return {"CUDA_VISIBLE_DEVICES": ",".join(devices)}
