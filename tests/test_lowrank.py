"""Low-rank factorisation: the math against direct computations (full rank exact, Eckart-Young,
whitened error = discarded σ²), the rank rules, the three compressors on stories260K (whitened
beats plain on the calibration outputs), saving and reloading, densify, and bad input."""

from __future__ import annotations

import json
import math

import pytest
import torch
import transformers

from slimkit import Recipe, load_model, run_recipe
from slimkit.core.errors import ArchitectureError, ConfigError, RecipeError
from slimkit.core.lowrank import LowRankLinear, factorise
from slimkit.plugins.lowrank.ranks import LayerShape, RankConfig, allocate, direct_rank, keep_rank

IDS = torch.tensor([[1, 15, 40, 99, 3, 7, 250, 31]])


def logits(model, ids=IDS):
    with torch.no_grad():
        return model.model(ids, use_cache=False).logits


def correlated_inputs(tokens: int, width: int, seed: int = 0) -> torch.Tensor:
    """Inputs with a few loud channels and correlations between channels (like real activations)."""
    generator = torch.Generator().manual_seed(seed)
    mix = torch.randn(width, width, generator=generator) / math.sqrt(width)
    loud = torch.ones(width)
    loud[:3] = 20.0
    return (torch.randn(tokens, width, generator=generator) @ mix) * loud


# -- the math ---------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["plain", "scaled", "whitened"])
def test_full_rank_reproduces_the_layer(how):
    weight = torch.randn(12, 20, generator=torch.Generator().manual_seed(1))
    x = correlated_inputs(64, 20)
    kwargs = {"plain": {}, "scaled": {"column_scale": x.abs().mean(0).sqrt()}, "whitened": {"gram": x.T @ x}}[how]
    f = factorise(weight, **kwargs)
    up, down = f.factors(12)
    torch.testing.assert_close(up @ down, weight, rtol=0, atol=1e-5)
    layer = LowRankLinear.from_factors(up, down, bias=torch.arange(12.0))
    torch.testing.assert_close(layer(x), x @ weight.T + torch.arange(12.0), rtol=1e-5, atol=1e-4)


def test_plain_truncation_is_the_best_weight_approximation():
    """Eckart-Young: the weight error of the rank-r SVD is sqrt(Σ_{i>r} σ_i²), below any other
    rank-r product tried (here: the whitened one)."""
    weight = torch.randn(16, 24, generator=torch.Generator().manual_seed(2))
    x = correlated_inputs(128, 24)
    plain, whitened = factorise(weight), factorise(weight, gram=x.T @ x)
    for rank in (2, 5, 11):
        up, down = plain.factors(rank)
        error = float((weight - up @ down).square().sum())
        assert math.isclose(error, plain.discarded(rank), rel_tol=1e-6)
        up_w, down_w = whitened.factors(rank)
        assert error < float((weight - up_w @ down_w).square().sum())


def test_whitened_output_error_is_the_discarded_energy_and_beats_plain():
    weight = torch.randn(16, 24, generator=torch.Generator().manual_seed(3))
    x = correlated_inputs(256, 24)
    whitened, plain = factorise(weight, gram=x.T @ x), factorise(weight)
    for rank in (2, 6, 12):
        up, down = whitened.factors(rank)
        out_error = float((x @ (weight - up @ down).T).double().square().sum())
        assert math.isclose(out_error, whitened.discarded(rank), rel_tol=1e-4)
        up_p, down_p = plain.factors(rank)
        assert out_error < float((x @ (weight - up_p @ down_p).T).double().square().sum())


def test_singular_gram_is_dampened_not_fatal():
    x = correlated_inputs(4, 24)  # 4 tokens, 24 inputs: XᵀX has rank 4
    f = factorise(torch.randn(8, 24), gram=x.T @ x)
    assert torch.isfinite(f.vh).all() and torch.isfinite(f.sigma).all()


# -- rank rules -------------------------------------------------------------------------------
def test_energy_rank_matches_a_direct_computation():
    sigma = torch.tensor([5.0, 3.0, 2.0, 1.0, 0.5])
    energy = sigma.square()
    layer = LayerShape("l", 8, 5)
    for kept in (0.5, 0.7, 0.9, 0.99, 1.0):
        expected = next(r for r in range(1, 6) if float(energy[:r].sum()) >= kept * float(energy.sum()) - 1e-9)
        assert direct_rank(RankConfig(energy=kept), layer, energy) == expected


def test_no_rule_means_a_fifth_of_the_parameters_uniformly():
    config = RankConfig()
    assert (config.param_ratio, config.allocation, config.rank) == (0.2, "uniform", None)
    assert RankConfig(energy=0.9).param_ratio is None


def test_rank_ratio_and_uniform_budget():
    layer = LayerShape("l", 576, 1536)
    assert direct_rank(RankConfig(rank_ratio=0.25), layer, None) == 144
    rank = direct_rank(RankConfig(param_ratio=0.2), layer, None)
    assert layer.params(rank) <= 0.8 * layer.dense < layer.params(rank + 1)


def test_sensitivity_allocation_takes_the_smallest_tolerance_that_meets_the_budget():
    layers = [LayerShape("calm", 64, 64), LayerShape("touchy", 64, 64)]
    changes = {"calm": {0.25: 0.01, 0.5: 0.005, 0.75: 0.001}, "touchy": {0.25: 0.9, 0.5: 0.3, 0.75: 0.02}}
    # 40% off in all: calm keeps 25% (change 0.01), touchy stays dense: 0.25 + 1 = 1.25 > 1.2 of 2;
    # so calm 25% + touchy 75% (tolerance 0.02): 0.25 + 0.75 = 1.0 of 2 (50% removed)
    ranks = allocate(layers, changes, param_ratio=0.4)
    assert ranks == {"calm": keep_rank(layers[0], 0.25), "touchy": keep_rank(layers[1], 0.75)}
    assert allocate(layers, changes, param_ratio=0.05)["touchy"] == 64  # within budget untouched
    with pytest.raises(ConfigError, match="cannot be met"):
        allocate(layers, changes, param_ratio=0.9)


