"""Unstructured pruning: zero the lowest-scoring weights of each layer (or each output row).

The scores come from any installed ``weight`` scorer (``magnitude`` by default), so a third-party
scorer prunes with this compressor without writing one. With a data-aware scorer (``wanda``) the
pruning goes block by block on the calibration data. :class:`ScoredPruner` is the shared
machinery; subclasses only choose the mask (see ``prune.nm`` for N:M patterns).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field

from slimkit import (
    ALL_ROLES, ArchitectureError, BaseCompressor, CompressionSummary, ConfigError, MethodConfig, MethodUse, Role,
    hookimpl,
)


class ScoredPruningConfig(MethodConfig):
    """Fields of every pruner that ranks weights with a scorer."""

    scorer: str = Field("magnitude", description="Installed weight scorer that ranks the weights.")
    scorer_params: dict[str, Any] = Field(
        default_factory=dict, description="Parameters for the scorer (its own config fields)."
    )
    roles: tuple[Role, ...] = Field(
        ALL_ROLES, description="Which block projections to prune (embeddings and LM head are never pruned)."
    )
    sequential: bool = Field(
        True,
        description="With a data-aware scorer: score and prune block by block, each block seeing the outputs "
        "of the already-pruned blocks before it (the SparseGPT/Wanda protocol); false scores the dense model.",
    )


class OWLConfig(MethodConfig):
    outlier: float = Field(5.0, gt=1.0, description="A weight is an outlier above this multiple of its block's mean score.")
    spread: float = Field(0.08, ge=0.0, lt=0.5, description="Block sparsities stay within sparsity +- this (OWL's lambda).")


class UnstructuredConfig(ScoredPruningConfig):
    sparsity: float = Field(
        0.5, ge=0.0, lt=1.0, description="Fraction of the weights of each pruned layer to set to zero."
    )
    allocation: Literal["uniform", "owl"] = Field(
        "uniform",
        description="Same sparsity in every block, or OWL: blocks with more outlier weights (Wanda score above "
        "owl.outlier x the block mean) keep more (Yin et al. 2024); needs calibration data.",
    )
    owl: OWLConfig = Field(default_factory=lambda: OWLConfig(), description="OWL settings (with allocation: owl).")
    scope: Literal["layer", "row", "global"] = Field(
        "layer",
        description="Rank weights within each whole layer, within each output row (each row keeps the same "
        "count), or across all pruned layers at once (layers end up with different sparsities).",
    )


def lowest_per_row(scores: torch.Tensor, count: int) -> torch.Tensor:
    """Boolean mask of the ``count`` lowest values in each row of a 2-D tensor, ties taken in
    position order: the mask a stable sort would give, from ``kthvalue`` (several times faster
    than sorting half a million scores)."""
    mask = torch.zeros_like(scores, dtype=torch.bool)
    if count <= 0:
        return mask
    if count >= scores.shape[1]:
        return ~mask
    threshold = torch.kthvalue(scores, count, dim=1, keepdim=True).values
    below = scores < threshold
    ties = scores == threshold
    wanted = count - below.sum(dim=1, keepdim=True)
    return below | (ties & (torch.cumsum(ties, dim=1) <= wanted))


def prune_mask(scores: torch.Tensor, sparsity: float, scope: str) -> torch.Tensor:
    """Boolean mask (True = prune) of exactly ``floor(sparsity * n)`` lowest scores per group.

    Ties are broken by position, so the same scores always give the same mask.
    """
    groups = scores.reshape(1, -1) if scope == "layer" else scores.reshape(scores.shape[0], -1)
    count = int(sparsity * groups.shape[1])
    return lowest_per_row(groups, count).reshape(scores.shape)


class ScoredPruner(BaseCompressor):
    """Zero weights by scorer rank; subclasses implement :meth:`mask` and :meth:`describe_mask`."""

    def mask(self, scores: torch.Tensor, config: Any, ref: Any) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def describe_mask(self, config: Any) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def global_masks(self, targets, scores, config) -> dict[str, torch.Tensor] | None:
        """Masks chosen across all layers at once, or ``None`` to mask each layer on its own."""
        return None

    def check(self, model, adapter, config, ctx):
        info = ctx.require_scorer(config.scorer, "weight", self.name)
        if getattr(config, "scope", None) == "global" and config.sequential and getattr(info.cls, "statistics", ()):
            raise ConfigError(
                f"scope global ranks all layers at once, so it cannot go block by block with {config.scorer!r}; "
                "set sequential: false"
            )
        layout = adapter.layout(model.model)
        if not any(True for _ in layout.linears(config.roles)):
            raise ArchitectureError(
                f"{model.architecture} has no projections with roles {', '.join(config.roles)}"
            )

    def _scorer(self, config, ctx):
        info = ctx.scorer(config.scorer)
        params = dict(config.scorer_params)
        if "roles" in info.cls.Config.model_fields:
            params.setdefault("roles", list(config.roles))
        return info, params

    resumable = True  # block by block on the engine, each block's figures noted (see _sequential)

    def stream_refusal(self, config, ctx):
        if getattr(config, "scope", "layer") == "global":
            return "scope global ranks all layers at once"
        if getattr(config, "allocation", "uniform") == "owl":
            return "allocation owl scores the whole dense model before pruning"
        info = ctx.scorer(config.scorer)
        if (config.sequential and getattr(info.cls, "statistics", ())) or self._blockwise(info, config):
            return None
        return f"scorer {config.scorer!r} scores the whole model at once here (it needs sequential: true)"

    def prepare(self, model, adapter, config, ctx) -> None:
        """Work before any weight changes (e.g. per-layer sparsity allocation); default: none."""

    def compress_(self, model, adapter, config, ctx):
        self.prepare(model, adapter, config, ctx)
        info, params = self._scorer(config, ctx)
        if config.sequential and getattr(info.cls, "statistics", ()):
            return self._sequential(model, adapter, config, ctx, info, params)
        if self._blockwise(info, config):
            return self._data_free_by_block(model, adapter, config, ctx, info, params)
        scores = ctx.score(config.scorer, model, adapter, params)
        targets = [ref for _, ref in adapter.layout(model.model).linears(config.roles)]
        missing = [ref.name for ref in targets if ref.name not in scores]
        if missing:
            raise ConfigError(f"scorer {config.scorer!r} gave no scores for {', '.join(missing[:3])}")
        masks = self.global_masks(targets, scores, config)
        tally = _Tally()
        for done, ref in enumerate(targets, start=1):
            tally.apply(ref, masks[ref.name] if masks else self.mask(scores[ref.name], config, ref))
            ctx.report("layers", done, len(targets), ref.name)
        return tally.summary(config, self.describe_mask(config), sequential=False)

    def _blockwise(self, info, config) -> bool:
        """A data-free scorer that scores one block at a time, and masks chosen within layers."""
        from slimkit import BaseScorer

        overrides = getattr(info.cls, "score_block", None) is not BaseScorer.score_block
        return (not getattr(info.cls, "statistics", ()) and not info.cls.needs_calibration and overrides
                and getattr(config, "scope", "layer") != "global")

    def _data_free_by_block(self, model, adapter, config, ctx, info, params):
        """Score and prune block by block: one block's scores in memory at a time."""
        scorer_config = ctx.host.config(info, params)
        count = len(adapter.layout(model.model).blocks)
        tally = _Tally()
        for index, block in enumerate(ctx.blocks(model, adapter), start=1):
            scores = ctx.score_block(info, block, {}, scorer_config)
            for ref in block.linears():
                if ref.role in config.roles:
                    if ref.name not in scores:
                        raise ConfigError(f"scorer {config.scorer!r} gave no scores for {ref.name}")
                    tally.apply(ref, self.mask(scores[ref.name], config, ref))
            del scores
            ctx.report("blocks", index, count, block.name)
        return tally.summary(config, self.describe_mask(config), sequential=False)

    def _sequential(self, model, adapter, config, ctx, info, params):
        """Score and prune one block at a time on the outputs of the already-pruned blocks."""
        from slimkit import SequentialCalibration

        scorer = info.create()
        scorer_config = ctx.host.config(info, params)
        engine = SequentialCalibration(model, adapter, ctx.calibration)
        tally = _Tally()
        for index, step in enumerate(engine, start=1):
            if step.restored:  # finished by an interrupted streamed run: its figures were noted
                tally.merge(step.record)
                ctx.report("blocks", index, len(engine), step.block.name)
                continue
            refs = [ref for ref in step.block.linears() if ref.role in config.roles]
            stats = step.collect(refs, scorer.statistics, outputs=False)  # the block changes next
            scores = ctx.score_block(info, step.block, stats, scorer_config)
            since = (tally.pruned, tally.total)
            for ref in refs:
                tally.apply(ref, self.mask(scores[ref.name], config, ref))
            step.record.update(tally.record(since, refs))
            ctx.report("blocks", index, len(engine), step.block.name)
        return tally.summary(config, self.describe_mask(config), sequential=True)


