"""Integer formats of quantized weights: the grid (bits, groups, symmetry), round-to-nearest onto
it, and dense bit packing for storage.

A quantized weight ``[out, in]`` stores unsigned codes ``q`` in ``[0, 2^bits - 1]`` and, per row
and group of ``group_size`` consecutive inputs, a float ``scale`` and an integer ``zero``, with
``w ≈ (q - zero) * scale``. Symmetric grids fix ``zero = 2^(bits-1)`` (not stored), so codes
stand for ``-2^(bits-1) .. 2^(bits-1) - 1`` steps, and take the smallest step that holds both
extremes of the group without clipping: ``scale = max(max / (2^(bits-1) - 1), -min / 2^(bits-1))``
(the negative side has one code more). GPTQ's reference and llm-compressor use ``absmax /
(2^bits - 1) * 2`` instead, which puts the positive extreme half a step outside the grid and the
negative one exactly on a tie; any rounding of that scale (to float16 for storage) then breaks
every such tie the same way and shifts the largest weights of every group: on SmolLM2-135M, int4
g64 RTN, perplexity 49.27 (float32 scales) became 52.55 (float16 rounded up), while the grid
here gives 47.15 with float16 scales. Asymmetric grids
span ``[min, max]`` of the group (always including 0, so exact zeros, e.g. pruned weights, stay
exact). ``group_size=None`` means one group per row (per output channel).

Storage packs codes densely along each row: 8 bits one per byte, 4 bits two per byte (low
nibble first), 3 bits eight codes in three bytes (little-endian 24-bit words), 2 bits four per
byte. Packed rows are padded to whole words; :func:`unpack` needs the row length.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

#: The bit widths a :class:`QuantGrid` (and the packed storage) supports.
BITS = (2, 3, 4, 8)
_CODES_PER_WORD = {8: (1, 1), 4: (2, 1), 3: (8, 3), 2: (4, 1)}  # bits -> (codes, bytes) per word


@dataclass(frozen=True)
class QuantGrid:
    """How one linear layer's weight is quantized."""

    bits: int = 4
    group_size: int | None = 128
    symmetric: bool = True

    def __post_init__(self) -> None:
        if self.bits not in BITS:
            raise ValueError(f"unsupported bit width {self.bits}; supported: {', '.join(map(str, BITS))}")
        if self.group_size is not None and self.group_size < 1:
            raise ValueError(f"group_size must be positive or None (per channel), got {self.group_size}")

    @property
    def max_code(self) -> int:
        return (1 << self.bits) - 1

    def groups(self, in_features: int) -> int:
        """Groups per row; raises ValueError if ``group_size`` does not divide ``in_features``."""
        if self.group_size is None:
            return 1
        if in_features % self.group_size:
            raise ValueError(f"group size {self.group_size} does not divide the {in_features} inputs")
        return in_features // self.group_size

    def group_width(self, in_features: int) -> int:
        return in_features if self.group_size is None else self.group_size

    def describe(self) -> str:
        group = "per channel" if self.group_size is None else f"g{self.group_size}"
        return f"int{self.bits} {'sym' if self.symmetric else 'asym'} {group}"


def grid_params(weight: torch.Tensor, grid: QuantGrid, *, clip: torch.Tensor | float = 1.0
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scale, zero)`` of every row and group (``[out, groups]``; ``zero`` as float codes) for
    round-to-nearest of ``weight`` (``[out, in]``). ``clip`` shrinks each group's range (a
    ``[out, groups]`` tensor or a number in ``(0, 1]``; AWQ's clipping search uses it)."""
    rows, columns = weight.shape
    groups = grid.groups(columns)
    w = weight.detach().to(torch.float32).reshape(rows, groups, -1)
    if grid.symmetric:
        half = 1 << (grid.bits - 1)
        high = w.amax(dim=2).clamp(min=0) * clip
        low = w.amin(dim=2).clamp(max=0) * clip
        scale = torch.maximum(high / (half - 1), -low / half)
        zero = torch.full_like(scale, float(half))
    else:
        low = w.amin(dim=2).clamp(max=0) * clip
        high = w.amax(dim=2).clamp(min=0) * clip
        scale = (high - low) / grid.max_code
        zero = torch.round(-low / torch.where(scale > 0, scale, 1.0)).clamp(0, grid.max_code)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # all-zero groups: any scale is exact
    return scale, zero


