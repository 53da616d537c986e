"""Prometheus metrics: request counts and latency (middleware), the API process (CPU, memory,
file descriptors, GC) and job / queue / worker metrics read from the database at scrape time.

Read per scrape (so every API replica reports the same, whatever process ran the jobs):

- ``livt_jobs{status,kind}``: jobs by status and kind (every pair, zeros included);
- ``livt_job_duration_seconds{outcome,kind}``: histogram of ``finished - started`` of finished
  jobs (outcome: succeeded / failed / cancelled);
- ``livt_queue_depth{queue}``: jobs ready to run (queued, predecessor done);
- ``livt_workers_live``; ``livt_worker_heartbeat_age_seconds{worker}`` of every worker seen in the
  last day (a lost worker shows a growing age);
- ``livt_job_images_per_second{job,kind,queue}``: training throughput of running jobs.

GPU utilisation and memory come from the workers themselves (``worker.exporter``, NVML). Each app
gets its own ``CollectorRegistry``, so several apps in one process (tests) do not clash.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session, aliased

from livt_core.contract import KINDS
from livt_service.models import JOB_STATUSES, TERMINAL_STATUSES, Job, Worker, utcnow

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: Upper bounds (seconds) of the job duration histogram: 10 s to a day.
DURATION_BUCKETS = (10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 28800, 86400)
#: Workers whose last heartbeat is older than this are left out of the heartbeat ages.
WORKER_AGE_WINDOW = timedelta(days=1)


def _families() -> dict[str, Metric]:
    return {
        "jobs": GaugeMetricFamily(
            "livt_jobs", "Jobs by status and kind", labels=["status", "kind"]
        ),
        "duration": HistogramMetricFamily(
            "livt_job_duration_seconds",
            "Run time (finished - started) of finished jobs, by outcome and kind",
            labels=["outcome", "kind"],
        ),
        "depth": GaugeMetricFamily(
            "livt_queue_depth", "Jobs ready to run, by queue", labels=["queue"]
        ),
        "workers": GaugeMetricFamily("livt_workers_live", "Workers with a recent heartbeat"),
        "age": GaugeMetricFamily(
            "livt_worker_heartbeat_age_seconds",
            "Seconds since each worker's last heartbeat (workers seen in the last day)",
            labels=["worker"],
        ),
        "throughput": GaugeMetricFamily(
            "livt_job_images_per_second",
            "Training throughput of running jobs",
            labels=["job", "kind", "queue"],
        ),
    }


def duration_buckets(seconds: list[float]) -> tuple[list[tuple[str, float]], float]:
    """Cumulative ``(le, count)`` buckets (``+Inf`` last) and the sum of the durations."""
    buckets = [(str(float(b)), float(sum(s <= b for s in seconds))) for b in DURATION_BUCKETS]
    return [*buckets, ("+Inf", float(len(seconds)))], float(sum(seconds))


class JobCollector(Collector):
    """Jobs by status, runnable queued jobs by queue, and live workers, counted per scrape."""

    def __init__(self, session_factory: Callable[[], Session], worker_lost_seconds: float) -> None:
        self._session_factory = session_factory
        self._worker_lost_seconds = worker_lost_seconds

    def describe(self) -> Iterator[Metric]:
        # Declared without values so that registering the collector does not query the database.
        yield from _families().values()

    def collect(self) -> Iterator[Metric]:
        families = _families()
        jobs, depth, workers = families["jobs"], families["depth"], families["workers"]
        parent = aliased(Job)
        now = utcnow()
        cutoff = now - timedelta(seconds=self._worker_lost_seconds)
        with self._session_factory() as session:
            by_status = {
                (status, kind): count
                for status, kind, count in session.execute(
                    select(Job.status, Job.kind, func.count()).group_by(Job.status, Job.kind)
                ).all()
            }
            finished = session.execute(
                select(Job.status, Job.kind, Job.started_at, Job.finished_at).where(
                    Job.status.in_(TERMINAL_STATUSES),
                    Job.started_at.is_not(None),
                    Job.finished_at.is_not(None),
                )
            ).all()
            heartbeats = session.execute(
                select(Worker.id, Worker.heartbeat_at).where(
                    Worker.heartbeat_at >= now - WORKER_AGE_WINDOW
                )
            ).all()
            running = session.execute(
                select(Job.id, Job.kind, Job.queue, Job.progress).where(Job.status == "running")
            ).all()
            ready = session.execute(
                select(Job.queue, func.count())
                .outerjoin(parent, Job.depends_on == parent.id)
                .where(Job.status == "queued")
                .where((Job.depends_on.is_(None)) | (parent.status == "succeeded"))
                .group_by(Job.queue)
            ).all()
            live = session.scalar(
                select(func.count()).select_from(Worker).where(Worker.heartbeat_at >= cutoff)
            )
        for status in JOB_STATUSES:
            for kind in KINDS:
                jobs.add_metric([status, kind], by_status.get((status, kind), 0))
        durations: dict[tuple[str, str], list[float]] = {}
        for status, kind, started, ended in finished:
            seconds = max(0.0, (ended - started).total_seconds())
            durations.setdefault((status, kind), []).append(seconds)
        for (status, kind), seconds in sorted(durations.items()):
            buckets, total = duration_buckets(seconds)
            families["duration"].add_metric([status, kind], buckets, total)
        for queue, count in ready:
            depth.add_metric([queue], count)
        workers.add_metric([], live or 0)
        for worker_id, beat in heartbeats:
            families["age"].add_metric([worker_id], max(0.0, (now - beat).total_seconds()))
        for job_id, kind, queue, progress in running:
            rate = (progress or {}).get("images_per_sec")
            if isinstance(rate, int | float):
                families["throughput"].add_metric([job_id, kind, queue], float(rate))
        yield from families.values()


class Telemetry:
    """The metrics of one app and the text exposition of them."""

    def __init__(self, session_factory: Callable[[], Session], worker_lost_seconds: float) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "livt_http_requests",
            "HTTP requests by method, route template and status code",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "livt_http_request_duration_seconds",
            "HTTP request latency by method and route template",
            ["method", "route"],
            registry=self.registry,
        )
        self.registry.register(JobCollector(session_factory, worker_lost_seconds))
        # CPU, memory, open files, GC of this API process (the default registry's collectors)
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            self.registry.register(collector)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """ASGI middleware counting requests by route template (not raw path: ids would explode
    the label set) and timing them."""

    def __init__(self, app: Any, telemetry: Telemetry) -> None:
        self.app = app
        self.telemetry = telemetry

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_and_record(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            method = scope.get("method", "")
            self.telemetry.requests.labels(method, route, str(status)).inc()
            self.telemetry.latency.labels(method, route).observe(time.perf_counter() - start)
