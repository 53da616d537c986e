"""Webhook deliveries for the end of a sweep: ``webhook_deliveries.sweep_id`` (unique per
webhook), with ``job_id`` and ``job_attempt`` NULL on those rows.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("webhook_deliveries") as batch:
        batch.alter_column("job_id", existing_type=sa.String(length=32), nullable=True)
        batch.alter_column("job_attempt", existing_type=sa.Integer(), nullable=True)
        batch.add_column(sa.Column("sweep_id", sa.String(length=32), nullable=True))
        batch.create_foreign_key(
            op.f("fk_webhook_deliveries_sweep_id_sweeps"),
            "sweeps",
            ["sweep_id"],
            ["id"],
            ondelete="CASCADE",
        )
        batch.create_unique_constraint(
            op.f("uq_webhook_deliveries_webhook_id_sweep_id"), ["webhook_id", "sweep_id"]
        )


def downgrade() -> None:
    op.execute("DELETE FROM webhook_deliveries WHERE sweep_id IS NOT NULL")
    with op.batch_alter_table("webhook_deliveries") as batch:
        batch.drop_constraint(op.f("uq_webhook_deliveries_webhook_id_sweep_id"), type_="unique")
        batch.drop_constraint(op.f("fk_webhook_deliveries_sweep_id_sweeps"), type_="foreignkey")
        batch.drop_column("sweep_id")
        batch.alter_column("job_attempt", existing_type=sa.Integer(), nullable=False)
        batch.alter_column("job_id", existing_type=sa.String(length=32), nullable=False)
