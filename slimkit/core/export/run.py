"""The one flow every export takes: resolve the exporter, check, write to a staging path, rename.

(Minimal version: the catalogue record, free-space check and progress come next.)
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from slimkit.core.errors import ExportError, OutputExistsError
from slimkit.core.export.contract import ExportContext, ExportSummary
from slimkit.core.failures import FileSystemError, is_os_failure, os_cause

if TYPE_CHECKING:  # pragma: no cover
    from slimkit.core.contracts import ProgressCallback
    from slimkit.core.host import Host
    from slimkit.core.model_io import LoadedModel


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote and what it came from."""

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


def file_digest(path: Path) -> tuple[int, str]:
    """``(bytes, sha256)`` of a file, or of a folder's files (names and contents, in name order)."""
    digest = hashlib.sha256()
    size = 0
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode() + b"\0")
        with open(file, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
                size += len(chunk)
    return size, "sha256:" + digest.hexdigest()


def export_model(
    model: "LoadedModel | str | os.PathLike[str]",
    out: "str | os.PathLike[str]",
    *,
    format: str,
    params: Mapping[str, Any] | None = None,
    host: "Host | None" = None,
    overwrite: bool = False,
    progress: "ProgressCallback | None" = None,
) -> ExportResult:
    """Write ``model`` to ``out`` in ``format`` (an installed exporter's name) with ``params``."""
    from slimkit.core.host import get_host
    from slimkit.core.model_io import load_model
    from slimkit.core.provenance import content_id

    host = host or get_host()
    info = host.exporters.get(format)
    config = host.config(info, params)
    target = Path(out).expanduser()
    if target.exists() and not overwrite:
        raise OutputExistsError(f"{target} already exists (use --overwrite to replace it)")
    loaded = model if not isinstance(model, (str, os.PathLike)) else load_model(model)
    try:
        adapter = host.adapter_for(loaded)
    except Exception:
        adapter = None
    ctx = ExportContext(host=host, progress=progress, method=format, content_id=content_id(loaded.model),
                        provenance=loaded.provenance, adapter=adapter)
    exporter = info.create()
    problems = exporter.check(loaded, config, ctx)
    if problems:
        raise ExportError(list(problems), f"cannot export {loaded.source or 'the model'} as {format}")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.partial-{uuid.uuid4().hex[:8]}"
    try:
        if info.cls.writes == "folder":
            staging.mkdir()
        summary = exporter.export(loaded, staging, config, ctx)
        if target.exists():
            shutil.rmtree(target) if target.is_dir() else target.unlink()
        staging.rename(target)
    except BaseException as error:
        shutil.rmtree(staging, ignore_errors=True) if staging.is_dir() else staging.unlink(missing_ok=True)
        if is_os_failure(error):
            raise FileSystemError(f"cannot export to {target}: {os_cause(error)}") from error
        raise
    size, sha = file_digest(target)
    return ExportResult(target, format, info.version, info.plugin, info.plugin_version,
                        config.model_dump(mode="json"), ctx.content_id, size, sha, summary)