class _Tally:
    """Applies masks and counts what was zeroed."""

    def __init__(self) -> None:
        self.pruned = self.total = 0
        self.per_layer: dict[str, float] = {}

    def apply(self, ref, mask: torch.Tensor) -> None:
        with torch.no_grad():
            ref.weight_out_in().masked_fill_(mask, 0.0)
        count = int(mask.sum())
        self.pruned += count
        self.total += mask.numel()
        self.per_layer[ref.name] = round(count / mask.numel(), 6)

    def record(self, since: tuple[int, int], refs) -> dict:
        """What changed since ``since`` (``(pruned, total)`` then) in ``refs``: a block's figures."""
        return {"pruned": self.pruned - since[0], "total": self.total - since[1],
                "per_layer": {ref.name: self.per_layer[ref.name] for ref in refs}}

    def merge(self, record: dict) -> None:
        """Add a block's figures noted by an interrupted run (see :meth:`record`)."""
        self.pruned += record["pruned"]
        self.total += record["total"]
        self.per_layer.update(record["per_layer"])

    def summary(self, config, how: str, sequential: bool) -> CompressionSummary:
        achieved = self.pruned / self.total if self.total else 0.0
        where = ", block by block on calibration data" if sequential else ""
        return CompressionSummary(
            f"zeroed {self.pruned:,} of {self.total:,} weights ({achieved:.1%}) in {len(self.per_layer)} layers "
            f"by {config.scorer} score, {how}{where}",
            {"pruned_weights": self.pruned, "target_weights": self.total, "sparsity": achieved,
             "per_layer": self.per_layer},
        )


