"""Webhooks against real local HTTP receivers (one that answers, one that fails at first, one
that is down): signed payloads on terminal states, retries with backoff, the owner's delivery
log, and the dispatcher thread of a running app."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.orm import sessionmaker

from api.webhooks import Dispatcher, signature
from livt_service.models import Job, WebhookDelivery
from livt_service.settings import Settings, get_settings


class Receiver:
    """A real HTTP server on 127.0.0.1 recording every POST; ``codes`` are answered in turn
    (the last one repeats)."""

    def __init__(self, codes: list[int]) -> None:
        self.codes = list(codes)
        self.requests: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((dict(self.headers), body))
                code = receiver.codes.pop(0) if len(receiver.codes) > 1 else receiver.codes[0]
                self.send_response(code)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def settings(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The suite's settings with the app's dispatcher thread off (``LIVT_WEBHOOK_POLL_SECONDS=0``):
    these tests drive dispatchers of their own, whose deliveries the app's would take."""
    monkeypatch.setenv("LIVT_WEBHOOK_POLL_SECONDS", "0")
    get_settings.cache_clear()
    return get_settings()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver([200])
    yield r
    r.close()


@pytest.fixture
def down_url() -> str:
    """A URL where nothing listens (the port was free a moment ago)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"


def dispatcher(settings, max_attempts: int = 6, backoff: float = 0.05) -> Dispatcher:
    from livt_service.db import get_engine

    factory = sessionmaker(bind=get_engine(settings.database_url), expire_on_commit=False)
    return Dispatcher(
        factory,
        poll_seconds=0.05,
        max_attempts=max_attempts,
        backoff_seconds=backoff,
        timeout_seconds=3,
    )


def finished(make_job, user=None, **columns):
    now = datetime.now(UTC)
    values = {
        "kind": "finetune",
        "status": "succeeded",
        "started_at": now - timedelta(seconds=30),
        "finished_at": now,
        "result": {"overall": 61.5, "many": 80.0, "medium": 55.0, "few": 20.0, "ece": 3.2},
        **columns,
    }
    return make_job(user, **values)


def create(client, user, url: str, job_id: str | None = None) -> dict:
    body = {"url": url} if job_id is None else {"url": url, "job_id": job_id}
    response = client.post("/webhooks", json=body, headers=user.headers)
    assert response.status_code == 201, response.text
    return response.json()


def log(client, user, hook_id: str) -> list[dict]:
    response = client.get(f"/webhooks/{hook_id}/deliveries", headers=user.headers)
    assert response.status_code == 200, response.text
    return response.json()["items"]


def test_create_list_and_bad_input(client, user, make_user, make_job):
    hook = create(client, user, "https://ci.example.org/hook")
    assert hook["id"].startswith("wh_") and len(hook["secret"]) == 64
    listed = client.get("/webhooks", headers=user.headers).json()["items"]
    assert [h["id"] for h in listed] == [hook["id"]] and "secret" not in listed[0]
    bad = client.post("/webhooks", json={"url": "ftp://x/y"}, headers=user.headers)
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "url"]
    other = make_user("mallory")
    theirs = make_job(other)
    response = client.post(
        "/webhooks", json={"url": "https://a/b", "job_id": theirs.id}, headers=user.headers
    )
    assert response.status_code == 422 and response.json()["detail"][0]["loc"][-1] == "job_id"
    assert (
        client.get(f"/webhooks/{hook['id']}/deliveries", headers=other.headers).status_code == 404
    )
    assert client.delete(f"/webhooks/{hook['id']}", headers=other.headers).status_code == 404
    assert client.delete(f"/webhooks/{hook['id']}", headers=user.headers).status_code == 204
    assert client.get("/webhooks", headers=user.headers).json()["items"] == []


def test_a_finished_job_is_posted_once_with_a_valid_signature(
    client, user, make_job, settings, receiver
):
    hook = create(client, user, receiver.url)
    job = finished(make_job)
    sender = dispatcher(settings)
    try:
        assert sender.run_once() == 1
        assert sender.run_once() == 0  # delivered: never sent again
    finally:
        sender.stop()
    ((headers, body),) = receiver.requests
    expected = signature(hook["secret"], headers["X-Livt-Timestamp"], body)
    assert headers["X-Livt-Signature"] == expected
    mac = hmac.new(
        hook["secret"].encode(), headers["X-Livt-Timestamp"].encode() + b"." + body, hashlib.sha256
    )
    assert expected == "sha256=" + mac.hexdigest()
    assert headers["X-Livt-Event"] == "job.succeeded"
    data = json.loads(body)
    assert data["event"] == "job.succeeded" and data["delivery"] == int(headers["X-Livt-Delivery"])
    assert data["job"]["id"] == job.id and data["job"]["status"] == "succeeded"
    assert data["result"] == {
        "overall": 61.5,
        "many": 80.0,
        "medium": 55.0,
        "few": 20.0,
        "ece": 3.2,
    }
    (entry,) = log(client, user, hook["id"])
    assert (entry["status"], entry["attempts"], entry["last_status_code"]) == ("delivered", 1, 200)
    assert entry["job_id"] == job.id and entry["delivered_at"] and entry["next_attempt_at"] is None


def test_a_receiver_that_is_down_is_retried_with_backoff_then_failed(
    client, user, make_job, settings, down_url, db
):
    hook = create(client, user, down_url)
    finished(make_job, status="failed", failure_reason="non_finite_loss", failure_message="nan")
    # a backoff far longer than a round on a loaded machine: "not due yet" holds for sure; the
    # wait is then made to pass by moving the delivery's due time to now
    sender = dispatcher(settings, max_attempts=3, backoff=30.0)
    try:
        for attempt in (1, 2, 3):
            before = datetime.now(UTC)
            assert sender.run_once() == 1
            after = datetime.now(UTC)
            (entry,) = log(client, user, hook["id"])
            assert entry["attempts"] == attempt and entry["last_status_code"] is None
            assert "ConnectError" in entry["last_error"]
            if attempt < 3:
                assert entry["status"] == "pending"
                due = datetime.fromisoformat(entry["next_attempt_at"])
                wait = timedelta(seconds=30.0 * 2 ** (attempt - 1))  # 30 s, then 60 s
                assert before + wait <= due <= after + wait  # stamped during the round
                assert sender.run_once() == 0  # not due yet
                with db() as session:
                    session.execute(
                        update(WebhookDelivery)
                        .where(WebhookDelivery.id == entry["id"])
                        .values(next_attempt_at=datetime.now(UTC))
                    )
        assert entry["status"] == "failed" and entry["next_attempt_at"] is None
        assert sender.run_once() == 0
    finally:
        sender.stop()
    assert entry["payload"]["failure"] == {"reason": "non_finite_loss", "message": "nan"}


def test_a_failing_receiver_gets_the_delivery_on_a_retry(client, user, make_job, settings):
    flaky = Receiver([503, 200])
    try:
        hook = create(client, user, flaky.url)
        finished(make_job)
        sender = dispatcher(settings, backoff=0.05)
        try:
            assert sender.run_once() == 1
            (entry,) = log(client, user, hook["id"])
            assert (entry["status"], entry["last_status_code"]) == ("pending", 503)
            assert entry["last_error"].startswith("HTTP 503")
            time.sleep(0.1)
            assert sender.run_once() == 1
        finally:
            sender.stop()
        (entry,) = log(client, user, hook["id"])
        assert (entry["status"], entry["attempts"], entry["last_status_code"]) == (
            "delivered",
            2,
            200,
        )
        first, second = flaky.requests
        assert first[1] == second[1]  # the same payload on every try
        assert first[0]["X-Livt-Delivery"] == second[0]["X-Livt-Delivery"]
    finally:
        flaky.close()


def test_per_job_and_per_user_webhooks_cover_what_they_name(
    client, user, make_job, settings, receiver, db
):
    old = finished(make_job, finished_at=datetime.now(UTC) - timedelta(hours=1))
    mine = make_job(kind="finetune", status="running")
    other = make_job(kind="finetune", status="running")
    one = create(client, user, receiver.url + "?one", job_id=mine.id)
    every = create(client, user, receiver.url + "?every")
    sender = dispatcher(settings)
    try:
        assert sender.run_once() == 0  # nothing finished since the webhooks exist
        now = datetime.now(UTC)
        with db() as session:
            for job_id, status in ((mine.id, "cancelled"), (other.id, "succeeded")):
                session.execute(
                    update(Job).where(Job.id == job_id).values(status=status, finished_at=now)
                )
        assert sender.run_once() == 3  # mine for both webhooks, other for the per-user one
    finally:
        sender.stop()
    assert [e["job_id"] for e in log(client, user, one["id"])] == [mine.id]
    assert sorted(e["job_id"] for e in log(client, user, every["id"])) == sorted(
        [mine.id, other.id]
    )
    events = {json.loads(b)["job"]["id"]: h["X-Livt-Event"] for h, b in receiver.requests}
    assert events == {mine.id: "job.cancelled", other.id: "job.succeeded"}
    assert old.id not in events


def test_the_app_dispatches_in_the_background(settings, monkeypatch, user, make_job, receiver):
    monkeypatch.setenv("LIVT_WEBHOOK_POLL_SECONDS", "0.1")
    from api.main import create_app
    from livt_service.settings import Settings

    with TestClient(create_app(Settings())) as client:
        hook = create(client, user, receiver.url)
        job = finished(make_job)
        deadline = time.monotonic() + 15
        while not receiver.requests and time.monotonic() < deadline:
            time.sleep(0.05)
        assert receiver.requests, "the dispatcher thread sent nothing"
        assert json.loads(receiver.requests[0][1])["job"]["id"] == job.id
        deadline = time.monotonic() + 5
        while log(client, user, hook["id"])[0]["status"] != "delivered":
            assert time.monotonic() < deadline
            time.sleep(0.05)


def test_a_poll_interval_of_0_starts_no_dispatcher_thread(settings):
    from api.main import create_app

    def threads(poll_seconds: float) -> set[str]:
        app = create_app(settings.model_copy(update={"webhook_poll_seconds": poll_seconds}))
        with TestClient(app):
            return {thread.name for thread in threading.enumerate()}

    assert "livt-webhooks" not in threads(0)
    assert "livt-webhooks" in threads(30)


def _sweep_with_webhooks(client, user, make_job, receiver):
    """A 2 × 2 grid sweep of queued fine-tunes with a per-user webhook and a webhook on its
    first cell's job: ``(sweep, cells, every, one)``."""
    from tests.api.test_sweeps import _finetune_base

    earlier = datetime.now(UTC) - timedelta(minutes=1)
    pretrain = make_job(kind="pretrain", status="succeeded", finished_at=earlier)
    body = {"name": "tau", "base": _finetune_base(pretrain.id), "grid": {"tau": [0.5, 1.0]}}
    body["seeds"] = [0, 1]
    response = client.post("/sweeps", json=body, headers=user.headers)
    assert response.status_code == 201, response.text
    sweep = response.json()
    cells = [c for row in sweep["table"] for c in row["cells"]]
    every = create(client, user, receiver.url)
    one = create(client, user, receiver.url + "?one", job_id=cells[0]["job"])
    return sweep, cells, every, one


