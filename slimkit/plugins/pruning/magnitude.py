"""Magnitude scorer: the importance of a weight is its absolute value (Han et al., 2015)."""

from __future__ import annotations

import torch
from pydantic import Field

from slimkit import ALL_ROLES, BaseScorer, MethodConfig, Role, Scores, hookimpl


class MagnitudeConfig(MethodConfig):
    roles: tuple[Role, ...] = Field(
        ALL_ROLES, description="Which block projections to score (attention q/k/v/qkv/o, MLP up/gate/down)."
    )


class MagnitudeScorer(BaseScorer):
    """|W| of every block projection weight; needs no calibration data."""

    name = "magnitude"
    version = 1
    granularity = "weight"
    Config = MagnitudeConfig

    def score_block(self, block, stats, config, ctx):
        """|W| of one block's projections (no statistics needed): pruners that rank layer by
        layer call this block by block and never hold more than one block's scores."""
        with torch.no_grad():
            return {ref.name: ref.weight_out_in().detach().abs().float().clone()
                    for ref in block.linears() if ref.role in config.roles}

    def score(self, model, adapter, config, ctx):
        values = {}
        for block in adapter.layout(model.model).blocks:
            values.update(self.score_block(block, {}, config, ctx))
        return Scores(self.name, self.granularity, values, config.model_dump(mode="json"))


@hookimpl
def register_scorers(register):
    register(MagnitudeScorer)
