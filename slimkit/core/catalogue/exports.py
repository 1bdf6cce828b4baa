"""The catalogue's exports: models written in a serving format, as locations of their model.

A mixin of :class:`~slimkit.core.catalogue.store.Catalogue` (kept apart so the store stays
readable). A path holds one export, as a folder holds one model: recording an export at a path
replaces whatever row that path had (a re-export of the same model, format and config, or
``--overwrite`` with another model), so the catalogue never lists a file as something it no
longer is.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Mapping

from sqlalchemy import delete, select

from slimkit.core.catalogue.entities import ExportEntry
from slimkit.core.catalogue.schema import ExportRow

if TYPE_CHECKING:  # pragma: no cover
    from sqlalchemy.orm import Session


class ExportsMixin:
    """``record_export``, ``exports`` and ``find_export`` of the catalogue."""

    def session(self) -> "Session":  # pragma: no cover - provided by Catalogue
        raise NotImplementedError

    def record_export(
        self,
        model_id: str,
        format: str,
        *,
        exporter_version: int,
        plugin: str,
        plugin_version: str | None,
        config: Mapping[str, Any],
        path: str,
        size_bytes: int,
        sha256: str,
        run_id: str | None = None,
        session: "Session | None" = None,
    ) -> ExportEntry:
        """Record that ``model_id`` (already in the catalogue) was written to ``path`` in ``format``;
        an earlier row for the same path is replaced."""
        if session is None:
            with self.session() as own, own.begin():
                return self.record_export(model_id, format, exporter_version=exporter_version, plugin=plugin,
                                          plugin_version=plugin_version, config=config, path=path,
                                          size_bytes=size_bytes, sha256=sha256, run_id=run_id, session=own)
        session.execute(delete(ExportRow).where(ExportRow.path == path))
        row = ExportRow(model_id=model_id, format=format, exporter_version=exporter_version, plugin=plugin,
                        plugin_version=plugin_version, config_json=json.dumps(dict(config), sort_keys=True),
                        path=path, size_bytes=size_bytes, sha256=sha256, run_id=run_id,
                        created=datetime.now(timezone.utc))
        session.add(row)
        session.flush()
        return _export(row)

    def exports(self, model_id: str | None = None) -> list[ExportEntry]:
        """The exports of ``model_id`` (every export without it), oldest first."""
        with self.session() as session:
            query = select(ExportRow).order_by(ExportRow.created, ExportRow.id)
            if model_id is not None:
                query = query.where(ExportRow.model_id == model_id)
            return [_export(row) for row in session.scalars(query)]

    def find_export(self, *, sha256: str | None = None, path: str | None = None) -> ExportEntry | None:
        """The newest export with this ``sha256`` and/or at this ``path``, or ``None``."""
        if sha256 is None and path is None:
            raise ValueError("find_export needs sha256 or path")
        with self.session() as session:
            query = select(ExportRow).order_by(ExportRow.created.desc(), ExportRow.id.desc()).limit(1)
            if sha256 is not None:
                query = query.where(ExportRow.sha256 == sha256)
            if path is not None:
                query = query.where(ExportRow.path == path)
            row = session.scalar(query)
            return _export(row) if row is not None else None

    def export_paths(self) -> set[str]:
        """Every recorded export path (``gc`` keeps export folders in the artifact folder)."""
        with self.session() as session:
            return set(session.scalars(select(ExportRow.path)))


def delete_exports(session: "Session", model_ids: list[str]) -> None:
    """Forget the exports of models being deleted (their files stay, as model folders do)."""
    session.execute(delete(ExportRow).where(ExportRow.model_id.in_(model_ids)))


def _export(row: ExportRow) -> ExportEntry:
    created = row.created if row.created.tzinfo else row.created.replace(tzinfo=timezone.utc)
    return ExportEntry(id=row.id, model_id=row.model_id, format=row.format, exporter_version=row.exporter_version,
                       plugin=row.plugin, plugin_version=row.plugin_version, config=json.loads(row.config_json),
                       path=row.path, size_bytes=row.size_bytes, sha256=row.sha256, created=created,
                       run_id=row.run_id)
