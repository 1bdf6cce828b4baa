"""Low-rank factorisation compressors: ``lowrank.svd`` (plain truncated SVD, no data),
``lowrank.asvd`` (columns scaled by ``mean|x|^α`` of the calibration inputs, ASVD) and
``lowrank.svd_llm`` (whitened by the Cholesky factor of the inputs' ``XᵀX``, SVD-LLM).

The math is :func:`slimkit.factorise` and :class:`slimkit.LowRankLinear`, rank rules in
:mod:`.ranks`. The two data-driven methods run on the sequential calibration engine: each block's
statistics are taken on the outputs of the blocks already factorised before it (as GPTQ and
SparseGPT do). With
``allocation: sensitivity`` a first pass over the unchanged model measures every layer's spectrum
to allocate the budget, and a second pass factorises.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from slimkit import (
    ArchitectureError, BaseCompressor, CompressionSummary, Factorisation, LinearRef, LowRankLinear, factorise,
    hookimpl, low_rank_saves, set_module,
)
from slimkit.plugins.lowrank.ranks import LayerShape, RankConfig, allocate, check_rank, direct_rank


def target_refs(model: Any, adapter: Any, config: RankConfig, method: str) -> list[LinearRef]:
    """The float linears ``config`` selects; refuses quantized or already factorised ones."""
    layout = adapter.layout(model.model)
    refs = [ref for _, ref in layout.linears(config.roles)]
    if not refs:
        raise ArchitectureError(f"{model.architecture} has no projections with roles {', '.join(config.roles)}")
    for ref in refs:
        if ref.quantized or ref.factorised:
            what = "quantized" if ref.quantized else "already factorised"
            raise ArchitectureError(f"{method}: {ref.name} is {what}; factorise a float model "
                                    "(put low-rank factorisation before quantization in a recipe)")
    check_rank(config, [shape(ref) for ref in refs], method)
    return refs


def shape(ref: LinearRef) -> LayerShape:
    return LayerShape(ref.name, ref.in_features, ref.out_features)


def replace(model: Any, ref: LinearRef, factorisation: Factorisation, rank: int) -> bool:
    """Put the rank-``rank`` factors in place of ``ref`` if that saves parameters; returns
    whether it did."""
    if not low_rank_saves(rank, ref.in_features, ref.out_features):
        return False
    up, down = factorisation.factors(rank)
    bias = getattr(ref.module, "bias", None)
    set_module(model.model, ref.name, LowRankLinear.from_factors(up, down, bias))
    return True


class LowRankConfig(RankConfig):
    pass


class _Factoriser(BaseCompressor):
    """What the three methods share: targets, ranks, replacement and the summary."""

    version = 1
    statistic: str | None = None  # what the calibration pass collects (None: no data)
    space = "weights"  # where the error (and energy) is measured, for the summary

    def check(self, model, adapter, config, ctx):
        if config.allocation == "sensitivity":
            ctx.require_calibration(self.name, "sensitivity allocation measures the model's output on it")
        if self.statistic is not None:
            ctx.require_calibration(self.name, f"input {'Gram matrices' if self.statistic == 'hessian' else 'magnitudes'}")
        target_refs(model, adapter, config, self.name)

    def factorise(self, ref: LinearRef, stats: Any, config: Any) -> Factorisation:  # pragma: no cover - abstract
        raise NotImplementedError

    def compress_(self, model, adapter, config, ctx):
        refs = target_refs(model, adapter, config, self.name)
        ranks: dict[str, int] = {}
        if config.allocation == "sensitivity":
            ranks = self._allocate(model, adapter, refs, config, ctx)
        before = sum(ref.in_features * ref.out_features for ref in refs)
        done: dict[str, int] = {}
        kept_dense: list[str] = []
        error = total = 0.0
        for ref, factorisation in self._each(model, adapter, refs, config, ctx, change=True):
            rank = ranks.get(ref.name) or direct_rank(config, shape(ref), factorisation.energy)
            total += float(factorisation.energy.sum())
            if replace(model, ref, factorisation, rank):
                done[ref.name] = rank
                error += factorisation.discarded(rank)
            else:
                kept_dense.append(ref.name)
        after = sum(shape(ref).params(done[ref.name]) if ref.name in done else ref.in_features * ref.out_features
                    for ref in refs)
        removed = 1.0 - after / before
        return CompressionSummary(
            f"factorised {len(done)} of {len(refs)} layers by {self.describe(config)}: "
            f"{removed:.1%} of their {before:,} parameters removed ({len(kept_dense)} kept dense: no saving)",
            {"factorised": len(done), "kept_dense": len(kept_dense), "ranks": done,
             "params_before": before, "params_after": after, "removed_fraction": removed,
             "relative_error": error / total if total else 0.0, "error_space": self.space},
        )

    def describe(self, config: Any) -> str:
        return self.name

    def _allocate(self, model, adapter, refs, config, ctx) -> dict[str, int]:
        """Ranks by measured sensitivity: a pass over the unchanged model factorising each layer
        alone at every keep-fraction (see :mod:`.sensitivity`)."""
        from slimkit.plugins.lowrank.sensitivity import OutputProbe, measure_layer

        probe = OutputProbe(model, ctx.calibration, config.sensitivity_tokens)
        fractions = [step / (config.sensitivity_steps + 1) for step in range(1, config.sensitivity_steps + 1)]
        changes = {ref.name: measure_layer(model, probe, ref, factorisation, fractions)
                   for ref, factorisation in self._each(model, adapter, refs, config, ctx, change=False)}
        return allocate([shape(ref) for ref in refs], changes, config.param_ratio)

    def _each(self, model, adapter, refs, config, ctx, *, change: bool):
        """``(ref, factorisation)`` for every targeted layer; with ``change``, each block's layers
        are replaced (by the caller) before the next block's statistics are taken."""
        stage = "factorise" if change else "measure"
        if self.statistic is None:
            for index, ref in enumerate(refs, start=1):
                yield ref, self.factorise(ref, None, config)
                ctx.report(stage, index, len(refs), ref.name)
            return
        from slimkit import SequentialCalibration

        chosen = {ref.name for ref in refs}
        engine = SequentialCalibration(model, adapter, ctx.calibration)
        for index, step in enumerate(engine, start=1):
            block_refs = [ref for ref in step.block.linears() if ref.name in chosen]
            if block_refs:
                stats = step.collect(block_refs, (self.statistic,), outputs=not change)
                for ref in block_refs:
                    yield ref, self.factorise(ref, stats[ref.name], config)
            ctx.report(stage, index, len(engine), step.block.name)


