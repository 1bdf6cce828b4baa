"""SparseGPT: one-shot pruning with second-order weight updates (Frantar & Alistarh, 2023).

For each layer, with H = sum of x xᵀ over the calibration inputs (from the calibration engine),
weights are removed column block by column block; each removed weight's error is spread over the
not-yet-processed weights of its row through the inverse Hessian (Optimal Brain Surgeon with
lazy batch updates), so the layer's outputs on the calibration data change as little as possible.
The mask is chosen adaptively within each column block by ``w² / [H⁻¹]²_jj``, unstructured or N:M.
"""

from __future__ import annotations

from typing import Sequence

import torch
from pydantic import Field, model_validator

from slimkit import (
    ALL_ROLES, ArchitectureError, BaseCompressor, CompressionSummary, MethodConfig, Role, hookimpl,
    inverse_cholesky_upper,
)
from slimkit.plugins.pruning.unstructured import lowest_per_row


class SparseGPTConfig(MethodConfig):
    sparsity: float = Field(0.5, ge=0.0, lt=1.0, description="Fraction of each layer's weights to remove (unstructured).")
    n: int | None = Field(None, ge=1, le=64, description="N:M pattern: non-zeros kept per group (with m; replaces sparsity).")
    m: int | None = Field(None, ge=2, le=128, description="N:M pattern: consecutive inputs per group.")
    block_size: int = Field(128, ge=1, le=4096, description="Columns updated together (lazy batch updates).")
    dampening: float = Field(0.01, gt=0.0, le=1.0, description="Added to H's diagonal, as a fraction of its mean.")
    roles: tuple[Role, ...] = Field(ALL_ROLES, description="Which block projections to prune.")

    @model_validator(mode="after")
    def _pattern(self) -> "SparseGPTConfig":
        if (self.n is None) != (self.m is None):
            raise ValueError("give both n and m for an N:M pattern, or neither")
        if self.n is not None and self.m is not None and self.n >= self.m:
            raise ValueError(f"n must be smaller than m (got {self.n}:{self.m})")
        return self


INNER_BLOCK = 32  # columns swept between matrix updates of the rest of a mask block


def sparsegpt_prune_(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    *,
    sparsity: float,
    n: int | None = None,
    m: int | None = None,
    block_size: int = 128,
    dampening: float = 0.01,
    row_groups: Sequence[int] | None = None,
    overwrite_hessian: bool = False,
) -> torch.Tensor:
    """Prune ``weight`` (``[out, in]``, changed in place) with the inputs' ``hessian``
    (``[in, in]``); returns the boolean mask of removed weights.

    ``row_groups``: sizes of consecutive row ranges that are separate layers stacked to share
    one sweep (``q``/``k``/``v`` share their input, hence ``H``); the unstructured mask is then
    chosen within each layer's rows, exactly as if each were pruned on its own.
    ``overwrite_hessian``: a float64 ``hessian`` may be destroyed (its memory then holds ``U``: no
    second ``[in, in]`` matrix).

    ``H⁻¹`` and its Cholesky factor are computed in float64; the column sweep runs in the weight's
    precision, at least float32 (float32 for a float32 model, as in the reference implementation).
    The sweep is the published one, arranged to move less memory: with a mask block's mask fixed,
    the error of column ``i`` is ``w_i * mask_i / U_ii``, and subtracting ``err_i ⊗ U[i, i:]`` also
    turns column ``i`` into its pruned value (exactly zero where masked, unchanged elsewhere). That
    outer product is applied only within an inner block of ``INNER_BLOCK`` columns; the inner
    block's errors reach the rest of the mask block in one matrix product, and the rest of the
    layer after each mask block, as in SparseGPT's lazy batch updates.
    """
    rows, columns = weight.shape
    groups = list(row_groups) if row_groups is not None else [rows]
    if sum(groups) != rows:
        raise ValueError(f"row_groups {groups} do not add up to the weight's {rows} rows")
    dtype = torch.float64 if weight.dtype == torch.float64 else torch.float32
    U, dead = inverse_cholesky_upper(hessian, dampening, overwrite=overwrite_hessian, dtype=dtype)
    del hessian  # U is its memory when overwritten; otherwise the caller's
    W = weight.detach().to(dtype, copy=True)
    W[:, dead] = 0.0
    mask = torch.zeros(rows, columns, dtype=torch.bool)
    for start in range(0, columns, block_size):
        stop = min(start + block_size, columns)
        width = stop - start
        W1 = W[:, start:stop].clone()
        U1 = U[start:stop, start:stop]
        diag = torch.diag(U1)
        mask1 = torch.zeros(rows, width, dtype=torch.bool)
        if n is None:
            saliency = W1**2 / diag.reshape(1, -1) ** 2
            first = 0
            for size in groups:  # the lowest saliencies of each layer's rows in this block
                part = saliency[first : first + size].reshape(1, -1)
                mask1[first : first + size] = lowest_per_row(part, int(part.numel() * sparsity)).view(size, width)
                first += size
        scale = mask1 / diag.reshape(1, -1)  # err_i = w_i * scale_i
        Err1 = torch.empty(rows, width, dtype=dtype)
        for j0 in range(0, width, INNER_BLOCK):
            j1 = min(j0 + INNER_BLOCK, width)
            for i in range(j0, j1):
                if n is not None and m is not None and i % m == 0:
                    group = W1[:, i : i + m] ** 2 / diag[i : i + m].reshape(1, -1) ** 2
                    mask1[:, i : i + m] = lowest_per_row(group, m - n)
                    scale[:, i : i + m] = mask1[:, i : i + m] / diag[i : i + m].reshape(1, -1)
                err = torch.mul(W1[:, i], scale[:, i], out=Err1[:, i])
                W1[:, i:j1].addr_(err, U1[i, i:j1], alpha=-1.0)
            if j1 < width:
                W1[:, j1:].addmm_(Err1[:, j0:j1], U1[j0:j1, j1:], alpha=-1.0)
        W1.masked_fill_(mask1, 0.0)  # exact zeros where rounding left w - w
        W[:, start:stop] = W1
        mask[:, start:stop] = mask1
        if stop < columns:
            W[:, stop:].addmm_(Err1, U[start:stop, stop:], alpha=-1.0)
    with torch.no_grad():
        weight.copy_(W.to(weight.dtype))
    return mask


