"""Alembic environment, configured in code by slimkit (no alembic.ini, no logging changes)."""

from __future__ import annotations

from alembic import context

from slimkit.core.catalogue.schema import Base

connection = context.config.attributes.get("connection")
if connection is None or context.is_offline_mode():
    raise RuntimeError("slimkit migrations run online, on a connection slimkit provides")

context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
