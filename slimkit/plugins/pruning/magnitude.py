"""Magnitude scorer: the importance of a weight is its absolute value (Han et al., 2015)."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from slimkit import hookimpl
from slimkit.core.config import MethodConfig
from slimkit.core.contracts import BaseScorer
from slimkit.core.scores import Scores

ALL_ROLES = ("q", "k", "v", "qkv", "o", "up", "gate", "down")
RoleName = Literal["q", "k", "v", "qkv", "o", "up", "gate", "down"]


class MagnitudeConfig(MethodConfig):
    roles: tuple[RoleName, ...] = Field(
        ALL_ROLES, description="Which block projections to score (attention q/k/v/qkv/o, MLP up/gate/down)."
    )


class MagnitudeScorer(BaseScorer):
    """|W| of every block projection weight; needs no calibration data."""

    name = "magnitude"
    version = 1
    granularity = "weight"
    Config = MagnitudeConfig

    def score(self, model, adapter, config, ctx):
        layout = adapter.layout(model.model)
        values = {}
        with torch.no_grad():
            for _, ref in layout.linears(config.roles):
                values[ref.name] = ref.weight_out_in().detach().abs().float().clone()
        return Scores(self.name, self.granularity, values, config.model_dump(mode="json"))


@hookimpl
def register_scorers(register):
    register(MagnitudeScorer)
