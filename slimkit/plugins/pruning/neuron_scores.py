"""Scorers for structured pruning: one score per MLP intermediate neuron or per attention head.

Scores are keyed by block name (see :class:`slimkit.Scores`).

* ``neurons.magnitude`` (no data): ``||input-side weights|| x ||output-side weights||`` of each
  neuron. The input side is the neuron's row of ``up`` (and of ``gate`` for gated MLPs, taken
  together as one vector); the output side is its column of ``down``.
* ``neurons.activation`` (calibration): the L2 norm over calibration tokens of the neuron's
  activation (the input of ``down``) times the norm of its ``down`` column: Wanda's
  ``|W| x ||X||`` summed over a whole neuron, i.e. an upper bound of how much the neuron can move
  the block's output (the criterion used for FFN neurons by LLM-Pruner's L2 baseline and FLAP).
* ``heads.magnitude`` (no data): per query head, the norm of its ``q`` rows times the norm of its
  columns in ``o``.
* ``heads.activation`` (calibration): per query head, the L2 norm of its slice of ``o``'s input
  (the head's attention output) times the norm of its slice of ``o``'s weight columns.
"""

from __future__ import annotations

import torch

from slimkit import AttentionLayout, BaseScorer, BlockLayout, MLPLayout, MethodConfig, Scores, hookimpl


class NoParams(MethodConfig):
    """These scorers take no parameters."""


def _row_norms(weight_out_in: torch.Tensor) -> torch.Tensor:
    return weight_out_in.detach().double().pow(2).sum(dim=1).sqrt()


def _column_norms(weight_out_in: torch.Tensor) -> torch.Tensor:
    return weight_out_in.detach().double().pow(2).sum(dim=0).sqrt()


def neuron_magnitude(mlp: MLPLayout) -> torch.Tensor:
    """``||[up_i; gate_i]|| * ||down[:, i]||`` for every intermediate neuron ``i`` (float32)."""
    inputs = _row_norms(mlp.up.weight_out_in()).pow(2)
    if mlp.gate is not None:
        inputs = inputs + _row_norms(mlp.gate.weight_out_in()).pow(2)
    return (inputs.sqrt() * _column_norms(mlp.down.weight_out_in())).float()


def head_slices(values: torch.Tensor, attention: AttentionLayout) -> torch.Tensor:
    """Sum a per-feature vector over each head's ``head_dim`` features: ``[num_heads]``."""
    return values.reshape(attention.num_heads, attention.head_dim).sum(dim=1)


def head_magnitude(attention: AttentionLayout) -> torch.Tensor:
    """``||q rows of head h|| * ||o columns of head h||`` for every query head (float32)."""
    if attention.q is None:
        raise ValueError("head scores need separate q/k/v projections")
    q_rows = head_slices(_row_norms(attention.q.weight_out_in()).pow(2), attention)
    o_cols = head_slices(_column_norms(attention.o.weight_out_in()).pow(2), attention)
    return (q_rows.sqrt() * o_cols.sqrt()).float()


class NeuronMagnitudeScorer(BaseScorer):
    """Per MLP neuron: norm of its up/gate rows times norm of its down column; no data needed."""

    name = "neurons.magnitude"
    version = 1
    granularity = "neuron"
    Config = NoParams

    def score(self, model, adapter, config, ctx):
        layout = adapter.layout(model.model)
        values = {block.name: neuron_magnitude(block.mlp) for block in layout.blocks}
        return Scores(self.name, self.granularity, values, config.model_dump(mode="json"))


class NeuronActivationScorer(BaseScorer):
    """Per MLP neuron: L2 norm of its activation on calibration data times norm of its down column."""

    name = "neurons.activation"
    version = 1
    granularity = "neuron"
    Config = NoParams
    needs_calibration = True
    statistics = ("input_sq_sum",)

    def roles(self, config):
        return ("down",)

    def score_block(self, block: BlockLayout, stats, config, ctx) -> dict[str, torch.Tensor]:
        down = block.mlp.down
        activation = stats[down.name].input_norm
        return {block.name: (activation * _column_norms(down.weight_out_in())).float()}


class HeadMagnitudeScorer(BaseScorer):
    """Per attention head: norm of its q rows times norm of its o columns; no data needed."""

    name = "heads.magnitude"
    version = 1
    granularity = "head"
    Config = NoParams

    def score(self, model, adapter, config, ctx):
        layout = adapter.layout(model.model)
        values = {block.name: head_magnitude(block.attention) for block in layout.blocks}
        return Scores(self.name, self.granularity, values, config.model_dump(mode="json"))


class HeadActivationScorer(BaseScorer):
    """Per attention head: L2 norm of its output on calibration data times norm of its o columns."""

    name = "heads.activation"
    version = 1
    granularity = "head"
    Config = NoParams
    needs_calibration = True
    statistics = ("input_sq_sum",)

    def roles(self, config):
        return ("o",)

    def score_block(self, block: BlockLayout, stats, config, ctx) -> dict[str, torch.Tensor]:
        attention = block.attention
        activation = head_slices(stats[attention.o.name].input_sq_sum, attention).sqrt()
        weight = head_slices(_column_norms(attention.o.weight_out_in()).pow(2), attention).sqrt()
        return {block.name: (activation * weight).float()}


@hookimpl
def register_scorers(register):
    for scorer in (NeuronMagnitudeScorer, NeuronActivationScorer, HeadMagnitudeScorer, HeadActivationScorer):
        register(scorer)
