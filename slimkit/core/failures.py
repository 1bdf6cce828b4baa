"""Any exception as the one line a user sees, with no password in it.

slimkit's own errors (:class:`~slimkit.core.errors.SlimkitError`) carry that line already.
Everything else is described here: an ``OSError`` by its path and the system's cause, a database
error by the driver's first line, anything else as ``Type: message``. Every URL password in the
text, wherever it came from, is replaced by ``***``. ``--debug`` or ``SLIMKIT_DEBUG=1`` makes the
command line print the traceback as well (:func:`debug_requested`).
"""

from __future__ import annotations

import errno
import os
import re
from types import TracebackType
from typing import Any

from slimkit.core.errors import SlimkitError

DEBUG_ENV = "SLIMKIT_DEBUG"

# scheme://user:PASSWORD@host  and  ?password=PASSWORD  (libpq and others take it as a parameter)
_URL_PASSWORD = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s/:@]*:)[^\s@]*(@)")
_QUERY_PASSWORD = re.compile(r"([?&](?:password|passwd|pwd)=)(?:[^&\s:]|:(?=\S))*", re.IGNORECASE)
# safetensors reports a failed write as "Error while serializing: I/O error: <cause> (os error N)"
_SAFETENSORS_IO = re.compile(r"I/O error: (.*?)(?: \(os error (\d+)\))?$")


class FileSystemError(SlimkitError, OSError):
    """A file or folder could not be read or written (permission, disk full, read-only, a file
    where a folder should be); the message names the operation, the path and the cause. It is an
    ``OSError`` too, so code that caught the system's error still catches it; the original is its
    ``__cause__``."""


def mask_secrets(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***``."""
    return _QUERY_PASSWORD.sub(r"\1***", _URL_PASSWORD.sub(r"\1***\2", text))


def debug_requested() -> bool:
    """Whether ``SLIMKIT_DEBUG`` asks for tracebacks (any value but empty, 0, false, no, off)."""
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in {"", "0", "false", "no", "off"}


def first_line(error: BaseException) -> str:
    """The first non-empty line of ``str(error)``, or the type's name when there is none."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def os_cause(error: BaseException) -> str:
    """The system's reason for a failed file operation, e.g. ``No space left on device (ENOSPC)``.

    Takes an ``OSError`` or a safetensors error wrapping one (safetensors does not raise OSError).
    """
    code: int | None = error.errno if isinstance(error, OSError) else None
    cause = error.strerror if isinstance(error, OSError) and error.strerror else None
    if cause is None:
        found = _SAFETENSORS_IO.search(first_line(error))
        if found:
            cause, code = found.group(1), int(found.group(2)) if found.group(2) else None
    cause = cause or first_line(error)
    name = errno.errorcode.get(code) if code else None
    return f"{cause} ({name})" if name else cause


def is_os_failure(error: BaseException) -> bool:
    """An ``OSError``, or a safetensors error that is an I/O failure underneath (slimkit's own
    :class:`FileSystemError` is not: it has its message already)."""
    if isinstance(error, SlimkitError):
        return False
    if isinstance(error, OSError):
        return True
    return type(error).__module__.startswith("safetensors") and bool(_SAFETENSORS_IO.search(first_line(error)))


def describe_os_error(error: BaseException) -> str:
    """``<path>: <cause> (<ERRNO>)``; two paths for a rename (``a -> b``); the cause alone without one."""
    paths = [getattr(error, "filename", None), getattr(error, "filename2", None)]
    where = " -> ".join(os.fsdecode(path) if isinstance(path, bytes) else str(path) for path in paths if path is not None)
    return f"{where}: {os_cause(error)}" if where else os_cause(error)


def describe_database_error(error: BaseException) -> str:
    """``database error: <driver's exception>: <its first line>`` (no SQL, no parameters)."""
    orig = getattr(error, "orig", None)
    if isinstance(orig, BaseException):
        return f"database error: {type(orig).__name__}: {first_line(orig)}"
    # SQLAlchemy appends "(Background on this error at: https://sqlalche.me/...)" to its own errors
    text = re.sub(r"\s*\(Background on this error at: [^)]*\)", "", first_line(error))
    return f"database error: {type(error).__name__}: {text}"


def describe(error: BaseException) -> str:
    """One line for any exception, every URL password masked."""
    if isinstance(error, SlimkitError):
        text = str(error).strip() or type(error).__name__  # written to be one line already
    elif is_os_failure(error):
        text = describe_os_error(error)
    elif type(error).__module__.startswith("sqlalchemy"):
        text = describe_database_error(error)
    else:
        text = f"{type(error).__name__}: {first_line(error)}"
    return mask_secrets(text)


def culprit(error: BaseException, host: Any) -> str | None:
    """The plugin whose code raised ``error``: the innermost traceback frame that runs a method
    of a class a plugin registered on ``host`` (or code in that class's module); else ``None``."""
    try:
        infos = list(host.methods()) if host is not None else []
    except Exception:  # a broken host must not hide the error being reported
        return None
    by_class = {info.cls: info.plugin for info in infos}
    by_module = {info.cls.__module__: info.plugin for info in infos}
    frames = []
    tb: TracebackType | None = error.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    for frame in reversed(frames):
        owner = frame.f_locals.get("self")
        plugin = by_class.get(type(owner)) if owner is not None else None
        plugin = plugin or by_module.get(frame.f_globals.get("__name__", ""))
        if plugin is not None:
            return plugin
    return None
