"""The catalogue's managed artifact folder, and garbage collection of what nothing refers to.

Models saved without an explicit ``--out`` go to ``artifacts/`` beside a SQLite catalogue (or
``$SLIMKIT_ARTIFACTS``, else the user data folder, for server catalogues). ``gc`` removes folders
there that no model or export row refers to (left by runs killed between saving and recording) and
half-written staging folders, but only while no run is in progress.
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from slimkit.core.catalogue.migrate import sqlite_path

if TYPE_CHECKING:  # pragma: no cover
    from slimkit.core.catalogue.store import Catalogue

ENV_ARTIFACTS = "SLIMKIT_ARTIFACTS"


def artifact_dir(cat: "Catalogue") -> Path:
    configured = os.environ.get(ENV_ARTIFACTS)
    if configured:
        return Path(configured).expanduser().resolve()
    database = sqlite_path(cat.url)
    if database is not None:
        return database.parent / "artifacts"
    from platformdirs import user_data_dir

    return Path(user_data_dir("slimkit")) / "artifacts"


def new_artifact_path(cat: "Catalogue", label: str | None = None) -> Path:
    """A fresh folder name in the artifact folder (not created: saving creates it atomically)."""
    stem = "".join(c if c.isalnum() or c in "-_." else "-" for c in (label or "model"))[:60]
    return artifact_dir(cat) / f"{stem}-{uuid.uuid4().hex[:8]}"


def _is_staging(path: Path) -> bool:
    return path.name.startswith(".") and (".partial-" in path.name or ".old-" in path.name)


@dataclass
class GcReport:
    removed: list[Path] = field(default_factory=list)
    kept: int = 0
    missing: list[tuple[str, str]] = field(default_factory=list)  # (model id, location) no longer on disk
    skipped_staging: bool = False


def collect_garbage(cat: "Catalogue", *, dry_run: bool = False) -> GcReport:
    """Remove unreferenced model folders and stale staging folders from the artifact folder."""
    report = GcReport()
    # Export folders (compressed-tensors) beside a managed model are referenced too.
    referenced = {str(Path(location).resolve()) for location in cat.locations() | cat.export_paths()}
    for model in cat.models():
        if model.location and not Path(model.location).exists():
            report.missing.append((model.id, model.location))
    root = artifact_dir(cat)
    if not root.is_dir():
        return report
    busy = bool(cat.runs(status="running"))
    for entry in sorted(root.iterdir()):
        if not entry.is_dir():
            continue
        if _is_staging(entry):
            if busy:  # a live run may be writing it right now
                report.skipped_staging = True
                continue
        elif str(entry.resolve()) in referenced:
            report.kept += 1
            continue
        report.removed.append(entry)
        if not dry_run:
            shutil.rmtree(entry, ignore_errors=True)
    return report