class SVDFactoriser(_Factoriser):
    """Truncated SVD of each weight (no data): the smallest weight error at each rank."""

    name = "lowrank.svd"
    Config = LowRankConfig

    def factorise(self, ref, stats, config):
        return factorise(ref.weight_out_in())


class ASVDConfig(LowRankConfig):
    alpha: float = Field(0.5, ge=0.0, le=2.0, description="Column scale s_j = mean|x_j|^alpha (0: plain SVD).")


class ASVDFactoriser(_Factoriser):
    """SVD of the weight with its columns scaled by the inputs' mean magnitude to the power α
    (ASVD, Yuan et al. 2023): channels with large activations keep more of their weights."""

    name = "lowrank.asvd"
    Config = ASVDConfig
    needs_calibration = True
    statistic = "input_abs_sum"
    space = "scaled weights"

    def factorise(self, ref, stats, config):
        mean = stats.input_abs_sum / max(1, stats.tokens)
        floor = float(mean.max()) * 1e-6 if float(mean.max()) > 0 else 1.0  # dead channels: tiny, not zero
        return factorise(ref.weight_out_in(), column_scale=mean.clamp(min=floor).pow(config.alpha))

    def describe(self, config):
        return f"{self.name} (alpha {config.alpha:g})"


class SVDLLMConfig(LowRankConfig):
    dampening: float = Field(1e-6, gt=0.0, le=1.0,
                             description="Added to XᵀX (x its mean diagonal) only if it is not positive definite.")


class SVDLLMFactoriser(_Factoriser):
    """SVD of the weight whitened by the Cholesky factor of the inputs' XᵀX (SVD-LLM, Wang et al.
    2024): at each rank, the smallest output error on the calibration data."""

    name = "lowrank.svd_llm"
    Config = SVDLLMConfig
    needs_calibration = True
    statistic = "hessian"
    space = "outputs on the calibration data"

    def factorise(self, ref, stats, config):
        # q/k/v (gate/up) share one statistics object: factorise() works on its own copy of XᵀX
        return factorise(ref.weight_out_in(), gram=stats.hessian, dampening=config.dampening)


@hookimpl
def register_compressors(register):
    register(SVDFactoriser)
    register(ASVDFactoriser)
    register(SVDLLMFactoriser)
