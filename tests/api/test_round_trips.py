"""Database round trips of the polling endpoints, counted with SQLAlchemy event hooks on the
app's engines (SQLite and PostgreSQL): every statement, every pre-ping on checkout, every
rollback/commit on return to the pool and every ``BEGIN`` the driver sends on its own.

An authenticated ``GET /jobs/{id}`` or ``GET /jobs`` page costs at most 2: the token with its
user, then the job(s) with their owners. And a deep page of ``GET /jobs`` is an index range on
PostgreSQL (``Index Cond``), not a filter over the rows before it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import Engine, event, insert, text
from sqlalchemy.pool.base import reset_none

from api.services.jobs import list_query
from livt_service.models import Job, User, new_id


@dataclass
class RoundTrips:
    """Counts of what reached the database driver, by kind."""

    statements: list[str] = field(default_factory=list)
    pings: int = 0
    resets: int = 0
    begins: int = 0

    @property
    def total(self) -> int:
        return len(self.statements) + self.pings + self.resets + self.begins

    def clear(self) -> None:
        self.statements.clear()
        self.pings = self.resets = self.begins = 0


def _in_transaction(engine: Engine, raw: Any) -> bool:
    """Whether the driver connection has a transaction open (client-side state, no query)."""
    if engine.dialect.name == "sqlite":
        return bool(raw.in_transaction)
    return raw.info.transaction_status != 0  # psycopg: anything but IDLE


def _watch(engine: Engine, trips: RoundTrips) -> list[tuple[Any, str, Any]]:
    def on_execute(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        trips.statements.append(statement)

    def on_checkout(*_args: Any) -> None:
        if engine.pool._pre_ping:
            trips.pings += 1  # a SELECT 1 the dialect sends on the raw connection

    def on_end(connection: Any) -> None:
        # COMMIT / ROLLBACK reach the server only while a transaction is open
        if _in_transaction(engine, connection.connection.dbapi_connection):
            trips.resets += 1

    def on_reset(raw: Any, _record: Any, reset_state: Any) -> None:
        # the pool's rollback on return, unless the transaction ended already or none is open
        if engine.pool._reset_on_return is reset_none or reset_state.transaction_was_reset:
            return
        if _in_transaction(engine, raw):
            trips.resets += 1

    def on_begin(connection: Any) -> None:
        # psycopg sends BEGIN before the first statement unless it is in autocommit mode;
        # SQLite's BEGIN is a statement of our own (livt_service.db) and counted above
        raw = connection.connection.dbapi_connection
        if engine.dialect.name != "sqlite" and not raw.autocommit:
            trips.begins += 1

    hooks = [
        (engine, "before_cursor_execute", on_execute),
        (engine.pool, "checkout", on_checkout),
        (engine, "commit", on_end),
        (engine, "rollback", on_end),
        (engine.pool, "reset", on_reset),
        (engine, "begin", on_begin),
    ]
    for target, name, fn in hooks:
        event.listen(target, name, fn)
    return hooks


@pytest.fixture(autouse=True)
def reuse_live_workers(settings) -> None:
    """As the API runs by default: the live workers of pending reasons are reused for a while
    (the test suite reads them on every request). The app's background pollers (webhook
    deliveries, adaptive sweeps) are off: their statements are not a request's."""
    settings.pending_workers_ttl_seconds = 60.0
    settings.webhook_poll_seconds = 0
    settings.sweep_advance_seconds = 0


@pytest.fixture
def trips(app: FastAPI, client) -> Iterator[RoundTrips]:
    counter = RoundTrips()
    hooks = []
    for engine in {app.state.engine, app.state.read_engine}:
        hooks += _watch(engine, counter)
    yield counter
    for target, name, fn in hooks:
        event.remove(target, name, fn)


def _count(client, trips: RoundTrips, path: str, headers: dict[str, str]) -> RoundTrips:
    assert client.get(path, headers=headers).status_code == 200  # connects, last_used_at
    worst = RoundTrips()
    for _ in range(3):
        trips.clear()
        response = client.get(path, headers=headers)
        assert response.status_code == 200, response.text
        if trips.total > worst.total:
            worst = RoundTrips(list(trips.statements), trips.pings, trips.resets, trips.begins)
    return worst


def test_get_job_costs_at_most_two_round_trips(client, trips, user, make_job) -> None:
    job = make_job(status="running")
    counted = _count(client, trips, f"/jobs/{job.id}", user.headers)
    assert counted.total <= 2, counted
    assert any("api_tokens" in s and "JOIN users" in s for s in counted.statements), counted


def test_a_queued_job_and_its_pending_reason_cost_at_most_two(
    client, trips, user, make_job
) -> None:
    job = make_job(status="queued")
    counted = _count(client, trips, f"/jobs/{job.id}", user.headers)
    assert counted.total <= 2, counted
    body = client.get(f"/jobs/{job.id}", headers=user.headers).json()
    assert body["pending_reason"].startswith("no live worker serves queue"), body


