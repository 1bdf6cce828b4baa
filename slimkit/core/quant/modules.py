"""Quantized replacements for ``nn.Linear`` and ``nn.Embedding`` that keep real integer storage.

:class:`QuantizedLinear` holds the packed codes (``qweight``), per-group ``scales`` (float16) and,
for asymmetric grids, ``zeros`` (uint8 codes) as buffers, so ``state_dict`` is the stored form. Its
forward picks the fastest path torch offers on the device, prepared once and not saved:

* ``int8-weight``: 8-bit symmetric per-channel weights, float activations:
  ``aten._weight_int8pack_mm`` (reads one byte per weight). On CUDA, where that kernel ran 5x
  slower than a bfloat16 matmul (H100, torch 2.11), ``int8-cast`` instead: the int8 codes cast to
  the activations' dtype, a float matmul, the per-channel scale applied to the output.

  Both weight-only kernels take the activations in bfloat16 and serve calls of at most
  ``KERNEL_MAX_ROWS`` rows (decoding); longer inputs (prefill, perplexity) dequantize the weight
  and use a float matmul.
* ``int4-tinygemm``: 4-bit with group widths that are multiples of 32 (per channel too, when the
  row length is; a group of 96 runs as three kernel groups of 32 sharing a scale):
  ``aten._weight_int4pack_mm_for_cpu`` on CPU
  (``_weight_int4pack_mm`` on CUDA, for row lengths that are multiples of 32), which computes ``(q - 8) * scale + offset``; slimkit's
  ``(q - zero) * scale`` maps to it with ``offset = (8 - zero) * scale``.
* ``int8-dynamic``: W8A8 (SmoothQuant): each token's activations quantized to int8 on the fly
  (symmetric, per token), ``torch._int_mm`` in int32, rescaled by both scales (on CUDA, calls
  of at most 16 rows are padded: cuBLASLt refuses them).

Every path was checked on an H100 (torch 2.11) against a float matmul with the dequantized weight
(relative error 3e-3 to 7e-3 from bfloat16 activations, exact on the dequantize path).
* ``dequantize``: anything else (3 bits, 2 bits, group widths not a multiple of 32): the weight
  is dequantized on the fly for each call; correct everywhere, and slow for decoding (several
  times slower than the float model).

8-bit symmetric codes are stored centred, as ``int8`` (``q - 128``), which is what the integer
kernels read; every other grid stores unsigned codes packed by :mod:`.formats`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from slimkit.core.quant.formats import QuantGrid, dequantize, grid_params, pack, packed_row_bytes, quantize, unpack

SCALE_DTYPE = torch.float16
# The weight-only kernels are matrix-vector kernels with fast paths for bfloat16 activations
# (float32 ones take a reference path several times slower than a float32 matmul on this CPU),
# and their cost grows with every row: decode (a few rows) goes through them in bfloat16,
# prefill (hundreds of rows) dequantizes the weight once and uses an ordinary matmul.
KERNEL_DTYPE = torch.bfloat16
KERNEL_MAX_ROWS = 16
EMBEDDING_CHUNK_ELEMENTS = 1 << 21  # weights quantized at once when an embedding table becomes int8
TINYGEMM_GROUPS = (32, 64, 128, 256)
CUDA_INNER_K_TILES = (8, 4, 2)  # the CUDA int4 packing's tiles of 16 inputs; the row length must divide into them
ACTIVATIONS = (None, "int8")


def fp16_exact(scale: torch.Tensor) -> torch.Tensor:
    """Scales as they will be stored (float16), so codes are chosen against the stored value.
    Rounded up, never down: a smaller scale would push a group's extreme weights past the grid's
    end and clip them by more than half a step."""
    stored = scale.to(SCALE_DTYPE)
    up = torch.nextafter(stored, torch.full_like(stored, float("inf")))
    stored = torch.where(stored.to(torch.float32) < scale, up, stored).to(torch.float32)
    return torch.where(stored > 0, stored, torch.full_like(stored, torch.finfo(SCALE_DTYPE).tiny))


def _centre(codes: torch.Tensor) -> torch.Tensor:
    """Unsigned 8-bit codes as the signed ``int8`` the kernels read (``q - 128``)."""
    return (codes.to(torch.int16) - 128).to(torch.int8)


def centred(grid: QuantGrid) -> bool:
    """Whether codes are stored as signed ``int8`` (8-bit symmetric)."""
    return grid.bits == 8 and grid.symmetric


def _int_mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``torch._int_mm`` (int8 x int8 -> int32); on CUDA, whose kernel (cuBLASLt) takes more than 16
    rows in multiples of 8, fewer or odd rows are padded with zeros and the padding dropped."""
    rows = a.shape[0]
    if a.device.type != "cuda" or (rows > 16 and rows % 8 == 0):
        return torch._int_mm(a, b)
    padded = max(24, -(-rows // 8) * 8)
    return torch._int_mm(F.pad(a, (0, 0, 0, padded - rows)), b)[:rows]


class QuantizedLinear(nn.Module):
    """A linear layer with integer weights (see the module docstring)."""

    qweight: torch.Tensor
    scales: torch.Tensor
    zeros: torch.Tensor | None
    bias: torch.Tensor | None

    def __init__(self, in_features: int, out_features: int, grid: QuantGrid, *, bias: bool = False,
                 activations: str | None = None, device: Any = None) -> None:
        super().__init__()
        if activations not in ACTIVATIONS:
            raise ValueError(f"activations must be None or 'int8', got {activations!r}")
        if activations == "int8" and not (centred(grid) and grid.group_size is None):
            raise ValueError("int8 activations need int8 symmetric per-channel weights")
        self.in_features, self.out_features, self.grid, self.activations = in_features, out_features, grid, activations
        groups = grid.groups(in_features)
        if centred(grid):
            qweight = torch.zeros(out_features, in_features, dtype=torch.int8, device=device)
        else:
            qweight = torch.zeros(out_features, packed_row_bytes(in_features, grid.bits), dtype=torch.uint8,
                                  device=device)
        self.register_buffer("qweight", qweight)
        self.register_buffer("scales", torch.ones(out_features, groups, dtype=SCALE_DTYPE, device=device))
        zeros = None if grid.symmetric else torch.zeros(out_features, groups, dtype=torch.uint8, device=device)
        self.register_buffer("zeros", zeros)
        self.register_buffer("bias", torch.zeros(out_features, device=device) if bias else None)
        self._kernel: tuple[str, Any] | None = None
        self._register_load_state_dict_pre_hook(lambda *args, **kwargs: self.invalidate())

    # -- building ---------------------------------------------------------------------------
    @classmethod
    def from_codes(cls, codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, grid: QuantGrid, *,
                   bias: torch.Tensor | None = None, activations: str | None = None) -> "QuantizedLinear":
        """From unsigned codes ``[out, in]`` and per-group ``scale``/``zero`` (``[out, groups]``,
        as :func:`.formats.grid_params` gives them; scales must already be float16-exact)."""
        out_features, in_features = codes.shape
        module = cls(in_features, out_features, grid, bias=bias is not None, activations=activations,
                     device=codes.device)
        with torch.no_grad():
            if centred(grid):
                module.qweight.copy_(_centre(codes))
            else:
                module.qweight.copy_(pack(codes.to(torch.uint8), grid.bits))
            if module.zeros is not None:
                module.zeros.copy_(zero.to(torch.uint8))
            module.scales.copy_(scale.to(SCALE_DTYPE))
            if bias is not None and module.bias is not None:
                module.bias.copy_(bias.detach().float())
        return module

    def codes(self) -> torch.Tensor:
        """Unsigned codes ``[out, in]`` (uint8)."""
        if centred(self.grid):
            return (self.qweight.to(torch.int16) + 128).to(torch.uint8)
        return unpack(self.qweight, self.grid.bits, self.in_features)

    def zero_codes(self) -> torch.Tensor:
        if self.zeros is not None:
            return self.zeros.to(torch.float32)
        return torch.full(tuple(self.scales.shape), float(1 << (self.grid.bits - 1)), device=self.scales.device)

    def dequantized_weight(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The float weight ``[out, in]`` these codes stand for."""
        return dequantize(self.codes(), self.scales.float(), self.zero_codes(), dtype)

    # -- running ----------------------------------------------------------------------------
    def invalidate(self) -> None:
        """Forget the prepared kernel (after the buffers were changed)."""
        self._kernel = None

    @property
    def kernel(self) -> str:
        """Which path forward uses (prepared on first use)."""
        return self._prepare()[0]

    def _prepare(self) -> tuple[str, Any]:
        if self._kernel is not None:
            return self._kernel
        grid, device = self.grid, self.qweight.device
        kernel: tuple[str, Any] = ("dequantize", None)
        if self.activations == "int8":
            kernel = ("int8-dynamic", self.scales.float().reshape(-1))
        elif centred(grid) and grid.group_size is None and device.type == "cuda":
            kernel = ("int8-cast", self.scales.reshape(-1).float())
        elif centred(grid) and grid.group_size is None and hasattr(torch.ops.aten, "_weight_int8pack_mm"):
            kernel = ("int8-weight", self.scales.reshape(-1).to(KERNEL_DTYPE))
        elif grid.bits == 4 and self._kernel_group() is not None:
            kernel = self._tinygemm(device) or kernel
        self._kernel = kernel
        return kernel

    def _kernel_group(self) -> int | None:
        """The kernel's group size for this layer: the largest of 32/64/128/256 that divides the
        stored group width (a group of 96, or a whole 576-wide row, is several kernel groups with
        repeated scales: the same dequantized values), or ``None`` if none does."""
        width = self.grid.group_width(self.in_features)
        return next((g for g in sorted(TINYGEMM_GROUPS, reverse=True) if width % g == 0), None)

    def _tinygemm(self, device: torch.device) -> tuple[str, Any] | None:
        group = self._kernel_group()
        assert group is not None
        repeat = self.grid.group_width(self.in_features) // group
        scale = self.scales.float().repeat_interleave(repeat, dim=1)
        offset = (8.0 - self.zero_codes()).repeat_interleave(repeat, dim=1) * scale
        scales_and_zeros = torch.stack([scale.t(), offset.t()], dim=2).contiguous()  # [groups, out, 2]
        codes = self.codes().to(torch.int32)
        try:
            if device.type == "cpu":
                packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, 1)
                run = torch.ops.aten._weight_int4pack_mm_for_cpu
            else:
                tiles = next((t for t in CUDA_INNER_K_TILES if self.in_features % (16 * t) == 0), None)
                if tiles is None:
                    return None
                both = codes[:, ::2] << 4 | codes[:, 1::2]
                packed = torch.ops.aten._convert_weight_to_int4pack(both.to(torch.uint8), tiles)
                run = torch.ops.aten._weight_int4pack_mm
        except (RuntimeError, AttributeError, NotImplementedError):
            return None  # shape or device the kernel does not take: dequantize instead
        return ("int4-tinygemm", (packed, scales_and_zeros.to(KERNEL_DTYPE), run, group))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        name, state = self._prepare()
        shape = x.shape
        rows = x.reshape(-1, self.in_features)
        small = rows.shape[0] <= KERNEL_MAX_ROWS
        if name == "int8-weight" and small:
            y = torch.ops.aten._weight_int8pack_mm(rows.to(KERNEL_DTYPE), self.qweight, state)
            y = y.to(rows.dtype)
        elif name == "int4-tinygemm" and small:
            packed, scales_and_zeros, run, group = state
            y = run(rows.to(KERNEL_DTYPE), packed, group, scales_and_zeros)
            y = y.to(rows.dtype)
        elif name == "int8-cast":
            y = F.linear(rows, self.qweight.to(rows.dtype)) * state.to(rows.dtype)
        elif name == "int8-dynamic":
            step = rows.abs().amax(dim=1, keepdim=True).float().clamp(min=1e-8) / 127.0
            xq = torch.round(rows.float() / step).clamp_(-127, 127).to(torch.int8)
            y = (_int_mm(xq, self.qweight.t()).float() * step * state).to(rows.dtype)
        else:
            y = F.linear(rows, self.dequantized_weight(rows.dtype))
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        return y.reshape(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        act = ", activations=int8" if self.activations else ""
        return f"in_features={self.in_features}, out_features={self.out_features}, {self.grid.describe()}{act}"


class QuantizedEmbedding(nn.Module):
    """An embedding table with int8 symmetric per-row codes (rows are dequantized on lookup).

    A tied output head is a :class:`QuantizedLinear` built by :meth:`tied_head` that shares these
    very buffers, so the table is stored and held once."""

    qweight: torch.Tensor
    scales: torch.Tensor

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None,
                 device: Any = None) -> None:
        super().__init__()
        self.num_embeddings, self.embedding_dim, self.padding_idx = num_embeddings, embedding_dim, padding_idx
        self.grid = QuantGrid(bits=8, group_size=None, symmetric=True)
        self.register_buffer("qweight", torch.zeros(num_embeddings, embedding_dim, dtype=torch.int8, device=device))
        self.register_buffer("scales", torch.ones(num_embeddings, 1, dtype=SCALE_DTYPE, device=device))

    @classmethod
    def from_embedding(cls, embedding: nn.Embedding) -> "QuantizedEmbedding":
        weight = embedding.weight.detach()
        module = cls(weight.shape[0], weight.shape[1], embedding.padding_idx, device=weight.device)
        chunk = max(1, EMBEDDING_CHUNK_ELEMENTS // max(1, weight.shape[1]))
        with torch.no_grad():
            for start in range(0, weight.shape[0], chunk):  # rows in chunks: the temporaries of a whole
                rows = weight[start:start + chunk]  # 49152 x 576 table would be ~110 MB each
                scale, zero = grid_params(rows, module.grid)
                scale = fp16_exact(scale)
                module.qweight[start:start + chunk] = _centre(quantize(rows, scale, zero, module.grid))
                module.scales[start:start + chunk] = scale.to(SCALE_DTYPE)
        return module

    def tied_head(self, bias: torch.Tensor | None = None) -> QuantizedLinear:
        head = QuantizedLinear(self.embedding_dim, self.num_embeddings, self.grid, bias=bias is not None,
                               device=torch.device("meta"))  # no table-sized buffers made only to be dropped
        head.qweight, head.scales = self.qweight, self.scales  # the same tensors: stored once
        if head.bias is not None:
            head.bias = torch.zeros(self.num_embeddings, device=self.qweight.device)
        if bias is not None and head.bias is not None:
            with torch.no_grad():
                head.bias.copy_(bias.detach().float())
        return head

    @property
    def weight(self) -> torch.Tensor:
        """The dequantized table (for code that reads ``embedding.weight``)."""
        return self.qweight.float() * self.scales.float()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows = F.embedding(ids, self.qweight)
        return rows.float() * F.embedding(ids, self.scales).float()

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, int8 sym per row"
