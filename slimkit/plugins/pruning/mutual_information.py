"""Mutual-information redundancy of MLP neurons ("Large Language Model Pruning", Huang, Song &
Pao 2024): while some pair of neurons in a block shares more than ``threshold`` nats of
information, remove the less important neuron of the most redundant pair.

Estimator: Gaussian. For jointly Gaussian activations, I(a; b) = -1/2 log(1 - rho²) with rho
their Pearson correlation, so every pair's MI follows from one covariance matrix, accumulated
exactly from the calibration tokens (the second moments at ``down_proj``'s input). For
non-Gaussian activations this measures the linear part of the dependence, which is what a
least-squares fold can recover. One matrix product gives all pairs; the greedy search then
keeps each row's best partner and recomputes only the rows whose partner was removed, instead of
rescanning all n² pairs after every removal.

The scorer ranks neurons for ``prune.neurons``: removed neurons first, in removal order, then the
rest by activation importance (|activation| x ||down column||).

``criterion: residual`` (slimkit's variant, not the paper's) weighs redundancy by importance
instead of thresholding it. For Gaussian activations ``1 - rho² = exp(-2 I(a; b))`` is the share
of ``a``'s variance that its best partner ``b`` cannot explain linearly, so
``importance(a)² x exp(-2 max_b I(a; b))`` estimates what the block's output loses when ``a`` is
removed and folded into ``b``. The greedy search removes the neuron with the smallest such loss,
re-pairs the neurons whose partner it was, and goes on through all neurons (no threshold). It also reports, for every
removed neuron, its redundant twin and the least-squares factor alpha with a ≈ alpha b, which
``prune.neurons`` ``fold: true`` adds into the twin's column of ``down_proj``.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field

from slimkit import BaseScorer, DataError, MethodConfig, hookimpl


class MIConfig(MethodConfig):
    threshold: float = Field(
        0.1, ge=0.0, description="Pairs sharing more than this many nats are redundant (0.1 nats: |rho| ~ 0.42); "
        "criterion mi only."
    )
    criterion: Literal["mi", "residual"] = Field(
        "mi",
        description="mi: remove the less important neuron of the most redundant pair while MI exceeds the "
        "threshold (the paper); residual: remove the neuron whose importance is least left unexplained by its "
        "most informative partner, importance² x exp(-2 MI).",
    )


def gaussian_mi(hessian: torch.Tensor, total: torch.Tensor, tokens: int) -> torch.Tensor:
    """Pairwise Gaussian MI (nats) from sums: ``hessian`` = Σ x xᵀ, ``total`` = Σ x.

    Built in place in one ``[n, n]`` float64 buffer (plus one temporary), not the five or six
    matrices a direct transcription of the formula allocates."""
    mean = (total / tokens).to(torch.float64)
    cov = hessian.to(torch.float64) / tokens  # a new buffer: the statistics stay untouched
    cov.addr_(mean, mean, alpha=-1.0)
    std = cov.diagonal().clamp(min=0).sqrt()
    inverse = torch.where(std > 0, 1.0 / std.clamp(min=1e-300), torch.zeros_like(std))
    # a neuron that never varies carries no information: its inverse is 0, so its rho and MI are 0
    rho = cov.mul_(torch.outer(inverse, inverse)).clamp_(-1.0, 1.0)  # one product per entry: symmetric
    mi = rho.square_().clamp_(max=1 - 1e-12).neg_().log1p_().mul_(-0.5)
    mi.fill_diagonal_(0.0)
    return mi


def greedy_redundancy(
    mi: torch.Tensor, importance: torch.Tensor, threshold: float
) -> tuple[list[int], dict[int, int]]:
    """Removal order and twins: repeatedly take the pair with the highest MI above ``threshold``
    and remove its less important member."""
    n = mi.shape[0]
    scores = mi.clone()
    scores.fill_diagonal_(-math.inf)
    best, partner = scores.max(dim=1)
    alive = torch.ones(n, dtype=torch.bool)
    order: list[int] = []
    twins: dict[int, int] = {}
    while len(order) < n - 1:
        i = int(torch.argmax(best))
        if not best[i] > threshold:
            break
        j = int(partner[i])
        victim, twin = (i, j) if importance[i] < importance[j] else (j, i)
        order.append(victim)
        twins[victim] = twin
        alive[victim] = False
        scores[victim, :] = -math.inf
        scores[:, victim] = -math.inf
        best[victim] = -math.inf
        stale = alive & (partner == victim)
        if stale.any():
            best[stale], partner[stale] = scores[stale].max(dim=1)
    return order, twins


def greedy_residual(mi: torch.Tensor, importance: torch.Tensor) -> tuple[list[int], dict[int, int]]:
    """Removal order and twins: repeatedly remove the neuron with the least
    ``importance² x exp(-2 MI(neuron, its most informative remaining partner))``."""
    n = mi.shape[0]
    scores = mi.clone()
    scores.fill_diagonal_(-math.inf)
    weight = importance.double().pow(2)
    best, partner = scores.max(dim=1)
    loss = weight * torch.exp(-2.0 * best)
    order: list[int] = []
    twins: dict[int, int] = {}
    alive = torch.ones(n, dtype=torch.bool)
    while len(order) < n - 1:
        victim = int(torch.argmin(loss))
        twin = int(partner[victim])
        order.append(victim)
        twins[victim] = twin
        alive[victim] = False
        scores[:, victim] = -math.inf
        loss[victim] = math.inf
        stale = alive & (partner == victim)
        if stale.any():
            best[stale], partner[stale] = scores[stale].max(dim=1)
            loss[stale] = weight[stale] * torch.exp(-2.0 * best[stale])
    return order, twins


class MutualInformationScorer(BaseScorer):
    """Greedy removal order of redundant MLP neurons by pairwise (Gaussian) mutual information."""

    name = "neurons.mi"
    version = 1
    granularity = "neuron"
    Config = MIConfig
    needs_calibration = True
    statistics = ("input_sum", "input_sq_sum", "hessian")
    reports_twins = True  # prune.neurons fold: true can use it

    def roles(self, config):
        return ("down",)

    def score_block(self, block, stats, config, ctx):
        down = block.mlp.down
        s = stats[down.name]
        if s.tokens < down.in_features:
            raise DataError(
                f"neurons.mi: {s.tokens} calibration tokens are too few to estimate the correlations of "
                f"{down.in_features} neurons in {block.name}; use at least {down.in_features} (n_samples x seq_len)"
            )
        importance = s.input_norm.float() * down.weight_out_in().detach().float().norm(dim=0)
        mi = gaussian_mi(s.hessian, s.input_sum, s.tokens)
        if config.criterion == "residual":
            order, twins = greedy_residual(mi, importance)
        else:
            order, twins = greedy_redundancy(mi, importance, config.threshold)
        n = importance.numel()
        scores = torch.empty(n, dtype=torch.float32)
        rest = torch.ones(n, dtype=torch.bool)
        rest[order] = False
        scores[order] = torch.arange(len(order), dtype=torch.float32)
        # the others rank after every removed neuron, least important first
        ranked = torch.argsort(importance[rest], stable=True)
        scores[torch.nonzero(rest).flatten()[ranked]] = len(order) + torch.arange(int(rest.sum()), dtype=torch.float32)
        twin = torch.full((n,), -1, dtype=torch.long)
        alpha = torch.zeros(n, dtype=torch.float64)
        for victim, kept in twins.items():
            twin[victim] = kept
            # least squares a ≈ alpha b over the calibration tokens: alpha = <a, b> / <b, b>
            alpha[victim] = s.hessian[victim, kept] / s.hessian[kept, kept].clamp(min=1e-300)
        return {block.name: scores, f"{block.name}::twin": twin, f"{block.name}::alpha": alpha}


@hookimpl
def register_scorers(register):
    register(MutualInformationScorer)
