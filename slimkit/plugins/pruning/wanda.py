"""Wanda scorer: |W_ij| x ||X_j||_2 (Sun, Liu, Bair, Kolter 2023, "A Simple and Effective
Pruning Approach for Large Language Models").

A weight matters in proportion to its magnitude and to how large the input feature it multiplies
is on real data. Pair it with ``prune.unstructured`` ``scope: row`` (the paper compares weights
within each output row) and a ``calibration:`` section; the pruner then scores block by block on
the outputs of the already-pruned blocks, as the paper does.
"""

from __future__ import annotations

import torch
from pydantic import Field

from slimkit import ALL_ROLES, BaseScorer, MethodConfig, Role, hookimpl


class WandaConfig(MethodConfig):
    roles: tuple[Role, ...] = Field(ALL_ROLES, description="Which block projections to score.")


class WandaScorer(BaseScorer):
    """|W| times the L2 norm of each input feature over the calibration data."""

    name = "wanda"
    version = 1
    granularity = "weight"
    Config = WandaConfig
    needs_calibration = True
    statistics = ("input_sq_sum",)

    def score_block(self, block, stats, config, ctx):
        scores = {}
        for ref in block.linears():
            if ref.name in stats:
                norm = stats[ref.name].input_norm.to(torch.float32)
                scores[ref.name] = ref.weight_out_in().detach().abs().float() * norm.unsqueeze(0)
        return scores


@hookimpl
def register_scorers(register):
    register(WandaScorer)