class UnstructuredPruner(ScoredPruner):
    """Zero the lowest-scoring weights of every block projection (per layer or per output row)."""

    name = "prune.unstructured"
    version = 1
    Config = UnstructuredConfig

    def uses(self, config):
        declared = super().uses(config)
        if config.allocation == "owl":  # OWL ranks blocks by their Wanda outliers
            owl = MethodUse("scorer", "wanda", {"roles": list(config.roles)})
            declared += () if owl in declared else (owl,)
        return declared

    def check(self, model, adapter, config, ctx):
        super().check(model, adapter, config, ctx)
        if config.allocation == "owl":
            ctx.require_calibration("allocation owl")
            if config.scope == "global":
                raise ConfigError("allocation owl sets a sparsity per block; it cannot be combined with scope global")

    def prepare(self, model, adapter, config, ctx):
        self.sparsities: dict[str, float] = {}
        if config.allocation == "owl":
            self.sparsities = owl_sparsities(model, adapter, config, ctx)

    def mask(self, scores, config, ref):
        sparsity = getattr(self, "sparsities", {}).get(ref.name, config.sparsity)
        return prune_mask(scores, sparsity, config.scope)

    def global_masks(self, targets, scores, config):
        if config.scope != "global":
            return None
        flat = torch.cat([scores[ref.name].reshape(-1).float() for ref in targets])
        mask = prune_mask(flat, config.sparsity, "layer")  # exactly floor(s * n) over all of them
        out, start = {}, 0
        for ref in targets:
            size = scores[ref.name].numel()
            out[ref.name] = mask[start : start + size].reshape(scores[ref.name].shape)
            start += size
        return out

    def describe_mask(self, config):
        return "across all layers" if config.scope == "global" else f"per {config.scope}"


def owl_sparsities(model, adapter, config, ctx) -> dict[str, float]:
    """Per-layer sparsity from each block's outlier ratio (OWL, Yin et al. 2024).

    The outlier ratio D of a block is the fraction of its Wanda scores above ``owl.outlier`` x
    their mean (on the dense model). Ratios are scaled to [0, 2 spread] and centred so the block
    keep-ratios average 1 - sparsity: blocks with more outliers keep more weights.
    """
    scores = ctx.score("wanda", model, adapter, {"roles": list(config.roles)})
    layout = adapter.layout(model.model)
    ratios = []
    for block in layout.blocks:
        values = torch.cat([scores[ref.name].reshape(-1) for ref in block.linears() if ref.name in scores])
        ratios.append(float((values > config.owl.outlier * values.mean()).float().mean()))
    d = torch.tensor(ratios, dtype=torch.float64)
    spread = float(d.max() - d.min())
    scaled = (d - d.min()) / spread * 2 * config.owl.spread if spread > 0 else torch.zeros_like(d)
    keep = scaled - scaled.mean() + (1 - config.sparsity)
    out = {}
    for block, ratio in zip(layout.blocks, keep.tolist()):
        sparsity = min(max(1.0 - ratio, 0.0), 0.999)
        for ref in block.linears():
            out[ref.name] = sparsity
    return out


@hookimpl
def register_compressors(register):
    register(UnstructuredPruner)
