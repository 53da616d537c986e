"""Suite-wide settings and the fixtures of the service tests.

torch is kept to few threads so that parallel test processes share 2 cores (set before anything
imports torch).

Fixtures: settings on a temporary data dir, migrated databases (SQLite and PostgreSQL), an app
with a recording enqueuer, and factories for users, jobs and workers.

``database_url`` is parametrised: every test that uses it (directly or through ``settings``,
``app``, ``client``, ...) runs once on SQLite and once on PostgreSQL. The PostgreSQL runs are
marked ``postgres`` and skipped, saying why, only when the server cannot be reached.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.orm import Session

from api.deps import get_enqueuer, get_profile_enqueuer
from api.main import create_app
from api.services.users import create_token, get_or_create_user
from livt_service.db import dispose_engines, session_scope, upgrade_database
from livt_service.models import Base, Job, Worker, new_id
from livt_service.settings import Settings, get_settings
from livt_service.state import result_columns

POSTGRES_URL = os.environ.get(
    "LIVT_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


# --------------------------------------------------------------------------------------------
# databases


def _postgres_problem(url: str) -> str | None:
    engine = create_engine(url, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:
        return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0]}"
    finally:
        engine.dispose()
    return None


@pytest.fixture(scope="session")
def postgres_schema_factory() -> Iterator[Callable[[], str]]:
    """``make()`` → the URL of a new, empty PostgreSQL schema (``search_path`` set in the URL).

    Each test session works in schemas of its own, so parallel runs never clash; all of them are
    dropped at the end. Skips when the server at ``LIVT_TEST_POSTGRES_URL`` is unreachable.
    """
    problem = _postgres_problem(POSTGRES_URL)
    if problem is not None:
        pytest.skip(
            f"PostgreSQL at {make_url(POSTGRES_URL).render_as_string()} is unreachable "
            f"({problem}); start it or point LIVT_TEST_POSTGRES_URL at one"
        )
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    schemas: list[str] = []

    def make() -> str:
        schema = f"livt_test_{uuid.uuid4().hex[:12]}"
        with admin.connect() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
        schemas.append(schema)
        url = make_url(POSTGRES_URL).update_query_dict({"options": f"-csearch_path={schema}"})
        return url.render_as_string(hide_password=False)

    yield make
    dispose_engines()
    with admin.connect() as connection:
        for schema in schemas:
            connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture(scope="session")
def migrated_postgres_url(postgres_schema_factory: Callable[[], str]) -> str:
    """One PostgreSQL schema migrated to head, shared by the session (emptied before each use
    by ``database_url``)."""
    url = postgres_schema_factory()
    upgrade_database(url)
    return url


@pytest.fixture(scope="session")
def migrated_sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated to head once; ``sqlite_database_url`` copies it per test."""
    path = tmp_path_factory.mktemp("sqlite-template") / "livt.sqlite"
    upgrade_database(f"sqlite:///{path}")
    dispose_engines()
    return path


@pytest.fixture
def sqlite_database_url(migrated_sqlite_template: Path, tmp_path: Path) -> str:
    """A fresh migrated SQLite database of this test."""
    path = tmp_path / "livt.sqlite"
    shutil.copyfile(migrated_sqlite_template, path)
    return f"sqlite:///{path}"


