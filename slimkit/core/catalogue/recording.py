"""Recording into a catalogue from runs and evaluations: which catalogue, and the input model."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from slimkit.core.model_io import LoadedModel, disk_bytes

if TYPE_CHECKING:  # pragma: no cover
    from slimkit.core.catalogue import Catalogue


def open_catalogue(catalogue: "Catalogue | str | None | Literal[False]") -> "Catalogue | None":
    """``False``: no catalogue; ``None``: the default one; a URL or path: that one."""
    if catalogue is False:
        return None
    from slimkit.core.catalogue import Catalogue

    if isinstance(catalogue, Catalogue):
        return catalogue
    return Catalogue(catalogue)


def record_input(
    cat: "Catalogue", loaded: LoadedModel, model_id: str, evaluations: list[dict[str, Any]], run_id: str | None
) -> None:
    """Make sure the input model (and, if it was derived, its chain) is in the catalogue."""
    location = str(loaded.path.resolve()) if loaded.path is not None else None
    params = sum(p.numel() for p in loaded.model.parameters())
    size = disk_bytes(loaded.path)
    if loaded.provenance and loaded.provenance.get("content_id") == model_id:
        cat.record_provenance(loaded.provenance, location=location, params=params, size_bytes=size, run_id=run_id)
    else:
        cat.record_model(model_id, loaded.architecture, params=params, size_bytes=size, location=location,
                         source=loaded.source)
    for record in evaluations:
        cat.record_evaluations(model_id, record["evaluator"], record["version"], record["metrics"],
                               config=record["config"], dataset_fingerprint=record["dataset_fingerprint"],
                               run_id=run_id)