def quantize(weight: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, grid: QuantGrid) -> torch.Tensor:
    """Codes (``uint8``, ``[out, in]``) of ``weight`` rounded to nearest on the grid."""
    rows, columns = weight.shape
    w = weight.detach().to(torch.float32).reshape(rows, scale.shape[1], -1)
    q = torch.round(w / scale.unsqueeze(2) + zero.unsqueeze(2)).clamp_(0, grid.max_code)
    return q.reshape(rows, columns).to(torch.uint8)


def dequantize(codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``(q - zero) * scale`` for codes ``[out, in]`` and per-group ``scale``/``zero``."""
    rows, columns = codes.shape
    q = codes.to(torch.float32).reshape(rows, scale.shape[1], -1)
    w = (q - zero.to(torch.float32).unsqueeze(2)) * scale.to(torch.float32).unsqueeze(2)
    return w.reshape(rows, columns).to(dtype)


def fake_quantize(weight: torch.Tensor, grid: QuantGrid) -> torch.Tensor:
    """``weight`` rounded to nearest on ``grid`` and dequantized (same shape and dtype)."""
    scale, zero = grid_params(weight, grid)
    return dequantize(quantize(weight, scale, zero, grid), scale, zero, weight.dtype)


def packed_row_bytes(columns: int, bits: int) -> int:
    codes, nbytes = _CODES_PER_WORD[bits]
    return -(-columns // codes) * nbytes


def pack(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack ``uint8`` codes ``[rows, columns]`` (each < 2^bits) densely along rows."""
    if bits not in _CODES_PER_WORD:
        raise ValueError(f"unsupported bit width {bits}")
    if codes.dtype != torch.uint8 or codes.dim() != 2:
        raise ValueError("pack() takes a 2-D uint8 tensor of codes")
    if bits == 8:
        return codes.contiguous()
    rows, columns = codes.shape
    per_word, nbytes = _CODES_PER_WORD[bits]
    words = -(-columns // per_word)
    padded = torch.zeros(rows, words * per_word, dtype=torch.int32, device=codes.device)
    padded[:, :columns] = codes
    padded = padded.reshape(rows, words, per_word)
    shifts = torch.arange(per_word, dtype=torch.int32, device=codes.device) * bits
    word = (padded << shifts).sum(dim=2, dtype=torch.int32)  # < 2^24: exact in int32
    parts = [((word >> (8 * b)) & 0xFF).to(torch.uint8) for b in range(nbytes)]
    return torch.stack(parts, dim=2).reshape(rows, words * nbytes)


def unpack(packed: torch.Tensor, bits: int, columns: int) -> torch.Tensor:
    """Inverse of :func:`pack`: ``uint8`` codes ``[rows, columns]``."""
    if bits not in _CODES_PER_WORD:
        raise ValueError(f"unsupported bit width {bits}")
    rows = packed.shape[0]
    if packed.shape[1] != packed_row_bytes(columns, bits):
        raise ValueError(f"packed rows of {packed.shape[1]} bytes do not hold {columns} {bits}-bit codes")
    if bits == 8:
        return packed
    per_word, nbytes = _CODES_PER_WORD[bits]
    parts = packed.reshape(rows, -1, nbytes).to(torch.int32)
    word = parts[:, :, 0].clone()
    for b in range(1, nbytes):
        word |= parts[:, :, b] << (8 * b)
    shifts = torch.arange(per_word, dtype=torch.int32, device=packed.device) * bits
    codes = (word.unsqueeze(2) >> shifts) & ((1 << bits) - 1)
    return codes.reshape(rows, -1)[:, :columns].to(torch.uint8)
