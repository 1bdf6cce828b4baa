"""Mutual-information neuron redundancy: the estimator, the greedy search, the fold, the method."""

from __future__ import annotations

import math

import pytest
import torch

from slimkit import Recipe, run_recipe
from slimkit.plugins.pruning.mutual_information import gaussian_mi, greedy_redundancy, greedy_residual


def sums(X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    X = X.double()
    return X.T @ X, X.sum(0), X.shape[0]


@pytest.mark.parametrize("rho", [0.0, 0.5, 0.9, -0.99])
def test_estimator_recovers_the_mi_of_correlated_gaussians(rho):
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(200_000, generator=generator, dtype=torch.float64)
    b = rho * a + math.sqrt(1 - rho**2) * torch.randn(200_000, generator=generator, dtype=torch.float64)
    X = torch.stack([a + 3.0, 2.0 * b - 1.0], dim=1)  # MI ignores shifts and scales
    mi = gaussian_mi(*sums(X))
    expected = -0.5 * math.log(1 - rho**2)
    assert float(mi[0, 1]) == pytest.approx(expected, abs=0.01)
    assert float(mi[0, 0]) == 0.0 and torch.equal(mi, mi.T)


def test_greedy_search_removes_the_less_important_of_the_most_redundant_pair():
    mi = torch.tensor([[0.0, 0.9, 0.1, 0.0],
                       [0.9, 0.0, 0.6, 0.0],
                       [0.1, 0.6, 0.0, 0.3],
                       [0.0, 0.0, 0.3, 0.0]], dtype=torch.float64)
    importance = torch.tensor([1.0, 2.0, 0.5, 3.0])
    order, twins = greedy_redundancy(mi, importance, threshold=0.2)
    # (0,1) first: 0 is less important; then (1,2): 2 goes; then (2,3) is gone with 2; stop
    assert order == [0, 2] and twins == {0: 1, 2: 1}
    assert greedy_redundancy(mi, importance, threshold=0.95) == ([], {})


def test_residual_search_removes_what_a_partner_explains_before_what_is_merely_small():
    """Neurons 0 and 1 are near copies (important, but each explains the other); 2 and 3 are
    independent, 2 weak and 3 strong. Importance alone would drop 2 first; the residual criterion
    drops one of the twins first (its loss is ~0 after folding), then the weak independent one."""
    generator = torch.Generator().manual_seed(4)
    a = torch.randn(50_000, generator=generator, dtype=torch.float64)
    X = torch.stack([a, a + 0.01 * torch.randn(50_000, generator=generator, dtype=torch.float64),
                     torch.randn(50_000, generator=generator, dtype=torch.float64),
                     torch.randn(50_000, generator=generator, dtype=torch.float64)], dim=1)
    mi = gaussian_mi(*sums(X))
    importance = torch.tensor([2.0, 2.1, 0.5, 3.0])
    order, twins = greedy_residual(mi, importance)
    assert order[:2] == [0, 2] and twins[0] == 1
    assert sorted(order) == [0, 1, 2] and len(order) == 3  # everything but the last is ranked


def test_fold_recovers_an_exactly_redundant_neuron(host):
    """Neuron 3 is 0.5 x neuron 1 on every token: removing it and folding must lose nothing."""
    from slimkit.core.architecture import LinearRef
    from slimkit.plugins.pruning.structured import fold_into_twins_

    generator = torch.Generator().manual_seed(1)
    X = torch.randn(500, 6, generator=generator, dtype=torch.float64)
    X[:, 3] = 0.5 * X[:, 1]
    hessian, total, tokens = sums(X)
    importance = torch.tensor([1.0, 2.0, 1.0, 0.1, 1.0, 1.0])
    order, twins = greedy_redundancy(gaussian_mi(hessian, total, tokens), importance, threshold=5.0)
    assert order == [3] and twins == {3: 1}
    down = torch.nn.Linear(6, 4, bias=False).double()
    ref = LinearRef("down", "down", down, 6, 4)
    before = X @ down.weight.detach().T
    alpha = torch.zeros(6, dtype=torch.float64)
    alpha[3] = hessian[3, 1] / hessian[1, 1]
    fold_into_twins_(ref, torch.tensor([3]), {"twin": torch.tensor([-1, -1, -1, 1, -1, -1]), "alpha": alpha},
                     "block", "neurons.mi")
    keep = [0, 1, 2, 4, 5]
    after = X[:, keep] @ down.weight.detach()[:, keep].T
    torch.testing.assert_close(after, before, rtol=1e-10, atol=1e-10)


def test_mi_structured_beats_magnitude_structured_at_the_same_reduction(host):
    evaluate = [{"metric": "perplexity", "params": {"add_bos": True, "collapse_blank_lines": True,
                                                    "seq_len": 256, "max_windows": 40}}]

    def ppl(params):
        recipe = Recipe.from_data({"calibration": {"n_samples": 32, "seq_len": 256, "seed": 0},
                                   "steps": [{"method": "prune.neurons", "params": {"fraction": 0.2, **params}}],
                                   "evaluate": evaluate})
        result = run_recipe(recipe, "example:stories260K", host=host, catalogue=False)
        assert result.model.config.intermediate_size == 172 - int(0.2 * 172)
        return result.after["perplexity"]["perplexity"]

    mi_fold = ppl({"scorer": "neurons.mi", "fold": True})
    assert mi_fold < ppl({"scorer": "neurons.magnitude"})
    assert mi_fold <= ppl({"scorer": "neurons.mi"}) * 1.001  # folding the twins does not hurt


def test_fold_needs_a_scorer_with_twins(host):
    from slimkit.core.errors import RecipeError

    recipe = Recipe.from_data({"steps": [{"method": "prune.neurons", "params": {"fold": True}}]})
    with pytest.raises(RecipeError, match="fold needs twins, and scorer 'neurons.magnitude' reports none"):
        run_recipe(recipe, "example:stories260K", host=host, catalogue=False)
