"""The Alembic migrations: they make the schema of the models on SQLite and PostgreSQL, and undo it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, insert, inspect, select
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.orm import Session

from livt_service.db import (
    alembic_config,
    current_revision,
    downgrade_database,
    migrations_dir,
    upgrade_database,
)
from livt_service.models import Base, Job, MetricPoint, Sweep, User, new_id


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_url(request, tmp_path) -> str:
    """An empty database: a new SQLite file or a new PostgreSQL schema."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/migrate.sqlite"
    return request.getfixturevalue("postgres_schema_factory")()


def _diff(url: str) -> list:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()


def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


#: The newest revision (one head: the migrations form a single line).
HEAD = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def test_migrations_are_found_in_the_package():
    config = alembic_config("sqlite://")
    assert config.get_main_option("script_location") == str(migrations_dir())
    assert ScriptDirectory.from_config(config).get_heads() == [HEAD]


def test_upgrade_makes_exactly_the_schema_of_the_models(empty_url):
    upgrade_database(empty_url)
    assert current_revision(empty_url) == HEAD
    assert _diff(empty_url) == []


def test_upgrade_twice_changes_nothing(empty_url):
    upgrade_database(empty_url)
    upgrade_database(empty_url)
    assert current_revision(empty_url) == HEAD


def test_downgrade_to_base_removes_every_table_and_upgrade_works_again(empty_url):
    upgrade_database(empty_url)
    downgrade_database(empty_url)
    assert current_revision(empty_url) is None
    assert _tables(empty_url) <= {"alembic_version"}
    upgrade_database(empty_url)
    assert _tables(empty_url) >= {table.name for table in Base.metadata.sorted_tables}


def test_jobs_have_keyset_and_status_indexes(empty_url):
    upgrade_database(empty_url)
    engine = create_engine(empty_url)
    try:
        indexes = {i["name"]: i["column_names"] for i in inspect(engine).get_indexes("jobs")}
    finally:
        engine.dispose()
    assert indexes["ix_jobs_owner_created"] == ["owner_id", "created_at", "id"]
    assert indexes["ix_jobs_created"] == ["created_at", "id"]
    assert indexes["ix_jobs_status"] == ["status", "queue"]


@pytest.fixture
def session(database_url):
    engine = create_engine(database_url)
    with Session(engine, expire_on_commit=False) as s:
        yield s
    engine.dispose()


def _job(owner: User, **values) -> Job:
    job_id = new_id("j")
    return Job(
        id=job_id,
        owner_id=owner.id,
        kind="pretrain",
        name="n",
        spec={},
        config={"nested": {"a": [1, 2]}},
        model="m",
        queue="default",
        artifact_dir=f"/a/{job_id}",
        **values,
    )


def test_timestamps_come_back_timezone_aware_in_utc(session):
    owner = User(name="tz")
    session.add(owner)
    session.flush()
    local = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=timezone(timedelta(hours=5)))
    job = _job(owner, created_at=local, updated_at=local)
    session.add(job)
    session.commit()
    session.expunge_all()
    loaded = session.get(Job, job.id)
    assert loaded.created_at == local
    assert loaded.created_at.tzinfo == UTC
    assert loaded.config == {"nested": {"a": [1, 2]}}
    assert loaded.attempt == 1 and loaded.status == "queued" and loaded.cancel_requested is False


def test_naive_timestamps_are_refused(session):
    owner = User(name="naive")
    session.add(owner)
    session.flush()
    session.add(_job(owner, created_at=datetime(2026, 1, 1)))
    with pytest.raises(StatementError, match="naive datetime"):
        session.flush()


def test_one_metric_point_per_job_and_epoch(session):
    owner = User(name="metrics")
    session.add(owner)
    session.flush()
    job = _job(owner)
    session.add(job)
    session.flush()
    session.add(MetricPoint(job_id=job.id, epoch=0, metrics={"train_loss": 1.0}))
    session.flush()
    session.add(MetricPoint(job_id=job.id, epoch=0, metrics={"train_loss": 0.9}))
    with pytest.raises(IntegrityError):
        session.flush()


def test_job_ids_sort_by_creation_time():
    ids = [new_id("j") for _ in range(50)]
    assert all(len(i) == 28 and i.startswith("j_") for i in ids)
    assert len(set(ids)) == 50
    assert [i[:12] for i in ids] == sorted(i[:12] for i in ids)


