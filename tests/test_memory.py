"""slimkit's heap setting (``lean_heap``): tensors of 4 MiB or more freed in the middle of the heap go
back to the system, where glibc's own dynamic threshold keeps them resident."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = r"""
import sys
import torch
from slimkit.core import memory
from slimkit.core.stream.cost import resident_bytes

if sys.argv[1] == "lean":
    assert memory.lean_heap()
first = torch.ones(2 << 20)  # 8 MB, mapped on its own; freeing it raises glibc's threshold past 8 MB
del first
kept = [torch.ones(2 << 20) for _ in range(50)]  # now from the heap, unless the threshold is fixed
before = resident_bytes()
del kept[::2]  # 25 holes of 8 MB between live tensors
print(before - resident_bytes())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc: Linux only")
def test_a_fixed_mmap_threshold_hands_freed_tensors_back():
    def freed(mode: str) -> int:
        done = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
        return int(done.stdout.split()[-1])

    lean, own = freed("lean"), freed("glibc")
    assert lean >= 150 * 2**20  # the 25 freed tensors (200 MB) left the process at once
    assert lean - own >= 100 * 2**20  # glibc's dynamic threshold kept them as heap


def test_the_users_own_threshold_wins(monkeypatch):
    from slimkit.core import memory

    monkeypatch.setattr(memory, "_lean", False)
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    assert memory.lean_heap() is False
