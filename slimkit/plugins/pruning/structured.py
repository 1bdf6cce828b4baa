"""Structured pruning: remove whole MLP neurons or whole attention KV groups, physically.

The matrices shrink (rows of ``up``/``gate``/``q``/``k``/``v``, columns of ``down``/``o``) and the
config is rewritten through the architecture adapter, so the saved model reloads with plain
``transformers``. Every block loses the same count, because a ``transformers`` config has one
``intermediate_size`` and one head count for all blocks.

The ranking comes from any installed ``neuron`` (``prune.neurons``) or ``head`` scorer
(``prune.heads``). With a data-aware scorer the pruning is sequential: block ``i`` is scored on
the outputs of the already-pruned blocks before it, and shrunk before block ``i + 1`` is scored.
"""

from __future__ import annotations

import copy
from typing import Any, Callable

import torch
from pydantic import Field
from torch import nn

from slimkit import (
    ArchitectureError, AttentionLayout, BaseCompressor, BlockLayout, CompressionSummary, ConfigError, DataError,
    LinearRef, MLPLayout, MethodConfig, hookimpl,
)


class StructuredConfig(MethodConfig):
    """Fields shared by the structured pruners."""

    scorer_params: dict[str, Any] = Field(
        default_factory=dict, description="Parameters for the scorer (its own config fields)."
    )
    sequential: bool = Field(
        True,
        description="With a data-aware scorer: score and prune block by block, each block seeing the outputs "
        "of the already-pruned blocks before it; false scores the dense model once.",
    )


class NeuronConfig(StructuredConfig):
    fraction: float = Field(
        0.2, ge=0.0, lt=1.0,
        description="Fraction of each block's MLP neurons to remove (floor; the same count in every block).",
    )
    scorer: str = Field("neurons.magnitude", description="Installed neuron scorer that ranks the neurons.")
    fold: bool = Field(
        False,
        description="Add each removed neuron's contribution to its redundant twin's down-projection column "
        "(least squares); needs a scorer that reports twins, such as neurons.mi.",
    )


class HeadConfig(StructuredConfig):
    fraction: float = Field(
        0.5, ge=0.0, lt=1.0,
        description="Fraction of each block's key/value groups (a KV head and its query heads) to remove "
        "(floor; the same count in every block). Ignored when groups is set.",
    )
    groups: int | None = Field(
        None, ge=0, description="Number of key/value groups to remove from every block (overrides fraction)."
    )
    scorer: str = Field("heads.magnitude", description="Installed head scorer that ranks the query heads.")


# -- shrinking ---------------------------------------------------------------------------------


def replace_weight(ref: LinearRef, out_in: torch.Tensor, bias: torch.Tensor | None) -> None:
    """Give ``ref``'s module a new ``[out, in]`` weight (and bias), fixing its size attributes."""
    module = ref.module
    weight = out_in.t() if ref.transposed else out_in
    module.weight = nn.Parameter(weight.contiguous().clone(), requires_grad=module.weight.requires_grad)
    if bias is not None:
        module.bias = nn.Parameter(bias.contiguous().clone(), requires_grad=module.bias.requires_grad)
    out_features, in_features = out_in.shape
    if ref.transposed:  # transformers Conv1D
        module.nf, module.nx = out_features, in_features
    elif hasattr(module, "in_features"):
        module.in_features, module.out_features = in_features, out_features


def keep_rows(ref: LinearRef, index: torch.Tensor) -> None:
    """Keep output features ``index`` (rows of the ``[out, in]`` weight and the bias)."""
    bias = getattr(ref.module, "bias", None)
    index = index.to(ref.weight.device)
    replace_weight(ref, ref.weight_out_in()[index], None if bias is None else bias[index])


def keep_columns(ref: LinearRef, index: torch.Tensor) -> None:
    """Keep input features ``index`` (the bias, per output, is unchanged)."""
    replace_weight(ref, ref.weight_out_in()[:, index.to(ref.weight.device)], None)


def shrink_mlp_(mlp: MLPLayout, keep: torch.Tensor) -> None:
    """Keep intermediate neurons ``keep`` (sorted indices) of one block's MLP."""
    with torch.no_grad():
        for ref in (mlp.gate, mlp.up):
            if ref is not None:
                keep_rows(ref, keep)
        keep_columns(mlp.down, keep)


