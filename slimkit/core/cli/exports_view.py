"""What ``slimkit show`` prints about exports: a model's exported files, and an exported file's model.

``slimkit show FILE`` takes a path that is not a catalogued model's folder: the file (or folder)
is identified by the content id it carries or by its sha256 among the recorded exports (see
:mod:`slimkit.core.export.lookup`), then shown with the model it came from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from slimkit.core.catalogue.entities import ExportEntry, ModelEntry
from slimkit.core.catalogue.migrate import CatalogueError
from slimkit.core.cli.render import table
from slimkit.core.export.lookup import ExportTrace, trace_export
from slimkit.core.present.format import human_bytes, short_id


def file_reference(cat: Any, reference: str) -> Path | None:
    """The path ``reference`` names when ``show`` should identify it as an exported file: it
    exists, is no catalogued model's folder, and is not also the exact name of a model."""
    path = Path(reference).expanduser()
    if not path.exists() or str(path.resolve()) in {str(Path(p).resolve()) for p in cat.locations()}:
        return None
    try:
        if cat.resolve(reference).name == reference:
            return None
    except CatalogueError:
        pass
    return path


def model_at(cat: Any, reference: str) -> ModelEntry | None:
    """The catalogued model whose folder ``reference`` is, if it is one."""
    path = Path(reference).expanduser()
    if not path.exists():
        return None
    where = str(path.resolve())
    return next((m for m in cat.models() if m.location and str(Path(m.location).resolve()) == where), None)


def trace(host: Any, cat: Any, path: Path) -> ExportTrace:
    """The trace of an exported file, or one error line saying it is not one slimkit knows."""
    found = trace_export(path, host, cat)
    if found is None:
        raise CatalogueError(f"{path} is not an export slimkit knows: no installed exporter reads a model id "
                             "from it, and the catalogue has no export with its sha256")
    return found


def _record_line(found: ExportTrace) -> str:
    if found.export is not None:
        moved = "" if Path(found.export.path) == found.path else f" at {found.export.path}"
        return f"export #{found.export.id} of {found.export.created:%Y-%m-%d %H:%M}{moved} (same sha256)"
    if found.changed:
        return "changed since it was exported: no recorded export of this model has its sha256"
    return "not recorded as an export in this catalogue"


def print_trace(found: ExportTrace) -> None:
    how = "the model id it carries" if found.found_by == "embedded id" else "its sha256, recorded at export"
    model = model_label(found.model) if found.model is not None \
        else f"{short_id(found.content_id)}: not in this catalogue"
    table(f"exported file {found.path}", ["field", "value"], [
        ("format", found.format), ("size", human_bytes(found.size_bytes)), ("sha256", found.sha256),
        ("model", model), ("found by", how), ("record", _record_line(found)),
    ])


def model_label(model: ModelEntry) -> str:
    """``name (0123456789ab)``, or the short id alone for a model without a name."""
    return f"{model.name} ({model.short_id})" if model.name else model.short_id


def exports_rows(exports: list[ExportEntry]) -> list[tuple[Any, ...]]:
    return [(e.format, e.path, "present" if e.present else "missing", human_bytes(e.size_bytes), short_id(e.sha256),
             f"v{e.exporter_version}", e.plugin + (f" {e.plugin_version}" if e.plugin_version else ""))
            for e in exports]


def print_exports(exports: list[ExportEntry]) -> None:
    if exports:
        table("exports", ["format", "path", "on disk", "size", "sha256", "exporter", "plugin"], exports_rows(exports))


def exports_json(exports: list[ExportEntry]) -> list[dict[str, Any]]:
    return [{**e.to_dict(), "present": e.present} for e in exports]
