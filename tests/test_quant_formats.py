"""Integer grids, packing and quantized modules, against direct float computations."""

from __future__ import annotations

import pytest
import torch

from slimkit.core.quant.formats import QuantGrid, dequantize, grid_params, pack, packed_row_bytes, quantize, unpack
from slimkit.core.quant.modules import QuantizedEmbedding, QuantizedLinear
from slimkit.core.quant.modules import fp16_exact


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("columns", [1, 7, 8, 64, 173])
def test_pack_unpack_round_trip_is_exact(bits, columns):
    codes = torch.randint(0, 1 << bits, (5, columns), generator=torch.Generator().manual_seed(bits), dtype=torch.uint8)
    packed = pack(codes, bits)
    assert packed.dtype == torch.uint8 and packed.shape == (5, packed_row_bytes(columns, bits))
    assert torch.equal(unpack(packed, bits, columns), codes)


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_packing_stays_on_the_codes_device(bits):
    """A quantized model moved to a GPU unpacks there; "meta" stands in for it on CPU-only CI (a
    helper tensor made on the CPU fails the same way on both)."""
    codes = torch.zeros(3, 70, dtype=torch.uint8, device="meta")
    packed = pack(codes, bits)
    assert packed.device.type == "meta" and packed.shape == (3, packed_row_bytes(70, bits))
    assert unpack(packed, bits, 70).shape == (3, 70)


def test_packing_is_dense():
    assert packed_row_bytes(576, 4) == 288 and packed_row_bytes(576, 3) == 216 and packed_row_bytes(576, 2) == 144
    # 4 bits: low nibble first
    assert pack(torch.tensor([[1, 2]], dtype=torch.uint8), 4).tolist() == [[0x21]]
    # 3 bits: eight codes in three little-endian bytes
    codes = torch.tensor([[7, 0, 0, 0, 0, 0, 0, 5]], dtype=torch.uint8)
    assert pack(codes, 3).tolist() == [[0x07, 0x00, 0xA0]]


def test_unpack_refuses_a_wrong_length():
    with pytest.raises(ValueError, match="do not hold"):
        unpack(torch.zeros(2, 5, dtype=torch.uint8), 4, 12)


@pytest.mark.parametrize("grid", [QuantGrid(4, 16, True), QuantGrid(4, 16, False), QuantGrid(3, None, False),
                                  QuantGrid(8, None, True), QuantGrid(2, 8, False)], ids=str)
def test_rtn_error_within_half_a_step(grid):
    weight = torch.randn(12, 64, generator=torch.Generator().manual_seed(0))
    scale, zero = grid_params(weight, grid)
    scale = fp16_exact(scale)
    codes = quantize(weight, scale, zero, grid)
    assert int(codes.max()) <= grid.max_code
    error = (dequantize(codes, scale, zero) - weight).abs().reshape(12, scale.shape[1], -1)
    step = scale.unsqueeze(2)
    # at most half a step everywhere, extremes included (nothing is clipped)
    bound = step * 0.5 * (1 + 1e-5)
    assert bool((error <= bound).all())


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_symmetric_grid_holds_the_extremes(bits):
    """The symmetric step is the smallest holding both extremes: the side that sets it is exact
    (up to the float16 scale), the positive side uses at most 2^(b-1)-1 steps, the negative 2^(b-1)."""
    half = 1 << (bits - 1)
    weight = torch.randn(64, 32, generator=torch.Generator().manual_seed(1))
    grid = QuantGrid(bits, 16, True)
    scale, zero = grid_params(weight, grid)
    groups = weight.reshape(64, 2, 16)
    high, low = groups.amax(dim=2), groups.amin(dim=2)
    torch.testing.assert_close(scale, torch.maximum(high / (half - 1), -low / half))
    stored = fp16_exact(scale)
    values = dequantize(quantize(weight, stored, zero, grid), stored, zero).reshape(64, 2, 16)
    sets_it = torch.where(high / (half - 1) >= -low / half, high, low)
    got = torch.where(high / (half - 1) >= -low / half, values.amax(dim=2), values.amin(dim=2))
    # float16 rounding moves the step by < 2^-11 of itself, so the extreme's code is still exact
    # (GPTQ's absmax/(2^b-1)*2 step would leave a positive extreme half a step off)
    torch.testing.assert_close(got, sets_it, rtol=2 ** -10, atol=0)