def head_features(heads: torch.Tensor, head_dim: int) -> torch.Tensor:
    """Feature indices of the given heads: ``[h * head_dim + d for h in heads for d < head_dim]``."""
    return (heads.unsqueeze(1) * head_dim + torch.arange(head_dim)).reshape(-1)


def shrink_attention_(attention: AttentionLayout, keep_kv: torch.Tensor) -> None:
    """Keep key/value heads ``keep_kv`` (sorted) and their groups of query heads in one block."""
    group, hd = attention.group_size, attention.head_dim
    keep_q = (keep_kv.unsqueeze(1) * group + torch.arange(group)).reshape(-1)
    q_features, kv_features = head_features(keep_q, hd), head_features(keep_kv, hd)
    with torch.no_grad():
        keep_rows(attention.q, q_features)
        keep_rows(attention.k, kv_features)
        keep_rows(attention.v, kv_features)
        keep_columns(attention.o, q_features)


def lowest(scores: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(removed, kept)`` sorted indices: the ``count`` lowest scores (ties by position) and the rest."""
    order = torch.sort(scores.detach().cpu().double(), stable=True).indices
    return order[:count].sort().values, order[count:].sort().values


def _accepts(config: Any, adapter, heads: int, kv_heads: int) -> bool:
    """Whether ``config`` still validates with ``heads``/``kv_heads`` attention heads."""
    config = copy.deepcopy(config)
    adapter.rewrite_config(config, num_heads=heads, num_kv_heads=kv_heads)
    try:
        config.validate()
    except Exception:
        return False
    return True


def _extras(values: dict[str, torch.Tensor], block: str) -> dict[str, Any]:
    prefix = f"{block}::"
    return {key[len(prefix):]: value for key, value in values.items() if key.startswith(prefix)}


def fold_into_twins_(
    down: LinearRef, dropped_in_order: torch.Tensor, extras: dict[str, Any], block: str, scorer: str
) -> None:
    """Replace each removed neuron a by alpha x its twin b: add alpha x down[:, a] to down[:, b].

    Dropped neurons are folded in removal order, so a twin removed later carries on what was
    folded into it.
    """
    if "twin" not in extras or "alpha" not in extras:
        raise ConfigError(f"fold needs twins, and scorer {scorer!r} reports none for {block}")
    weight = down.weight_out_in()
    with torch.no_grad():
        for victim in dropped_in_order.tolist():
            twin = int(extras["twin"][victim])
            if twin >= 0:
                weight[:, twin] += float(extras["alpha"][victim]) * weight[:, victim]


def _parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _finite(scores: torch.Tensor, block: BlockLayout, scorer: str) -> torch.Tensor:
    if not torch.isfinite(scores).all():
        raise DataError(f"scorer {scorer!r} gave NaN or infinite scores in {block.name} (non-finite activations?)")
    return scores


# -- compressors -------------------------------------------------------------------------------


class _StructuredPruner(BaseCompressor):
    """Ranks units with a scorer of granularity ``granularity`` and shrinks every block alike."""

    granularity: str

    def stream_refusal(self, config, ctx):
        info = ctx.scorer(config.scorer)
        if config.sequential and getattr(info.cls, "statistics", ()):
            return None  # block by block on the calibration engine
        return f"scorer {config.scorer!r} scores the whole model at once here (a data-aware scorer with " \
               "sequential: true goes block by block)"

    def _check_scorer(self, config, ctx) -> None:
        ctx.require_scorer(config.scorer, self.granularity, self.name)

    resumable = True  # what each block lost is noted with its checkpoint (see _prune_blocks)

    def _prune_blocks(
        self, model, adapter, config, ctx, apply: Callable[[BlockLayout, torch.Tensor, dict[str, Any]], None],
        removed: dict[str, list[int]],
    ) -> bool:
        """Call ``apply(block, scores, extras)`` for every block (``extras``: the scorer's other
        outputs for that block, keyed ``"<block>::<what>"``), which notes what it removed in
        ``removed[block name]``; returns whether it went sequentially."""
        info = ctx.scorer(config.scorer)
        if config.sequential and getattr(info.cls, "statistics", ()):
            from slimkit import SequentialCalibration

            scorer, scorer_config = info.create(), ctx.host.config(info, config.scorer_params)
            engine = SequentialCalibration(model, adapter, ctx.calibration)
            for index, step in enumerate(engine, start=1):
                if step.restored:  # finished by an interrupted streamed run: what it removed was noted
                    removed[step.block.name] = step.record["removed"]
                    ctx.report("blocks", index, len(engine), step.block.name)
                    continue
                roles = scorer.roles(scorer_config)
                refs = [ref for ref in step.block.linears() if roles is None or ref.role in roles]
                stats = step.collect(refs, scorer.statistics, outputs=False)  # the block shrinks next
                values = ctx.score_block(info, step.block, stats, scorer_config)
                apply(step.block, _finite(values[step.block.name], step.block, config.scorer),
                      _extras(values, step.block.name))
                step.record["removed"] = removed.get(step.block.name, [])
                ctx.report("blocks", index, len(engine), step.block.name)
            return True
        scores = ctx.score(config.scorer, model, adapter, config.scorer_params)
        blocks = adapter.layout(model.model).blocks
        for index, block in enumerate(blocks, start=1):
            if block.name not in scores:
                raise ConfigError(f"scorer {config.scorer!r} gave no scores for {block.name}")
            apply(block, _finite(scores[block.name], block, config.scorer), _extras(scores.values, block.name))
            ctx.report("blocks", index, len(blocks), block.name)
        return False


class NeuronPruner(_StructuredPruner):
    """Remove the lowest-scoring MLP neurons of every block, shrinking the matrices and the config."""

    name = "prune.neurons"
    version = 1
    Config = NeuronConfig
    granularity = "neuron"

    def check(self, model, adapter, config, ctx):
        self._check_scorer(config, ctx)
        if config.fold and not getattr(ctx.scorer(config.scorer).cls, "reports_twins", False):
            raise ConfigError(f"fold needs twins, and scorer {config.scorer!r} reports none (use neurons.mi)")
        sizes = {block.mlp.intermediate_size for block in adapter.layout(model.model).blocks}
        if len(sizes) > 1:
            raise ArchitectureError(f"{model.architecture} has blocks of different MLP sizes {sorted(sizes)}")

    def compress_(self, model, adapter, config, ctx):
        self.check(model, adapter, config, ctx)
        layout = adapter.layout(model.model)
        before_size = layout.blocks[0].mlp.intermediate_size
        count = int(config.fraction * before_size)
        params_before = _parameter_count(model.model)
        removed: dict[str, list[int]] = {}
        if count:
            def apply(block: BlockLayout, scores: torch.Tensor, extras: dict[str, Any]) -> None:
                if scores.numel() != block.mlp.intermediate_size:
                    raise ConfigError(f"scorer {config.scorer!r} gave {scores.numel()} scores for "
                                      f"{block.mlp.intermediate_size} neurons in {block.name}")
                drop, keep = lowest(scores, count)
                if config.fold:
                    fold_into_twins_(block.mlp.down, drop[torch.argsort(scores[drop], stable=True)], extras,
                                     block.name, config.scorer)
                shrink_mlp_(block.mlp, keep)
                removed[block.name] = drop.tolist()

            sequential = self._prune_blocks(model, adapter, config, ctx, apply, removed)
            adapter.rewrite_config(model.model.config, intermediate_size=before_size - count)
        else:
            sequential = False
        after_size = before_size - count
        removed_params = params_before - _parameter_count(model.model)
        how = " block by block on calibration data" if sequential else ""
        return CompressionSummary(
            f"removed {count} of {before_size} MLP neurons in each of {len(layout.blocks)} blocks "
            f"(intermediate size {before_size} -> {after_size}) by {config.scorer} score{how}; "
            f"{removed_params:,} of {params_before:,} parameters removed",
            {"intermediate_size_before": before_size, "intermediate_size_after": after_size,
             "neurons_removed_per_block": count, "parameters_before": params_before,
             "parameters_after": params_before - removed_params, "parameters_removed": removed_params,
             "removed_neurons": removed},
        )


class HeadPruner(_StructuredPruner):
    """Remove the lowest-scoring key/value groups (a KV head and its query heads) of every block."""

    name = "prune.heads"
    version = 1
    Config = HeadConfig
    granularity = "head"

    def check(self, model, adapter, config, ctx):
        missing = [f for f in ("num_heads", "num_kv_heads") if f not in adapter.config_fields]
        if missing:
            raise ArchitectureError(
                f"{self.name}: the {adapter.name} config cannot express fewer attention heads per block "
                f"(its adapter cannot rewrite {', '.join(missing)})"
            )
        layout = adapter.layout(model.model)
        if any(block.attention.q is None for block in layout.blocks):
            raise ArchitectureError(f"{self.name}: fused qkv projections are not supported")
        kv_heads = {block.attention.num_kv_heads for block in layout.blocks}
        if len(kv_heads) > 1:
            raise ArchitectureError(f"{model.architecture} has blocks with different KV head counts")
        count = self._count(config, kv_heads.pop())
        if count and count >= layout.blocks[0].attention.num_kv_heads:
            raise ConfigError(
                f"{self.name}: cannot remove {count} of {layout.blocks[0].attention.num_kv_heads} key/value "
                "groups per block; at least one must remain"
            )
        if count:
            first = layout.blocks[0].attention
            self._check_config_accepts(model, adapter, first, first.num_kv_heads - count)
        self._check_scorer(config, ctx)

    def _check_config_accepts(self, model, adapter, attention: AttentionLayout, kv_heads: int) -> None:
        """Refuse head counts the family's ``transformers`` config would reject when saved (e.g.
        Llama's "hidden size is not a multiple of the number of attention heads")."""
        config = copy.deepcopy(model.model.config)
        adapter.rewrite_config(config, num_heads=kv_heads * attention.group_size, num_kv_heads=kv_heads)
        validate = getattr(config, "validate", None)
        if validate is None:
            return
        try:
            validate()
        except Exception as error:  # transformers wraps ValueError in its own validation error
            cause = error.__cause__ or error
            allowed = [
                n for n in range(1, attention.num_kv_heads)
                if _accepts(model.model.config, adapter, n * attention.group_size, n)
            ]
            raise ConfigError(
                f"{self.name}: keeping {kv_heads} of {attention.num_kv_heads} key/value groups gives a config "
                f"transformers rejects ({cause}); removable group counts: "
                f"{', '.join(str(attention.num_kv_heads - n) for n in reversed(allowed)) or 'none'}"
            ) from None

    @staticmethod
    def _count(config, kv_heads: int) -> int:
        return config.groups if config.groups is not None else int(config.fraction * kv_heads)

    def compress_(self, model, adapter, config, ctx):
        self.check(model, adapter, config, ctx)
        layout = adapter.layout(model.model)
        first = layout.blocks[0].attention
        heads, kv_heads, group = first.num_heads, first.num_kv_heads, first.group_size
        count = self._count(config, kv_heads)
        params_before = _parameter_count(model.model)
        removed: dict[str, list[int]] = {}
        sequential = False
        if count:
            def apply(block: BlockLayout, scores: torch.Tensor, extras: dict[str, Any]) -> None:
                if scores.numel() != block.attention.num_heads:
                    raise ConfigError(f"scorer {config.scorer!r} gave {scores.numel()} scores for "
                                      f"{block.attention.num_heads} heads in {block.name}")
                group_scores = scores.reshape(block.attention.num_kv_heads, group).double().sum(dim=1)
                drop, keep = lowest(group_scores, count)
                shrink_attention_(block.attention, keep)
                removed[block.name] = drop.tolist()

            sequential = self._prune_blocks(model, adapter, config, ctx, apply, removed)
            adapter.rewrite_config(
                model.model.config, num_heads=(kv_heads - count) * group, num_kv_heads=kv_heads - count
            )
        removed_params = params_before - _parameter_count(model.model)
        how = " block by block on calibration data" if sequential else ""
        return CompressionSummary(
            f"removed {count} of {kv_heads} key/value groups ({count * group} of {heads} query heads) in each of "
            f"{len(layout.blocks)} blocks by {config.scorer} score{how}; "
            f"{removed_params:,} of {params_before:,} parameters removed",
            {"heads_before": heads, "heads_after": heads - count * group, "kv_heads_before": kv_heads,
             "kv_heads_after": kv_heads - count, "parameters_before": params_before,
             "parameters_after": params_before - removed_params, "parameters_removed": removed_params,
             "removed_kv_groups": removed},
        )


@hookimpl
def register_compressors(register):
    register(NeuronPruner)
    register(HeadPruner)
