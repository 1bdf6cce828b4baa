"""GPTQ: weight quantization with second-order error compensation (Frantar et al., 2023).

Column by column, each weight is rounded to its grid and the rounding error is spread over the
row's not-yet-quantized weights through the upper Cholesky factor ``U`` of ``H⁻¹`` (``H = Σ x xᵀ``
from the calibration engine), so the layer's output on the calibration data moves as little as
possible. Lazy batch updates as in the paper: errors reach the rest of a block of ``block_size``
columns within the block and the rest of the layer once per block. Blocks are processed in
order, each fed the outputs of the already-quantized blocks before it (the sequential protocol).

Choices, stated:

* ``act_order`` quantizes columns by decreasing ``H_jj`` (the paper's "act-order"). Groups then
  stay contiguous in the stored layout: each group's scale and zero are fixed from the weights
  before the sweep ("static groups"), so no per-column group index is needed at inference.
  Without ``act_order`` a group's parameters are computed when the sweep reaches it, from the
  weights as already updated (the reference implementation's behaviour).
* Layers fed the same input (q/k/v, gate/up) share ``H`` and are swept together (rows stacked);
  GPTQ treats rows independently, so this is exactly the same result, one factorisation.
* Weights that are exactly zero (a pruned model) stay exactly zero with ``keep_sparsity``: they
  are quantized to the zero point, which every grid represents exactly, and their error is
  compensated like any other (SparseGPT's joint sparsify-and-quantize).
"""

from __future__ import annotations

import torch
from pydantic import Field

from slimkit import BaseCompressor, QuantGrid, fp16_exact, grid_params, hookimpl, inverse_cholesky_upper
from slimkit.plugins.quantization.common import WeightQuantConfig, finish, replace_with_codes, target_layers


class GPTQConfig(WeightQuantConfig):
    block_size: int = Field(128, ge=1, le=4096, description="Columns updated together (lazy batch updates).")
    dampening: float = Field(0.01, gt=0.0, le=1.0, description="Added to H's diagonal, as a fraction of its mean.")
    act_order: bool = Field(False, description="Quantize columns by decreasing Hessian diagonal (static groups).")
    keep_sparsity: bool = Field(True, description="Weights that are exactly zero stay zero (prune-then-quantize).")


