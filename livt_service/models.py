"""Database tables of the job service (SQLAlchemy 2.0 typed models).

The schema is created only by the Alembic migrations in ``migrations/versions``; a test compares
these models with the migrated schema. Timestamps are timezone-aware UTC on both SQLite and
PostgreSQL; JSON columns are ``JSONB`` on PostgreSQL and ``JSON`` text elsewhere.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from livt_core import contract

JOB_STATUSES = contract.JOB_STATUSES
TERMINAL_STATUSES = contract.TERMINAL_STATUSES
ACTIVE_STATUSES = contract.ACTIVE_STATUSES
FAILURE_REASONS = contract.FAILURE_REASONS

_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"


def new_id(prefix: str) -> str:
    """A time-sortable id: ``<prefix>_`` + 26 Crockford base-32 characters (a lowercase ULID).

    The first 10 characters encode the creation time in milliseconds, the other 16 are random,
    so ids sort by creation time and never collide in practice.
    """
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return f"{prefix}_{''.join(reversed(chars))}"


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend.

    PostgreSQL stores ``timestamptz``; SQLite has no time zones, so the value is stored as naive
    UTC and read back with ``tzinfo=UTC``. Naive input is rejected rather than guessed at.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}; use an aware UTC datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


JSONType = JSON().with_variant(JSONB(), "postgresql")
#: An auto-incrementing 64-bit key (SQLite only auto-increments ``INTEGER PRIMARY KEY``).
BigIntKey = BigInteger().with_variant(Integer(), "sqlite")

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSONType}


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    tokens: Mapped[list[ApiToken]] = relationship(back_populates="user")


class ApiToken(Base):
    """An API token; only its SHA-256 hash is stored, ``prefix`` identifies it to people.

    It works until ``revoked_at`` is set or ``expires_at`` (when set) has passed.
    """

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    expires_at: Mapped[datetime | None]

    user: Mapped[User] = relationship(back_populates="tokens")

    def status(self, now: datetime | None = None) -> str:
        """``revoked``, ``expired`` or ``active``."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= (now or utcnow()):
            return "expired"
        return "active"


class Pipeline(Base):
    __tablename__ = "pipelines"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    name: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    owner: Mapped[User] = relationship()
    jobs: Mapped[list[Job]] = relationship(
        back_populates="pipeline", order_by="Job.stage", foreign_keys="Job.pipeline_id"
    )


class Sweep(Base):
    """A grid of jobs (grid point × seed) created by one request; its status derives from its
    jobs. ``spec`` is the request (``base``, ``grid``, ``seeds``); ``cells`` lists, per grid
    point and seed, ``{"params", "seed", "job"}`` with ``job`` the id of the job whose result
    fills the table (the last stage of a pipeline base). An adaptive sweep (``spec["search"]``)
    adds to each cell its Optuna ``trial`` number, ``told`` and the told ``value``;
    ``search_open`` is true while it has trials still to ask or to tell."""

    __tablename__ = "sweeps"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    name: Mapped[str | None] = mapped_column(String(200))
    spec: Mapped[dict[str, Any]]
    cells: Mapped[list[dict[str, Any]]] = mapped_column(JSONType)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    search_open: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    owner: Mapped[User] = relationship()
    jobs: Mapped[list[Job]] = relationship(order_by="Job.id", foreign_keys="Job.sweep_id")


