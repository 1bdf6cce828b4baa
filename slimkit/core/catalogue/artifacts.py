"""The catalogue's managed artifact folder, and garbage collection of what nothing refers to.

Models saved without an explicit ``--out`` go to the artifact store (:mod:`slimkit.core.artifact_store`):
``artifacts/`` beside a SQLite catalogue, or ``$SLIMKIT_ARTIFACTS`` (a folder or any fsspec URL),
else the user data folder, for server catalogues. This module knows the store's local folder and
its names (it may import nothing above the catalogue); ``gc`` here removes folders there that no
model or export row refers to (left by runs killed between saving and recording) and half-written
staging folders, but only while no run is in progress. The store's own entries (content-addressed
model folders, reference markers, incoming folders) are left to the store's gc, which also
respects the other catalogues sharing the store.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from slimkit.core.catalogue.migrate import sqlite_path

if TYPE_CHECKING:  # pragma: no cover
    from slimkit.core.catalogue.store import Catalogue

ENV_ARTIFACTS = "SLIMKIT_ARTIFACTS"
#: Where copies fetched from a remote store are kept (default: the user cache folder).
ENV_ARTIFACT_CACHE = "SLIMKIT_ARTIFACT_CACHE"
#: A run's result before it is published under its model id (hidden: not a model yet).
INCOMING_PREFIX = ".incoming-"
#: ``<store>/.refs/<id hex>/<catalogue token>``: which catalogues refer to a stored model.
REFS_FOLDER = ".refs"
#: The list of a stored model's files with their sizes and sha256, written last (the commit).
MANIFEST_FILE = "slimkit-manifest.json"
#: ``<store>/.work/<step>``: checkpoints of a step in progress, kept across an interrupted run.
WORK_FOLDER = ".work"
_STORE_ENTRY = re.compile(r"[0-9a-f]{64}")


def store_url() -> str | None:
    """``$SLIMKIT_ARTIFACTS`` as given (a folder, ``file://`` or any fsspec URL), if set."""
    return os.environ.get(ENV_ARTIFACTS) or None


def is_remote_url(text: str) -> bool:
    """Whether ``text`` is a URL that is not a local path (``s3://``, ``memory://``; not ``file://``)."""
    scheme, sep, _ = text.partition("://")
    return bool(sep) and scheme.lower() != "file" and scheme.replace("+", "").replace("-", "").isalnum()


def local_path(text: str) -> Path:
    """A folder given as a path or a ``file://`` URL."""
    if text.lower().startswith("file://"):
        text = text[len("file://"):]
    return Path(text).expanduser().resolve()


def cache_dir(url: str) -> Path:
    """The local folder of a remote store's verified copies (and of runs' results before upload)."""
    root = os.environ.get(ENV_ARTIFACT_CACHE)
    if root:
        base = Path(root).expanduser().resolve()
    else:
        from platformdirs import user_cache_dir

        base = Path(user_cache_dir("slimkit")) / "artifacts"
    return base / hashlib.sha256(url.rstrip("/").encode()).hexdigest()[:16]


def is_store_entry(path: Path) -> bool:
    """A model folder named by its id in a folder store (or a remote store's local cache)."""
    return bool(_STORE_ENTRY.fullmatch(path.name))


def artifact_dir(cat: "Catalogue") -> Path:
    """The local folder of the catalogue's artifact store: the store itself for a folder store, the
    local cache for a remote one (where results are written before they are uploaded)."""
    configured = store_url()
    if configured:
        return cache_dir(configured) if is_remote_url(configured) else local_path(configured)
    database = sqlite_path(cat.url)
    if database is not None:
        return database.parent / "artifacts"
    from platformdirs import user_data_dir

    return Path(user_data_dir("slimkit")) / "artifacts"


def new_artifact_path(cat: "Catalogue", label: str | None = None, *, incoming: bool = True) -> Path:
    """A fresh folder name in the artifact folder (not created: saving creates it atomically).

    ``incoming`` (a run's result without ``--out``): a hidden name that the run publishes under
    the model's id once it is known (see :func:`is_incoming`); else a visible one (exports).
    """
    stem = "".join(c if c.isalnum() or c in "-_." else "-" for c in (label or "model"))[:60]
    name = f"{stem}-{uuid.uuid4().hex[:8]}"
    return artifact_dir(cat) / (INCOMING_PREFIX + name if incoming else name)


def is_incoming(path: Path | None) -> bool:
    """Whether ``path`` is a run's result waiting to be published (named by :func:`new_artifact_path`)."""
    return path is not None and path.name.startswith(INCOMING_PREFIX)


def _is_staging(path: Path) -> bool:
    return path.name.startswith(".") and (".partial-" in path.name or ".old-" in path.name)


def _is_store_owned(path: Path) -> bool:
    """Entries the store's gc handles, because another catalogue sharing the store may be writing
    or referring to them: markers, incoming and retired folders, step checkpoints (``.work``),
    stored models and the exports written beside them (``<id hex>-<format>``)."""
    return path.name in (REFS_FOLDER, WORK_FOLDER) or INCOMING_PREFIX in path.name \
        or ".deleting-" in path.name or bool(_STORE_ENTRY.match(path.name))


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
        if model.location and not is_remote_url(model.location) and not Path(model.location).exists():
            report.missing.append((model.id, model.location))
    root = artifact_dir(cat)
    if not root.is_dir():
        return report
    busy = bool(cat.runs(status="running"))
    for entry in sorted(root.iterdir()):
        if not entry.is_dir() or _is_store_owned(entry):
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
