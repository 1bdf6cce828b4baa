"""What an export wrote and what it came from (:class:`ExportResult`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from slimkit.core.export.contract import ExportSummary


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote and what it came from.

    :ivar path: the file or folder written (absolute).
    :ivar content_id: the exported model's content id, which the file carries.
    :ivar sha256: ``sha256:<hex>`` of the file (of a folder: its files' relative paths and bytes).
    :ivar run_id: the catalogue run it was recorded under (``None`` when not recorded).
    :ivar recorded: whether the catalogue holds the export (and its model).
    """

    path: Path
    format: str
    exporter_version: int
    plugin: str
    plugin_version: str | None
    config: Mapping[str, Any]
    content_id: str
    size_bytes: int
    sha256: str
    summary: ExportSummary
    details: Mapping[str, Any] = field(default_factory=dict)
    run_id: str | None = None
    recorded: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (``slimkit export --json``)."""
        return {"path": str(self.path), "format": self.format, "exporter_version": self.exporter_version,
                "plugin": self.plugin, "plugin_version": self.plugin_version, "config": dict(self.config),
                "content_id": self.content_id, "size_bytes": self.size_bytes, "sha256": self.sha256,
                "summary": self.summary.description, "details": dict(self.details), "run_id": self.run_id,
                "recorded": self.recorded}
