"""Whole-block removal: the ``blocks.cosine`` scorer and the ``prune.blocks`` compressor.

``blocks.cosine`` is the Block Influence of ShortGPT (Men et al., 2024, "ShortGPT: Layers in
Large Language Models are More Redundant Than You Expect"): for each block, one minus the mean
over calibration tokens of the cosine similarity between the hidden state entering the block and
the one leaving it. A block that barely turns the residual stream scores low and is the first to
go. Scores come from one sequential pass over the dense model, in float64.

``prune.blocks`` drops the lowest-scoring blocks (by any installed ``block`` scorer), renumbers
the ``layer_idx`` the remaining attention modules use to address the KV cache, and rewrites the
config so the result reloads with plain ``transformers``.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field, model_validator
from torch import nn

from slimkit import (
    ArchitectureError, BaseCompressor, BaseScorer, CompressionSummary, ConfigError, MethodConfig, Scores, hookimpl,
    resolve_module, set_module,
)


class CosineConfig(MethodConfig):
    """Block Influence takes no parameters besides the recipe's calibration data."""


def cosine_sum(inputs: torch.Tensor, outputs: torch.Tensor) -> torch.Tensor:
    """``[sum of cos(x_in, x_out), tokens]`` over every token (float64): summed over the ranks of
    a data-parallel run before the mean is taken."""
    a = inputs.reshape(-1, inputs.shape[-1]).to(torch.float64)
    b = outputs.reshape(-1, outputs.shape[-1]).to(torch.float64)
    if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        raise ConfigError("non-finite hidden states in the calibration pass; cannot score blocks")
    cosines = torch.nn.functional.cosine_similarity(a, b, dim=-1)
    return torch.stack([cosines.sum(), torch.tensor(float(cosines.numel()), dtype=torch.float64,
                                                    device=cosines.device)])



class CosineBlockScorer(BaseScorer):
    """Block Influence (ShortGPT): 1 - mean cos(block input, block output); low = removable."""

    name = "blocks.cosine"
    version = 1
    granularity = "block"
    needs_calibration = True
    Config = CosineConfig

    def score(self, model, adapter, config, ctx):
        from slimkit import SequentialCalibration

        engine = SequentialCalibration(model, adapter, ctx.calibration)
        values = []
        for index, step in enumerate(engine, start=1):
            total, tokens = step.all_reduce(cosine_sum(step.inputs, step.outputs())).tolist()
            values.append(1.0 - total / tokens)
            ctx.report("blocks", index, len(engine), step.block.name)
        tensor = torch.tensor(values, dtype=torch.float64)
        return Scores(self.name, self.granularity, {"blocks": tensor}, config.model_dump(mode="json"))


class BlockPruningConfig(MethodConfig):
    count: int | None = Field(
        None, ge=1, description="How many blocks to remove (or give fraction; neither means one block)."
    )
    fraction: float | None = Field(
        None, gt=0.0, lt=1.0, description="Fraction of the blocks to remove, rounded to the nearest count."
    )
    blocks: list[int] | None = Field(
        None, description="Remove exactly these blocks (0-based; e.g. [1, 3, 5] keeps every other one of 6) "
        "instead of the lowest-scoring ones."
    )
    scorer: str = Field("blocks.cosine", description="Installed block scorer; the lowest-scoring blocks go.")
    scorer_params: dict[str, Any] = Field(
        default_factory=dict, description="Parameters for the scorer (its own config fields)."
    )

    @model_validator(mode="after")
    def _one_amount(self) -> "BlockPruningConfig":
        if sum(value is not None for value in (self.count, self.fraction, self.blocks)) > 1:
            raise ValueError("give exactly one of count, fraction and blocks")
        if self.blocks is not None and len(set(self.blocks)) != len(self.blocks):
            raise ValueError(f"blocks lists a block twice: {self.blocks}")
        if self.count is None and self.fraction is None and self.blocks is None:
            object.__setattr__(self, "count", 1)  # the default: remove the single least useful block
        return self


