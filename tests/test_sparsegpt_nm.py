"""SparseGPT and N:M pruning: exact patterns, an exact least-squares check, published orderings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from slimkit import Recipe, load_model, run_recipe
from slimkit.core.calibration import SequentialCalibration
from slimkit.core.data import TextSource, calibration_samples
from slimkit.core.errors import DataError, RecipeError
from slimkit.core.model_io import example_text
from slimkit.plugins.pruning.nm import nm_mask
from slimkit.plugins.pruning.sparsegpt import sparsegpt_prune_
from slimkit.plugins.pruning.unstructured import prune_mask

CALIBRATION = {"n_samples": 16, "seq_len": 128, "seed": 0}


def run(host, step, calibration=True):
    data = {"steps": [step], **({"calibration": CALIBRATION} if calibration else {})}
    return run_recipe(Recipe.from_data(data), "example:stories260K", host=host, catalogue=False)


@pytest.mark.parametrize("step", [
    {"method": "prune.nm", "params": {"n": 2, "m": 4}},
    # down_proj has 172 inputs, not a multiple of 8: leave it out
    {"method": "prune.nm", "params": {"n": 4, "m": 8, "scorer": "wanda", "roles": ["q", "k", "v", "o", "gate", "up"]}},
    {"method": "prune.sparsegpt", "params": {"n": 2, "m": 4}},
], ids=["nm-2:4-magnitude", "nm-4:8-wanda", "sparsegpt-2:4"])
def test_nm_pattern_holds_in_every_group(host, step):
    result = run(host, step)
    n, m = step["params"]["n"], step["params"]["m"]
    layout = host.adapter_for(result.model).layout(result.model.model)
    for _, ref in layout.linears(tuple(step["params"].get("roles", ("q", "k", "v", "o", "gate", "up", "down")))):
        weight = ref.weight_out_in()
        nonzero = (weight != 0).reshape(weight.shape[0], -1, m).sum(dim=2)
        assert int(nonzero.max()) <= n, ref.name
    assert result.steps[0].details["sparsity"] == pytest.approx(1 - n / m)


def test_nm_mask_prunes_the_lowest_in_each_group():
    scores = torch.tensor([[4.0, 1.0, 3.0, 2.0, 0.5, 0.6, 0.7, 0.8]])
    assert nm_mask(scores, 2, 4).tolist() == [[False, True, False, True, True, True, False, False]]


def test_sparsegpt_single_removal_is_the_least_squares_optimum():
    """Removing one weight: the update of the later columns must minimise ||(W - Ŵ) X||² exactly
    (columns before it are already fixed in SparseGPT's order), checked with numpy lstsq."""
    generator = torch.Generator().manual_seed(0)
    X = torch.randn(8, 300, generator=generator, dtype=torch.float64)
    W = torch.randn(1, 8, generator=generator, dtype=torch.float64)
    pruned = W.clone()
    mask = sparsegpt_prune_(pruned, X @ X.T, sparsity=1 / 8, block_size=8, dampening=1e-12)
    (p,) = torch.nonzero(mask[0]).flatten().tolist()
    free = list(range(p + 1, 8))
    # minimise || W X - (W_fixed X_fixed + v X_free) || over v, with w_p = 0
    target = (W @ X).numpy().ravel() - (W[:, :p] @ X[:p]).numpy().ravel()
    v, *_ = np.linalg.lstsq(X[free].numpy().T, target, rcond=None)
    expected = W.clone()
    expected[0, p] = 0.0
    expected[0, free] = torch.from_numpy(v)
    torch.testing.assert_close(pruned, expected, rtol=1e-7, atol=1e-9)


def reference_sparsegpt(W, H, sparsity, n=None, m=None, block_size=128, dampening=0.01):
    """SparseGPT's column sweep written out plainly (Frantar & Alistarh 2023, Algorithm 1), float64."""
    W, H = W.double().clone(), H.double().clone()
    H += dampening * torch.mean(torch.diag(H)) * torch.eye(H.shape[0], dtype=H.dtype)
    Hinv = torch.linalg.cholesky(torch.linalg.inv(H), upper=True)
    mask = torch.zeros_like(W, dtype=torch.bool)
    for i1 in range(0, W.shape[1], block_size):
        i2 = min(i1 + block_size, W.shape[1])
        W1, Hinv1 = W[:, i1:i2].clone(), Hinv[i1:i2, i1:i2]
        Q1, Err1 = torch.zeros_like(W1), torch.zeros_like(W1)
        mask1 = torch.zeros_like(W1, dtype=torch.bool)
        if n is None:
            tmp = W1**2 / torch.diag(Hinv1).reshape(1, -1) ** 2
            mask1.view(-1)[torch.sort(tmp.flatten(), stable=True).indices[: int(tmp.numel() * sparsity)]] = True
        for i in range(i2 - i1):
            if n is not None and i % m == 0:
                tmp = W1[:, i:i + m] ** 2 / torch.diag(Hinv1)[i:i + m].reshape(1, -1) ** 2
                mask1.scatter_(1, i + torch.sort(tmp, dim=1, stable=True).indices[:, : m - n], True)
            w, d = W1[:, i], Hinv1[i, i]
            q = w.clone()
            q[mask1[:, i]] = 0
            Q1[:, i] = q
            err = (w - q) / d
            W1[:, i:] -= err.unsqueeze(1) @ Hinv1[i, i:].unsqueeze(0)
            Err1[:, i] = err
        W[:, i1:i2], mask[:, i1:i2] = Q1, mask1
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
    return W, mask


@pytest.mark.parametrize("pattern", [{"sparsity": 0.5}, {"sparsity": 0.0, "n": 2, "m": 4}],
                         ids=["unstructured", "2:4"])
def test_fast_sweep_equals_the_plain_algorithm(pattern):
    """The rearranged column sweep against the algorithm as published, on correlated inputs
    spanning a full and a partial mask block (each with inner blocks): same mask, same weights."""
    generator = torch.Generator().manual_seed(2)
    mix = torch.randn(96, 96, generator=generator, dtype=torch.float64)
    X = mix @ torch.randn(96, 400, generator=generator, dtype=torch.float64)
    W = torch.randn(24, 96, generator=generator, dtype=torch.float64)
    expected, expected_mask = reference_sparsegpt(W, X @ X.T, block_size=80, **pattern)
    ours = W.clone()
    mask = sparsegpt_prune_(ours, X @ X.T, block_size=80, **pattern)
    assert torch.equal(mask, expected_mask)
    torch.testing.assert_close(ours, expected, rtol=1e-9, atol=1e-10)
    # float32 weights sweep in float32: same mask, weights within float32 rounding
    ours32 = W.float()
    mask32 = sparsegpt_prune_(ours32, X @ X.T, block_size=80, **pattern)
    assert float((mask32 != expected_mask).double().mean()) < 0.01
    assert torch.equal(ours32 == 0, mask32)


def test_stacked_layers_sharing_a_hessian_prune_as_if_apart():
    """q/k/v share their input: one sweep over their stacked rows, with the mask chosen within
    each layer's rows, gives each layer exactly what pruning it alone gives."""
    generator = torch.Generator().manual_seed(3)
    X = torch.randn(64, 300, generator=generator, dtype=torch.float64)
    H = X @ X.T
    layers = [torch.randn(rows, 64, generator=generator, dtype=torch.float64) for rows in (16, 8, 8)]
    stacked = torch.cat(layers)
    mask = sparsegpt_prune_(stacked, H, sparsity=0.5, block_size=32, row_groups=[16, 8, 8])
    first = 0
    for layer in layers:
        alone = layer.clone()
        alone_mask = sparsegpt_prune_(alone, H, sparsity=0.5, block_size=32)
        assert torch.equal(mask[first : first + len(layer)], alone_mask)
        torch.testing.assert_close(stacked[first : first + len(layer)], alone, rtol=1e-10, atol=1e-12)
        first += len(layer)
    with pytest.raises(ValueError, match="row_groups"):
        sparsegpt_prune_(torch.cat(layers), H, sparsity=0.5, row_groups=[16, 8])


def test_sparsegpt_at_zero_sparsity_changes_nothing():
    generator = torch.Generator().manual_seed(1)
    X = torch.randn(16, 64, generator=generator)
    W = torch.randn(4, 16, generator=generator)
    before = W.clone()
    sparsegpt_prune_(W, (X @ X.T).double(), sparsity=0.0)
    assert torch.equal(W, before)


def test_sparsegpt_reconstructs_a_real_layer_better_than_wanda_and_magnitude(host):
    model = load_model("example:stories260K")
    data = calibration_samples(model.tokenizer, TextSource(example_text()), n_samples=16, seq_len=128, seed=0)
    step = next(iter(SequentialCalibration(model, host.adapter_for(model), data)))
    refs = {ref.role: ref for ref in step.block.linears()}
    stats = step.collect([refs["up"], refs["down"]], ("hessian", "input_sq_sum"))
    for role in ("up", "down"):
        ref, H = refs[role], stats[refs[role].name].hessian
        W = ref.weight_out_in().detach().double()

        def error(candidate, W=W, H=H):
            delta = W - candidate
            return float(torch.einsum("ij,jk,ik->", delta, H, delta))  # ||(W - Ŵ) X||²

        magnitude = W.masked_fill(prune_mask(W.abs(), 0.5, "layer"), 0.0)
        wanda = W.masked_fill(prune_mask(W.abs() * stats[ref.name].input_norm.unsqueeze(0), 0.5, "row"), 0.0)
        sparse = W.clone()
        sparsegpt_prune_(sparse, H, sparsity=0.5)
        assert float((sparse == 0).double().mean()) == pytest.approx(0.5, abs=1e-3)
        assert error(sparse) < error(magnitude), role
        assert error(sparse) < error(wanda), role


def test_perplexity_ordering_on_the_bundled_model(host):
    """SparseGPT <= Wanda < magnitude at 50% (the papers' ordering), and SparseGPT 2:4 < magnitude 2:4."""
    evaluate = [{"metric": "perplexity", "params": {"add_bos": True, "collapse_blank_lines": True,
                                                    "seq_len": 256, "max_windows": 40}}]

    def ppl(step):
        data = {"calibration": CALIBRATION, "steps": [step], "evaluate": evaluate}
        result = run_recipe(Recipe.from_data(data), "example:stories260K", host=host, catalogue=False)
        return result.after["perplexity"]["perplexity"]

    sparsegpt = ppl({"method": "prune.sparsegpt", "params": {"sparsity": 0.5}})
    wanda = ppl({"method": "prune.unstructured", "params": {"sparsity": 0.5, "scorer": "wanda", "scope": "row"}})
    magnitude = ppl({"method": "prune.unstructured", "params": {"sparsity": 0.5, "scope": "row"}})
    assert sparsegpt < 1.1 * wanda and wanda < magnitude
    assert ppl({"method": "prune.sparsegpt", "params": {"n": 2, "m": 4}}) < ppl({"method": "prune.nm", "params": {}})


def test_bad_patterns_and_missing_calibration(host):
    stories = load_model("example:stories260K")
    with pytest.raises(RecipeError, match="n must be smaller than m"):
        Recipe.from_data([{"method": "prune.nm", "params": {"n": 4, "m": 4}}]).resolve(host)
    with pytest.raises(RecipeError, match="give both n and m"):
        Recipe.from_data([{"method": "prune.sparsegpt", "params": {"n": 2}}]).resolve(host)
    with pytest.raises(RecipeError, match="has 172 inputs, not a multiple of m=8"):
        Recipe.from_data([{"method": "prune.nm", "params": {"n": 4, "m": 8}}]).resolve(host, stories)
    with pytest.raises(RecipeError, match="prune.sparsegpt\\): needs calibration data"):
        Recipe.from_data([{"method": "prune.sparsegpt"}]).resolve(host, stories)


@pytest.mark.parametrize("step", [
    {"method": "prune.sparsegpt", "params": {"sparsity": 0.5}},
    {"method": "prune.neurons", "params": {"fraction": 0.2, "scorer": "neurons.mi"}},
], ids=["sparsegpt", "mi"])
def test_too_few_calibration_tokens_for_a_covariance_are_refused(host, step):
    """stories260K's widest layer input is 172 (down_proj): 2 x 64 = 128 tokens cannot estimate it."""
    recipe = Recipe.from_data({"calibration": {"n_samples": 2, "seq_len": 64}, "steps": [step]})
    with pytest.raises((RecipeError, DataError), match="172"):
        run_recipe(recipe, "example:stories260K", host=host, catalogue=False)
