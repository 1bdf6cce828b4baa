"""The one flow every export takes: :func:`export_model`.

Cheap checks come first, each one line, before the model is loaded: the format (an installed
exporter), its parameters, the target (exists without ``overwrite``, a folder where a file goes,
a model's own folder, a parent that is a file or cannot be written). Then the model is loaded,
the exporter's ``check`` lists every reason it cannot write it (nothing is written if there is
one), the free space is checked, and the exporter writes to a staging path that is renamed into
place only when it returned (:mod:`.staging`). With a catalogue, the export is recorded as a
location of its model, under an ``export`` run; a model the catalogue did not know is recorded
first (with its lineage, if it was derived), so the export always has its model's row.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Mapping

from slimkit.core.errors import ExportError
from slimkit.core.export.job import prepare_export, resolve_exporter, write_export
from slimkit.core.export.result import ExportResult
from slimkit.core.export.staging import check_target, default_target, file_digest
from slimkit.core.model_io import EXAMPLE_PREFIX, LoadedModel, load_model
from slimkit.core.recording import describe_input, open_catalogue, record_input, recorded_run

if TYPE_CHECKING:  # pragma: no cover
    from slimkit.core.catalogue import Catalogue
    from slimkit.core.contracts import ProgressCallback
    from slimkit.core.host import Host

__all__ = ["ExportResult", "export_model", "file_digest", "model_location", "record_export"]


def export_model(
    model: "LoadedModel | str | os.PathLike[str]",
    out: "str | os.PathLike[str] | None" = None,
    *,
    format: str,
    params: Mapping[str, Any] | None = None,
    host: "Host | None" = None,
    catalogue: "Catalogue | str | None | Literal[False]" = None,
    overwrite: bool = False,
    progress: "ProgressCallback | None" = None,
    dtype: Any = "float32",
    device: Any = None,
) -> ExportResult:
    """Write ``model`` to ``out`` in ``format`` (an installed exporter's name) with ``params``.

    :param model: a :class:`LoadedModel`, or a reference: a folder, a ``.gguf`` file,
        ``example:NAME``, a catalogue name or id prefix, or a hub id.
    :param out: the file or folder to write; default: beside the model's folder, named after it
        (``m1/`` -> ``m1.gguf``, ``m1-compressed-tensors/``; see :func:`.staging.default_target`).
    :param catalogue: record the export there (``None``: the default catalogue; ``False``: nowhere).
    :param overwrite: replace an existing ``out`` (only once the new export is complete).
    :param progress: receives the exporter's progress events (and the hashing's).
    :param dtype: the precision a reference is loaded in (as :func:`~slimkit.load_model` takes it);
        another than the weights' own makes the export one of the rounded weights, under their id.
    :param device: where a reference is loaded (``cpu``, ``cuda``, ``cuda:N``, ``auto``).
    :raises UnknownMethodError, ConfigError, OutputExistsError, OutputError: before the model loads.
    :raises ExportError: every reason the exporter gives for not writing the model; nothing written.
    :raises PluginError: the exporter's own code failed (naming it and its plugin); nothing written.
    :raises FileSystemError: the system refused to write (naming the target); nothing written.
    """
    from slimkit.core.host import get_host
    from slimkit.core.model_refs import load_model_ref

    host = host or get_host()
    info, config = resolve_exporter(host, format, params)
    cat = open_catalogue(catalogue)
    where = model_location(model, cat)
    label = model.source if isinstance(model, LoadedModel) else str(model)
    target = Path(out) if out is not None else default_target(where, info.name, info.cls.suffix, label)
    owned = [where] if where is not None else []
    owned += [Path(location) for location in (cat.locations() if cat is not None else ())]
    target = check_target(target, info.cls.writes, overwrite, models=owned)
    with recorded_run(cat, "export") as run_id:
        # The run row is the catalogue's first write: a read-only catalogue fails here, before work.
        loaded = model if isinstance(model, LoadedModel) else \
            load_model_ref(str(model), cat, dtype=dtype, device=device)
        job, problems = prepare_export(host, info, config, loaded, target, progress=progress)
        if problems:
            raise ExportError(problems, f"cannot export {label or 'the model'} as {format}")
        result = write_export(job)
        if cat is not None:
            record_input(cat, describe_input(loaded, result.content_id, []), run_id)
            result = record_export(cat, result, run_id)
    return result


def record_export(cat: "Catalogue", result: ExportResult, run_id: str | None) -> ExportResult:
    """Record ``result`` in ``cat`` (its model must be recorded already); returns it marked so."""
    cat.record_export(result.content_id, result.format, exporter_version=result.exporter_version,
                      plugin=result.plugin, plugin_version=result.plugin_version, config=result.config,
                      path=str(result.path), size_bytes=result.size_bytes, sha256=result.sha256, run_id=run_id)
    return replace(result, run_id=run_id, recorded=True)


def model_location(model: "LoadedModel | str | os.PathLike[str]", cat: "Catalogue | None") -> Path | None:
    """The folder (or ``.gguf`` file) a model lives in, found without loading it: a loaded model's
    path, a local path, or a catalogued model's folder; ``None`` for examples (their folder is
    slimkit's own), hub ids and models changed in memory.

    :raises ModelLoadError: ``model`` is clearly a path (``./``, ``/``, ``~``, ``.gguf``) and there
        is nothing there.
    """
    if isinstance(model, LoadedModel):
        return None if model.source.startswith(EXAMPLE_PREFIX) else model.path
    spec = str(model)
    if spec.startswith(EXAMPLE_PREFIX):
        return None
    path = Path(spec).expanduser()
    if path.exists():
        return path.parent if path.name == "config.json" else path
    if spec.startswith((".", "/", "~")) or spec.endswith(".gguf"):
        load_model(spec)  # raises the loader's own "no such model folder or file" line
    if cat is None:
        return None
    from slimkit.core.catalogue import CatalogueError

    try:
        entry = cat.resolve(spec)
    except CatalogueError:
        return None  # a hub id, or a name loading will refuse with its own message
    from slimkit.core.artifact_store.access import stored_folder

    stored = stored_folder(cat, entry.id, entry.location, entry.label)  # a remote store's: the local copy
    return stored if stored is not None else Path(entry.location) if entry.location else None
