"""slimkit's stored tensors as compressed-tensors names them, written as they are (never re-rounded).

``pack-quantized`` (compressed-tensors >= 0.18) packs a row of ``b``-bit codes as one dense
little-endian bit stream: code ``i`` sits at bit ``i * b`` of the row, in int32 words, and a row
takes ``ceil(columns * b / 32)`` words. slimkit's packed rows are that same bit stream in bytes
(4 bits: two codes per byte, low nibble first; 2 bits: four per byte; 3 bits: eight codes in three
bytes; 8 bits: one per byte), only padded to whole bytes or 3-byte words rather than int32 words:
so ``weight_packed`` is slimkit's ``qweight`` with each row cut or zero-padded to whole int32
words. compressed-tensors stores the unsigned code ``q = value + 2^(b-1)`` of a signed value, and
dequantizes ``(value - zero_point) * scale``: slimkit's unsigned codes (``(q - zero) * scale``)
are those very bits, and an asymmetric zero ``z`` is the signed zero point ``z - 2^(b-1)``, which
compressed-tensors packs along the output dimension (``packed_dim=0``).

Scales are written as float32 copies of slimkit's float16 scales. compressed-tensors dequantizes
``(q - z) * scale`` in the scale's dtype, and in float16 that product is not exact (a 4-bit integer
times an 11-bit mantissa needs up to 15 bits), while in float32 it is. transformers' default path
copies the scale into a parameter of the model's dtype first (float32 in these exports), but its
``dequantize=True`` path (the one asymmetric exports need) multiplies in the stored dtype: with
float16 scales 12.3% of SmolLM2-135M's int4 g64 weights came out different (max |logit
difference| 0.022); with float32, none. vLLM copies the scales into its own float16/bfloat16
parameters either way.
"""

from __future__ import annotations

import sys
from typing import Literal

import torch

from slimkit import QuantizedEmbedding, QuantizedLinear

#: Where the zero points of asymmetric layers go (see ``zero_point_layout`` in the exporter's config).
ZeroPointLayout = Literal["packed", "transformers"]


def words(columns: int, bits: int) -> int:
    """int32 words of one packed row of ``columns`` codes."""
    return -(-columns * bits // 32)


def as_int32(raw: torch.Tensor) -> torch.Tensor:
    """Rows of little-endian bytes (``uint8 [rows, 4k]``) as int32 words ``[rows, k]``."""
    raw = raw.contiguous()
    if sys.byteorder == "big":  # safetensors stores little-endian words; this host reads big-endian
        raw = raw.reshape(raw.shape[0], -1, 4).flip(-1).contiguous()
    return raw.view(torch.int32).reshape(raw.shape[0], -1)


def unsigned_codes_bytes(module: QuantizedLinear) -> torch.Tensor:
    """slimkit's packed rows as bytes of unsigned codes (8-bit symmetric codes are stored centred)."""
    q = module.qweight.detach().cpu()
    if q.dtype == torch.int8:
        return (q.to(torch.int16) + 128).to(torch.uint8)
    return q


def weight_packed(module: QuantizedLinear) -> torch.Tensor:
    """``weight_packed`` (int32 ``[out, ceil(in * bits / 32)]``) from slimkit's packed rows."""
    raw = unsigned_codes_bytes(module)
    target = 4 * words(module.in_features, module.grid.bits)
    kept = min(target, raw.shape[1])
    if bool((raw[:, kept:] != 0).any()):  # only padding may be dropped
        raise AssertionError(f"packed rows of {module.in_features} codes carry data past byte {kept}")
    out = torch.zeros(raw.shape[0], target, dtype=torch.uint8)
    out[:, :kept] = raw[:, :kept]
    return as_int32(out)


def pack_columns(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack unsigned codes ``[rows, columns]`` along the rows into int32 ``[rows, words]`` (the
    dense bit stream above), for codes that slimkit does not store packed (zero points)."""
    rows, columns = codes.shape
    bitplanes = (codes.to(torch.int32).unsqueeze(2) >> torch.arange(bits, dtype=torch.int32)) & 1
    stream = torch.zeros(rows, 32 * words(columns, bits), dtype=torch.int32)
    stream[:, : columns * bits] = bitplanes.reshape(rows, columns * bits)
    raw = (stream.reshape(rows, -1, 8) << torch.arange(8, dtype=torch.int32)).sum(dim=2)
    return as_int32(raw.to(torch.uint8))


def first_codes(module: QuantizedLinear, rows: int) -> torch.Tensor:
    """The unsigned codes of the first ``rows`` rows, read from the bit stream (cheap: slimkit's
    ``codes()`` unpacks the whole layer)."""
    raw = unsigned_codes_bytes(module)[:rows].to(torch.int32)
    bits, columns = module.grid.bits, module.in_features
    stream = ((raw.unsqueeze(2) >> torch.arange(8, dtype=torch.int32)) & 1).reshape(raw.shape[0], -1)
    planes = stream[:, : columns * bits].reshape(raw.shape[0], columns, bits)
    return (planes << torch.arange(bits, dtype=torch.int32)).sum(dim=2)


def weight_zero_point(module: QuantizedLinear, layout: ZeroPointLayout) -> torch.Tensor:
    """Asymmetric zero points packed along the outputs: int32 ``[ceil(out * bits / 32), groups]``
    (``packed``, what compressed-tensors writes and vLLM reads); ``transformers`` writes the same
    words padded with zero rows to the unpacked shape ``[out, groups]``, the shape transformers
    5.25 allocates before loading (it reads the words it needs and ignores the rest)."""
    assert module.zeros is not None
    zeros = module.zeros.detach().cpu()
    packed = pack_columns(zeros.t().contiguous(), module.grid.bits).t().contiguous()
    if layout == "packed":
        return packed
    padded = torch.zeros(tuple(zeros.shape), dtype=torch.int32)
    padded[: packed.shape[0]] = packed
    return padded


def quantized_tensors(name: str, module: QuantizedLinear, layout: ZeroPointLayout,
                      dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Every tensor of one quantized layer, by its key in the folder."""
    scale = module.scales.detach().cpu().to(torch.float32).contiguous()  # exact copies (see above)
    if module.activations == "int8":  # int-quantized: the centred int8 codes are the weight
        tensors = {f"{name}.weight": module.qweight.detach().cpu().contiguous(), f"{name}.weight_scale": scale}
    else:
        tensors = {
            f"{name}.weight_packed": weight_packed(module),
            f"{name}.weight_scale": scale,
            f"{name}.weight_shape": torch.tensor([module.out_features, module.in_features], dtype=torch.int64),
        }
        if not module.grid.symmetric:
            tensors[f"{name}.weight_zero_point"] = weight_zero_point(module, layout)
    if module.bias is not None:
        tensors[f"{name}.bias"] = module.bias.detach().cpu().to(dtype).contiguous()
    return tensors


def dequantized_tensors(name: str, module: QuantizedLinear | QuantizedEmbedding,
                        dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """A layer written as float: its dequantized weight (exact in float32) and bias."""
    if isinstance(module, QuantizedEmbedding):
        weight = module.weight.detach()
        bias = None
    else:
        weight = module.dequantized_weight(torch.float32).detach()
        bias = module.bias
    tensors = {f"{name}.weight": weight.cpu().to(dtype).contiguous()}
    if bias is not None:
        tensors[f"{name}.bias"] = bias.detach().cpu().to(dtype).contiguous()
    return tensors
