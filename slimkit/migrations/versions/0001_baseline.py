"""Baseline: models, steps (lineage edges) with their parents, evaluations and runs.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

ID = sa.String(80)


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("recipe_name", sa.String(200), nullable=True),
        sa.Column("recipe_text", sa.Text(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("started", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runs")),
    )
    op.create_index(op.f("ix_runs_status"), "runs", ["status"])
    op.create_table(
        "models",
        sa.Column("id", ID, nullable=False),
        sa.Column("name", sa.String(200), nullable=True),
        sa.Column("architecture", sa.String(200), nullable=False),
        sa.Column("params", sa.Integer(), nullable=True),
        sa.Column("size_bytes", sa.Integer(), nullable=True),
        sa.Column("location", sa.Text(), nullable=True),
        sa.Column("source", sa.Text(), nullable=True),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_models")),
        sa.UniqueConstraint("name", name=op.f("uq_models_name")),
    )
    op.create_table(
        "steps",
        sa.Column("id", ID, nullable=False),
        sa.Column("child_id", ID, nullable=True),
        sa.Column("run_id", sa.String(32), nullable=True),
        sa.Column("method", sa.String(200), nullable=False),
        sa.Column("method_version", sa.Integer(), nullable=False),
        sa.Column("family", sa.String(32), nullable=False),
        sa.Column("config_json", sa.Text(), nullable=False),
        sa.Column("plugin", sa.String(200), nullable=False),
        sa.Column("plugin_version", sa.String(64), nullable=True),
        sa.Column("versions_json", sa.Text(), nullable=False),
        sa.Column("calibration_json", sa.Text(), nullable=True),
        sa.Column("calibration_fingerprint", ID, nullable=True),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("wall_time_s", sa.Float(), nullable=True),
        sa.Column("peak_rss_bytes", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("summary", sa.Text(), nullable=True),
        sa.Column("details_json", sa.Text(), nullable=True),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["child_id"], ["models.id"], name=op.f("fk_steps_child_id_models")),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_steps_run_id_runs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_steps")),
    )
    op.create_index(op.f("ix_steps_child_id"), "steps", ["child_id"])
    op.create_index(op.f("ix_steps_run_id"), "steps", ["run_id"])
    op.create_index(op.f("ix_steps_method"), "steps", ["method"])
    op.create_table(
        "step_parents",
        sa.Column("step_id", ID, nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("model_id", ID, nullable=False),
        sa.Column("role", sa.String(32), nullable=False),
        sa.ForeignKeyConstraint(["step_id"], ["steps.id"], name=op.f("fk_step_parents_step_id_steps"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"], name=op.f("fk_step_parents_model_id_models")),
        sa.PrimaryKeyConstraint("step_id", "position", name=op.f("pk_step_parents")),
    )
    op.create_index(op.f("ix_step_parents_model_id"), "step_parents", ["model_id"])
    op.create_table(
        "evaluations",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("model_id", ID, nullable=False),
        sa.Column("run_id", sa.String(32), nullable=True),
        sa.Column("evaluator", sa.String(200), nullable=False),
        sa.Column("evaluator_version", sa.Integer(), nullable=False),
        sa.Column("metric", sa.String(200), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("config_json", sa.Text(), nullable=False),
        sa.Column("dataset_fingerprint", ID, nullable=True),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"], name=op.f("fk_evaluations_model_id_models")),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_evaluations_run_id_runs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_evaluations")),
    )
    op.create_index("ix_evaluations_model_metric", "evaluations", ["model_id", "evaluator", "metric"])
    op.create_index(op.f("ix_evaluations_run_id"), "evaluations", ["run_id"])


def downgrade() -> None:
    for table in ("evaluations", "step_parents", "steps", "models", "runs"):
        op.drop_table(table)
