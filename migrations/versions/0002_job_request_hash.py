"""Jobs keep a hash of the request that created them, so that a repeated idempotency key can be
told apart from a key reused for a different request.

Jobs created through ``POST /jobs`` before this revision get the hash of their stored spec (it is
the request body, validated, as the client sent it). Pipeline stages keep none: the request of a
stage is the whole pipeline body, which was not stored.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _job_request_hash(spec: object) -> str:
    # frozen copy of api.services.idempotency.job_request_hash at this revision
    text = json.dumps({"jobs": spec}, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("request_hash", sa.String(length=64), nullable=True))
    jobs = sa.table(
        "jobs",
        sa.column("id", sa.String()),
        sa.column("spec", sa.JSON()),
        sa.column("idempotency_key", sa.String()),
        sa.column("pipeline_id", sa.String()),
        sa.column("request_hash", sa.String()),
    )
    connection = op.get_bind()
    rows = connection.execute(
        sa.select(jobs.c.id, jobs.c.spec).where(
            jobs.c.idempotency_key.is_not(None), jobs.c.pipeline_id.is_(None)
        )
    ).all()
    for job_id, spec in rows:
        connection.execute(
            jobs.update().where(jobs.c.id == job_id).values(request_hash=_job_request_hash(spec))
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("request_hash")
