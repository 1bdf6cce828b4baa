"""N:M semi-structured pruning: at most N non-zeros in every M consecutive input weights.

2:4 is the pattern sparse tensor cores accelerate (Mishra et al. 2021); 4:8 is a looser variant
with the same 50% density. Groups run along the input dimension of each output row, so a layer's
input size must be a multiple of M. Any weight scorer ranks the weights within each group.
"""

from __future__ import annotations

import torch
from pydantic import Field, model_validator

from slimkit import ArchitectureError, hookimpl
from slimkit.plugins.pruning.unstructured import ScoredPruner, ScoredPruningConfig, lowest_per_row


class NMConfig(ScoredPruningConfig):
    n: int = Field(2, ge=1, le=64, description="Non-zero weights kept in each group.")
    m: int = Field(4, ge=2, le=128, description="Consecutive input weights per group.")

    @model_validator(mode="after")
    def _n_below_m(self) -> "NMConfig":
        if self.n >= self.m:
            raise ValueError(f"n must be smaller than m (got {self.n}:{self.m})")
        return self


def nm_mask(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """True = prune: the ``m - n`` lowest scores of every ``m`` consecutive inputs of each row."""
    return lowest_per_row(scores.reshape(-1, m), m - n).reshape(scores.shape)


class NMPruner(ScoredPruner):
    """Keep the N highest-scoring of every M consecutive input weights (2:4, 4:8)."""

    name = "prune.nm"
    version = 1
    Config = NMConfig

    def check(self, model, adapter, config, ctx):
        super().check(model, adapter, config, ctx)
        for _, ref in adapter.layout(model.model).linears(config.roles):
            if ref.in_features % config.m:
                raise ArchitectureError(
                    f"{ref.name} has {ref.in_features} inputs, not a multiple of m={config.m}; "
                    f"choose m dividing it or leave its role out"
                )

    def mask(self, scores, config, ref):
        return nm_mask(scores, config.n, config.m)

    def describe_mask(self, config):
        return f"{config.n}:{config.m} pattern"


@hookimpl
def register_compressors(register):
    register(NMPruner)
