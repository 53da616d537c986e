"""The worker's Prometheus endpoint (``livt worker --metrics-port``): GPU metrics through NVML
where a driver is present, absent on a CPU host; the worker process's collectors either way."""

from __future__ import annotations

import socket

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from worker.exporter import GPU_METRICS, _nvml, serve

GPU_FAMILIES = set(GPU_METRICS)


def _port() -> int:
    for port in range(18590, 18600):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    pytest.skip("no free port in 18590-18599")


@pytest.fixture(scope="module")
def scrape():
    port = _port()
    server = serve(port, "w-test@host", host="127.0.0.1")
    try:
        response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
        assert response.status_code == 200
        yield {f.name: f for f in text_string_to_metric_families(response.text)}
    finally:
        server.shutdown()
        server.server_close()


def test_worker_endpoint_has_the_process_collectors(scrape):
    assert {"process_resident_memory_bytes", "process_cpu_seconds", "python_info"} <= set(scrape)


def test_gpu_metrics_follow_what_nvml_sees(scrape):
    nvml = _nvml()
    if nvml is None:  # a CPU host: no NVML, no GPU series at all (not zeros)
        assert not GPU_FAMILIES & set(scrape)
        return
    count = nvml.nvmlDeviceGetCount()
    assert GPU_FAMILIES <= set(scrape)
    total = scrape["livt_gpu_memory_total_bytes"].samples
    assert len(total) == count and all(s.value > 0 for s in total)
    assert {s.labels["worker"] for s in total} == {"w-test@host"}
    for sample in scrape["livt_gpu_utilization_ratio"].samples:
        assert 0.0 <= sample.value <= 1.0
    used = {s.labels["gpu"]: s.value for s in scrape["livt_gpu_memory_used_bytes"].samples}
    assert all(used[s.labels["gpu"]] <= s.value for s in total)


def test_worker_command_takes_a_metrics_port():
    from livt.cli import build_parser

    parser = build_parser(("worker.commands",))
    args = parser.parse_args(["worker", "--metrics-port", "9400"])
    assert args.metrics_port == 9400
    with pytest.raises(SystemExit):
        parser.parse_args(["worker", "--metrics-port", "0"])
