"""Which model an exported file (or folder) came from, even after it was copied elsewhere.

Two ways, best first: every installed exporter is asked to read the content id the file carries
(:meth:`BaseExporter.identify`), which survives copying and renaming; failing that, the file's
sha256 is looked up among the catalogue's recorded exports, which finds an unchanged copy of an
export whose format carries no id. :func:`trace_export` adds what the catalogue knows: the model,
and whether the file is byte for byte an export it recorded or was changed since.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slimkit.core.export.staging import file_digest

if TYPE_CHECKING:  # pragma: no cover
    from slimkit.core.catalogue import Catalogue, ExportEntry, ModelEntry
    from slimkit.core.host import Host


def identify_embedded(path: Path, host: "Host") -> tuple[str, str] | None:
    """``(content id, exporter name)`` from the first installed exporter whose ``identify`` reads
    an id from ``path`` (only exporters that write what ``path`` is: a file or a folder). An
    exporter that raises, or answers something other than a string, is passed over: one broken
    plugin must not stop the others from recognising the file."""
    kind = "folder" if path.is_dir() else "file"
    for info in host.exporters:
        if getattr(info.cls, "writes", "file") != kind:
            continue
        try:
            found: Any = info.cls.identify(path)
        except Exception:  # the contract says identify must not raise; a plugin that does is skipped
            continue
        if isinstance(found, str) and found:
            return found, info.name
    return None


def identify_export(
    path: str | os.PathLike[str], host: "Host | None" = None, *, catalogue: "Catalogue | None" = None
) -> tuple[str, str] | None:
    """``(content id, format)`` of the exported file or folder at ``path``, or ``None``.

    Asks every installed exporter first (the id the file carries); else, with a ``catalogue``,
    looks the file's sha256 up among the recorded exports.
    """
    from slimkit.core.host import get_host

    target = Path(path).expanduser()
    found = identify_embedded(target, host or get_host())
    if found is not None or catalogue is None:
        return found
    entry = catalogue.find_export(sha256=file_digest(target)[1])
    return (entry.model_id, entry.format) if entry is not None else None


@dataclass(frozen=True)
class ExportTrace:
    """What is known of an exported file: its bytes, the model it came from and how that was found.

    :ivar found_by: ``"embedded id"`` (the file carries it) or ``"sha256"`` (the catalogue
        recorded an export with these exact bytes).
    :ivar export: the recorded export with this file's sha256, if any.
    :ivar changed: the file carries a model's id but no recorded export of that model has its
        sha256: it was changed (or re-written elsewhere) since it was exported.
    :ivar model: the model's catalogue entry; ``None`` when the catalogue does not know it.
    """

    path: Path
    size_bytes: int
    sha256: str
    content_id: str
    format: str
    found_by: str
    export: "ExportEntry | None"
    changed: bool
    model: "ModelEntry | None"

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "size_bytes": self.size_bytes, "sha256": self.sha256,
                "content_id": self.content_id, "format": self.format, "found_by": self.found_by,
                "export": self.export.to_dict() if self.export is not None else None, "changed": self.changed,
                "model": self.model.to_dict() if self.model is not None else None}


def trace_export(path: str | os.PathLike[str], host: "Host", catalogue: "Catalogue") -> ExportTrace | None:
    """Everything :class:`ExportTrace` says of the file or folder at ``path``; ``None`` when no
    exporter recognises it and the catalogue has no export with its sha256."""
    from slimkit.core.catalogue import CatalogueError

    target = Path(path).expanduser().resolve()
    size, sha = file_digest(target)
    # This very file's record first; else any export with these bytes (a copy of it).
    recorded = catalogue.find_export(sha256=sha, path=str(target)) or catalogue.find_export(sha256=sha)
    embedded = identify_embedded(target, host)
    if embedded is not None:
        content_id, format = embedded
        found_by = "embedded id"
        if recorded is not None and recorded.model_id != content_id:
            recorded = None  # the same bytes recorded for another model cannot be this file's record
    elif recorded is not None:
        content_id, format, found_by = recorded.model_id, recorded.format, "sha256"
    else:
        return None
    try:
        model: ModelEntry | None = catalogue.model(content_id)
    except CatalogueError:
        model = None
    changed = embedded is not None and recorded is None and bool(catalogue.exports(content_id))
    return ExportTrace(target, size, sha, content_id, format, found_by, recorded, changed, model)