def removal_count(config: BlockPruningConfig, num_blocks: int) -> int:
    """How many of ``num_blocks`` blocks ``config`` removes; refuses none or all of them (and
    block indices the model does not have)."""
    if config.blocks is not None:
        outside = [b for b in config.blocks if not 0 <= b < num_blocks]
        if outside:
            raise ConfigError(f"blocks {outside} do not exist: the model has blocks 0..{num_blocks - 1}")
    count = (len(config.blocks) if config.blocks is not None
             else config.count if config.count is not None else round(config.fraction * num_blocks))
    if count < 1:
        raise ConfigError(f"fraction {config.fraction} of {num_blocks} blocks removes no block")
    if count >= num_blocks:
        raise ConfigError(f"cannot remove {count} of {num_blocks} blocks: at least one block must remain")
    return count


def lowest(scores: torch.Tensor, count: int) -> list[int]:
    """Indices of the ``count`` lowest scores (ties broken by position), in model order."""
    return sorted(torch.sort(scores.double(), stable=True).indices[:count].tolist())


def renumber_layers(blocks: nn.ModuleList) -> None:
    """Set every integer ``layer_idx`` inside each block (the block itself, its attention) to the
    block's position, which is how Llama/GPT-2/OPT-style attention addresses the KV cache."""
    for position, block in enumerate(blocks):
        for module in block.modules():
            if isinstance(getattr(module, "layer_idx", None), int):
                module.layer_idx = position


def _param_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class BlockPruner(BaseCompressor):
    """Remove whole transformer blocks with the lowest block scores (ShortGPT-style depth pruning)."""

    name = "prune.blocks"
    version = 1
    Config = BlockPruningConfig

    def check(self, model, adapter, config, ctx):
        if config.blocks is None:
            ctx.require_scorer(config.scorer, "block", self.name)
        layout = adapter.layout(model.model)
        if not isinstance(resolve_module(model.model, layout.blocks_name), nn.ModuleList):
            raise ArchitectureError(f"{layout.blocks_name} of {model.architecture} is not an nn.ModuleList")
        if getattr(model.config, "scale_attn_by_inverse_layer_idx", False):
            raise ArchitectureError(
                f"{model.architecture} scales attention by layer index; removing blocks would change the "
                "remaining blocks' outputs on reload"
            )
        removal_count(config, len(layout.blocks))

    def compress_(self, model, adapter, config, ctx):
        layout = adapter.layout(model.model)
        num_blocks = len(layout.blocks)
        count = removal_count(config, num_blocks)
        if config.blocks is not None:
            scores, removed, how = None, sorted(config.blocks), "request"
        else:
            scores = ctx.score(config.scorer, model, adapter, config.scorer_params)["blocks"]
            if scores.numel() != num_blocks:
                raise ConfigError(f"scorer {config.scorer!r} gave {scores.numel()} block scores for {num_blocks} blocks")
            removed, how = lowest(scores, count), f"{config.scorer} score"
        kept = [i for i in range(num_blocks) if i not in removed]
        before = _param_count(model.model)
        old = resolve_module(model.model, layout.blocks_name)
        blocks = nn.ModuleList([old[i] for i in kept])
        set_module(model.model, layout.blocks_name, blocks)
        renumber_layers(blocks)
        adapter.rewrite_config(model.config, kept_layers=kept)
        after = _param_count(model.model)
        ctx.report("blocks", count, count, f"removed {removed}")
        return CompressionSummary(
            f"removed {count} of {num_blocks} blocks ({', '.join(map(str, removed))}) by {how}; "
            f"parameters {before:,} -> {after:,}",
            {"removed_blocks": removed, "kept_blocks": kept,
             "scores": [float(s) for s in scores] if scores is not None else None,
             "params_before": before, "params_after": after},
        )


@hookimpl
def register_scorers(register):
    register(CosineBlockScorer)


@hookimpl
def register_compressors(register):
    register(BlockPruner)
