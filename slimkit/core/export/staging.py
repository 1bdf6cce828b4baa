"""Where an export may be written, and writing it so that it appears whole or not at all.

:func:`check_target` is the cheap part, before any model is loaded: an existing target without
``overwrite``, a folder where a file goes (or the reverse), a target that is (or is inside) a
model's own folder, a parent that is a file or cannot be written. :func:`stage_export` lets the
exporter write to a hidden path beside the target and renames it into place only when the
exporter returned (through :func:`slimkit.core.atomic.write_staged`, as models are saved): an
interrupt (Ctrl-C) or a failure removes the staging path and leaves an existing target exactly as it was.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable, Iterable, TypeVar

from slimkit.core.atomic import Writes, write_staged
from slimkit.core.errors import OutputExistsError
from slimkit.core.preflight import OutputError, check_writable_parent

T = TypeVar("T")


def stage_export(target: Path, writes: Writes, write: Callable[[Path], T]) -> T:
    """:func:`~slimkit.core.atomic.write_staged` for an export (failures say "cannot write the export")."""
    return write_staged(target, writes, write, what="cannot write the export")


def check_target(
    out: str | os.PathLike[str],
    writes: Writes,
    overwrite: bool,
    *,
    models: Iterable[Path] = (),
    what: str = "export",
) -> Path:
    """``out`` if an export that ``writes`` a file or a folder can go there, else one error.

    ``models`` are folders (or files) the export must neither replace nor land in: the model being
    exported and every catalogued model's folder. ``what`` names the export in messages.
    """
    path = Path(out).expanduser()
    if path.exists() or path.is_symlink():
        if writes == "file" and path.is_dir():
            raise OutputExistsError(f"{what}: {path} is a folder, and this format is written as a file; "
                                    "choose another --out")
        if writes == "folder" and not path.is_dir():
            raise OutputExistsError(f"{what}: {path} is a file, and this format is written as a folder; "
                                    "choose another --out")
        if not overwrite:
            raise OutputExistsError(f"{what}: {path} already exists (use --overwrite to replace it)")
    resolved = path.resolve()
    for model in models:
        own = model.resolve()
        if resolved == own or own in resolved.parents:
            where = "the model's own " + ("folder" if own.is_dir() else "file") if resolved == own \
                else f"inside the model folder {model}"
            raise OutputError(f"{what}: {path} is {where}; choose another --out")
    check_writable_parent(path, f"the {what}")
    return path


def file_digest(path: Path, progress: Callable[[int, int], None] | None = None) -> tuple[int, str]:
    """``(bytes, "sha256:<hex>")`` of a file, or of a folder's files (each one's path relative to
    the folder, then its bytes, in path order: renaming a file inside changes the digest).

    ``progress(done_mib, total_mib)`` is called as the bytes are read.
    """
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    total = sum(file.stat().st_size for file in files)
    size = 0
    for file in files:
        if path.is_dir():
            digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        with open(file, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
                size += len(chunk)
                if progress is not None:
                    progress(size >> 20, total >> 20)
    return size, "sha256:" + digest.hexdigest()



def default_target(model_path: Path | None, name: str, suffix: str, label: str) -> Path:
    """Where an export of the model at ``model_path`` goes when no ``out`` was given: beside it,
    named after it with the format's ``suffix`` (``m1/`` -> ``m1.gguf``), or with the format's
    ``name`` (``m1/`` -> ``m1-compressed-tensors/``) for a format without a suffix or when that
    name would be the model's own file (``m1.gguf`` -> ``m1-gguf.gguf``).

    :raises ExportError: there is no folder to go by (an ``example:`` model, a hub id, a model
        changed in memory): ``label`` names the model, and the message says to pass ``out``.
    """
    from slimkit.core.errors import ExportError

    if model_path is None:
        raise ExportError([f"{label or 'the model'} has no folder of its own to write the export beside; "
                           "pass out (--out PATH)"], f"export as {name}")
    stem = model_path.stem if model_path.is_file() else model_path.name
    candidate = model_path.parent / f"{stem}{suffix}"
    if not suffix or candidate.resolve() == model_path.resolve():
        candidate = model_path.parent / f"{stem}-{name}{suffix}"
    return candidate
