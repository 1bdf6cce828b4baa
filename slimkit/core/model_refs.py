"""Loading a model named the way a person names it: a path, ``example:NAME``, a catalogue name or
id prefix, or a hub id.

Why here and not in the catalogue: it loads models (``model_io``), and the catalogue depends on
nothing above it; this module sits above both and asks the catalogue only where the model was saved
(and the artifact store, :mod:`slimkit.core.artifact_store`, for a local, verified copy of it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from slimkit.core.catalogue.migrate import CatalogueError
from slimkit.core.catalogue.store import Catalogue
from slimkit.core.model_io import EXAMPLE_PREFIX, LoadedModel, load_model as _load


def load_model_ref(spec: str, cat: Catalogue | Callable[[], Catalogue] | None, *, dtype: Any = "float32",
                   device: Any = None) -> LoadedModel:
    """Load a model given as a path, ``example:NAME``, a catalogue name or id prefix, or a hub id,
    in ``dtype`` on ``device`` (as :func:`~slimkit.load_model` takes them).

    Local paths and examples win; then the catalogue (where the model was saved); then the hub.
    ``cat`` may be a function that opens the catalogue, called only when a name needs it.
    """

    return _load(model_location(spec, cat), dtype=dtype, device=device)


def model_location(spec: str, cat: Catalogue | Callable[[], Catalogue] | None) -> str:
    """What :func:`load_model_ref` loads for ``spec``: a catalogued model's folder for its name or
    id prefix (a model in the artifact store: a local copy, every file checked), a stored model's
    for an id prefix only the store knows (made by another catalogue), else ``spec`` itself (a
    path, ``example:NAME`` or a hub id).

    :raises ChecksumError: a stored file differs from its manifest (naming the model and the file).
    :raises ArtifactStoreError: the store holding the model cannot be reached.
    """
    if cat is None or spec.startswith(EXAMPLE_PREFIX) or Path(spec).expanduser().exists() \
            or spec.startswith((".", "/", "~")):
        return spec
    if callable(cat):
        cat = cat()
    from slimkit.core.artifact_store import store_of
    from slimkit.core.artifact_store.access import find_stored, stored_folder

    try:
        entry = cat.resolve(spec)
    except CatalogueError:
        found = find_stored(cat, spec)  # not in this catalogue; the team's store may have it
        if found is None:
            return spec  # a hub id, or a clear "no such model" error
        return str(store_of(cat).open(found, found.partition(":")[2][:12]))
    local = stored_folder(cat, entry.id, entry.location, entry.label)
    if local is not None:
        return str(local)
    if not entry.location or not Path(entry.location).exists():
        raise CatalogueError(f"model {entry.label} is in the catalogue but its folder is gone ({entry.location})")
    return entry.location
