"""Alembic migrations of the lineage catalogue (issue 3: not built yet)."""