@pytest.mark.parametrize("params, message", [
    ({"rank": 4, "energy": 0.9}, "give one of"),
    ({"energy": 0.9, "allocation": "sensitivity"}, "needs param_ratio"),
    ({"param_ratio": 0.0}, "greater than 0"),
    ({"rank_ratio": 1.5}, "less than or equal to 1"),
])
def test_bad_rank_parameters_are_refused(host, params, message):
    with pytest.raises(ConfigError, match=message):
        host.config(host.compressors.get("lowrank.svd"), params)


# -- the compressors on stories260K ----------------------------------------------------------
def test_full_rank_ratio_keeps_layers_dense_and_the_model_unchanged(host, model, compress):
    before = logits(model)
    summary = compress(model, "lowrank.svd", {"rank_ratio": 1.0})
    assert summary.details["factorised"] == 0 and summary.details["kept_dense"] == 35
    torch.testing.assert_close(logits(model), before)


def test_rank_larger_than_a_layer_allows_is_refused(host, model, compress):
    with pytest.raises(ConfigError, match=r"rank 40 is larger than model.layers.0.self_attn.k_proj allows \(32x64: at most 32\)"):
        compress(model, "lowrank.svd", {"rank": 40})


@pytest.mark.parametrize("method", ["lowrank.asvd", "lowrank.svd_llm"])
def test_data_methods_need_calibration(host, model, method, compress):
    with pytest.raises(ConfigError, match="needs calibration data"):
        compress(model, method, {"rank_ratio": 0.5})
    recipe = Recipe.from_data({"steps": [{"method": method, "params": {"rank_ratio": 0.5}}]})
    with pytest.raises(RecipeError, match="calibration"):
        run_recipe(recipe, "example:stories260K", host=host, catalogue=False)


def test_whitened_beats_scaled_beats_plain_on_calibration_outputs(host, calibration, compress):
    """Same parameter budget for all three; the measured error is the models' logits on the
    calibration windows themselves (what the data-aware methods optimise)."""
    dense = load_model("example:stories260K")
    ids = calibration.input_ids
    reference = logits(dense, ids)
    errors, removed = {}, {}
    for method in ("lowrank.svd", "lowrank.asvd", "lowrank.svd_llm"):
        model = load_model("example:stories260K")
        summary = compress(model, method, {"param_ratio": 0.25, "roles": ["up", "gate", "down"]},
                      calibration if method != "lowrank.svd" else None)
        removed[method] = summary.details["removed_fraction"]
        errors[method] = float((logits(model, ids) - reference).norm() / reference.norm())
    assert len({round(r, 3) for r in removed.values()}) == 1 and 0.25 <= removed["lowrank.svd"] < 0.3
    assert errors["lowrank.svd_llm"] < errors["lowrank.asvd"] < errors["lowrank.svd"]


def test_sensitivity_allocation_beats_uniform_at_the_same_budget(host, calibration, compress):
    ids = calibration.input_ids
    reference = logits(load_model("example:stories260K"), ids)
    errors = {}
    for allocation in ("uniform", "sensitivity"):
        model = load_model("example:stories260K")
        summary = compress(model, "lowrank.svd_llm", {"param_ratio": 0.3, "allocation": allocation}, calibration)
        assert summary.details["removed_fraction"] >= 0.3 - 0.01
        errors[allocation] = float((logits(model, ids) - reference).norm() / reference.norm())
    assert errors["sensitivity"] < errors["uniform"]


def test_recipe_saves_reloads_and_densifies(host, tmp_path):
    recipe = Recipe.from_data({"calibration": {"n_samples": 4, "seq_len": 64, "seed": 0},
                               "steps": [{"method": "lowrank.svd_llm", "params": {"rank_ratio": 0.25}}]})
    result = run_recipe(recipe, "example:stories260K", out=tmp_path / "lr", host=host, catalogue=False)
    section = json.loads((tmp_path / "lr" / "slimkit.json").read_text())["modules"]
    kinds = {record["kind"] for record in section["layers"].values()}
    assert kinds == {"lowrank"} and len(section["layers"]) == 35
    reloaded = load_model(tmp_path / "lr")
    assert sum(isinstance(m, LowRankLinear) for m in reloaded.model.modules()) == 35
    torch.testing.assert_close(logits(reloaded), logits(result.model), rtol=0, atol=0)
    with pytest.raises(OSError):  # plain transformers refuses the folder rather than guess
        transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "lr")

    dense = run_recipe(Recipe.from_data({"steps": [{"method": "densify"}]}), tmp_path / "lr",
                       out=tmp_path / "dense", host=host, catalogue=False)
    plain = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "dense")
    with torch.no_grad():
        torch.testing.assert_close(plain(IDS).logits, logits(reloaded), rtol=1e-5, atol=1e-5)
    assert "densified 35 layers (LowRankLinear)" in dense.steps[0].summary


def test_factorised_layers_are_refused_by_weight_methods(host, model, compress):
    compress(model, "lowrank.svd", {"rank_ratio": 0.25, "roles": ["up"]})
    with pytest.raises(ArchitectureError, match="is already factorised"):
        compress(model, "lowrank.svd", {"rank_ratio": 0.25})
    with pytest.raises(ArchitectureError, match="is factorised"):
        compress(model, "quantize.rtn", {"bits": 8})
    with pytest.raises(ArchitectureError, match="no low-rank or quantized layers"):
        compress(load_model("example:stories260K"), "densify", {})
