"""Datasets carry the profile of their files and the state of reading it.

``datasets.status`` is ``profiling`` while a worker reads the files, then ``ready`` or
``failed`` (``status_reason`` says why); ``profile`` is the profile (JSON, see
``livt_core.data.profile``), ``progress_done`` / ``progress_total`` count the images read and
``updated_at`` is the last time the profiling reported progress (the janitor re-sends a
profiling whose reports stopped). ``profile_attempts`` counts the tries and ``profile_worker`` is
the worker reading the files (NULL while the task waits in the queue). Datasets registered
before this revision are ``ready`` with no profile.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("datasets") as batch:
        batch.add_column(
            sa.Column("status", sa.String(length=16), nullable=False, server_default="ready")
        )
        batch.add_column(sa.Column("status_reason", sa.Text(), nullable=True))
        batch.add_column(sa.Column("profile", _JSON, nullable=True))
        batch.add_column(
            sa.Column("progress_done", sa.Integer(), nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("progress_total", sa.Integer(), nullable=True))
        batch.add_column(
            sa.Column("profile_attempts", sa.Integer(), nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("profile_worker", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("datasets") as batch:
        for column in (
            "updated_at",
            "profile_worker",
            "profile_attempts",
            "progress_total",
            "progress_done",
            "profile",
            "status_reason",
            "status",
        ):
            batch.drop_column(column)
