"""The catalogue's tables (SQLAlchemy 2 typed ORM). The ORM rows never leave the store module.

Schema changes go through an Alembic revision in ``slimkit/migrations/versions``; a test checks
that the migrated schema equals these classes.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, Float, ForeignKey, Index, Integer, MetaData, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

ID = String(80)  # "sha256:" + 64 hex digits
# Revision 0005: 64 bits on a server (PostgreSQL's INTEGER has 32); SQLite's INTEGER has 64 already.
BIG = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class RunRow(Base):
    """One invocation of a recipe, an evaluation or an export: what was asked, where, and how it ended."""

    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # "recipe", "eval" or "export"
    recipe_name: Mapped[str | None] = mapped_column(String(200))
    recipe_text: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), index=True)  # running, done, failed
    error: Mapped[str | None] = mapped_column(Text)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int | None] = mapped_column(Integer)  # revision 0002: lets a later open spot killed runs
    started: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ended: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ModelRow(Base):
    """A model: identified by the hash of its weights."""

    __tablename__ = "models"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    name: Mapped[str | None] = mapped_column(String(200), unique=True)
    architecture: Mapped[str] = mapped_column(String(200))
    params: Mapped[int | None] = mapped_column(BIG)
    size_bytes: Mapped[int | None] = mapped_column(BIG)
    location: Mapped[str | None] = mapped_column(Text)
    source: Mapped[str | None] = mapped_column(Text)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class StepRow(Base):
    """A lineage edge: parent model(s) -> child model through one method with one config."""

    __tablename__ = "steps"

    id: Mapped[str] = mapped_column(ID, primary_key=True)  # hash of parents, method, config, data, seed
    child_id: Mapped[str | None] = mapped_column(ForeignKey("models.id"), index=True)
    run_id: Mapped[str | None] = mapped_column(ForeignKey("runs.id"), index=True)
    method: Mapped[str] = mapped_column(String(200), index=True)
    method_version: Mapped[int] = mapped_column(Integer)
    family: Mapped[str] = mapped_column(String(32))
    config_json: Mapped[str] = mapped_column(Text)
    plugin: Mapped[str] = mapped_column(String(200))
    plugin_version: Mapped[str | None] = mapped_column(String(64))
    versions_json: Mapped[str] = mapped_column(Text)
    calibration_json: Mapped[str | None] = mapped_column(Text)
    calibration_fingerprint: Mapped[str | None] = mapped_column(ID)
    seed: Mapped[int] = mapped_column(BIG)
    wall_time_s: Mapped[float | None] = mapped_column(Float)
    peak_rss_bytes: Mapped[int | None] = mapped_column(BIG)
    status: Mapped[str] = mapped_column(String(16))
    summary: Mapped[str | None] = mapped_column(Text)
    details_json: Mapped[str | None] = mapped_column(Text)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class StepParentRow(Base):
    """Inputs of a step, in order: the model it changed, and e.g. a distillation teacher."""

    __tablename__ = "step_parents"

    step_id: Mapped[str] = mapped_column(ForeignKey("steps.id", ondelete="CASCADE"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[str] = mapped_column(ForeignKey("models.id"), index=True)
    role: Mapped[str] = mapped_column(String(32))  # "input", "teacher", ...


class StepUseRow(Base):
    """A method a step ran inside it (a pruner's scorer), in order: part of the step's identity.

    Revision 0003. Queryable, so "which models did scorer X of plugin Y help make" is one join.
    """

    __tablename__ = "step_uses"

    step_id: Mapped[str] = mapped_column(ForeignKey("steps.id", ondelete="CASCADE"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    family: Mapped[str] = mapped_column(String(32))
    method: Mapped[str] = mapped_column(String(200), index=True)
    method_version: Mapped[int] = mapped_column(Integer)
    plugin: Mapped[str] = mapped_column(String(200))
    plugin_version: Mapped[str | None] = mapped_column(String(64))
    config_json: Mapped[str] = mapped_column(Text)


class EvaluationRow(Base):
    """One metric of one model from one evaluator run."""

    __tablename__ = "evaluations"
    __table_args__ = (Index("ix_evaluations_model_metric", "model_id", "evaluator", "metric"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_id: Mapped[str] = mapped_column(ForeignKey("models.id"))
    run_id: Mapped[str | None] = mapped_column(ForeignKey("runs.id"), index=True)
    evaluator: Mapped[str] = mapped_column(String(200))
    evaluator_version: Mapped[int] = mapped_column(Integer)
    metric: Mapped[str] = mapped_column(String(200))
    value: Mapped[float] = mapped_column(Float)
    config_json: Mapped[str] = mapped_column(Text)
    dataset_fingerprint: Mapped[str | None] = mapped_column(ID)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ExportRow(Base):
    """A model written in a serving format (GGUF, compressed-tensors...): one location of that model.

    Revision 0004. A path holds one export: recording another export at the same path replaces
    the row (a re-export, or ``--overwrite`` with another model). ``sha256`` finds the row from
    the file alone (``slimkit show FILE``) when the exporter cannot read an id back from it.
    """

    __tablename__ = "exports"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_id: Mapped[str] = mapped_column(ForeignKey("models.id"), index=True)
    format: Mapped[str] = mapped_column(String(200))
    exporter_version: Mapped[int] = mapped_column(Integer)
    plugin: Mapped[str] = mapped_column(String(200))
    plugin_version: Mapped[str | None] = mapped_column(String(64))
    config_json: Mapped[str] = mapped_column(Text)
    path: Mapped[str] = mapped_column(Text)
    size_bytes: Mapped[int] = mapped_column(BigInteger)  # exports pass 2 GiB: not a 32-bit integer
    sha256: Mapped[str] = mapped_column(ID, index=True)
    run_id: Mapped[str | None] = mapped_column(ForeignKey("runs.id"), index=True)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True))