def gptq_quantize(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    grid: QuantGrid,
    *,
    block_size: int = 128,
    dampening: float = 0.01,
    act_order: bool = False,
    keep_sparsity: bool = True,
    overwrite_hessian: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(codes, scale, zero)`` for ``weight`` (``[out, in]``, not changed) given its inputs'
    ``hessian`` (``[in, in]``): codes ``uint8 [out, in]``, scale/zero ``[out, groups]`` (scales
    float16-exact). ``overwrite_hessian``: a float64 ``hessian`` may be destroyed (its memory then
    holds the inverse's factor: no second ``[in, in]`` matrix; see :func:`inverse_cholesky_upper`)."""
    rows, columns = weight.shape
    groups = grid.groups(columns)
    width = grid.group_width(columns)
    W = weight.detach().to(torch.float32, copy=True)
    zeros_mask = (W == 0) if keep_sparsity else None
    if zeros_mask is not None and not bool(zeros_mask.any()):
        zeros_mask = None
    scale = torch.empty(rows, groups)
    zero = torch.empty(rows, groups)
    if act_order:  # static groups, from the weights before any update
        scale, zero = grid_params(W, grid)
        scale = fp16_exact(scale)
    perm = None
    if act_order:
        perm = torch.argsort(torch.diag(hessian), descending=True)
        hessian = hessian[perm.unsqueeze(1), perm]  # one copy; the caller's goes if it handed it over
        overwrite_hessian = True  # the permuted copy is ours
        W = W[:, perm]
        if zeros_mask is not None:
            zeros_mask = zeros_mask[:, perm]
    U, dead = inverse_cholesky_upper(hessian, dampening, overwrite=overwrite_hessian, dtype=torch.float32)
    del hessian  # U is its memory when overwritten; otherwise the caller's
    W[:, dead] = 0.0
    group_of = torch.arange(columns) // width if perm is None else perm // width  # group of each swept column
    codes = torch.empty(rows, columns, dtype=torch.uint8)
    max_code = grid.max_code
    for start in range(0, columns, block_size):
        stop = min(start + block_size, columns)
        W1 = W[:, start:stop].clone()
        U1 = U[start:stop, start:stop]
        Err1 = torch.empty_like(W1)
        for i in range(stop - start):
            column = start + i
            g = int(group_of[column])
            if perm is None and column % width == 0:  # dynamic groups: parameters when reached
                block = torch.cat([W1[:, i:], W[:, stop:]], dim=1)[:, :width]
                if zeros_mask is not None:
                    block = block.masked_fill(zeros_mask[:, column : column + width], 0.0)
                s, z = grid_params(block, QuantGrid(grid.bits, None, grid.symmetric))
                scale[:, g], zero[:, g] = fp16_exact(s[:, 0]), z[:, 0]
            w = W1[:, i]
            s, z = scale[:, g], zero[:, g]
            q = torch.round(w / s + z).clamp_(0, max_code)
            if zeros_mask is not None:
                q = torch.where(zeros_mask[:, column], z, q)
            codes[:, column] = q.to(torch.uint8)
            err = (w - (q - z) * s) / U1[i, i]
            W1[:, i:].addr_(err, U1[i, i:], alpha=-1.0)
            Err1[:, i] = err
        if stop < columns:
            W[:, stop:].addmm_(Err1, U[start:stop, stop:], alpha=-1.0)
    if perm is not None:
        codes = codes[:, torch.argsort(perm)]
    return codes, scale, zero


class GPTQQuantizer(BaseCompressor):
    """Quantize weights with second-order error compensation (GPTQ), block by block."""

    name = "quantize.gptq"
    version = 1
    Config = GPTQConfig
    needs_calibration = True

    def check(self, model, adapter, config, ctx):
        from slimkit import require_hessian_data

        ctx.require_calibration(self.name)  # before the layers: the clearer message when both are wrong
        _, refs = target_layers(model, adapter, config, self.name)
        require_hessian_data(ctx, refs, self.name)

    resumable = True  # its summary comes from the layout, not from per-block figures

    def stream_refusal(self, config, ctx):
        return None  # block by block on the calibration engine

    def compress_(self, model, adapter, config, ctx):
        from slimkit import SequentialCalibration, by_shared_input

        layout, refs = target_layers(model, adapter, config, self.name)
        chosen = {ref.name for ref in refs}
        grid = config.grid()
        engine = SequentialCalibration(model, adapter, ctx.calibration)
        for index, step in enumerate(engine, start=1):
            if step.restored:  # finished by an interrupted streamed run: on disk already
                ctx.report("blocks", index, len(engine), step.block.name)
                continue
            block_refs = [ref for ref in step.block.linears() if ref.name in chosen]
            stats = step.collect(block_refs, ("hessian",), outputs=False)  # the block changes next
            groups = by_shared_input(block_refs, stats)  # layers fed one input: rows stacked, one H

            def solve(group):
                return gptq_quantize(
                    group.stacked_weight(), group.statistics.take_hessian(), grid, block_size=config.block_size,
                    dampening=config.dampening, act_order=config.act_order, keep_sparsity=config.keep_sparsity,
                    overwrite_hessian=True,
                )

            def apply(group, result):
                codes, scale, zero = result
                for ref, rows in group.rows():
                    replace_with_codes(model.model, ref, codes[rows], scale[rows], zero[rows], grid)

            # data-parallel: each group solved by one rank (by its cost), the results broadcast to all
            step.solve_each(groups, solve, lambda group: group.sweep_cost, apply)
            ctx.report("blocks", index, len(engine), step.block.name)
        how = "GPTQ" + (" (act-order)" if config.act_order else "")
        return finish(model, layout, refs, config, how)


@hookimpl
def register_compressors(register):
    register(GPTQQuantizer)
