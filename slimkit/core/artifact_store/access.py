"""What runs and model references ask of the store: publish a run's result, open a catalogued
model wherever its row says it is stored, find a model the catalogue does not know by id prefix.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from slimkit.core.artifact_store import ArtifactStore, catalogue_token, open_store, store_of
from slimkit.core.artifact_store.manifest import ArtifactStoreError, id_hex
from slimkit.core.catalogue.artifacts import MANIFEST_FILE, REFS_FOLDER, is_remote_url, is_store_entry

if TYPE_CHECKING:  # pragma: no cover
    from slimkit.core.catalogue import Catalogue


def check_store(cat: "Catalogue") -> None:
    """Before any work: the store is reachable and can be written (one line saying why not)."""
    store_of(cat).check_writable()


def publish_result(cat: "Catalogue", folder: Path, model_id: str, name: str | None) -> tuple[Path, str]:
    """Publish a run's finished result ``folder`` under ``model_id``; returns the local folder the
    run reports and the location its catalogue row records. The folder is gone if this fails."""
    try:
        store = store_of(cat)
        local = store.publish(folder, model_id, catalogue_token(cat), name)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return local, store.location(model_id) if is_remote_url(store.url) else str(local)


def store_holding(location: str) -> ArtifactStore | None:
    """The store a catalogue row's ``location`` is in: ``<store url>/<id hex>``, or a folder store's
    model folder (one with a manifest); ``None`` for a plain folder."""
    if is_remote_url(location):
        return open_store(location.rstrip("/").rpartition("/")[0])
    path = Path(location)
    # named by its id in a store: opened (and checked) as a stored model even without its manifest
    if is_store_entry(path) and ((path / MANIFEST_FILE).is_file() or (path.parent / REFS_FOLDER).is_dir()):
        return open_store(str(path.parent))
    return None


def stored_folder(cat: "Catalogue", model_id: str, location: str | None, label: str) -> Path | None:
    """A local, verified folder of a catalogued model stored in an artifact store; ``None`` when
    its row names a plain folder that is there (opened as it is)."""
    store = store_holding(location) if location else None
    if store is not None:
        return store.open(model_id, label)
    if location and Path(location).exists():
        return None
    configured = store_of(cat)  # the row's folder is not on this machine: the team's store may have it
    if configured.has(model_id):
        return configured.open(model_id, label)
    return None


def find_stored(cat: "Catalogue", spec: str) -> str | None:
    """The full id of the one stored model whose id starts with ``spec`` (at least 6 hex digits),
    for models another catalogue made; ``None`` when none."""
    if len(id_hex(spec)) < 6:
        return None
    found = store_of(cat).find(spec)
    if len(found) > 1:
        raise ArtifactStoreError(f"{spec!r} is the start of {len(found)} model ids in the artifact store; "
                                 "give more of the id")
    return found[0] if found else None
