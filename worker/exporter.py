"""The worker's own Prometheus endpoint: GPU utilisation and memory (NVML) and its process.

``livt worker --metrics-port 9400`` serves ``/metrics`` on that port (the API's ``/metrics``
reports jobs, queues and heartbeats from the database; what only the GPU host can see is here):

- ``livt_gpu_utilization_ratio{worker,gpu,uuid,name}``: share of the last sample period a kernel
  ran (NVML's utilisation rate / 100);
- ``livt_gpu_memory_used_bytes`` / ``livt_gpu_memory_total_bytes`` with the same labels;
- the process collectors (CPU, memory, open files, GC) of the worker process.

NVML comes from ``nvidia-ml-py`` (``import pynvml``). Without the NVIDIA driver (a CPU host) the
GPU families are absent, not zero, so a dashboard does not show idle GPUs that do not exist.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)

LABELS = ["worker", "gpu", "uuid", "name"]
#: The GPU families: name → help.
GPU_METRICS = {
    "livt_gpu_utilization_ratio": "GPU busy share (NVML utilisation / 100)",
    "livt_gpu_memory_used_bytes": "GPU memory in use",
    "livt_gpu_memory_total_bytes": "GPU memory",
}


def _nvml() -> Any | None:
    """The initialised ``pynvml`` module, or None where there is no NVIDIA driver."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception as exc:  # ImportError, NVMLError (no driver / library)
        logger.info("no GPU metrics: NVML is not available (%s)", exc)
        return None
    return pynvml


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class GpuCollector(Collector):
    """Reads every visible GPU through NVML at scrape time."""

    def __init__(self, worker_id: str, nvml: Any | None = None) -> None:
        self.worker_id = worker_id
        self.nvml = nvml if nvml is not None else _nvml()
        self._lock = threading.Lock()

    def describe(self) -> Iterator[Metric]:
        return iter(())  # collected per scrape; nothing to declare ahead

    def collect(self) -> Iterator[Metric]:
        if self.nvml is None:
            return
        nvml = self.nvml
        util, used, total = (
            GaugeMetricFamily(name, doc, labels=LABELS) for name, doc in GPU_METRICS.items()
        )
        with self._lock:
            try:
                count = nvml.nvmlDeviceGetCount()
                for index in range(count):
                    handle = nvml.nvmlDeviceGetHandleByIndex(index)
                    labels = [
                        self.worker_id,
                        str(index),
                        _text(nvml.nvmlDeviceGetUUID(handle)),
                        _text(nvml.nvmlDeviceGetName(handle)),
                    ]
                    memory = nvml.nvmlDeviceGetMemoryInfo(handle)
                    rates = nvml.nvmlDeviceGetUtilizationRates(handle)
                    util.add_metric(labels, rates.gpu / 100.0)
                    used.add_metric(labels, float(memory.used))
                    total.add_metric(labels, float(memory.total))
            except nvml.NVMLError as exc:  # a GPU fell off the bus: report what was read
                logger.warning("NVML query failed: %s", exc)
        yield util
        yield used
        yield total


def build_registry(worker_id: str, nvml: Any | None = None) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(GpuCollector(worker_id, nvml))
    for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        registry.register(collector)
    return registry


def serve(port: int, worker_id: str, host: str = "0.0.0.0") -> Any:
    """Starts the ``/metrics`` server in a daemon thread; returns the server (``shutdown()``)."""
    server, _thread = start_http_server(port, addr=host, registry=build_registry(worker_id))
    logger.info("worker metrics on http://%s:%d/metrics", host, port)
    return server