class Job(Base):
    """One pretrain / finetune / evaluate run and everything the service knows about it."""

    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("owner_id", "idempotency_key"),
        Index("ix_jobs_owner_created", "owner_id", "created_at", "id"),
        Index("ix_jobs_created", "created_at", "id"),
        Index("ix_jobs_status", "status", "queue"),
        Index("ix_jobs_overall", "overall", "id"),
        Index("ix_jobs_few", "few", "id"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    kind: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default="queued")
    spec: Mapped[dict[str, Any]]
    config: Mapped[dict[str, Any]]
    preset: Mapped[str | None] = mapped_column(String(64))
    dataset: Mapped[str | None] = mapped_column(String(100))
    model: Mapped[str] = mapped_column(String(100))
    loss: Mapped[str | None] = mapped_column(String(64))
    queue: Mapped[str] = mapped_column(String(100))
    gpus: Mapped[int] = mapped_column(Integer, default=1)
    #: Hosts the job runs on at once (``gpus`` processes on each); above 1 it is gang-scheduled.
    nodes: Mapped[int] = mapped_column(Integer, server_default="1")
    #: What the latest attempt was handed: ``cpu`` or the GPU ids (``0,1``); None before a claim
    #: (``cpu`` from the start for a job whose config says ``device: cpu``).
    devices: Mapped[str | None] = mapped_column(String(200))
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    #: SHA-256 of the canonical request that created the job (``api.services.idempotency``).
    request_hash: Mapped[str | None] = mapped_column(String(64))
    pipeline_id: Mapped[str | None] = mapped_column(
        ForeignKey("pipelines.id", ondelete="SET NULL"), index=True
    )
    stage: Mapped[int | None]
    sweep_id: Mapped[str | None] = mapped_column(
        ForeignKey("sweeps.id", ondelete="SET NULL"), index=True
    )
    #: Labels and free text for people (``PATCH /jobs/{id}``).
    tags: Mapped[list[str] | None] = mapped_column(JSONType)
    notes: Mapped[str | None] = mapped_column(Text)
    init_job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    depends_on: Mapped[str | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="SET NULL"), index=True
    )
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    progress: Mapped[dict[str, Any] | None]
    result: Mapped[dict[str, Any] | None]
    #: The group accuracies of ``result`` (percent; None for a pretrain, a run without a result,
    #: or an empty group), copied when the result is written so ``GET /jobs`` can sort on them.
    overall: Mapped[float | None] = mapped_column(Float)
    many: Mapped[float | None] = mapped_column(Float)
    medium: Mapped[float | None] = mapped_column(Float)
    few: Mapped[float | None] = mapped_column(Float)
    failure_reason: Mapped[str | None] = mapped_column(String(32))
    failure_message: Mapped[str | None] = mapped_column(Text)
    worker_id: Mapped[str | None] = mapped_column(String(200))
    heartbeat_at: Mapped[datetime | None]
    artifact_dir: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    owner: Mapped[User] = relationship()
    pipeline: Mapped[Pipeline | None] = relationship(
        back_populates="jobs", foreign_keys=[pipeline_id]
    )

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL_STATUSES


