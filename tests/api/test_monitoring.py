"""The Prometheus metrics read from the database per scrape: jobs by status and kind, the job
duration histogram by outcome, worker heartbeat ages, training throughput, process collectors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prometheus_client.parser import text_string_to_metric_families

from livt_service.models import Worker


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_job_duration_histogram_by_outcome_and_kind(client, admin, make_job):
    start = datetime.now(UTC) - timedelta(hours=3)
    for seconds, status in (
        (5, "succeeded"),
        (45, "succeeded"),
        (4000, "succeeded"),
        (20, "failed"),
    ):
        make_job(
            kind="finetune",
            status=status,
            started_at=start,
            finished_at=start + timedelta(seconds=seconds),
        )
    make_job(kind="finetune", status="running", started_at=start)  # not finished: not counted
    samples = _samples(client.get("/metrics", headers=admin.headers).text)
    ok = (("kind", "finetune"), ("outcome", "succeeded"))
    bucket = lambda le: samples[("livt_job_duration_seconds_bucket", (*ok[:1], ("le", le), ok[1]))]  # noqa: E731
    assert (bucket("10.0"), bucket("60.0"), bucket("3600.0"), bucket("7200.0"), bucket("+Inf")) == (
        1,
        2,
        2,
        3,
        3,
    )
    assert samples[("livt_job_duration_seconds_count", ok)] == 3
    assert samples[("livt_job_duration_seconds_sum", ok)] == 4050
    failed = (("kind", "finetune"), ("outcome", "failed"))
    assert samples[("livt_job_duration_seconds_count", failed)] == 1
    assert samples[("livt_jobs", (("kind", "finetune"), ("status", "succeeded")))] == 3


def test_worker_heartbeat_age_and_live_workers(client, admin, db):
    now = datetime.now(UTC)
    with db() as session:
        session.add(
            Worker(id="w1@gpu-a", hostname="gpu-a", queues=["gpu"], gpus=2, heartbeat_at=now)
        )
        session.add(
            Worker(
                id="w2@gpu-b",
                hostname="gpu-b",
                queues=["gpu"],
                gpus=1,
                heartbeat_at=now - timedelta(minutes=30),
            )
        )
        session.add(
            Worker(
                id="w3@old",
                hostname="old",
                queues=["gpu"],
                gpus=1,
                heartbeat_at=now - timedelta(days=3),
            )
        )
    samples = _samples(client.get("/metrics", headers=admin.headers).text)
    assert samples[("livt_workers_live", ())] == 1
    assert 0 <= samples[("livt_worker_heartbeat_age_seconds", (("worker", "w1@gpu-a"),))] < 60
    age = samples[("livt_worker_heartbeat_age_seconds", (("worker", "w2@gpu-b"),))]
    assert 1790 <= age < 1900
    assert ("livt_worker_heartbeat_age_seconds", (("worker", "w3@old"),)) not in samples


def test_images_per_second_of_running_jobs(client, admin, make_job):
    job = make_job(
        kind="finetune", status="running", progress={"images_per_sec": 812.5, "epoch": 0}
    )
    make_job(kind="finetune", status="succeeded", progress={"images_per_sec": 99.0})
    samples = _samples(client.get("/metrics", headers=admin.headers).text)
    rates = {k: v for k, v in samples.items() if k[0] == "livt_job_images_per_second"}
    labels = (("job", job.id), ("kind", "finetune"), ("queue", job.queue))
    assert rates == {("livt_job_images_per_second", labels): 812.5}


def test_process_collectors_and_no_gpu_metrics_in_the_api(client, admin):
    text = client.get("/metrics", headers=admin.headers).text
    names = {family.name for family in text_string_to_metric_families(text)}
    assert {"process_resident_memory_bytes", "process_cpu_seconds", "python_info"} <= names
    assert "python_gc_collections" in names
    assert not any(n.startswith("livt_gpu_") for n in names)  # those come from the workers
