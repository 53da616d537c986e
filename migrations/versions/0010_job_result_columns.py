"""Jobs get ``overall``, ``many``, ``medium`` and ``few``: the group accuracies of their
result, copied into columns so ``GET /jobs`` can sort on them; filled in from the stored results.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

GROUPS = ("overall", "many", "medium", "few")


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        for name in GROUPS:
            batch.add_column(sa.Column(name, sa.Float(), nullable=True))
        batch.create_index(op.f("ix_jobs_overall"), ["overall", "id"])
        batch.create_index(op.f("ix_jobs_few"), ["few", "id"])
    jobs = sa.table("jobs", sa.column("id"), sa.column("kind"), sa.column("result", sa.JSON))
    connection = op.get_bind()
    rows = connection.execute(
        sa.select(jobs.c.id, jobs.c.result).where(
            jobs.c.result.is_not(None), jobs.c.kind != "pretrain"
        )
    )
    updates = []
    for job_id, result in rows:
        if isinstance(result, str):
            result = json.loads(result)
        if not isinstance(result, dict):
            continue
        values = {name: _number(result.get(name)) for name in GROUPS}
        if any(v is not None for v in values.values()):
            updates.append({"job_id": job_id, **values})
    if updates:
        target = sa.table("jobs", sa.column("id"), *(sa.column(n) for n in GROUPS))
        connection.execute(
            target.update()
            .where(target.c.id == sa.bindparam("job_id"))
            .values({n: sa.bindparam(n) for n in GROUPS}),
            updates,
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index(op.f("ix_jobs_few"))
        batch.drop_index(op.f("ix_jobs_overall"))
        for name in reversed(GROUPS):
            batch.drop_column(name)
