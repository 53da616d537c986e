"""What a job produces: per-epoch metrics, logs (paged and streamed) and artifacts."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from livt_service.db import session_scope
from livt_service.models import Artifact, Job, LogLine, MetricPoint, utcnow


@pytest.fixture
def add_logs(db):
    """``add_logs(job, count, start=0)``: writes lines ``start .. start+count-1``."""

    def add(job: Job, count: int, start: int = 0) -> None:
        with db() as session:
            for seq in range(start, start + count):
                session.add(LogLine(job_id=job.id, seq=seq, level="INFO", message=f"line {seq}"))

    return add


# --------------------------------------------------------------------------------------------
# metrics


def test_job_metrics_in_epoch_order(client, user, make_job, db):
    job = make_job(status="running")
    with db() as session:
        for epoch in (1, 0):
            session.add(
                MetricPoint(
                    job_id=job.id,
                    epoch=epoch,
                    metrics={"train_loss": 1.0 - epoch / 10, "lr": 1e-3, "val_few": None},
                )
            )
    response = client.get(f"/jobs/{job.id}/metrics", headers=user.headers)
    assert response.status_code == 200
    body = response.json()
    assert body["job_id"] == job.id
    assert [p["epoch"] for p in body["items"]] == [0, 1]
    assert body["items"][1]["metrics"] == {"train_loss": 0.9, "lr": 1e-3, "val_few": None}


def test_job_metrics_of_other_users_job_is_404(client, make_user, make_job):
    job = make_job()
    bob = make_user("bob")
    assert client.get(f"/jobs/{job.id}/metrics", headers=bob.headers).status_code == 404


# --------------------------------------------------------------------------------------------
# logs


def test_logs_from_an_offset(client, user, make_job, add_logs):
    job = make_job(status="running")
    add_logs(job, 10)
    response = client.get(
        f"/jobs/{job.id}/logs", params={"offset": 3, "limit": 4}, headers=user.headers
    )
    body = response.json()
    assert [line["seq"] for line in body["lines"]] == [3, 4, 5, 6]
    assert body["lines"][0]["message"] == "line 3"
    assert body["lines"][0]["level"] == "INFO"
    assert body["next_offset"] == 7
    assert body["finished"] is False


def test_logs_resume_from_next_offset(client, user, make_job, add_logs):
    job = make_job(status="running")
    add_logs(job, 3)
    first = client.get(f"/jobs/{job.id}/logs", headers=user.headers).json()
    add_logs(job, 2, start=3)
    second = client.get(
        f"/jobs/{job.id}/logs", params={"offset": first["next_offset"]}, headers=user.headers
    ).json()
    assert [line["seq"] for line in second["lines"]] == [3, 4]
    assert second["next_offset"] == 5


def test_logs_past_the_end_keep_the_offset(client, user, make_job, add_logs):
    job = make_job(status="running")
    add_logs(job, 2)
    body = client.get(f"/jobs/{job.id}/logs", params={"offset": 9}, headers=user.headers).json()
    assert body["lines"] == []
    assert body["next_offset"] == 9


def test_logs_are_finished_once_a_finished_job_is_read_to_the_end(client, user, make_job, add_logs):
    job = make_job(status="succeeded")
    add_logs(job, 5)
    partial = client.get(f"/jobs/{job.id}/logs", params={"limit": 5}, headers=user.headers)
    rest = client.get(f"/jobs/{job.id}/logs", params={"offset": 5}, headers=user.headers)
    assert partial.json()["finished"] is False  # a full page: more may follow
    assert rest.json()["finished"] is True


def test_logs_of_other_users_job_is_404(client, make_user, make_job):
    job = make_job()
    assert client.get(f"/jobs/{job.id}/logs", headers=make_user("bob").headers).status_code == 404


def test_logs_with_a_negative_offset_is_422(client, user, make_job):
    job = make_job()
    response = client.get(f"/jobs/{job.id}/logs", params={"offset": -1}, headers=user.headers)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "offset"]


def _sse_events(response) -> list[dict]:
    events = []
    for line in response.iter_lines():
        if line.startswith("data:"):
            events.append(json.loads(line.removeprefix("data:").strip()))
    return events


def test_log_stream_of_a_finished_job_sends_every_line_and_ends(client, user, make_job, add_logs):
    job = make_job(status="failed")
    add_logs(job, 4)
    with client.stream("GET", f"/jobs/{job.id}/logs/stream", headers=user.headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = _sse_events(response)
    assert [e["seq"] for e in events] == [0, 1, 2, 3]
    assert events[2]["message"] == "line 2"


def test_log_stream_resumes_after_last_event_id(client, user, make_job, add_logs):
    job = make_job(status="succeeded")
    add_logs(job, 4)
    headers = {**user.headers, "Last-Event-ID": "1"}
    with client.stream("GET", f"/jobs/{job.id}/logs/stream", headers=headers) as response:
        assert [e["seq"] for e in _sse_events(response)] == [2, 3]


def test_log_stream_starts_at_the_offset(client, user, make_job, add_logs):
    job = make_job(status="succeeded")
    add_logs(job, 4)
    url = f"/jobs/{job.id}/logs/stream?offset=3"
    with client.stream("GET", url, headers=user.headers) as response:
        assert [e["seq"] for e in _sse_events(response)] == [3]


def test_log_stream_of_a_finished_job_with_nothing_left_is_204(client, user, make_job, add_logs):
    job = make_job(status="succeeded")
    add_logs(job, 2)
    url = f"/jobs/{job.id}/logs/stream?offset=2"
    assert client.get(url, headers=user.headers).status_code == 204


def test_log_stream_follows_a_running_job_until_it_finishes(
    client, user, make_job, add_logs, settings
):
    job = make_job(status="running")
    add_logs(job, 2)

    def worker() -> None:
        time.sleep(0.2)
        add_logs(job, 2, start=2)
        time.sleep(0.2)
        with session_scope(settings.database_url) as session:
            session.add(LogLine(job_id=job.id, seq=4, message="done"))
            row = session.get(Job, job.id)
            row.status = "succeeded"
            row.finished_at = utcnow()

    thread = threading.Thread(target=worker)
    thread.start()
    try:
        with client.stream("GET", f"/jobs/{job.id}/logs/stream", headers=user.headers) as r:
            events = _sse_events(r)
    finally:
        thread.join()
    assert [e["seq"] for e in events] == [0, 1, 2, 3, 4]
    assert events[-1]["message"] == "done"


def test_log_stream_of_other_users_job_is_404(client, make_user, make_job):
    job = make_job(status="succeeded")
    response = client.get(f"/jobs/{job.id}/logs/stream", headers=make_user("bob").headers)
    assert response.status_code == 404


# --------------------------------------------------------------------------------------------
# artifacts


@pytest.fixture
def job_with_artifacts(make_job, db):
    job = make_job(kind="finetune", status="succeeded")
    folder = Path(job.artifact_dir)
    folder.mkdir(parents=True)
    (folder / "checkpoint-best.pth").write_bytes(b"\x00" * 64)
    (folder / "results.json").write_text('{"overall": 71.2}')
    with db() as session:
        session.add(
            Artifact(
                job_id=job.id,
                name="checkpoint-best.pth",
                kind="checkpoint",
                path="checkpoint-best.pth",
                size_bytes=64,
            )
        )
        session.add(
            Artifact(
                job_id=job.id,
                name="results.json",
                kind="results",
                path=str(folder / "results.json"),
                size_bytes=17,
            )
        )
    return job


def test_list_artifacts(client, user, job_with_artifacts):
    job = job_with_artifacts
    response = client.get(f"/jobs/{job.id}/artifacts", headers=user.headers)
    assert response.status_code == 200
    items = response.json()["items"]
    assert [a["name"] for a in items] == ["checkpoint-best.pth", "results.json"]
    assert items[0]["kind"] == "checkpoint"
    assert items[0]["size_bytes"] == 64
    assert items[0]["url"] == f"/jobs/{job.id}/artifacts/checkpoint-best.pth"
    assert items[0]["created_at"]


def test_download_artifact(client, user, job_with_artifacts):
    job = job_with_artifacts
    response = client.get(f"/jobs/{job.id}/artifacts/results.json", headers=user.headers)
    assert response.status_code == 200
    assert response.content == b'{"overall": 71.2}'
    assert "results.json" in response.headers["content-disposition"]


def test_download_unknown_artifact_is_404(client, user, job_with_artifacts):
    job = job_with_artifacts
    response = client.get(f"/jobs/{job.id}/artifacts/model.onnx", headers=user.headers)
    assert response.status_code == 404


def test_artifact_outside_the_job_folder_is_never_served(
    client, user, job_with_artifacts, db, tmp_path
):
    job = job_with_artifacts
    secret = tmp_path / "secret.txt"
    secret.write_text("no")
    with db() as session:
        session.add(
            Artifact(job_id=job.id, name="escape", kind="other", path="../../../secret.txt")
        )
        session.add(Artifact(job_id=job.id, name="absolute", kind="other", path=str(secret)))
    for name in ("escape", "absolute"):
        response = client.get(f"/jobs/{job.id}/artifacts/{name}", headers=user.headers)
        assert response.status_code == 404


def test_artifact_whose_file_is_gone_is_404(client, user, job_with_artifacts):
    job = job_with_artifacts
    (Path(job.artifact_dir) / "checkpoint-best.pth").unlink()
    response = client.get(f"/jobs/{job.id}/artifacts/checkpoint-best.pth", headers=user.headers)
    assert response.status_code == 404
    assert "gone" in response.json()["detail"]


def test_artifacts_of_other_users_job_are_404(client, make_user, job_with_artifacts):
    job = job_with_artifacts
    bob = make_user("bob")
    assert client.get(f"/jobs/{job.id}/artifacts", headers=bob.headers).status_code == 404
    url = f"/jobs/{job.id}/artifacts/results.json"
    assert client.get(url, headers=bob.headers).status_code == 404
