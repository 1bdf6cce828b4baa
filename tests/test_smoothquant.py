"""SmoothQuant W8A8 on the bundled stories260K: smoothing is exact and balances activation and
weight ranges as the paper's formula says, the W8A8 model stays close to the dense one (even with
activation outliers that break plain W8A8), and bad input is refused."""

from __future__ import annotations

import pytest
import torch

from slimkit import Recipe, load_model, run_recipe
from slimkit.core.data import TextSource, calibration_samples
from slimkit.core.errors import ConfigError, RecipeError
from slimkit.core.model_io import example_text
from slimkit.core.quant.modules import QuantizedLinear
from slimkit.plugins.quantization.common import replace_with_codes
from slimkit.plugins.quantization.smoothquant import W8, SmoothQuantConfig, rtn_codes, smoothquant_

OUTLIERS = [3, 17, 40]  # hidden channels given 100x activations in the outlier test


@pytest.fixture
def calibration(model):
    return calibration_samples(model.tokenizer, TextSource(example_text()), n_samples=8, seq_len=128, seed=0)


@pytest.fixture(scope="module")
def evaluation():
    tokenizer = load_model("example:stories260K").tokenizer
    return calibration_samples(tokenizer, TextSource(example_text()), n_samples=16, seq_len=128, seed=5).input_ids


def logits(model, ids):
    with torch.no_grad():
        return model.model(ids, use_cache=False).logits


def relative(a, b):
    return float((a - b).norm() / b.norm())


def input_maxima(model, names, ids):
    """max |x| per input channel of each named layer over a forward pass on ``ids``."""
    peaks = {}

    def hook(name):
        return lambda _m, args: peaks.__setitem__(name, args[0].detach().abs().reshape(-1, args[0].shape[-1]).amax(0))

    handles = [model.model.get_submodule(name).register_forward_pre_hook(hook(name)) for name in names]
    logits(model, ids)
    for handle in handles:
        handle.remove()
    return peaks


