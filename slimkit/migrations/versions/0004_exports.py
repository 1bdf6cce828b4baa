"""Record exports: a model written in a serving format (GGUF, compressed-tensors...), where, and
with which exporter, so ``slimkit show FILE`` finds the model an exported file came from.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

ID = sa.String(80)


def upgrade() -> None:
    op.create_table(
        "exports",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("model_id", ID, nullable=False),
        sa.Column("format", sa.String(200), nullable=False),
        sa.Column("exporter_version", sa.Integer(), nullable=False),
        sa.Column("plugin", sa.String(200), nullable=False),
        sa.Column("plugin_version", sa.String(64), nullable=True),
        sa.Column("config_json", sa.Text(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("sha256", ID, nullable=False),
        sa.Column("run_id", sa.String(32), nullable=True),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"], name=op.f("fk_exports_model_id_models")),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_exports_run_id_runs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_exports")),
    )
    op.create_index(op.f("ix_exports_model_id"), "exports", ["model_id"])
    op.create_index(op.f("ix_exports_sha256"), "exports", ["sha256"])
    op.create_index(op.f("ix_exports_run_id"), "exports", ["run_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_exports_run_id"), table_name="exports")
    op.drop_index(op.f("ix_exports_sha256"), table_name="exports")
    op.drop_index(op.f("ix_exports_model_id"), table_name="exports")
    op.drop_table("exports")
