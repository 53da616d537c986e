"""Engines, sessions and migrations, shared by the API and the worker.

``get_engine(url)`` keeps one engine per database URL in the process. SQLite runs in WAL mode
with a busy timeout and foreign keys on. The API and the worker processes write the same file:
a transaction that reads and then writes must say so up front with :func:`begin_write`, which
opens it with ``BEGIN IMMEDIATE`` (it waits for the write lock, where a plain transaction that
later tries to write fails at once with "database is locked" if another process wrote since it
started). Read-only transactions stay plain, so readers never block each other or the writers.
"""

from __future__ import annotations

import importlib.util
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.orm import Session, sessionmaker

logger = logging.getLogger(__name__)


_SQLITE_BEGIN = "livt_sqlite_begin"
_lock = threading.Lock()
_engines: dict[str, Engine] = {}


def _database_url(url: str | None) -> str:
    if url is not None:
        return url
    from livt_service.settings import get_settings

    return get_settings().database_url


def _prepare_sqlite_file(url: str) -> None:
    database = make_url(url).database
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)


def _use_wal(cursor: Any) -> None:
    """Puts the database file in WAL mode (it stays so). Switching is refused with "database
    is locked", without waiting, while another connection opens the fresh file (the API's two
    engines, the webhook dispatcher): retried for up to 30 s; a file in WAL mode already is left
    alone."""
    if str(cursor.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal":
        return
    deadline = time.monotonic() + 30
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


#: Seconds after which a pooled connection is replaced instead of reused (engines without a
#: pre-ping: a server-side idle timeout or a restart then costs at most one failed request).
POOL_RECYCLE_SECONDS = 1800


def create_db_engine(
    url: str, *, autocommit: bool = False, pre_ping: bool = True, **kwargs: Any
) -> Engine:
    """A new engine for ``url`` with the service's SQLite connection settings applied.

    ``autocommit``: every statement is its own transaction, so nothing is open when a
    connection goes back to the pool and the pool's rollback on return is skipped; for
    request paths that only read (a single write statement is still fine there).
    ``pre_ping``: a ``SELECT 1`` on every checkout (PostgreSQL). Without it a dead connection
    fails its first statement; SQLAlchemy then recognises the disconnect and invalidates the
    pool, so the next request connects afresh, and connections are recycled after
    :data:`POOL_RECYCLE_SECONDS`.
    """
    if autocommit:
        kwargs.setdefault("isolation_level", "AUTOCOMMIT")
        kwargs.setdefault("pool_reset_on_return", None)
    if make_url(url).get_backend_name() != "sqlite":
        if not pre_ping:
            kwargs.setdefault("pool_recycle", POOL_RECYCLE_SECONDS)
        return create_engine(url, pool_pre_ping=pre_ping, **kwargs)
    _prepare_sqlite_file(url)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # autocommit at the driver level: SQLAlchemy's "begin" hook below opens transactions
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout=30000")
        _use_wal(cursor)
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    if autocommit:
        return engine  # the driver runs in autocommit mode already (see _on_connect)

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        mode = connection.get_execution_options().get(_SQLITE_BEGIN, "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {mode}")

    return engine


def get_engine(url: str | None = None) -> Engine:
    """The process-wide engine of ``url`` (default: the settings' database URL)."""
    url = _database_url(url)
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _engines[url] = create_db_engine(url)
        return engine


def get_api_engines(url: str | None = None) -> tuple[Engine, Engine]:
    """The process-wide ``(engine, read_engine)`` pair of the API for ``url``.

    Both skip the pre-ping (see :func:`create_db_engine`). The read engine is in autocommit
    mode: a ``GET`` costs exactly its statements (no ``BEGIN``, no rollback on return). The
    other engine serves every request that writes, in transactions as usual.
    """
    url = _database_url(url)
    with _lock:
        engines = []
        for key, autocommit in ((f"api:{url}", False), (f"api-read:{url}", True)):
            engine = _engines.get(key)
            if engine is None:
                engine = _engines[key] = create_db_engine(
                    url, autocommit=autocommit, pre_ping=False
                )
            engines.append(engine)
        return engines[0], engines[1]


def get_sessionmaker(url: str | None = None) -> sessionmaker[Session]:
    """A session factory on :func:`get_engine`; objects stay readable after commit."""
    return sessionmaker(bind=get_engine(url), expire_on_commit=False)


@contextmanager
def session_scope(url: str | None = None) -> Iterator[Session]:
    """A session that commits when the block succeeds and rolls back when it raises."""
    session = get_sessionmaker(url)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def begin_write(session: Session) -> None:
    """Starts a write transaction on ``session``: call it before the reads of a read-modify-write.

    An open (read) transaction is committed first. On SQLite the new transaction holds the write
    lock from its start (``BEGIN IMMEDIATE``), so its reads stay valid until it commits; on
    PostgreSQL use ``SELECT ... FOR UPDATE`` for the rows it changes.
    """
    if session.in_transaction():
        session.commit()
    session.connection(execution_options={_SQLITE_BEGIN: "IMMEDIATE"})


def dispose_engines() -> None:
    """Closes every cached engine (tests, and processes that fork)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()


def migrations_dir() -> Path:
    """The folder of the ``migrations`` package (works installed as well as from a checkout)."""
    spec = importlib.util.find_spec("migrations")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the migrations package is not installed; reinstall the livt package")
    return Path(next(iter(spec.submodule_search_locations)))


def alembic_config(url: str | None = None) -> Any:
    """The Alembic configuration of the ``migrations`` package, pointed at ``url``."""
    from alembic.config import Config

    folder = migrations_dir()
    config = Config(str(folder / "alembic.ini"))
    config.set_main_option("script_location", str(folder))
    config.attributes["database_url"] = _database_url(url)
    config.attributes["configure_logger"] = False
    return config


def upgrade_database(url: str | None = None, revision: str = "head") -> None:
    """``alembic upgrade <revision>`` on ``url`` (default: the settings' database URL)."""
    from alembic import command

    url = _database_url(url)
    if make_url(url).get_backend_name() == "sqlite":
        _prepare_sqlite_file(url)
    logger.info("upgrading database %s to %s", make_url(url).render_as_string(), revision)
    command.upgrade(alembic_config(url), revision)


def downgrade_database(url: str | None = None, revision: str = "base") -> None:
    """``alembic downgrade <revision>`` on ``url``."""
    from alembic import command

    command.downgrade(alembic_config(url), revision)


def current_revision(url: str | None = None) -> str | None:
    """The revision the database is at, or None for an empty database."""
    from alembic.runtime.migration import MigrationContext

    engine = create_db_engine(_database_url(url))
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()