@pytest.mark.parametrize("smooth_down", [True, False])
def test_smoothing_alone_keeps_outputs_and_balances_the_ranges(host, model, calibration, evaluation, smooth_down):
    """With alpha 0.5, s = sqrt(max|X| / max|W|): afterwards every smoothed channel's activation
    maximum equals its weight maximum (over all layers reading it), checked on a fresh pass.
    (Smoothing down's input rescales up's rows after gate/up were balanced, so with smooth_down
    the gate/up balance is not expected to hold any more.)"""
    dense = logits(model, evaluation)
    config = SmoothQuantConfig(smooth_down=smooth_down)
    details = smoothquant_(model, host.adapter_for(model), calibration, config, quantize=False)
    assert details["smoothed_inputs"] == (15 if smooth_down else 10)
    assert "attention output" in details["not_smoothed"]
    assert not any(isinstance(m, QuantizedLinear) for m in model.model.modules())
    assert relative(logits(model, evaluation), dense) < 1e-5
    groups = {"self_attn.q_proj": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")}
    groups.update({"mlp.down_proj": ("mlp.down_proj",)} if smooth_down else
                  {"mlp.gate_proj": ("mlp.gate_proj", "mlp.up_proj")})
    leaders = [f"model.layers.{i}.{leader}" for i in range(5) for leader in groups]
    peaks = input_maxima(model, leaders, calibration.input_ids)
    for i in range(5):
        for leader, readers in groups.items():
            weights = torch.cat([model.model.get_submodule(f"model.layers.{i}.{name}").weight.detach().abs()
                                 for name in readers])
            torch.testing.assert_close(peaks[f"model.layers.{i}.{leader}"], weights.amax(dim=0), rtol=1e-4, atol=1e-6)


def test_w8a8_logits_stay_close_to_dense(host, model, calibration, evaluation):
    dense = logits(model, evaluation)
    info = host.compressors.get("quantize.smoothquant")
    ctx = host.context(calibration=calibration)
    config = host.config(info, {})
    info.create().check(model, host.adapter_for(model), config, ctx)
    summary = info.create().compress_(model, host.adapter_for(model), config, ctx)
    modules = [m for m in model.model.modules() if isinstance(m, QuantizedLinear)]
    assert len(modules) == 35 and {m.kernel for m in modules} == {"int8-dynamic"}
    assert summary.details["activations"] == "int8" and summary.details["bits"] == 8
    assert relative(logits(model, evaluation), dense) < 0.03


def with_outliers(model, adapter):
    """The same float function, but a few hidden channels carry 100x larger activations into
    q/k/v and gate/up (the LLM outlier pattern SmoothQuant is for)."""
    with torch.no_grad():
        for block in adapter.layout(model.model).blocks:
            for norm, readers in ((block.norms[0], (block.attention.q, block.attention.k, block.attention.v)),
                                  (block.norms[1], (block.mlp.gate, block.mlp.up))):
                model.model.get_submodule(norm).weight[OUTLIERS] *= 100
                for ref in readers:
                    ref.weight_out_in()[:, OUTLIERS] /= 100
    return model


def test_smoothing_rescues_w8a8_from_activation_outliers(host, calibration, evaluation):
    dense = logits(load_model("example:stories260K"), evaluation)
    adapter = host.adapter_for(load_model("example:stories260K"))
    plain = with_outliers(load_model("example:stories260K"), adapter)
    assert relative(logits(plain, evaluation), dense) < 1e-5
    for _, ref in adapter.layout(plain.model).linears():
        codes, scale, zero = rtn_codes(ref.weight_out_in().detach(), W8)
        replace_with_codes(plain.model, ref, codes, scale, zero, W8, activations="int8")
    smoothed = with_outliers(load_model("example:stories260K"), adapter)
    smoothquant_(smoothed, adapter, calibration, SmoothQuantConfig())
    plain_error, smooth_error = relative(logits(plain, evaluation), dense), relative(logits(smoothed, evaluation), dense)
    assert smooth_error < 0.03 and plain_error > 5 * smooth_error, (plain_error, smooth_error)


def test_smooth_down_off_leaves_up_alone(host, model, calibration):
    up = model.model.model.layers[1].mlp.up_proj.weight.detach().clone()
    norm = model.model.model.layers[1].post_attention_layernorm.weight.detach().clone()
    details = smoothquant_(model, host.adapter_for(model), calibration, SmoothQuantConfig(smooth_down=False),
                           quantize=False)
    assert details["not_smoothed"]["mlp output"] == "smooth_down is off"
    layer = model.model.model.layers[1]
    assert not torch.equal(layer.post_attention_layernorm.weight, norm)
    # up's columns moved with the norm, its rows did not: each column scaled by one factor
    ratio = layer.mlp.up_proj.weight.detach() / up
    torch.testing.assert_close(ratio, ratio[:1].expand_as(ratio), rtol=1e-5, atol=0)


def test_recipe_round_trip_keeps_int8_activations(host, tmp_path):
    recipe = Recipe.from_data({"calibration": {"n_samples": 4, "seq_len": 64, "seed": 0},
                               "steps": [{"method": "quantize.smoothquant", "params": {"alpha": 0.6}}]})
    result = run_recipe(recipe, "example:stories260K", out=tmp_path / "w8a8", host=host, catalogue=False)
    reloaded = load_model(tmp_path / "w8a8")
    kernels = {m.kernel for m in reloaded.model.modules() if isinstance(m, QuantizedLinear)}
    assert kernels == {"int8-dynamic"}
    ids = torch.tensor([[1, 15, 40, 99, 3, 7]])
    torch.testing.assert_close(logits(reloaded, ids), logits(result.model, ids), rtol=0, atol=1e-5)


def test_no_calibration_is_refused(host, model):
    info = host.compressors.get("quantize.smoothquant")
    with pytest.raises(ConfigError, match="needs calibration data"):
        info.create().check(model, host.adapter_for(model), host.config(info, {}), host.context())
    with pytest.raises(RecipeError, match="calibration"):
        run_recipe(Recipe.from_data({"steps": [{"method": "quantize.smoothquant"}]}), "example:stories260K",
                   host=host, catalogue=False)


@pytest.mark.parametrize("params", [{"alpha": -0.1}, {"alpha": 1.5}, {"alpha": "strong"}, {"bits": 4},
                                    {"roles": ["q", "attention"]}])
def test_bad_parameters_are_refused(host, params):
    info = host.compressors.get("quantize.smoothquant")
    with pytest.raises(ConfigError):
        host.config(info, params)
    with pytest.raises(RecipeError, match="quantize.smoothquant"):
        Recipe.from_data({"calibration": {"n_samples": 2, "seq_len": 16},
                          "steps": [{"method": "quantize.smoothquant", "params": params}]}).resolve(host)
