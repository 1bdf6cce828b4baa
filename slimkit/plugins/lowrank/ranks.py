"""How many singular components each factorised layer keeps.

Four ways to say it (at most one per step; none means ``param_ratio: 0.2``, uniform):

* ``rank``: the same rank everywhere (refused where a layer has fewer than that to give);
* ``rank_ratio``: a fraction of each layer's full rank ``min(in, out)``;
* ``energy``: the smallest rank keeping that fraction of each layer's ``Σσ²`` (in the space the
  method measures error in: weights, scaled weights or, whitened, outputs on the calibration data);
* ``param_ratio``: remove at least that fraction of the targeted layers' parameters in all.
  ``uniform`` allocation gives every layer the same fraction; ``sensitivity`` allocation measures,
  for every layer alone, how far the model's output moves when that layer keeps only a fraction
  ``f`` of its parameters (``f`` in ``1/(steps+1) … steps/(steps+1)``; see :mod:`.sensitivity`),
  then, as ASVD does, finds the smallest tolerance ``τ`` for which giving every layer the smallest
  ``f`` whose measured change stays within ``τ`` meets the budget.

A layer whose rank would not save parameters (``r (in + out) >= in · out``) stays dense.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
from pydantic import Field, model_validator

from slimkit import ALL_ROLES, ConfigError, MethodConfig, Role, low_rank_saves

Allocation = Literal["uniform", "sensitivity"]
RULES = ("rank", "rank_ratio", "energy", "param_ratio")
DEFAULT_PARAM_RATIO = 0.2


class RankConfig(MethodConfig):
    roles: tuple[Role, ...] = Field(ALL_ROLES, description="Which block projections to factorise.")
    rank: int | None = Field(None, ge=1, description="The same rank for every layer.")
    rank_ratio: float | None = Field(None, gt=0.0, le=1.0, description="Rank as a fraction of min(in, out).")
    energy: float | None = Field(None, gt=0.0, le=1.0, description="Keep this fraction of each layer's sum of σ².")
    param_ratio: float | None = Field(None, gt=0.0, lt=1.0,
                                      description="Remove at least this fraction of the targeted layers' parameters "
                                      f"(the rule used when none is given: {DEFAULT_PARAM_RATIO}).")
    allocation: Allocation = Field("uniform", description="With param_ratio: the same fraction per layer, or "
                                   "by each layer's measured effect on the output (needs calibration data).")
    sensitivity_steps: int = Field(4, ge=1, le=19, description="Keep-fractions tried per layer for sensitivity "
                                   "allocation: 1/(n+1) ... n/(n+1).")
    sensitivity_tokens: int = Field(512, ge=16, le=1 << 16, description="Calibration tokens the sensitivity "
                                    "measurement runs the model on (from the first windows).")

    @model_validator(mode="before")
    @classmethod
    def _default_rule(cls, data: Any) -> Any:
        if isinstance(data, dict) and all(data.get(name) is None for name in RULES):
            return {**data, "param_ratio": DEFAULT_PARAM_RATIO}
        return data

    @model_validator(mode="after")
    def _one_way(self) -> "RankConfig":
        given = [name for name in RULES if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"give one of rank, rank_ratio, energy, param_ratio (got {', '.join(given)})")
        if self.allocation == "sensitivity" and self.param_ratio is None:
            raise ValueError("allocation 'sensitivity' needs param_ratio (a budget to allocate)")
        return self


@dataclass(frozen=True)
class LayerShape:
    name: str
    in_features: int
    out_features: int

    @property
    def dense(self) -> int:
        return self.in_features * self.out_features

    @property
    def per_rank(self) -> int:
        return self.in_features + self.out_features

    @property
    def full_rank(self) -> int:
        return min(self.in_features, self.out_features)

    def params(self, rank: int) -> int:
        """Parameters held at ``rank`` (dense once factors would not save any)."""
        return rank * self.per_rank if low_rank_saves(rank, self.in_features, self.out_features) else self.dense


def check_rank(config: RankConfig, layers: list[LayerShape], method: str) -> None:
    """Refuse an explicit rank larger than a layer allows, naming the layer."""
    if config.rank is not None:
        too_big = [layer for layer in layers if config.rank > layer.full_rank]
        if too_big:
            layer = too_big[0]
            raise ConfigError(f"{method}: rank {config.rank} is larger than {layer.name} allows "
                              f"({layer.out_features}x{layer.in_features}: at most {layer.full_rank}); "
                              f"{len(too_big) - 1} more layer(s) too")
    if config.param_ratio is not None and config.allocation == "uniform":
        for layer in layers:
            if uniform_rank(layer, config.param_ratio) < 1:
                raise ConfigError(f"{method}: param_ratio {config.param_ratio} leaves {layer.name} no rank at all")


def uniform_rank(layer: LayerShape, param_ratio: float) -> int:
    """The rank keeping ``1 - param_ratio`` of the layer's parameters (rounded down; may be 0)."""
    return _rank_keeping(layer, 1.0 - param_ratio)


def _rank_keeping(layer: LayerShape, fraction: float) -> int:
    return math.floor(fraction * layer.dense / layer.per_rank)


def direct_rank(config: RankConfig, layer: LayerShape, energy: torch.Tensor | None) -> int:
    """The rank of one layer for ``rank``, ``rank_ratio``, ``energy`` or uniform ``param_ratio``
    (``energy``: the layer's σ², descending, needed for the energy rule)."""
    if config.rank is not None:
        return config.rank
    if config.rank_ratio is not None:
        return max(1, math.ceil(config.rank_ratio * layer.full_rank))
    if config.energy is not None:
        assert energy is not None
        cumulative = torch.cumsum(energy.double(), 0)
        total = float(cumulative[-1])
        if total <= 0.0:
            return 1
        return min(int(torch.searchsorted(cumulative, config.energy * total * (1 - 1e-12))) + 1, layer.full_rank)
    assert config.param_ratio is not None
    return uniform_rank(layer, config.param_ratio)


def allocate(layers: list[LayerShape], changes: dict[str, dict[float, float]], param_ratio: float
             ) -> dict[str, int]:
    """Ranks from measured sensitivities (see the module docstring). ``changes[layer][f]`` is the
    output change measured with the layer at keep-fraction ``f`` alone; a layer with no ``f``
    within the tolerance stays dense (its rank is its full rank)."""
    budget = (1.0 - param_ratio) * sum(layer.dense for layer in layers)

    def choose(tolerance: float) -> dict[str, int]:
        ranks = {}
        for layer in layers:
            fitting = [f for f, change in changes[layer.name].items() if change <= tolerance]
            ranks[layer.name] = keep_rank(layer, min(fitting)) if fitting else layer.full_rank
        return ranks

    def kept(ranks: dict[str, int]) -> int:
        return sum(layer.params(ranks[layer.name]) for layer in layers)

    tolerances = sorted({change for per_layer in changes.values() for change in per_layer.values()})
    for tolerance in tolerances:  # ascending: the first that fits is the smallest
        ranks = choose(tolerance)
        if kept(ranks) <= budget:
            return ranks
    smallest = min((min(per_layer) for per_layer in changes.values()), default=1.0)
    raise ConfigError(f"param_ratio {param_ratio} cannot be met with the fractions measured (each layer keeps at "
                      f"least {smallest:.0%} of its parameters); lower param_ratio or raise sensitivity_steps")


def keep_rank(layer: LayerShape, fraction: float) -> int:
    """The rank keeping ``fraction`` of the layer's parameters (at least 1)."""
    return max(1, _rank_keeping(layer, fraction))
