"""Prometheus metrics: request counts and latency (middleware) and job gauges read at scrape time.

Each app gets its own ``CollectorRegistry``, so several apps in one process (tests) do not clash.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session, aliased

from livt_service.models import JOB_STATUSES, Job, Worker, utcnow

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class JobCollector(Collector):
    """Jobs by status, runnable queued jobs by queue, and live workers, counted per scrape."""

    def __init__(self, session_factory: Callable[[], Session], worker_lost_seconds: float) -> None:
        self._session_factory = session_factory
        self._worker_lost_seconds = worker_lost_seconds

    def describe(self) -> Iterator[Metric]:
        # Declared without values so that registering the collector does not query the database.
        yield GaugeMetricFamily("livt_jobs", "Jobs by status", labels=["status"])
        yield GaugeMetricFamily("livt_queue_depth", "Jobs ready to run, by queue", labels=["queue"])
        yield GaugeMetricFamily("livt_workers_live", "Workers with a recent heartbeat")

    def collect(self) -> Iterator[Metric]:
        jobs = GaugeMetricFamily("livt_jobs", "Jobs by status", labels=["status"])
        depth = GaugeMetricFamily(
            "livt_queue_depth", "Jobs ready to run, by queue", labels=["queue"]
        )
        workers = GaugeMetricFamily("livt_workers_live", "Workers with a recent heartbeat")
        parent = aliased(Job)
        cutoff = utcnow() - timedelta(seconds=self._worker_lost_seconds)
        with self._session_factory() as session:
            by_status = dict(
                session.execute(select(Job.status, func.count()).group_by(Job.status)).all()
            )
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
            jobs.add_metric([status], by_status.get(status, 0))
        for queue, count in ready:
            depth.add_metric([queue], count)
        workers.add_metric([], live or 0)
        yield jobs
        yield depth
        yield workers


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
