"""Peak resident memory of a piece of work, for step records and benchmarks.

On Linux the kernel's high-water mark (``VmHWM``) can be reset by writing ``5`` to
``/proc/self/clear_refs``, which gives the true peak of each step rather than of the process.
Elsewhere (or if the reset is not allowed) the process-wide ``ru_maxrss`` is reported instead.
"""

from __future__ import annotations

import os
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


MMAP_THRESHOLD = 4 << 20
_lean = False


def lean_heap(threshold: int = MMAP_THRESHOLD) -> bool:
    """Serve every allocation of ``threshold`` bytes or more from a mapping of its own, handed back
    to the system the moment it is freed: glibc's ``M_MMAP_THRESHOLD``, fixed. Left alone, glibc
    raises that threshold each time such a block is freed (up to 32 MiB), after which tensors of a
    few megabytes come from the heap, and the heap keeps what they leave behind: distilling
    SmolLM2-135M held 1.2 GiB of freed heap at its peak. 4 MiB, measured on that distillation (1
    thread): peak 2.29 GiB above the two models with glibc's own threshold, 1.66 at 4 MiB in the
    same time, 1.37 at 1 MiB but 17% slower (every fresh mapping is page-faulted in anew).
    Once per process; a no-op where the C library is not glibc, or when the user chose a
    threshold (``MALLOC_MMAP_THRESHOLD_``). Returns whether the threshold is now fixed by slimkit."""
    global _lean
    if _lean or not sys.platform.startswith("linux") or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return _lean
    import ctypes

    try:
        _lean = bool(ctypes.CDLL("libc.so.6").mallopt(-3, threshold))  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):  # not glibc
        pass
    return _lean
