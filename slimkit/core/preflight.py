"""Checks a run makes before any work: where it will write, under what name, and with what room.

Everything here is cheap next to compressing a model, so a run that would fail at the end (an
output folder it cannot write, a name another model holds, a disk too small for the result)
fails at the start instead, with one line naming the problem.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from slimkit.core.errors import OutputExistsError, SlimkitError

if TYPE_CHECKING:  # pragma: no cover
    from slimkit.core.catalogue import Catalogue

#: Room beyond the estimated size of the result: tokenizer files, slimkit.json, file-system slack.
DISK_MARGIN_BYTES = 16 * 2**20


class OutputError(SlimkitError):
    """The output folder cannot be used (not writable, another model's folder, too little room)."""


def _existing_ancestor(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path("/")


def check_output_folder(
    out: str | os.PathLike[str],
    overwrite: bool,
    *,
    input_path: Path | None = None,
    catalogued: Iterable[str] = (),
) -> Path:
    """The output folder ``out`` if a run can write its result there, else an error naming why.

    Refused: a file in its place; an existing folder without ``overwrite``; the input model's own
    folder, or a folder inside it or any catalogued model's folder (the run still reads the input;
    a nested folder would be hidden inside another model); a catalogued model's folder without
    ``overwrite`` (with it, the catalogue forgets that model's location when the run records its
    result: a folder holds one model); a parent folder that cannot be created or written (probed
    by creating and removing a file).
    """
    path = Path(out).expanduser()
    if path.exists() and not path.is_dir():
        raise OutputExistsError(f"output {path} exists and is not a folder")
    resolved = path.resolve()
    if input_path is not None and (resolved == input_path.resolve() or input_path.resolve() in resolved.parents):
        raise OutputError(f"output folder {path} is {'inside ' if resolved != input_path.resolve() else ''}"
                          "the input model's folder; choose another --out")
    for location in catalogued:
        folder = Path(location).resolve()
        if folder in resolved.parents:
            raise OutputError(f"output folder {path} is inside the folder of catalogued model at {location}; "
                              "choose another --out")
        if folder == resolved and not overwrite:
            raise OutputExistsError(f"output folder {path} holds a catalogued model (use --overwrite to replace it; "
                                    "the catalogue then forgets its folder)")
    if path.exists() and not overwrite:
        raise OutputExistsError(f"output folder {path} already exists (use --overwrite to replace it)")
    check_writable_parent(path, "the output folder")
    return path


def check_writable_parent(path: Path, what: str) -> None:
    """Refuse ``path`` (``what`` names it in the message) when it could not be created: its nearest
    existing ancestor is a file, or cannot be written (probed by creating and removing a file;
    creating no folder, so a refused run leaves nothing behind)."""
    where = _existing_ancestor(path.parent)
    if not where.is_dir():
        raise OutputError(f"cannot write {what} {path}: {where} is a file, not a folder")
    try:
        probe = where / f".{path.name}.probe-{uuid.uuid4().hex[:8]}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        cause = error.strerror or type(error).__name__
        raise OutputError(f"cannot write {what} {path}: {cause} ({where})") from None


def check_name(cat: "Catalogue | None", name: str | None, replacing: Path | None = None) -> None:
    """Refuse a ``--name`` that another catalogued model already has (before the run, not after),
    unless that model's folder is ``replacing`` (the output folder a run may overwrite): a rerun
    of ``slimkit run --out X --overwrite --name N`` replaces the model named N, name and all."""
    if cat is None or name is None:
        return
    from slimkit.core.catalogue import CatalogueError

    try:
        holder = cat.resolve(name)
    except CatalogueError:
        return
    if holder.name != name:
        return
    if replacing is not None and holder.location and Path(holder.location).resolve() == replacing.resolve():
        return
    raise OutputError(f"the name {name!r} is already used by model {holder.short_id} in the catalogue; "
                      "choose another --name")


def check_run(
    cat: "Catalogue | None",
    out: str | os.PathLike[str] | None,
    overwrite: bool,
    name: str | None,
    input_path: Path | None,
    *,
    publish: bool | None = None,
) -> Path | None:
    """Every check of where a run will write that needs no model: the output folder (against the
    input's and every catalogued model's folder), the name, and the artifact store the result is
    published to (reachable and writable). Returns the output folder.

    :param publish: whether the result goes to the artifact store; by default, when there is a
        catalogue and no ``out`` or an ``out`` named by :func:`new_artifact_path`.
    """
    from slimkit.core.catalogue.artifacts import is_incoming

    if publish is None:
        publish = cat is not None and (out is None or is_incoming(Path(out)))
    if publish and cat is not None:
        from slimkit.core.artifact_store.access import check_store

        check_store(cat)
    target = None
    if out is not None:
        catalogued = cat.locations() if cat is not None else ()
        target = check_output_folder(out, overwrite, input_path=input_path, catalogued=catalogued)
    check_name(cat, name, replacing=target if overwrite else None)
    return target


def local_folder(spec: str | os.PathLike[str]) -> Path | None:
    """The folder a model spec names, if it is one on this machine (``example:``, hub ids: ``None``)."""
    path = Path(spec).expanduser()
    return path if path.is_dir() else None


def check_disk_space(target: Path, expected_bytes: int) -> None:
    """Refuse a result of ``expected_bytes`` that the file system holding ``target`` cannot take."""
    where = _existing_ancestor(target.parent)
    free = shutil.disk_usage(where).free
    need = expected_bytes + DISK_MARGIN_BYTES
    if free < need:
        raise OutputError(f"not enough free space for the result {target}: about {_mib(need)} needed, "
                          f"{_mib(free)} free in {where}")


def _mib(count: int) -> str:
    return f"{count / 2**20:,.1f} MiB"