class JobAttempt(Base):
    """One try of a job on a worker; a lost worker ends an attempt and the job gets another."""

    __tablename__ = "job_attempts"
    __table_args__ = (UniqueConstraint("job_id", "number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    number: Mapped[int]
    worker_id: Mapped[str | None] = mapped_column(String(200))
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[datetime | None]
    outcome: Mapped[str | None] = mapped_column(String(32))
    message: Mapped[str | None] = mapped_column(Text)


class MetricPoint(Base):
    """Metrics of one epoch; a resumed run overwrites the epochs it repeats."""

    __tablename__ = "metric_points"
    __table_args__ = (UniqueConstraint("job_id", "epoch"),)

    id: Mapped[int] = mapped_column(BigIntKey, primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    epoch: Mapped[int]
    metrics: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class StepPoint(Base):
    """Loss, lr and speed of one training step. A job keeps at most
    ``contract.MAX_STEP_POINTS`` rows: one per span of its steps (``contract.step_bucket``), the
    first step of the span; a resumed run replaces the spans it repeats."""

    __tablename__ = "step_points"
    __table_args__ = (UniqueConstraint("job_id", "bucket"),)

    id: Mapped[int] = mapped_column(BigIntKey, primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    bucket: Mapped[int]
    global_step: Mapped[int]
    epoch: Mapped[int]
    metrics: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class LogLine(Base):
    """One line of a job's log; ``seq`` counts from 0 per job across attempts."""

    __tablename__ = "log_lines"
    __table_args__ = (UniqueConstraint("job_id", "seq"),)

    id: Mapped[int] = mapped_column(BigIntKey, primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    seq: Mapped[int]
    ts: Mapped[datetime] = mapped_column(default=utcnow)
    level: Mapped[str] = mapped_column(String(16), default="INFO")
    message: Mapped[str] = mapped_column(Text)
    attempt: Mapped[int] = mapped_column(Integer, default=1)


class Artifact(Base):
    """A file a job wrote into its artifact folder (checkpoints, config, results)."""

    __tablename__ = "artifacts"
    __table_args__ = (UniqueConstraint("job_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(32))
    path: Mapped[str] = mapped_column(Text)
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


#: ``datasets.status``: the files are being read, the profile is stored, or reading failed.
DATASET_STATUSES = ("profiling", "ready", "failed")


class Dataset(Base):
    """A registered dataset root with the class statistics of its training split.

    An image folder also has a ``profile`` (``livt_core.data.profile``), read in the request
    for a small folder or by a worker for a large one: ``status`` is ``profiling`` until it is
    stored (``ready``) or reading failed (``failed``, ``status_reason`` says why).
    ``progress_done`` / ``progress_total`` count the images read; ``updated_at`` is the last
    progress report (the janitor re-sends a profiling whose reports stopped).
    """

    __tablename__ = "datasets"

    id: Mapped[int] = mapped_column(primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    kind: Mapped[str] = mapped_column(String(64))
    root: Mapped[str | None] = mapped_column(Text)
    params: Mapped[dict[str, Any]]
    classes: Mapped[list[str]] = mapped_column(JSONType)
    class_counts: Mapped[list[int]] = mapped_column(JSONType)
    num_train: Mapped[int]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    status: Mapped[str] = mapped_column(String(16), default="ready", server_default="ready")
    status_reason: Mapped[str | None] = mapped_column(Text)
    profile: Mapped[dict[str, Any] | None]
    progress_done: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    progress_total: Mapped[int | None]
    profile_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    profile_worker: Mapped[str | None] = mapped_column(String(200))
    updated_at: Mapped[datetime | None]

    owner: Mapped[User] = relationship()


class Worker(Base):
    """A worker process that announced itself; ``heartbeat_at`` says whether it is alive."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(200))
    queues: Mapped[list[str]] = mapped_column(JSONType)
    gpus: Mapped[int] = mapped_column(Integer, default=0)
    #: The host address other nodes of a multi-node job reach this worker's host at.
    address: Mapped[str | None] = mapped_column(String(200))
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class Webhook(Base):
    """A URL called when a job ends: every job of the owner (``job_id`` NULL) or one job; a
    per-user webhook is also called when one of the owner's sweeps ends.

    ``secret`` signs each delivery (HMAC-SHA256, ``X-Livt-Signature``); it is shown once, when
    the webhook is created.
    """

    __tablename__ = "webhooks"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    job_id: Mapped[str | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="CASCADE"), index=True
    )
    url: Mapped[str] = mapped_column(Text)
    secret: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebhookDelivery(Base):
    """One call of a webhook for one terminal state of a job (one per job attempt) or for the
    end of a sweep (``sweep_id`` set, ``job_id`` NULL; one per sweep), with its retries:
    ``pending`` until a 2xx answer (``delivered``) or the last attempt (``failed``)."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("webhook_id", "job_id", "job_attempt"),
        UniqueConstraint("webhook_id", "sweep_id"),
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(BigIntKey, primary_key=True)
    webhook_id: Mapped[str] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"))
    job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    job_attempt: Mapped[int | None] = mapped_column(Integer)
    sweep_id: Mapped[str | None] = mapped_column(ForeignKey("sweeps.id", ondelete="CASCADE"))
    event: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_status_code: Mapped[int | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    payload: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[datetime | None]


class WorkerQueue(Base):
    """A queue some worker has served; rows stay when the workers go (the API's queue check)."""

    __tablename__ = "worker_queues"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    first_served_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_served_at: Mapped[datetime] = mapped_column(default=utcnow)


class JobSlot(Base):
    """One node of a multi-node attempt, held by the worker that claimed it.

    The unique ``(job_id, attempt, node_rank)`` makes each slot go to one worker only, and
    ``(job_id, attempt, worker_id)`` keeps a worker from holding two nodes of the same gang.
    """

    __tablename__ = "job_slots"
    __table_args__ = (
        UniqueConstraint("job_id", "attempt", "node_rank"),
        UniqueConstraint("job_id", "attempt", "worker_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    attempt: Mapped[int]
    node_rank: Mapped[int]
    worker_id: Mapped[str] = mapped_column(String(200))
    address: Mapped[str] = mapped_column(String(200))
    claimed_at: Mapped[datetime] = mapped_column(default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(default=utcnow)
