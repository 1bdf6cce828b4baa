"""What a run will cost in memory, said before it starts, and the memory budget it must keep to.

:func:`estimate` works from the checkpoint's headers and ``config.json`` alone (nothing is
loaded): the largest block's weights, the parts outside the blocks, the calibration's hidden
states (two ``[samples, seq_len, hidden]`` buffers), one batch's activations, and a
data-aware method's per-block work (its Hessians, and the float32 copies of the weights
second-order solvers sweep), on top of what the process holds already. In memory the whole
model replaces the one block; streamed, the token embedding and the blocks are never filled at
the same time (:class:`CostEstimate`). The figures are estimates: they err on the
generous side and say what they are made of, so that a refusal names what would fit.

The budget (``--max-memory 6GiB``, a recipe's ``runtime: max_memory``) defaults to the memory this
machine has available. A run that would not fit in memory streams instead when every step can;
a run that would not fit even streamed is refused, saying what would.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slimkit.core.errors import ConfigError

_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
          "t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
#: the batch size the calibration engine runs with (tokens per forward), see SequentialCalibration
BATCH_TOKENS = 512


def parse_bytes(text: str | int) -> int:
    """``"6GiB"``, ``"6 GB"``, ``"512MiB"`` or a number of bytes as an int; ConfigError otherwise."""
    if isinstance(text, int):
        return text
    found = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*", str(text))
    unit = found.group(2).lower() if found else ""
    if found is None or unit not in _UNITS:
        raise ConfigError(f"max_memory {text!r} is not a size: write e.g. 6GiB, 6000MB or a number of bytes")
    return int(float(found.group(1)) * _UNITS[unit])


def _proc_bytes(file: str, field: str) -> int | None:
    """A ``field: N kB`` line of a /proc file, in bytes (``None`` where it cannot be read)."""
    try:
        for line in Path(file).read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def available_bytes() -> int:
    """The memory this machine has available now (``MemAvailable``), else its total."""
    found = _proc_bytes("/proc/meminfo", "MemAvailable")
    if found is not None:
        return found
    import os

    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def resident_bytes() -> int:
    """What this process holds now (``VmRSS``; 0 where it cannot be read)."""
    return _proc_bytes("/proc/self/status", "VmRSS") or 0


def gib(count: float) -> str:
    """A size in GiB, or MiB below one GiB."""
    return f"{count / 2**30:.1f} GiB" if count >= 2**30 else f"{count / 2**20:.0f} MiB"


OUTER = "embeddings and head"
HESSIAN = "Hessian and solver"


@dataclass
class CostEstimate:
    """Expected peak memory of a run, in memory and streamed, with what each is made of.

    In memory everything is counted at once. Streamed, the run has two phases that never overlap:
    the capture of the first block's inputs, with the token embedding filled (``table_bytes``: the
    largest of the embedding and an untied head, which an evaluation fills alone), and the walk,
    with two copies of a block and a data-aware method's statistics; the rest outside the blocks
    (``resident_outer``) stays throughout."""

    blocks: int
    parts: dict[str, int] = field(default_factory=dict)
    model_bytes: int = 0
    block_bytes: int = 0
    resident_outer: int = 0
    table_bytes: int = 0

    def _streamed_parts(self) -> dict[str, int]:
        parts = {k: v for k, v in self.parts.items() if k not in (OUTER, HESSIAN)}
        parts["outside the blocks"] = self.resident_outer
        walk = {"one block x2": 2 * self.block_bytes, HESSIAN: self.parts.get(HESSIAN, 0)}
        if self.table_bytes > sum(walk.values()):
            parts["embedding or head, alone"] = self.table_bytes
        else:
            parts.update(walk)
        return parts

    @property
    def streamed(self) -> int:
        return sum(self._streamed_parts().values())

    @property
    def in_memory(self) -> int:
        return sum(self.parts.values()) + self.model_bytes + self.block_bytes

    def describe(self, streamed: bool) -> str:
        pieces = self._streamed_parts() if streamed else {"the model": self.model_bytes + self.block_bytes,
                                                           **self.parts}
        listed = ", ".join(f"{name} {gib(value)}" for name, value in pieces.items() if value >= 2**20)
        return f"about {gib(self.streamed if streamed else self.in_memory)} ({listed})"


def _itemsize(dtype: Any) -> int:
    return 2 if str(dtype).removeprefix("torch.") in ("bfloat16", "float16") else 4


def estimate(checkpoint: Any, config: Any, block_names: tuple[str, ...], dtype: Any,
             calibration: Any = None, hessian: bool = False) -> CostEstimate:
    """The :class:`CostEstimate` of a run on ``checkpoint`` (a :class:`Checkpoint`) whose blocks
    are ``block_names``, in ``dtype``, with ``calibration`` (``n_samples``, ``seq_len``: a recipe's
    section or the data), ``hessian`` when a step accumulates second-order statistics."""
    size = _itemsize(dtype)
    per_block = {name: 0 for name in block_names}
    outer = 0
    tables: list[int] = []  # [vocab, width] matrices outside the blocks: token embedding, head
    vocab = int(getattr(config, "vocab_size", 0) or 0)
    widest_in = largest = 0  # the widest layer input, the most weights in one matrix
    for key, stored in checkpoint.tensors.items():
        elements = stored.nbytes // max(1, {"F64": 8, "F32": 4}.get(stored.dtype, 2))
        owner = next((name for name in block_names if key.startswith(name + ".")), None)
        if owner is None:
            outer += elements * size
            if vocab and len(stored.shape) == 2 and stored.shape[0] == vocab:
                tables.append(elements * size)
            continue
        per_block[owner] += elements * size
        if len(stored.shape) == 2:
            widest_in, largest = max(widest_in, stored.shape[1]), max(largest, stored.shape[0] * stored.shape[1])
    hidden = int(getattr(config, "hidden_size", 0) or 0)
    inner = int(getattr(config, "intermediate_size", 0) or 4 * hidden)
    cost = CostEstimate(len(block_names), model_bytes=outer + sum(per_block.values()),
                        block_bytes=max(per_block.values(), default=0))
    cost.parts["process"] = resident_bytes()
    cost.parts[OUTER] = outer
    cost.resident_outer, cost.table_bytes = outer - sum(tables), max(tables, default=0)
    if calibration is not None:
        tokens = calibration.n_samples * calibration.seq_len
        cost.parts["calibration states"] = 2 * tokens * hidden * size
        batch = max(calibration.seq_len, min(BATCH_TOKENS, tokens))
        cost.parts["activations"] = 6 * batch * max(inner, hidden) * 4
        if hessian:
            # float64 sums and float32 partials, all of a block's at once: the widest input and
            # (Llama-like) three of the hidden width; the solver then works inside each Hessian's own
            # memory (slimkit.core.linalg), beside float32 copies of the weights it sweeps
            cost.parts[HESSIAN] = (8 + 4) * (widest_in ** 2 + 3 * hidden ** 2) + 2 * largest * 4
    return cost
