"""Writing a file or a folder so that it appears whole or not at all.

:func:`write_staged` lets a writer (saving a model, an exporter) write to a hidden path beside the
target and renames it into place only when the writer returned: an interrupt (Ctrl-C) or a failure
removes the staging path and leaves an existing target exactly as it was, and a full disk or a
read-only folder is one :class:`~slimkit.core.failures.FileSystemError` naming the target.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path
from typing import Callable, Literal, TypeVar

from slimkit.core.failures import FileSystemError, describe_os_error, is_os_failure, os_cause

T = TypeVar("T")
Writes = Literal["file", "folder"]


def remove(path: Path) -> None:
    """Remove a file or a folder, if there is one."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():  # unlink of a missing path on a read-only mount says EROFS
        path.unlink(missing_ok=True)


def _umask() -> int:
    """The process's umask, read without changing it where Linux says it (``os.umask`` sets it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _usual_modes(staging: Path) -> None:
    """Give files written private (``safetensors`` saves through a 0600 temporary file) the mode any
    new file gets (0644 under the usual umask): a model or an export is for the people who share
    the folder, as its other files are."""
    mode = 0o666 & ~_umask()
    files = [staging] if staging.is_file() else [p for p in staging.rglob("*") if p.is_file()]
    for file in files:
        if file.stat().st_mode & 0o777 == 0o600 and mode != 0o600:
            file.chmod(mode)


def write_staged(target: Path, writes: Writes, write: Callable[[Path], T], *, what: str) -> T:
    """``write(staging)`` to a hidden path beside ``target`` (an empty folder when ``writes`` is
    ``"folder"``), then rename it to ``target``, replacing an existing one only now.

    :param what: the start of the message of a failure (``"cannot save the model to"``); the
        target and the cause follow.
    :raises FileSystemError: the system refused (disk full, permission, a file where a parent
        folder should be), naming ``target``; the staging path is gone and an existing ``target``
        is as it was.
    """
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        blocker = next((p for p in target.parents if p.exists()), None)
        cause = f"{blocker} is a file, not a folder" if blocker is not None and not blocker.is_dir() \
            else describe_os_error(error)  # mkdir says "File exists" when a file blocks the way
        raise FileSystemError(f"{what} {target}: {cause}") from error
    token = uuid.uuid4().hex[:8]
    staging = target.parent / f".{target.name}.partial-{token}"
    try:
        if writes == "folder":
            staging.mkdir()
        value = write(staging)
        _usual_modes(staging)
        if target.exists() or target.is_symlink():
            retired = target.parent / f".{target.name}.old-{token}"
            target.rename(retired)
            try:
                staging.rename(target)
            except BaseException:
                retired.rename(target)  # put the old one back before reporting the failure
                raise
            remove(retired)
        else:
            staging.rename(target)
    except BaseException as error:  # Ctrl-C included: nothing half-written stays behind
        with contextlib.suppress(OSError):  # the cause is what to report, not a failed clean-up
            remove(staging)
        if is_os_failure(error):  # the staging path's name would only confuse: name the target
            raise FileSystemError(f"{what} {target}: {os_cause(error)}") from error
        raise
    return value
