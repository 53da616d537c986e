"""Scale-out: multi-node jobs (``jobs.nodes``, ``job_slots``), the devices an attempt was
handed (``jobs.devices``), worker host addresses and the queues workers have served.

Revision ID: 0006
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("nodes", sa.Integer(), nullable=False, server_default="1"))
        batch.add_column(sa.Column("devices", sa.String(200), nullable=True))
    with op.batch_alter_table("workers") as batch:
        batch.add_column(sa.Column("address", sa.String(200), nullable=True))
    op.create_table(
        "worker_queues",
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("first_served_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_served_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_worker_queues")),
    )
    # the queues of the jobs some worker started were served before this table existed
    op.execute(
        "INSERT INTO worker_queues (name, first_served_at, last_served_at) "
        "SELECT queue, MIN(started_at), MAX(started_at) FROM jobs "
        "WHERE started_at IS NOT NULL GROUP BY queue"
    )
    op.create_table(
        "job_slots",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.String(32), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("node_rank", sa.Integer(), nullable=False),
        sa.Column("worker_id", sa.String(200), nullable=False),
        sa.Column("address", sa.String(200), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_job_slots_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job_slots")),
        sa.UniqueConstraint(
            "job_id", "attempt", "node_rank", name=op.f("uq_job_slots_job_id_attempt_node_rank")
        ),
        sa.UniqueConstraint(
            "job_id", "attempt", "worker_id", name=op.f("uq_job_slots_job_id_attempt_worker_id")
        ),
    )


def downgrade() -> None:
    op.drop_table("job_slots")
    op.drop_table("worker_queues")
    with op.batch_alter_table("workers") as batch:
        batch.drop_column("address")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("devices")
        batch.drop_column("nodes")
