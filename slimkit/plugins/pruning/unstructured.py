"""Unstructured pruning: zero the lowest-scoring weights of each layer (or each output row).

The scores come from any installed ``weight`` scorer (``magnitude`` by default), so a third-party
scorer prunes with this compressor without writing one.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field

from slimkit import hookimpl
from slimkit.core.config import MethodConfig
from slimkit.core.contracts import BaseCompressor, CompressionSummary
from slimkit.core.errors import ArchitectureError, ConfigError
from slimkit.plugins.pruning.magnitude import ALL_ROLES, RoleName


class UnstructuredConfig(MethodConfig):
    sparsity: float = Field(
        0.5, ge=0.0, lt=1.0, description="Fraction of the weights of each pruned layer to set to zero."
    )
    scope: Literal["layer", "row"] = Field(
        "layer",
        description="Rank weights within each whole layer, or within each output row (each row keeps the same count).",
    )
    scorer: str = Field("magnitude", description="Installed weight scorer that ranks the weights.")
    scorer_params: dict[str, Any] = Field(
        default_factory=dict, description="Parameters for the scorer (its own config fields)."
    )
    roles: tuple[RoleName, ...] = Field(
        ALL_ROLES, description="Which block projections to prune (embeddings and LM head are never pruned)."
    )
    sequential: bool = Field(
        True,
        description="With a data-aware scorer: score and prune block by block, each block seeing the outputs "
        "of the already-pruned blocks before it (the SparseGPT/Wanda protocol); false scores the dense model.",
    )


def prune_mask(scores: torch.Tensor, sparsity: float, scope: str) -> torch.Tensor:
    """Boolean mask (True = prune) of exactly ``floor(sparsity * n)`` lowest scores per group.

    Ties are broken by position (a stable sort), so the same scores always give the same mask.
    """
    groups = scores.reshape(1, -1) if scope == "layer" else scores.reshape(scores.shape[0], -1)
    count = int(sparsity * groups.shape[1])
    mask = torch.zeros_like(groups, dtype=torch.bool)
    if count:
        order = torch.sort(groups, dim=1, stable=True).indices[:, :count]
        mask.scatter_(1, order, True)
    return mask.reshape(scores.shape)


class UnstructuredPruner(BaseCompressor):
    """Zero the lowest-scoring weights of every block projection (per layer or per output row)."""

    name = "prune.unstructured"
    version = 1
    Config = UnstructuredConfig

    def check(self, model, adapter, config, ctx):
        info = ctx.host.scorers.get(config.scorer)
        if info.cls.granularity != "weight":
            raise ConfigError(
                f"scorer {config.scorer!r} scores {info.cls.granularity}s; unstructured pruning needs a weight scorer"
            )
        if info.cls.needs_calibration and ctx.calibration is None:
            raise ConfigError(f"scorer {config.scorer!r} needs calibration data; add a calibration section")
        layout = adapter.layout(model.model)
        if not any(True for _ in layout.linears(config.roles)):
            raise ArchitectureError(
                f"{model.architecture} has no projections with roles {', '.join(config.roles)}"
            )

    def compress_(self, model, adapter, config, ctx):
        scorer = ctx.host.scorers.get(config.scorer)
        if config.sequential and getattr(scorer.cls, "statistics", ()):
            return self._sequential(model, adapter, config, ctx, scorer)
        layout = adapter.layout(model.model)
        params = dict(config.scorer_params)
        if "roles" in ctx.host.scorers.get(config.scorer).cls.Config.model_fields:
            params.setdefault("roles", list(config.roles))
        scores = ctx.score(config.scorer, model, adapter, params)
        targets = list(layout.linears(config.roles))
        missing = [ref.name for _, ref in targets if ref.name not in scores]
        if missing:
            raise ConfigError(f"scorer {config.scorer!r} gave no scores for {', '.join(missing[:3])}")
        pruned = total = 0
        per_layer = {}
        with torch.no_grad():
            for done, (_, ref) in enumerate(targets, start=1):
                mask = prune_mask(scores[ref.name], config.sparsity, config.scope)
                ref.weight_out_in().masked_fill_(mask, 0.0)
                count = int(mask.sum())
                pruned += count
                total += mask.numel()
                per_layer[ref.name] = round(count / mask.numel(), 6)
                ctx.report("layers", done, len(targets), ref.name)
        return self._summary(config, pruned, total, per_layer)

    def _sequential(self, model, adapter, config, ctx, info):
        """Score and prune one block at a time on the outputs of the already-pruned blocks."""
        from slimkit.core.calibration import SequentialCalibration

        scorer = info.create()
        params = dict(config.scorer_params)
        if "roles" in info.cls.Config.model_fields:
            params.setdefault("roles", list(config.roles))
        scorer_config = ctx.host.config(info, params)
        engine = SequentialCalibration(model, adapter, ctx.calibration)
        pruned = total = 0
        per_layer = {}
        for index, step in enumerate(engine, start=1):
            refs = [ref for ref in step.block.linears() if ref.role in config.roles]
            scores = scorer.score_block(step.block, step.collect(refs, scorer.statistics), scorer_config, ctx)
            with torch.no_grad():
                for ref in refs:
                    mask = prune_mask(scores[ref.name], config.sparsity, config.scope)
                    ref.weight_out_in().masked_fill_(mask, 0.0)
                    pruned += int(mask.sum())
                    total += mask.numel()
                    per_layer[ref.name] = round(int(mask.sum()) / mask.numel(), 6)
            ctx.report("blocks", index, len(engine), step.block.name)
        return self._summary(config, pruned, total, per_layer, sequential=True)

    @staticmethod
    def _summary(config, pruned, total, per_layer, sequential=False):
        achieved = pruned / total if total else 0.0
        how = ", block by block on calibration data" if sequential else ""
        return CompressionSummary(
            f"zeroed {pruned:,} of {total:,} weights ({achieved:.1%}) in {len(per_layer)} layers "
            f"by {config.scorer} score, per {config.scope}{how}",
            {"pruned_weights": pruned, "target_weights": total, "sparsity": achieved, "per_layer": per_layer},
        )


@hookimpl
def register_compressors(register):
    register(UnstructuredPruner)
