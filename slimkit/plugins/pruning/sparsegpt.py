"""SparseGPT: one-shot pruning with second-order weight updates (Frantar & Alistarh, 2023).

For each layer, with H = sum of x xᵀ over the calibration inputs (from the calibration engine),
weights are removed column block by column block; each removed weight's error is spread over the
not-yet-processed weights of its row through the inverse Hessian (Optimal Brain Surgeon with
lazy batch updates), so the layer's outputs on the calibration data change as little as possible.
The mask is chosen adaptively within each column block by ``w² / [H⁻¹]²_jj``, unstructured or N:M.
"""

from __future__ import annotations

import torch
from pydantic import Field, model_validator

from slimkit import hookimpl
from slimkit.core.config import MethodConfig
from slimkit.core.contracts import BaseCompressor, CompressionSummary
from slimkit.core.errors import ArchitectureError, ConfigError
from slimkit.plugins.pruning.magnitude import ALL_ROLES, RoleName


class SparseGPTConfig(MethodConfig):
    sparsity: float = Field(0.5, ge=0.0, lt=1.0, description="Fraction of each layer's weights to remove (unstructured).")
    n: int | None = Field(None, ge=1, le=64, description="N:M pattern: non-zeros kept per group (with m; replaces sparsity).")
    m: int | None = Field(None, ge=2, le=128, description="N:M pattern: consecutive inputs per group.")
    block_size: int = Field(128, ge=1, le=4096, description="Columns updated together (lazy batch updates).")
    dampening: float = Field(0.01, gt=0.0, le=1.0, description="Added to H's diagonal, as a fraction of its mean.")
    roles: tuple[RoleName, ...] = Field(ALL_ROLES, description="Which block projections to prune.")

    @model_validator(mode="after")
    def _pattern(self) -> "SparseGPTConfig":
        if (self.n is None) != (self.m is None):
            raise ValueError("give both n and m for an N:M pattern, or neither")
        if self.n is not None and self.m is not None and self.n >= self.m:
            raise ValueError(f"n must be smaller than m (got {self.n}:{self.m})")
        return self


def sparsegpt_prune_(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    *,
    sparsity: float,
    n: int | None = None,
    m: int | None = None,
    block_size: int = 128,
    dampening: float = 0.01,
) -> torch.Tensor:
    """Prune ``weight`` (``[out, in]``, changed in place) with the inputs' ``hessian``
    (``[in, in]``); returns the boolean mask of removed weights."""
    rows, columns = weight.shape
    W = weight.detach().to(torch.float64).clone()
    H = hessian.to(torch.float64).clone()
    dead = torch.diag(H) == 0  # inputs that were always zero: their weights cannot matter
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    H += dampening * torch.mean(torch.diag(H)) * torch.eye(columns, dtype=H.dtype)
    Hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    mask = torch.zeros_like(W, dtype=torch.bool)
    for start in range(0, columns, block_size):
        stop = min(start + block_size, columns)
        W1 = W[:, start:stop].clone()
        Hinv1 = Hinv[start:stop, start:stop]
        diag = torch.diag(Hinv1)
        Q1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        mask1 = torch.zeros_like(W1, dtype=torch.bool)
        if n is None:
            saliency = W1**2 / diag.reshape(1, -1) ** 2
            count = int(saliency.numel() * sparsity)
            if count:
                order = torch.sort(saliency.flatten(), stable=True).indices[:count]
                mask1.view(-1)[order] = True
        for i in range(stop - start):
            if n is not None and m is not None and i % m == 0:
                group = W1[:, i : i + m] ** 2 / diag[i : i + m].reshape(1, -1) ** 2
                lowest = torch.sort(group, dim=1, stable=True).indices[:, : m - n]
                mask1.scatter_(1, i + lowest, True)
            w = W1[:, i]
            q = w.clone()
            q[mask1[:, i]] = 0.0
            Q1[:, i] = q
            err = (w - q) / Hinv1[i, i]
            W1[:, i:] -= err.unsqueeze(1) @ Hinv1[i, i:].unsqueeze(0)
            Err1[:, i] = err
        W[:, start:stop] = Q1
        mask[:, start:stop] = mask1
        W[:, stop:] -= Err1 @ Hinv[start:stop, stop:]
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
        if ctx.calibration is None:
            raise ConfigError("prune.sparsegpt needs calibration data; add a calibration section")
        refs = [ref for _, ref in adapter.layout(model.model).linears(config.roles)]
        if not refs:
            raise ArchitectureError(f"{model.architecture} has no projections with roles {', '.join(config.roles)}")
        for ref in refs:
            if config.m is not None and ref.in_features % config.m:
                raise ArchitectureError(
                    f"{ref.name} has {ref.in_features} inputs, not a multiple of m={config.m}"
                )

    def compress_(self, model, adapter, config, ctx):
        from slimkit.core.calibration import SequentialCalibration

        engine = SequentialCalibration(model, adapter, ctx.calibration)
        pruned = total = 0
        per_layer = {}
        for index, step in enumerate(engine, start=1):
            refs = [ref for ref in step.block.linears() if ref.role in config.roles]
            stats = step.collect(refs, ("hessian",))
            for ref in refs:
                mask = sparsegpt_prune_(
                    ref.weight_out_in(), stats[ref.name].hessian, sparsity=config.sparsity, n=config.n,
                    m=config.m, block_size=config.block_size, dampening=config.dampening,
                )
                count = int(mask.sum())
                pruned, total = pruned + count, total + mask.numel()
                per_layer[ref.name] = round(count / mask.numel(), 6)
            ctx.report("blocks", index, len(engine), step.block.name)
        pattern = f"{config.n}:{config.m} pattern" if config.n else f"{config.sparsity:.0%} per layer"
        achieved = pruned / total if total else 0.0
        return CompressionSummary(
            f"removed {pruned:,} of {total:,} weights ({achieved:.1%}) in {len(per_layer)} layers with "
            f"second-order updates, {pattern}",
            {"pruned_weights": pruned, "target_weights": total, "sparsity": achieved, "per_layer": per_layer},
        )


@hookimpl
def register_compressors(register):
    register(SparseGPTPruner)