def _empty_tables(url: str) -> None:
    # DELETE beats TRUNCATE on tables this small
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            for table in reversed(Base.metadata.sorted_tables):
                connection.execute(table.delete())
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str:
    """A migrated, empty database: SQLite (a fresh file) or PostgreSQL (the session's schema,
    emptied). Override it in a module with ``sqlite_database_url`` to run on SQLite only."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_database_url")
    url = request.getfixturevalue("migrated_postgres_url")
    _empty_tables(url)
    return url


# --------------------------------------------------------------------------------------------
# settings, app, client


@pytest.fixture
def settings(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Settings]:
    """Embedded-mode settings on ``tmp_path/data`` with ``database_url``; the data root is
    ``tmp_path/roots``. The same values are in the ``LIVT_*`` environment, so code that calls
    ``get_settings()`` (the worker, ``livt`` commands) sees them too."""
    for name in list(os.environ):
        if name.startswith("LIVT_") and not name.startswith("LIVT_TEST_"):
            monkeypatch.delenv(name)
    roots = tmp_path / "roots"
    roots.mkdir()
    env = {
        "LIVT_MODE": "embedded",
        "LIVT_DATA_DIR": str(tmp_path / "data"),
        "LIVT_DATABASE_URL": database_url,
        "LIVT_DATA_ROOTS": str(roots),
        "LIVT_LOG_STREAM_POLL_SECONDS": "0.05",
        "LIVT_READINESS_TIMEOUT_SECONDS": "3",
        # pending reasons see a worker the moment it registers (no per-process reuse)
        "LIVT_PENDING_WORKERS_TTL_SECONDS": "0",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()
    dispose_engines()


@pytest.fixture
def data_root(settings: Settings) -> Path:
    """The (only) data root of ``settings``: user paths must lie inside it."""
    return settings.data_roots[0]


@pytest.fixture
def db(settings: Settings) -> Callable[[], AbstractContextManager[Session]]:
    """``with db() as session:`` a short session on the test database, committed at the end.

    Keep sessions short: on SQLite an open transaction holds the write lock the app needs.
    """
    return lambda: session_scope(settings.database_url)


@pytest.fixture
def enqueued() -> list[tuple[str, str]]:
    """``(job_id, queue)`` of every job the app sent to the workers, in order."""
    return []


@pytest.fixture
def profiles_enqueued() -> list[tuple[int, int, str]]:
    """``(dataset_id, attempt, queue)`` of every dataset profiling the app sent to the workers."""
    return []


@pytest.fixture
def app(
    settings: Settings,
    enqueued: list[tuple[str, str]],
    profiles_enqueued: list[tuple[int, int, str]],
) -> FastAPI:
    """The app on ``settings`` with the enqueuers replaced by ones appending to ``enqueued``
    and ``profiles_enqueued``."""
    application = create_app(settings)

    def record(job_id: str, queue: str) -> None:
        enqueued.append((job_id, queue))

    def record_profile(dataset_id: int, attempt: int, queue: str) -> None:
        profiles_enqueued.append((dataset_id, attempt, queue))

    application.dependency_overrides[get_enqueuer] = lambda: record
    application.dependency_overrides[get_profile_enqueuer] = lambda: record_profile
    return application


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    """A TestClient of ``app`` (lifespan run); requests carry no token unless given headers."""
    with TestClient(app) as test_client:
        yield test_client


# --------------------------------------------------------------------------------------------
# factories


@dataclass(frozen=True)
class ApiUser:
    """A user with a fresh token; ``headers`` authenticate requests as this user."""

    id: int
    name: str
    is_admin: bool
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture
def make_user(db: Callable[[], AbstractContextManager[Session]]) -> Callable[..., ApiUser]:
    """``make_user(name=None, admin=False)`` → an :class:`ApiUser` (a unique name by default)."""

    def make(name: str | None = None, *, admin: bool = False) -> ApiUser:
        with db() as session:
            user = get_or_create_user(session, name or f"user-{uuid.uuid4().hex[:8]}", admin=admin)
            token = create_token(session, user)
            return ApiUser(id=user.id, name=user.name, is_admin=user.is_admin, token=token)

    return make


@pytest.fixture
def user(make_user: Callable[..., ApiUser]) -> ApiUser:
    """An ordinary user, ``alice``."""
    return make_user("alice")


@pytest.fixture
def admin(make_user: Callable[..., ApiUser]) -> ApiUser:
    """An admin, ``root``."""
    return make_user("root", admin=True)


#: Run fields of the jobs ``make_job`` creates: the Fashion-MNIST-LT preset, one tiny epoch.
TINY_RUN = {"epochs": 1, "warmup_epochs": 0, "max_steps_per_epoch": 2, "batch_size": 16}


def _tiny_config(kind: str, overrides: dict[str, Any]) -> dict[str, Any]:
    from livt_core.config import deep_merge, resolve_config

    base = {} if kind == "evaluate" else dict(TINY_RUN)
    config = resolve_config(kind, "fashion-mnist-lt", deep_merge(base, overrides))
    return config.model_dump(mode="json")


@pytest.fixture
def make_job(
    settings: Settings, db: Callable[[], AbstractContextManager[Session]], user: ApiUser
) -> Callable[..., Job]:
    """``make_job(owner=user, *, kind="pretrain", status="queued", config=None, created_at=None,
    **columns)`` → a committed :class:`Job` row (detached; read its attributes freely).

    The config is the Fashion-MNIST-LT preset of ``kind`` with :data:`TINY_RUN`, updated by
    ``config``. Running jobs get ``started_at``/``heartbeat_at``/``worker_id``, finished ones
    ``finished_at``; any column can be set through ``columns``.
    """

    def make(
        owner: ApiUser | None = None,
        *,
        kind: str = "pretrain",
        status: str = "queued",
        config: dict[str, Any] | None = None,
        created_at: datetime | None = None,
        **columns: Any,
    ) -> Job:
        owner = owner or user
        resolved = _tiny_config(kind, config or {})
        job_id = columns.pop("id", None) or new_id("j")
        now = created_at or datetime.now(UTC)
        values: dict[str, Any] = {
            "id": job_id,
            "owner_id": owner.id,
            "kind": kind,
            "name": f"{kind} test job",
            "status": status,
            "spec": {"kind": kind, "preset": "fashion-mnist-lt", **TINY_RUN},
            "config": resolved,
            "preset": "fashion-mnist-lt",
            "dataset": resolved["data"]["dataset"],
            "model": resolved["model"],
            "loss": resolved.get("loss"),
            "queue": settings.default_queue,
            "gpus": 1,
            "attempt": 1,
            "cancel_requested": status == "cancelling",
            "artifact_dir": str(settings.job_artifact_dir(job_id)),
            "created_at": now,
            "updated_at": now,
        }
        if status in ("running", "cancelling", "succeeded", "failed", "cancelled"):
            values.update(started_at=now + timedelta(seconds=1))
        if status in ("running", "cancelling"):
            values.update(heartbeat_at=now + timedelta(seconds=2), worker_id="test-worker")
        if status in ("succeeded", "failed", "cancelled"):
            values.update(finished_at=now + timedelta(seconds=3))
        if status == "failed":
            values.update(failure_reason="internal", failure_message="it broke")
        values.update(columns)
        if values.get("result") is not None:  # as livt_service.state.finish_job writes them
            values = {**result_columns(values["result"]), **values}
        with db() as session:
            job = Job(**values)
            session.add(job)
        return job

    return make


@pytest.fixture
def make_worker(
    settings: Settings, db: Callable[[], AbstractContextManager[Session]]
) -> Callable[..., Worker]:
    """``make_worker(gpus=1, queues=None, heartbeat_at=None, id=None)`` → a registered worker
    (alive: heartbeat now; pass an old ``heartbeat_at`` for a lost one)."""

    def make(
        gpus: int = 1,
        queues: list[str] | None = None,
        heartbeat_at: datetime | None = None,
        id: str | None = None,
    ) -> Worker:
        now = datetime.now(UTC)
        worker = Worker(
            id=id or f"worker-{uuid.uuid4().hex[:8]}",
            hostname="test-host",
            queues=queues or [settings.default_queue],
            gpus=gpus,
            started_at=now,
            heartbeat_at=heartbeat_at or now,
        )
        with db() as session:
            session.add(worker)
        return worker

    return make


@pytest.fixture
def fashion_root(data_root: Path) -> Path:
    """The bundled Fashion-MNIST-LT subset copied to ``<data_root>/fashion-mnist-lt``."""
    from livt_core.data.fashion import BUNDLED_ROOT

    target = data_root / "fashion-mnist-lt"
    shutil.copytree(BUNDLED_ROOT, target)
    return target


@pytest.fixture
def make_checkpoint(data_root: Path) -> Callable[..., Path]:
    """``make_checkpoint(name="ckpt.pth", payload=None)`` → a checkpoint file in the data root
    (default payload: ``{"model": {"weight": zeros(2, 2)}}``)."""
    import torch

    from livt_core.checkpoint import save_checkpoint

    def make(name: str = "ckpt.pth", payload: Any = None) -> Path:
        path = data_root / name
        if payload is None:
            payload = {"model": {"weight": torch.zeros(2, 2)}}
        if isinstance(payload, dict):
            save_checkpoint(path, payload)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save(payload, path)
        return path

    return make
