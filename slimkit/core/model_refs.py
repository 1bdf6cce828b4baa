"""Loading a model named the way a person names it: a path, ``example:NAME``, a catalogue name or
id prefix, or a hub id.

Why here and not in the catalogue: it loads models (``model_io``), and the catalogue depends on
nothing above it; this module sits above both and asks the catalogue only where the model was saved.
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
    id prefix, else ``spec`` itself (a path, ``example:NAME`` or a hub id)."""
    if cat is None or spec.startswith(EXAMPLE_PREFIX) or Path(spec).expanduser().exists() \
            or spec.startswith((".", "/", "~")):
        return spec
    if callable(cat):
        cat = cat()
    try:
        entry = cat.resolve(spec)
    except CatalogueError:
        return spec  # not in the catalogue: a hub id, or a clear "no such model" error
    if not entry.location or not Path(entry.location).exists():
        raise CatalogueError(f"model {entry.label} is in the catalogue but its folder is gone ({entry.location})")
    return entry.location