def test_two_dispatchers_at_once_post_each_delivery_exactly_once(
    client, user, make_job, settings, receiver, db
):
    """Two API replicas, each a dispatcher on an engine of its own, while jobs and a sweep end
    and requests keep writing: every (webhook, job attempt) and (webhook, sweep) is posted
    exactly once, and no round fails (SQLite: no "database is locked")."""
    from livt_service.db import create_db_engine
    from tests.api.test_sweeps import _finish, _result

    sweep, cells, every, one = _sweep_with_webhooks(client, user, make_job, receiver)
    cells = [c["job"] for c in cells]
    busy = make_job(kind="finetune", status="running")

    engines = [create_db_engine(settings.database_url) for _ in range(2)]
    senders = [
        Dispatcher(
            sessionmaker(bind=engine, expire_on_commit=False),
            poll_seconds=0.01,
            max_attempts=6,
            backoff_seconds=0.05,
            timeout_seconds=3,
        )
        for engine in engines
    ]
    stop = threading.Event()
    errors: list[BaseException] = []
    sent = [0, 0]
    rounds = [0, 0]

    def replica(i: int) -> None:
        while not stop.is_set():
            try:
                sent[i] += senders[i].run_once()
            except Exception as exc:
                errors.append(exc)
                return
            rounds[i] += 1

    def requests_write() -> None:  # short write transactions, as API requests make them
        while not stop.is_set():
            with db() as session:
                session.execute(
                    update(Job).where(Job.id == busy.id).values(updated_at=datetime.now(UTC))
                )
            time.sleep(0.002)

    def delivered() -> list[WebhookDelivery]:
        with db() as session:
            return list(session.scalars(select(WebhookDelivery)))

    workers = [threading.Thread(target=replica, args=(i,)) for i in range(2)]
    workers.append(threading.Thread(target=requests_write))
    for worker in workers:
        worker.start()
    try:
        own = [finished(make_job).id for _ in range(4)]
        for job_id, overall in zip(cells, (70.0, 74.0, 60.0, 65.0), strict=True):
            _finish(job_id, _result(overall, overall - 20))
        expected = {(every["id"], job_id, 1, None) for job_id in own + cells}
        expected |= {(one["id"], cells[0], 1, None), (every["id"], None, None, sweep["id"])}
        deadline = time.monotonic() + 60
        while not errors and time.monotonic() < deadline:
            rows = delivered()
            if len(rows) == len(expected) and all(r.status == "delivered" for r in rows):
                break
            time.sleep(0.05)
        settled = list(rounds)  # two more rounds each: nothing is sent again
        while not errors and min(r - s for r, s in zip(rounds, settled, strict=True)) < 2:
            assert time.monotonic() < deadline + 30, "a dispatcher stopped making rounds"
            time.sleep(0.05)
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=30)
        for sender in senders:
            sender.stop()
        for engine in engines:
            engine.dispose()
    assert errors == []
    rows = delivered()
    assert {(r.webhook_id, r.job_id, r.job_attempt, r.sweep_id) for r in rows} == expected
    assert all((r.status, r.attempts) == ("delivered", 1) for r in rows)
    posted = sorted(int(headers["X-Livt-Delivery"]) for headers, _ in receiver.requests)
    assert posted == sorted(r.id for r in rows)  # each delivery once, none twice
    assert sum(sent) == len(rows)


