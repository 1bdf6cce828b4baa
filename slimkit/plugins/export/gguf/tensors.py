"""Which GGUF type holds which slimkit grid, and slimkit's codes written straight into GGUF blocks.

The three GGUF block types slimkit writes (layouts as gguf-py's ``quants.py`` reads them; every
block covers 32 consecutive inputs of one row, little-endian):

* ``Q4_0`` (18 bytes): float16 ``d``, then 16 bytes whose low nibbles are elements 0..15 and high
  nibbles elements 16..31; ``w = (q - 8) * d``. That is slimkit's int4 symmetric grid itself
  (zero fixed at 8), so codes and float16 scales are copied, never re-rounded. Symmetric 2- and
  3-bit codes fit too (``q - 2^(b-1) + 8`` stays in 0..15), exactly.
* ``Q8_0`` (34 bytes): float16 ``d``, 32 ``int8``; ``w = x * d``. Holds any symmetric grid
  (``x = q - 2^(b-1)``) and asymmetric grids of up to 7 bits (``x = q - zero`` stays in
  -127..127) exactly; int8 asymmetric only where every ``q - zero`` fits in -128..127.
* ``Q4_1`` (20 bytes): float16 ``d``, float16 ``m``, 16 nibble bytes as Q4_0; ``w = q * d + m``.
  slimkit's asymmetric ``(q - zero) * scale`` becomes ``d = scale`` (exact) and ``m = -zero *
  scale`` rounded to float16, which is not exact: ``|m + zero*scale| <= 2^-11 * zero * scale``
  (half a float16 unit; ``2^-25`` absolute below float16's normal range), and llama.cpp's and
  gguf-py's float32 sum adds at most ``2^-24 |w|``. So every weight is within
  ``zero * scale / 2048 + |w| / 2^24 + 2^-25`` of slimkit's, i.e. under 0.8% of one grid step
  (:func:`q4_1_bound`). Symmetric grids written as Q4_1 are exact (``m = -2^(b-1) * scale``
  scales a float16 by a power of two).

A group of 64 or 128 is two or four blocks sharing the scale; a per-channel grid is one scale
repeated over the row's blocks, so a group (or a per-channel row) must be a multiple of 32 inputs.
Float layers go out as F32, F16 or BF16 (``gguf.quants``' own conversions), or, only when asked,
re-quantized by ``gguf.quants.quantize`` (llama.cpp's reference quantizers, no importance matrix).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

BLOCK = 32
FLOAT_TYPES = ("F32", "F16", "BF16")
BLOCK_TYPES = ("Q4_0", "Q4_1", "Q8_0")
TYPES = BLOCK_TYPES + FLOAT_TYPES
FP16_MAX = 65504.0


def ggml_type(name: str) -> Any:
    """The ``gguf.GGMLQuantizationType`` called ``name``."""
    import gguf

    return gguf.GGMLQuantizationType[name]


@dataclass(frozen=True)
class Codes:
    """A quantized weight as slimkit stores it, read lazily from its module: unsigned codes
    ``[rows, cols]``, float16 scales and zero codes ``[rows, groups]``, and the grid. ``rows``
    optionally reorders the rows (the rope permutation of q/k projections)."""

    module: Any = field(repr=False, compare=False)
    bits: int
    group_size: int | None
    symmetric: bool
    shape: tuple[int, int]
    rows: torch.Tensor | None = field(default=None, repr=False, compare=False)

    @classmethod
    def of(cls, module: Any, rows: torch.Tensor | None = None) -> "Codes":
        """From a ``QuantizedLinear`` or a ``QuantizedEmbedding`` (int8 per row); nothing unpacked yet."""
        grid = module.grid
        shape = (int(module.qweight.shape[0]), int(getattr(module, "in_features", module.qweight.shape[1])))
        return cls(module, grid.bits, grid.group_size, grid.symmetric, shape, rows)

    def _ordered(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor if self.rows is None else tensor[self.rows]

    def codes(self) -> torch.Tensor:
        if hasattr(self.module, "codes"):
            return self._ordered(self.module.codes())
        # QuantizedEmbedding: int8 codes stored centred (q - 128)
        return self._ordered((self.module.qweight.to(torch.int16) + 128).to(torch.uint8))

    def scales(self) -> torch.Tensor:
        return self._ordered(self.module.scales)

    def zeros(self) -> torch.Tensor:
        if hasattr(self.module, "zero_codes"):
            return self._ordered(self.module.zero_codes())
        return torch.full(tuple(self.module.scales.shape), 128.0)

    def describe(self) -> str:
        group = "per channel" if self.group_size is None else f"g{self.group_size}"
        return f"int{self.bits} {'sym' if self.symmetric else 'asym'} {group}"

    def dequantized(self) -> torch.Tensor:
        """slimkit's float32 weight ``(q - zero) * scale`` (what it measured)."""
        rows, cols = self.shape
        scales = self.scales()
        q = self.codes().to(torch.float32).reshape(rows, scales.shape[1], -1)
        w = (q - self.zeros().to(torch.float32).unsqueeze(2)) * scales.to(torch.float32).unsqueeze(2)
        return w.reshape(rows, cols)


def auto_type(codes: Codes) -> str | None:
    """The GGUF type that holds these codes at their own size: Q4_0 (int4 symmetric), Q4_1 (int4
    asymmetric), Q8_0 (int8 symmetric); ``None`` for any other grid."""
    if codes.bits == 4:
        return "Q4_0" if codes.symmetric else "Q4_1"
    if codes.bits == 8 and codes.symmetric:
        return "Q8_0"
    return None


