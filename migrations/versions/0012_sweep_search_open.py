"""Sweeps get ``search_open``: an adaptive sweep with trials still to ask or to tell, which the
API's sweep advancer looks for; filled in from the stored cells.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def upgrade() -> None:
    with op.batch_alter_table("sweeps") as batch:
        batch.add_column(
            sa.Column("search_open", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    sweeps = sa.table(
        "sweeps",
        sa.column("id"),
        sa.column("spec", sa.JSON),
        sa.column("cells", sa.JSON),
        sa.column("cancel_requested", sa.Boolean),
        sa.column("search_open", sa.Boolean),
    )
    connection = op.get_bind()
    rows = connection.execute(
        sa.select(sweeps.c.id, sweeps.c.spec, sweeps.c.cells).where(
            sweeps.c.cancel_requested.is_(False)
        )
    )
    open_ids = []
    for sweep_id, spec, cells in rows:
        search = (_json(spec) or {}).get("search")
        cells = _json(cells) or []
        if not search:
            continue
        if len(cells) < search.get("trials", 0) or any(not c.get("told") for c in cells):
            open_ids.append(sweep_id)
    if open_ids:
        connection.execute(
            sweeps.update().where(sweeps.c.id.in_(open_ids)).values(search_open=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("sweeps") as batch:
        batch.drop_column("search_open")
