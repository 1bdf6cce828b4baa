"""Sizes, parameter counts, peak memory and seeds as 64-bit integers on database servers.

SQLite's INTEGER already holds 64 bits, so a SQLite catalogue's tables are left as they are; on
PostgreSQL an INTEGER is 32 bits, and a model of more than 2 GiB (or 2**31 parameters, or a step
that peaked above 2 GiB) could not be recorded.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

COLUMNS = (("models", "params"), ("models", "size_bytes"), ("steps", "seed"), ("steps", "peak_rss_bytes"))
NULLABLE = {"seed": False}


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        return
    for table, column in COLUMNS:
        op.alter_column(table, column, type_=sa.BigInteger(), existing_type=sa.Integer(),
                        existing_nullable=NULLABLE.get(column, True))


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        return
    for table, column in COLUMNS:  # fails, changing nothing, if a value no longer fits
        op.alter_column(table, column, type_=sa.Integer(), existing_type=sa.BigInteger(),
                        existing_nullable=NULLABLE.get(column, True))