def test_a_retried_job_is_delivered_again_for_its_new_attempt(
    client, user, make_job, settings, receiver, db
):
    create(client, user, receiver.url)
    job = finished(make_job, status="failed", failure_reason="out_of_memory", failure_message="oom")
    sender = dispatcher(settings)
    try:
        assert sender.run_once() == 1
        with db() as session:
            session.execute(
                update(Job)
                .where(Job.id == job.id)
                .values(attempt=2, status="succeeded", finished_at=datetime.now(UTC))
            )
        assert sender.run_once() == 1
    finally:
        sender.stop()
    attempts = [json.loads(b)["job"]["attempt"] for _, b in receiver.requests]
    assert attempts == [1, 2]


def test_a_sweep_end_is_posted_once_to_the_owners_per_user_webhooks(
    client, user, make_user, make_job, settings, receiver, db
):
    from sqlalchemy.exc import IntegrityError

    from api.webhooks import plan
    from livt_service.models import WebhookDelivery
    from tests.api.test_sweeps import _finish, _result

    sweep, cells, every, one = _sweep_with_webhooks(client, user, make_job, receiver)
    other_user = make_user("bob")
    theirs = create(client, other_user, receiver.url + "?bob")
    sender = dispatcher(settings)
    try:
        for cell, overall in zip(cells[:3], (70.0, 74.0, 60.0), strict=True):
            _finish(cell["job"], _result(overall, overall - 20))
        assert sender.run_once() == 4  # the jobs only (3 per-user + 1 per-job): still running
        _finish(cells[3]["job"], None, failed=True)
        assert sender.run_once() == 2  # the last job and the sweep's end
        assert sender.run_once() == 0
        with db() as session:
            assert plan(session) == 0  # a restart or a second replica plans nothing more
        with pytest.raises(IntegrityError), db() as session:
            session.add(
                WebhookDelivery(
                    webhook_id=every["id"], sweep_id=sweep["id"], event="sweep.failed", payload={}
                )
            )
    finally:
        sender.stop()
    sweep_posts = [(h, b) for h, b in receiver.requests if h["X-Livt-Event"].startswith("sweep")]
    assert len(sweep_posts) == 1
    headers, raw = sweep_posts[0]
    assert headers["X-Livt-Event"] == "sweep.failed"
    expected = signature(every["secret"], headers["X-Livt-Timestamp"], raw)
    assert hmac.compare_digest(headers["X-Livt-Signature"], expected)
    sent = json.loads(raw)
    assert sent["sweep"]["id"] == sweep["id"] and sent["sweep"]["name"] == "tau"
    assert sent["sweep"]["status"] == "failed"
    assert sent["sweep"]["counts"] == {"succeeded": 3, "failed": 1}
    rows = {row["params"]["tau"]: row for row in sent["table"]}
    assert rows[0.5]["overall"]["mean"] == pytest.approx(72.0)
    assert rows[0.5]["few"]["std"] == pytest.approx(statistics.stdev([50.0, 54.0]))
    assert rows[1.0]["n"] == 1 and rows[1.0]["status"] == {"succeeded": 1, "failed": 1}
    assert rows[1.0]["overall"] == {"mean": 60.0, "std": None, "n": 1}
    logged = [e for e in log(client, user, every["id"]) if e["sweep_id"]]
    assert [(e["sweep_id"], e["job_id"], e["status"]) for e in logged] == [
        (sweep["id"], None, "delivered")
    ]
    assert all(e["sweep_id"] is None for e in log(client, user, one["id"]))
    assert log(client, other_user, theirs["id"]) == []