def test_admin_reading_another_users_job_costs_at_most_two(
    client, trips, admin, make_user, make_job
) -> None:
    job = make_job(make_user("bob"), status="succeeded")
    counted = _count(client, trips, f"/jobs/{job.id}", admin.headers)
    assert counted.total <= 2, counted


def test_list_pages_cost_at_most_two_round_trips_and_no_documents(
    client, trips, admin, make_user, make_job
) -> None:
    owners = [make_user("bob"), make_user("carol")]
    start = datetime.now(UTC)
    for index in range(6):
        make_job(owners[index % 2], created_at=start + timedelta(seconds=index))
    first = client.get("/jobs?limit=2", headers=admin.headers).json()
    path = f"/jobs?limit=2&cursor={first['next_cursor']}"
    counted = _count(client, trips, path, admin.headers)
    assert counted.total <= 2, counted
    page = counted.statements[-1]
    assert "jobs.spec" not in page and "jobs.config" not in page, page
    items = client.get(path, headers=admin.headers).json()["items"]
    assert {i["owner"] for i in items} <= {"bob", "carol"} and len(items) == 2


def test_filtered_sorted_pages_cost_at_most_two_round_trips(client, trips, user, make_job) -> None:
    start = datetime.now(UTC)
    for index in range(5):
        result = {"overall": 50.0 + index, "few": float(index % 2), "per_class": []}
        make_job(
            kind="finetune",
            status="succeeded",
            tags=["tau"],
            result=result,
            created_at=start + timedelta(seconds=index),
        )
    query = "tag=tau&loss=bal_bce&q=test&sort=-few&limit=2"
    first = client.get(f"/jobs?{query}", headers=user.headers).json()
    assert len(first["items"]) == 2 and first["next_cursor"]
    counted = _count(client, trips, f"/jobs?{query}&cursor={first['next_cursor']}", user.headers)
    assert counted.total <= 2, counted
    page = counted.statements[-1]
    assert "jobs.spec" not in page and "jobs.config" not in page, page


def test_log_page_costs_at_most_three_round_trips(client, trips, user, make_job) -> None:
    # token + user, the job (its status, read before the lines: api.services.jobs.read_logs),
    # the lines
    job = make_job(status="running")
    counted = _count(client, trips, f"/jobs/{job.id}/logs?offset=10", user.headers)
    assert counted.total <= 3, counted


@pytest.mark.postgres
@pytest.mark.parametrize("viewer", ["user", "admin"])
def test_deep_list_page_is_an_index_range_on_postgres(
    request, postgres_schema_factory, viewer: str
) -> None:
    """10,000 jobs: the page after 9,000 of them reads its rows by an ``Index Cond`` on the
    row value, in the index's order (no sort, no filter discarding the rows before it)."""
    from sqlalchemy import create_engine

    from livt_service.db import upgrade_database

    url = postgres_schema_factory()
    upgrade_database(url)
    engine = create_engine(url)
    try:
        start = datetime(2026, 1, 1, tzinfo=UTC)
        with engine.begin() as connection:
            owner = connection.execute(
                insert(User).values(name="alice", is_admin=viewer == "admin").returning(User.id)
            ).scalar_one()
            rows = [
                {
                    "id": new_id("j"),
                    "owner_id": owner,
                    "kind": "pretrain",
                    "name": f"job {i}",
                    "status": "succeeded",
                    "spec": {"kind": "pretrain"},
                    "config": {"model": "m", "pad": "x" * 200},
                    "model": "m",
                    "queue": "default",
                    "gpus": 1,
                    "attempt": 1,
                    "cancel_requested": False,
                    "artifact_dir": f"/tmp/{i}",
                    "created_at": start + timedelta(seconds=i // 3),  # ties on created_at
                    "updated_at": start,
                }
                for i in range(10_000)
            ]
            connection.execute(insert(Job), rows)
            connection.execute(text("ANALYZE jobs"))
            user = User(id=owner, name="alice", is_admin=viewer == "admin")
            ninth = sorted(rows, key=lambda r: (r["created_at"], r["id"]), reverse=True)[8999]
            cursor = _cursor_of(ninth)
            query = list_query(user, limit=50, cursor=cursor)
            compiled = query.compile(dialect=connection.dialect)
            plan = "\n".join(
                row[0]
                for row in connection.exec_driver_sql(
                    "EXPLAIN (ANALYZE, FORMAT TEXT) " + str(compiled), compiled.params
                )
            )
    finally:
        engine.dispose()
    assert "Index Cond: (ROW(created_at, " in plan, plan
    assert "Sort" not in plan.split("->")[0] and "Rows Removed by Filter" not in plan, plan


def _cursor_of(row: dict[str, Any]) -> str:
    from api.services.jobs import _encode_cursor

    return _encode_cursor(Job(id=row["id"], created_at=row["created_at"]))