def block_problem(codes: Codes, target: str) -> str | None:
    """Why ``codes`` cannot be written exactly as block type ``target`` (``None`` when they can)."""
    rows, cols = codes.shape
    width = cols if codes.group_size is None else codes.group_size
    if width % BLOCK:
        if codes.group_size is None:
            return (f"its rows of {cols} inputs are not a multiple of GGUF's {BLOCK}-weight blocks, so only "
                    f"float types hold it: leave it out of slimkit's quantization (roles), or write every "
                    f"layer as float (weights=F32)")
        sizes = [g for g in range(BLOCK, cols + 1, BLOCK) if cols % g == 0]
        works = ", ".join(map(str, sizes)) + " or per channel" if sizes else "none (rows are not a multiple of 32)"
        return (f"group size {codes.group_size} does not fill GGUF's {BLOCK}-weight blocks "
                f"(group sizes that work for its {cols} inputs: {works})")
    if target == "Q4_0" and not codes.symmetric:
        return f"{codes.describe()} has zero points, which Q4_0 (w = (q - 8) * d) cannot hold; Q4_1 holds them"
    if target in ("Q4_0", "Q4_1") and codes.bits > 4:
        return f"{codes.describe()} codes do not fit 4-bit {target} blocks; Q8_0 holds them exactly"
    if target == "Q8_0" and codes.bits == 8 and not codes.symmetric:
        centred = codes.codes().to(torch.int16) - _per_element(codes.zeros(), cols).to(torch.int16)
        if int(centred.min()) < -128 or int(centred.max()) > 127:
            return (f"{codes.describe()}: some q - zero fall outside Q8_0's int8 range; "
                    "write it as F32 (exact) or quantize symmetric int8")
    if target == "Q4_1" and not codes.symmetric:
        if float((codes.zeros().float() * codes.scales().float()).max()) > FP16_MAX:
            return "its zero point times scale overflows Q4_1's float16 minimum"
    return None


def _per_element(per_group: torch.Tensor, cols: int) -> torch.Tensor:
    """``[rows, groups]`` values repeated over each group's inputs: ``[rows, cols]``."""
    return per_group.repeat_interleave(cols // per_group.shape[1], dim=1)


def _per_block(per_group: torch.Tensor, cols: int) -> np.ndarray:
    """``[rows, groups]`` values repeated over each group's 32-input blocks: ``[rows, blocks]``."""
    return per_group.repeat_interleave(cols // BLOCK // per_group.shape[1], dim=1).numpy()


def _fp16_bytes(values: np.ndarray) -> np.ndarray:
    """float16 values ``[rows, blocks]`` as their two little-endian bytes ``[rows, blocks, 2]``."""
    return values.astype("<f2").view(np.uint8).reshape(*values.shape, 2)


def _nibbles(q: np.ndarray) -> np.ndarray:
    """4-bit values ``[rows, blocks, 32]`` packed as GGUF does: byte j = q[j] | q[j + 16] << 4."""
    return (q[..., :16] | (q[..., 16:] << 4)).astype(np.uint8)


def pack_blocks(codes: Codes, target: str) -> np.ndarray:
    """slimkit's codes and scales as ``target`` blocks, ``uint8 [rows, blocks * block_bytes]``
    (``gguf.GGUFWriter.add_tensor(..., raw_dtype=...)`` takes it as is). Call only when
    :func:`block_problem` found none."""
    rows, cols = codes.shape
    blocks = cols // BLOCK
    q = codes.codes().to(torch.int16)
    scales, zeros = codes.scales(), codes.zeros()
    scale = _per_block(scales.to(torch.float16), cols)
    if target == "Q4_1":
        # zero (<= 8 bits) times a float16 scale (11 bits) is exact in float32; the one rounding is to float16
        zero_scale = -(zeros.to(torch.float32) * scales.to(torch.float32))
        minimum = _per_block(zero_scale.to(torch.float16), cols)
        nibbles = _nibbles(q.numpy().astype(np.uint8).reshape(rows, blocks, BLOCK))
        parts = [_fp16_bytes(scale), _fp16_bytes(minimum), nibbles]
    else:
        centred = (q - _per_element(zeros, cols).to(torch.int16)).numpy()
        if target == "Q4_0":
            stored = (centred + 8).astype(np.uint8).reshape(rows, blocks, BLOCK)
            parts = [_fp16_bytes(scale), _nibbles(stored)]
        else:  # Q8_0
            stored = centred.astype(np.int8).view(np.uint8).reshape(rows, blocks, BLOCK)
            parts = [_fp16_bytes(scale), stored]
    return np.concatenate(parts, axis=2).reshape(rows, -1)


def q4_1_bound(codes: Codes) -> torch.Tensor:
    """Per-weight bound ``[rows, cols]`` on ``|Q4_1 value - slimkit's value|`` (module docstring)."""
    rows, cols = codes.shape
    zero_scale = _per_element(codes.zeros().float() * codes.scales().float(), cols)
    return zero_scale * 2.0 ** -11 + codes.dequantized().abs() * 2.0 ** -24 + 2.0 ** -25


def float_array(weight: torch.Tensor, target: str) -> np.ndarray:
    """A float weight as ``target``: F32/F16 as numpy floats; BF16 and the block types as bytes
    from ``gguf.quants.quantize`` (llama.cpp's reference rounding)."""
    import gguf

    data = weight.detach().to(torch.float32).contiguous().numpy()
    if target == "F32":
        return data
    if target == "F16":
        return data.astype(np.float16)
    return gguf.quants.quantize(data, ggml_type(target))


def tensor_bytes(shape: tuple[int, ...], target: str) -> int:
    """Bytes a tensor of logical ``shape`` takes as ``target``."""
    import gguf

    block, size = gguf.GGML_QUANT_SIZES[ggml_type(target)]
    count = int(np.prod(shape))
    return count // block * size