class SparseGPTPruner(BaseCompressor):
    """Prune with second-order updates of the remaining weights (unstructured or N:M)."""

    name = "prune.sparsegpt"
    version = 1
    Config = SparseGPTConfig
    needs_calibration = True

    def check(self, model, adapter, config, ctx):
        from slimkit import require_hessian_data

        ctx.require_calibration(self.name)
        refs = [ref for _, ref in adapter.layout(model.model).linears(config.roles)]
        if not refs:
            raise ArchitectureError(f"{model.architecture} has no projections with roles {', '.join(config.roles)}")
        require_hessian_data(ctx, refs, self.name)
        for ref in refs:
            if config.m is not None and ref.in_features % config.m:
                raise ArchitectureError(
                    f"{ref.name} has {ref.in_features} inputs, not a multiple of m={config.m}"
                )

    resumable = True

    def stream_refusal(self, config, ctx):
        return None  # block by block on the calibration engine

    def compress_(self, model, adapter, config, ctx):
        from slimkit import SequentialCalibration, by_shared_input

        engine = SequentialCalibration(model, adapter, ctx.calibration)
        counts = {"pruned": 0, "total": 0}
        per_layer = {}

        def apply(group, result):
            stacked, mask = result
            for ref, rows in group.rows():
                with torch.no_grad():
                    ref.weight_out_in().copy_(stacked[rows])
                count = int(mask[rows].sum())
                counts["pruned"] += count
                counts["total"] += mask[rows].numel()
                per_layer[ref.name] = round(count / mask[rows].numel(), 6)

        for index, step in enumerate(engine, start=1):
            if step.restored:  # finished by an interrupted streamed run: its figures were noted
                counts["pruned"] += step.record["pruned"]
                counts["total"] += step.record["total"]
                per_layer.update(step.record["per_layer"])
                ctx.report("blocks", index, len(engine), step.block.name)
                continue
            refs = [ref for ref in step.block.linears() if ref.role in config.roles]
            stats = step.collect(refs, ("hessian",), outputs=False)  # the block changes next
            before = dict(counts)
            groups = by_shared_input(refs, stats)  # q/k/v, gate/up: one sweep on their shared H

            def solve(group):
                stacked = group.stacked_weight()
                mask = sparsegpt_prune_(
                    stacked, group.statistics.take_hessian(), sparsity=config.sparsity, n=config.n, m=config.m,
                    block_size=config.block_size, dampening=config.dampening,
                    row_groups=[ref.out_features for ref in group.refs], overwrite_hessian=True,
                )
                return stacked, mask

            # data-parallel: each group swept by one rank (by its cost), the results broadcast to all
            step.solve_each(groups, solve, lambda group: group.sweep_cost, apply)
            step.record.update(pruned=counts["pruned"] - before["pruned"], total=counts["total"] - before["total"],
                               per_layer={ref.name: per_layer[ref.name] for ref in refs})
            ctx.report("blocks", index, len(engine), step.block.name)
        pattern = f"{config.n}:{config.m} pattern" if config.n else f"{config.sparsity:.0%} per layer"
        pruned, total = counts["pruned"], counts["total"]
        achieved = pruned / total if total else 0.0
        return CompressionSummary(
            f"removed {pruned:,} of {total:,} weights ({achieved:.1%}) in {len(per_layer)} layers with "
            f"second-order updates, {pattern}",
            {"pruned_weights": pruned, "target_weights": total, "sparsity": achieved, "per_layer": per_layer},
        )


@hookimpl
def register_compressors(register):
    register(SparseGPTPruner)
