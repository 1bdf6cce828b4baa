"""Peak resident memory of a piece of work, for step records and benchmarks.

On Linux the kernel's high-water mark (``VmHWM``) can be reset by writing ``5`` to
``/proc/self/clear_refs``, which gives the true peak of each step rather than of the process.
Elsewhere (or if the reset is not allowed) the process-wide ``ru_maxrss`` is reported instead.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path


def _vm_hwm() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def reset_peak() -> bool:
    """Reset the peak-RSS counter; returns whether the platform allowed it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int:
    """Peak resident set size since the last successful :func:`reset_peak` (or process start)."""
    hwm = _vm_hwm()
    if hwm is not None:
        return hwm
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss if sys.platform == "darwin" else maxrss * 1024


def release_free_memory() -> None:
    """Hand heap memory that was freed back to the system (glibc ``malloc_trim``; a no-op
    elsewhere). Long block-by-block passes free many megabyte-sized tensors that the C allocator
    would otherwise keep, so the process's resident memory ratchets up between blocks."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (musl, ...)
        pass