def test_grid_keeps_zeros_exact():
    weight = torch.randn(4, 32)
    weight[:, ::3] = 0.0
    for grid in (QuantGrid(4, 8, True), QuantGrid(4, 8, False), QuantGrid(3, None, False)):
        scale, zero = grid_params(weight, grid)
        codes = quantize(weight, fp16_exact(scale), zero, grid)
        assert bool((dequantize(codes, fp16_exact(scale), zero)[:, ::3] == 0).all())


def test_bad_grids_are_refused():
    with pytest.raises(ValueError, match="unsupported bit width 5"):
        QuantGrid(5)
    with pytest.raises(ValueError, match="group size 48 does not divide the 64 inputs"):
        QuantGrid(4, 48).groups(64)


@pytest.mark.parametrize("grid,activations,kernel", [
    (QuantGrid(8, None, True), None, "int8-weight"),
    (QuantGrid(8, None, True), "int8", "int8-dynamic"),
    (QuantGrid(4, 32, True), None, "int4-tinygemm"),
    (QuantGrid(4, 64, False), None, "int4-tinygemm"),
    (QuantGrid(4, 48, True), None, "dequantize"),
    (QuantGrid(4, 96, False), None, "int4-tinygemm"),  # three kernel groups of 32 per stored group
    (QuantGrid(4, None, True), None, "int4-tinygemm"),  # a 192-wide row: three kernel groups of 64
    (QuantGrid(3, 32, False), None, "dequantize"),
], ids=["int8", "w8a8", "int4-g32", "int4-asym-g64", "int4-g48", "int4-asym-g96", "int4-channel", "int3"])
def test_quantized_linear_matches_its_dequantized_reference(grid, activations, kernel):
    g = torch.Generator().manual_seed(1)
    weight = torch.randn(96, 192, generator=g) * 0.05
    bias = torch.randn(96, generator=g)
    x = torch.randn(3, 5, 192, generator=g)
    scale, zero = grid_params(weight, grid)
    scale = fp16_exact(scale)
    module = QuantizedLinear.from_codes(quantize(weight, scale, zero, grid), scale, zero, grid, bias=bias,
                                        activations=activations)
    assert module.kernel == kernel
    reference = x @ module.dequantized_weight().T + bias
    out = module(x)  # 15 rows: the integer kernel
    assert out.shape == (3, 5, 96)
    if kernel == "dequantize":
        torch.testing.assert_close(out, reference, rtol=1e-4, atol=1e-4)
    else:  # activations rounded to int8 (W8A8) or passed in bfloat16 (weight-only kernels)
        assert float((out - reference).abs().max()) < 0.02 * float(reference.abs().max())
        assert float((out - reference).abs().max()) > 0  # the kernel really ran
    long = torch.randn(40, 192, generator=g)  # prefill-sized: weight-only layers dequantize once
    if activations is None:
        torch.testing.assert_close(module(long), long @ module.dequantized_weight().T + bias, rtol=1e-4, atol=1e-4)


def test_quantized_embedding_and_tied_head_share_one_table():
    table = torch.nn.Embedding(50, 16)
    quantized = QuantizedEmbedding.from_embedding(table)
    head = quantized.tied_head()
    assert head.qweight is quantized.qweight and head.scales is quantized.scales
    ids = torch.tensor([[1, 7, 49]])
    torch.testing.assert_close(quantized(ids), quantized.weight[ids])
    assert float((quantized.weight - table.weight.detach()).abs().max()) <= float(table.weight.detach().abs().max()) / 127
    # per row, within half a step of the stored (float16) scale: the scale is never rounded down
    row_error = (quantized.weight - table.weight.detach()).abs().amax(dim=1)
    assert bool((row_error <= 0.5 * quantized.scales.float().squeeze(1) * (1 + 1e-5)).all())
    x = torch.randn(40, 16)  # prefill-sized: the dequantized table, exactly
    torch.testing.assert_close(head(x), x @ quantized.weight.T, rtol=1e-4, atol=1e-4)
    step = head(x[:2]) - x[:2] @ quantized.weight.T  # decode-sized: the int8 kernel, bfloat16 activations
    assert float(step.abs().max()) < 0.02 * float((x[:2] @ quantized.weight.T).abs().max())
