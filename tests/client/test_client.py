"""The Python client against a real ``livt serve`` (API + embedded worker, tiny jobs)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from livt.client import (
    Job,
    LivtApiError,
    LivtClient,
    LivtConnectionError,
)
from tests.live_server import TINY_FINETUNE, LiveServer, free_port

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with LiveServer.start(tmp_path_factory.mktemp("livt-client")) as live:
        yield live


@pytest.fixture(scope="module")
def client(server: LiveServer) -> Iterator[LivtClient]:
    with LivtClient(server.url, server.create_token("alice")) as c:
        yield c


@pytest.fixture(scope="module")
def finished_job(client: LivtClient) -> Job:
    """A tiny fine-tuning job, run to the end once for the whole module."""
    job = client.submit({**TINY_FINETUNE, "name": "client-tiny"})
    seen: list[str] = []
    done = client.wait(job.id, poll=0.5, timeout=240, callback=lambda j: seen.append(j.status))
    assert done.status == "succeeded", (done.failure, seen)
    return done


def test_health_needs_no_token(server: LiveServer) -> None:
    with LivtClient(server.url, None) as anonymous:
        assert anonymous.health() == {"status": "ok"}


def test_ready_reports_database_and_broker(client: LivtClient) -> None:
    assert client.ready() == {"database": "ok", "broker": "ok"}


def test_missing_token_is_401(server: LiveServer) -> None:
    with LivtClient(server.url, None) as anonymous, pytest.raises(LivtApiError) as err:
        anonymous.jobs()
    assert err.value.status == 401


def test_bad_token_is_401(server: LiveServer) -> None:
    with LivtClient(server.url, "livt_not-a-token") as bad, pytest.raises(LivtApiError) as err:
        bad.jobs()
    assert err.value.status == 401


def test_unreachable_server_names_the_url() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with LivtClient(url, "t", timeout=2) as c, pytest.raises(LivtConnectionError) as err:
        c.health()
    assert f"is the server running at {url}?" in str(err.value)


def test_invalid_spec_names_the_field(client: LivtClient) -> None:
    with pytest.raises(LivtApiError) as err:
        client.submit({**TINY_FINETUNE, "epochs": 0})
    assert err.value.status == 422
    fields = {e.field: e.message for e in err.value.errors}
    assert "epochs" in fields, err.value.errors
    assert "epochs" in str(err.value)


def test_unknown_loss_names_the_field(client: LivtClient) -> None:
    with pytest.raises(LivtApiError) as err:
        client.submit({**TINY_FINETUNE, "loss": "no_such_loss"})
    assert [e.field for e in err.value.errors] == ["loss"]
    assert "bal_bce" in err.value.errors[0].message  # lists the valid names


def test_presets_list_fashion_mnist(client: LivtClient) -> None:
    presets = client.presets()
    assert "fashion-mnist-lt" in {p["name"] for p in presets["items"]}
    assert "bal_bce" in presets["losses"]


def test_finished_job_has_long_tail_result(finished_job: Job) -> None:
    r = finished_job.result
    assert r is not None
    assert finished_job.finished and finished_job.finished_at is not None
    for value in (r.overall, r.many, r.few):
        assert value is not None and 0.0 <= value <= 100.0
    assert len(r.per_class) == len(r.class_counts) == 10
    assert {c["group"] for c in r.per_class} <= {"many", "medium", "few"}
    assert finished_job.progress is not None and finished_job.progress.epochs == 2


def test_show_returns_resolved_config(client: LivtClient, finished_job: Job) -> None:
    job = client.job(finished_job.id)
    assert job.config is not None and job.config["epochs"] == 2
    assert job.config["model_kwargs"] == {"depth": 1}
    assert job.spec is not None and job.spec["name"] == "client-tiny"


def test_metrics_have_one_point_per_epoch(client: LivtClient, finished_job: Job) -> None:
    metrics = client.metrics(finished_job.id)
    assert [p.epoch for p in metrics.items] == [0, 1]
    losses = metrics.series("train_loss")
    assert len(losses) == 2 and all(v > 0 for _, v in losses)


def test_logs_resume_from_offset(client: LivtClient, finished_job: Job) -> None:
    first = client.logs(finished_job.id, 0, limit=2)
    assert len(first.lines) == 2 and first.next_offset == 2
    rest = client.logs(finished_job.id, first.next_offset)
    assert rest.lines and rest.lines[0].seq == 2
    assert rest.finished


def test_follow_logs_streams_until_the_end(client: LivtClient, finished_job: Job) -> None:
    streamed = list(client.follow_logs(finished_job.id))
    polled = client.logs(finished_job.id, 0, limit=5000).lines
    assert [line.message for line in streamed] == [line.message for line in polled]


def test_download_artifact(client: LivtClient, finished_job: Job, tmp_path: Path) -> None:
    artifacts = {a.name: a for a in client.artifacts(finished_job.id)}
    assert "checkpoint-best.pth" in artifacts
    assert "results.json" in artifacts
    path = client.download_artifact(finished_job.id, "results.json", tmp_path)
    assert path == tmp_path / "results.json"
    assert path.stat().st_size == artifacts["results.json"].size_bytes


def test_download_of_a_missing_artifact_is_404(
    client: LivtClient, finished_job: Job, tmp_path: Path
) -> None:
    with pytest.raises(LivtApiError) as err:
        client.download_artifact(finished_job.id, "nothing.bin", tmp_path)
    assert err.value.status == 404
    assert list(tmp_path.iterdir()) == []


def test_list_filters_and_pages(client: LivtClient, finished_job: Job) -> None:
    filler = client.submit({**TINY_FINETUNE, "name": "page-filler"})
    client.cancel(filler.id)
    page = client.jobs(limit=1)
    assert len(page.items) == 1 and page.next_cursor
    every = list(client.iter_jobs(page_size=1))
    assert len({j.id for j in every}) == len(every) >= 2
    assert finished_job.id in {j.id for j in client.iter_jobs(status="succeeded")}
    assert all(j.kind == "pretrain" for j in client.iter_jobs(kind="pretrain"))
    assert client.jobs(status="succeeded").items[0].spec is None  # lists leave spec out


def test_other_users_do_not_see_the_job(server: LiveServer, finished_job: Job) -> None:
    with LivtClient(server.url, server.create_token("bob")) as bob:
        with pytest.raises(LivtApiError) as err:
            bob.job(finished_job.id)
        assert err.value.status == 404
        assert finished_job.id not in {j.id for j in bob.iter_jobs()}


def test_cancel_then_retry(client: LivtClient) -> None:
    job = client.submit({**TINY_FINETUNE, "name": "to-cancel", "epochs": 40})
    cancelled = client.cancel(job.id)
    assert cancelled.status in ("cancelling", "cancelled")
    assert client.wait(job.id, poll=0.5, timeout=120).status == "cancelled"
    with pytest.raises(LivtApiError) as err:
        client.cancel(job.id)
    assert err.value.status == 409
    again = client.retry(job.id)
    assert (again.status, again.attempt) == ("queued", 2)
    client.cancel(job.id)
    assert client.wait(job.id, poll=0.5, timeout=120).status == "cancelled"


def test_retry_of_a_succeeded_job_is_409(client: LivtClient, finished_job: Job) -> None:
    with pytest.raises(LivtApiError) as err:
        client.retry(finished_job.id)
    assert err.value.status == 409


def test_wait_times_out(client: LivtClient) -> None:
    job = client.submit({**TINY_FINETUNE, "name": "slow", "epochs": 40})
    try:
        with pytest.raises(TimeoutError):
            client.wait(job.id, poll=0.2, timeout=0.5)
    finally:
        client.cancel(job.id)


def test_pipeline_chains_stages(client: LivtClient) -> None:
    pipeline = client.submit_pipeline(
        [
            {
                "kind": "pretrain",
                "preset": "fashion-mnist-lt",
                "epochs": 1,
                "max_steps_per_epoch": 1,
                "model_kwargs": {"depth": 1},
                "data": {"num_workers": 0},
            },
            {**TINY_FINETUNE},  # epochs 2, warmup 1
        ],
        name="client-pipeline",
    )
    assert pipeline.name == "client-pipeline"
    first, second = pipeline.jobs
    assert (first.kind, second.kind) == ("pretrain", "finetune")
    assert second.depends_on == first.id and second.pipeline_id == pipeline.id
    assert client.pipeline(pipeline.id).jobs[1].id == second.id
    client.cancel(first.id)
    assert client.wait(second.id, poll=0.5, timeout=60).status == "cancelled"


def test_register_and_list_a_dataset(client: LivtClient) -> None:
    ds = client.register_dataset(
        "fmnist-gamma10", "fashion-mnist-lt", params={"imbalance_factor": 10, "n_max": 200}
    )
    assert (ds.name, ds.kind, len(ds.classes)) == ("fmnist-gamma10", "fashion-mnist-lt", 10)
    assert ds.class_counts[0] == 200 and ds.class_counts[-1] == 20
    assert ds.num_train == sum(ds.class_counts)
    assert sorted(sum(ds.shot_groups.values(), [])) == list(range(10))
    assert "fmnist-gamma10" in {d.name for d in client.datasets()}


def test_register_dataset_outside_the_roots_is_422(client: LivtClient) -> None:
    with pytest.raises(LivtApiError) as err:
        client.register_dataset("escape", "imagefolder", root="/etc")
    assert err.value.status == 422
    assert [e.field for e in err.value.errors] == ["root"]


def test_list_and_revoke_a_token(server: LiveServer, client: LivtClient) -> None:
    value = server.create_token("carol")
    with LivtClient(server.url, value) as carol:
        [token] = carol.tokens()
        assert (token.user, token.status, token.revoked_at) == ("carol", "active", None)
        assert value.startswith(token.prefix)
        revoked = carol.revoke_token(token.prefix)
        assert (revoked.id, revoked.status) == (token.id, "revoked")
        with pytest.raises(LivtApiError) as err:
            carol.tokens()
    assert err.value.status == 401
    assert "revoked" in str(err.value)
    assert "carol" not in {t.user for t in client.tokens()}  # alice sees only her own


def test_revoking_a_token_of_someone_else_is_404(server: LiveServer, client: LivtClient) -> None:
    with LivtClient(server.url, server.create_token("dave")) as dave:
        [token] = dave.tokens()
        with pytest.raises(LivtApiError) as err:
            client.revoke_token(token.id)
        assert err.value.status == 404
        assert dave.tokens()[0].status == "active"