def test_request_hash_migration_hashes_the_spec_of_keyed_jobs(empty_url):
    from api.services.idempotency import job_request_hash

    upgrade_database(empty_url, "0001")
    spec = {"kind": "pretrain", "preset": "fashion-mnist-lt", "epochs": 2, "idempotency_key": "k"}
    now = datetime.now(UTC)
    engine = create_engine(empty_url)
    try:
        with Session(engine) as session:
            session.execute(
                insert(User).values(id=1, name="legacy", is_admin=False, created_at=now)
            )
            for job_id, job_spec, key in (("j_keyed", spec, "k"), ("j_plain", {}, None)):
                # only the columns of revision 0001
                session.execute(
                    insert(Job).values(
                        id=job_id,
                        owner_id=1,
                        kind="pretrain",
                        name="n",
                        status="queued",
                        spec=job_spec,
                        config={},
                        model="m",
                        queue="default",
                        gpus=1,
                        idempotency_key=key,
                        attempt=1,
                        cancel_requested=False,
                        artifact_dir="/a",
                        created_at=now,
                        updated_at=now,
                    )
                )
            session.commit()
        upgrade_database(empty_url, "0002")
        with Session(engine) as session:
            # only the columns of revision 0002: later revisions add columns to jobs
            def stored_hash(job_id: str) -> str | None:
                return session.scalar(select(Job.request_hash).where(Job.id == job_id))

            assert stored_hash("j_keyed") == job_request_hash(spec)
            assert stored_hash("j_plain") is None
    finally:
        engine.dispose()


def test_result_columns_migration_copies_the_accuracies_of_stored_results(empty_url):
    upgrade_database(empty_url, "0009")
    now = datetime.now(UTC)
    engine = create_engine(empty_url)
    results = {
        "j_finetune": ("finetune", {"overall": 71.5, "many": 90, "medium": 60.0, "few": None}),
        "j_pretrain": ("pretrain", {"kind": "pretrain", "overall": 1.0}),
        "j_none": ("finetune", None),
    }
    try:
        with Session(engine) as session:
            session.execute(
                insert(User).values(id=1, name="legacy", is_admin=False, created_at=now)
            )
            for job_id, (kind, result) in results.items():
                session.execute(
                    insert(Job).values(
                        id=job_id,
                        owner_id=1,
                        kind=kind,
                        name="n",
                        status="succeeded",
                        spec={},
                        config={},
                        model="m",
                        queue="default",
                        gpus=1,
                        attempt=1,
                        cancel_requested=False,
                        artifact_dir="/a",
                        result=result,
                        created_at=now,
                        updated_at=now,
                    )
                )
            session.commit()
        upgrade_database(empty_url, "0010")
        with Session(engine) as session:
            rows = session.execute(
                select(Job.id, Job.overall, Job.many, Job.medium, Job.few).order_by(Job.id)
            ).all()
        assert [tuple(r) for r in rows] == [
            ("j_finetune", 71.5, 90.0, 60.0, None),
            ("j_none", None, None, None, None),
            ("j_pretrain", None, None, None, None),
        ]
    finally:
        engine.dispose()


def test_search_open_migration_marks_the_adaptive_sweeps_with_trials_left(empty_url):
    upgrade_database(empty_url, "0011")
    now = datetime.now(UTC)
    search = {"space": {"tau": {"low": 0, "high": 2}}, "trials": 2, "parallel": 1}
    told = {"params": {}, "seed": 0, "job": "j", "trial": 0, "told": True, "value": 1.0}
    sweeps = {
        "s_grid": ({"grid": {"loss": ["ce"]}}, [{"params": {}, "seed": 0, "job": "j"}], False),
        "s_asking": ({"search": search}, [told], False),
        "s_telling": ({"search": search}, [told, {**told, "told": False}], False),
        "s_done": ({"search": search}, [told, told], False),
        "s_cancelled": ({"search": search}, [told], True),
    }
    table = sa.table(
        "sweeps",
        sa.column("id"),
        sa.column("owner_id"),
        sa.column("spec", sa.JSON),
        sa.column("cells", sa.JSON),
        sa.column("cancel_requested"),
        sa.column("created_at"),
    )
    engine = create_engine(empty_url)
    try:
        with Session(engine) as session:
            session.execute(
                insert(User).values(id=1, name="legacy", is_admin=False, created_at=now)
            )
            for sweep_id, (spec, cells, cancelled) in sweeps.items():
                session.execute(
                    table.insert().values(
                        id=sweep_id,
                        owner_id=1,
                        spec=spec,
                        cells=cells,
                        cancel_requested=cancelled,
                        created_at=now,
                    )
                )
            session.commit()
        upgrade_database(empty_url, "0012")
        with Session(engine) as session:
            rows = session.execute(select(Sweep.id, Sweep.search_open).order_by(Sweep.id)).all()
        assert {r[0]: r[1] for r in rows} == {
            "s_asking": True,
            "s_cancelled": False,
            "s_done": False,
            "s_grid": False,
            "s_telling": True,
        }
    finally:
        engine.dispose()
