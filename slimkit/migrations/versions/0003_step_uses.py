"""Record the methods each step ran inside it (a pruner's scorer): part of the step's identity.

Steps recorded before this revision have no rows here: their ids were computed without their
nested methods, so a run today never matches (and never reuses) them; they keep their lineage.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

ID = sa.String(80)


def upgrade() -> None:
    op.create_table(
        "step_uses",
        sa.Column("step_id", ID, nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("family", sa.String(32), nullable=False),
        sa.Column("method", sa.String(200), nullable=False),
        sa.Column("method_version", sa.Integer(), nullable=False),
        sa.Column("plugin", sa.String(200), nullable=False),
        sa.Column("plugin_version", sa.String(64), nullable=True),
        sa.Column("config_json", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["step_id"], ["steps.id"], name=op.f("fk_step_uses_step_id_steps"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("step_id", "position", name=op.f("pk_step_uses")),
    )
    op.create_index(op.f("ix_step_uses_method"), "step_uses", ["method"])


def downgrade() -> None:
    op.drop_index(op.f("ix_step_uses_method"), table_name="step_uses")
    op.drop_table("step_uses")
