"""Structured pruning of MLP neurons and attention KV groups: exact shrinkage, reload, scorers."""

from __future__ import annotations

import pytest
import torch
import transformers as tf
from transformers import GPT2Config, GPT2LMHeadModel

import slimkit
from slimkit import LoadedModel, Recipe, load_model, run_recipe, save_model
from slimkit.core.calibration import SequentialCalibration
from slimkit.core.data import TextSource, calibration_samples
from slimkit.core.errors import ArchitectureError, ConfigError
from slimkit.core.model_io import example_text

PLUGINS = ("slimkit.plugins.pruning.neuron_scores", "slimkit.plugins.pruning.structured")
INPUT_IDS = torch.tensor([[1, 5, 9, 33, 2, 17, 60, 4, 8, 12, 40, 3]])


@pytest.fixture
def host():
    assert set(PLUGINS) <= set(slimkit.core.host.DEFAULT_PLUGINS)
    return slimkit.make_host(load_entrypoints=False)


@pytest.fixture(scope="module")
def calibration():
    model = load_model("example:stories260K")
    return calibration_samples(model.tokenizer, TextSource(example_text()), n_samples=8, seq_len=64, seed=0)


def prune(host, model, method, calibration=None, **params):
    info = host.compressors.get(method)
    config = host.config(info, params)
    adapter = host.adapter_for(model)
    ctx = host.context(calibration=calibration)
    compressor = info.create()
    compressor.check(model, adapter, config, ctx)
    return compressor.compress_(model, adapter, config, ctx)


def n_params(model: LoadedModel) -> int:
    return sum(p.numel() for p in model.model.parameters())


def logits(module) -> torch.Tensor:
    with torch.no_grad():
        return module(input_ids=INPUT_IDS, use_cache=False).logits


def assert_reloads_identically(model: LoadedModel, tmp_path) -> None:
    expected = logits(model.model.eval())
    folder = save_model(model, tmp_path / "pruned", provenance={})
    reloaded, info = tf.AutoModelForCausalLM.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    assert sum(p.numel() for p in reloaded.parameters()) == n_params(model)
    torch.testing.assert_close(logits(reloaded.eval()), expected, rtol=0, atol=0)


def tiny_gpt2() -> LoadedModel:
    torch.manual_seed(0)
    config = GPT2Config(n_layer=2, n_head=2, n_embd=32, n_inner=96, vocab_size=64, n_positions=32)
    return LoadedModel(GPT2LMHeadModel(config).eval(), None, "tiny-gpt2")


# -- neurons ---------------------------------------------------------------------------------


def test_neurons_llama_exact_shrink_lowest_removed_and_reload(host, tmp_path):
    model = load_model("example:stories260K")
    scores = host.score("neurons.magnitude", model)
    before = n_params(model)
    summary = prune(host, model, "prune.neurons", fraction=0.2)
    removed = int(0.2 * 172)
    hidden = model.model.config.hidden_size
    assert before - n_params(model) == removed * hidden * 3 * 5  # gate, up and down in 5 blocks
    assert summary.details["parameters_removed"] == before - n_params(model)
    assert model.model.config.intermediate_size == 172 - removed
    for block, dropped in summary.details["removed_neurons"].items():
        s = scores[block]
        kept = [i for i in range(172) if i not in dropped]
        assert len(dropped) == removed and s[dropped].max() <= s[kept].min()
    assert_reloads_identically(model, tmp_path)


def test_removed_neurons_are_the_ones_gone(host):
    model = load_model("example:stories260K")
    up = model.model.model.layers[0].mlp.up_proj.weight.detach().clone()
    summary = prune(host, model, "prune.neurons", fraction=0.1)
    dropped = summary.details["removed_neurons"]["model.layers.0"]
    kept = [i for i in range(172) if i not in dropped]
    assert torch.equal(model.model.model.layers[0].mlp.up_proj.weight, up[kept])


@pytest.mark.parametrize("fraction", [0.0, 0.005])  # floor(0.005 * 172) = 0
def test_zero_neurons_changes_nothing(host, fraction):
    model = load_model("example:stories260K")
    state = {k: v.clone() for k, v in model.model.state_dict().items()}
    summary = prune(host, model, "prune.neurons", fraction=fraction)
    assert summary.details["parameters_removed"] == 0
    assert model.model.config.intermediate_size == 172
    assert all(torch.equal(v, state[k]) for k, v in model.model.state_dict().items())


def test_neurons_gpt2_conv1d(host, tmp_path):
    model = tiny_gpt2()
    before = n_params(model)
    prune(host, model, "prune.neurons", fraction=0.25)
    # each of 2 blocks loses 24 neurons: a c_fc column + bias entry and a c_proj row
    assert before - n_params(model) == 2 * 24 * (32 + 1 + 32)
    assert model.model.transformer.h[0].mlp.c_fc.weight.shape == (32, 72)
    assert model.model.config.n_inner == 72
    assert_reloads_identically(model, tmp_path)


def test_neuron_activation_matches_forward_hooks(host, calibration):
    model = load_model("example:stories260K")
    adapter = host.adapter_for(model)
    scores = host.score("neurons.activation", model, context=host.context(calibration=calibration))
    squares = torch.zeros(172, dtype=torch.float64)

    def hook(_module, args):
        squares.add_(args[0].detach().double().reshape(-1, 172).pow(2).sum(dim=0))

    down = model.model.model.layers[0].mlp.down_proj
    handle = down.register_forward_pre_hook(hook)
    with torch.no_grad():
        model.model(input_ids=calibration.input_ids, use_cache=False)
    handle.remove()
    expected = squares.sqrt() * down.weight.detach().double().norm(dim=0)
    torch.testing.assert_close(scores["model.layers.0"].double(), expected, rtol=1e-4, atol=1e-6)
    assert adapter.layout(model.model).blocks[0].mlp.intermediate_size == 172  # scoring changes nothing


def test_sequential_scores_see_pruned_blocks(host, calibration):
    model = load_model("example:stories260K")
    summary = prune(host, model, "prune.neurons", calibration, fraction=0.3, scorer="neurons.activation")
    assert "block by block" in summary.description
    # a fresh pass over the pruned model reproduces the decision for block 0 (scored on dense inputs)
    dense = load_model("example:stories260K")
    step = next(iter(SequentialCalibration(dense, host.adapter_for(dense), calibration)))
    down = step.block.mlp.down
    norms = step.collect([down], ("input_sq_sum",))[down.name].input_norm
    s = norms * down.weight_out_in().detach().double().norm(dim=0)
    assert summary.details["removed_neurons"]["model.layers.0"] == sorted(s.argsort()[: int(0.3 * 172)].tolist())


def test_bad_neuron_configs(host):
    model = load_model("example:stories260K")
    with pytest.raises(ConfigError):
        host.config(host.compressors.get("prune.neurons"), {"fraction": 1.0})
    with pytest.raises(ConfigError, match="needs a neuron scorer"):
        prune(host, model, "prune.neurons", scorer="magnitude")
    with pytest.raises(ConfigError, match="needs calibration"):
        prune(host, model, "prune.neurons", scorer="neurons.activation")


# -- heads -----------------------------------------------------------------------------------


@pytest.mark.parametrize("scorer", ["heads.magnitude", "heads.activation"])
def test_heads_llama_gqa_groups(host, calibration, scorer, tmp_path):
    model = load_model("example:stories260K")
    before = n_params(model)
    summary = prune(host, model, "prune.heads", calibration, groups=2, scorer=scorer)
    # per block: 4 query heads (q rows + o columns) and 2 KV heads (k and v rows), head_dim 8, hidden 64
    assert before - n_params(model) == 5 * (4 * 8 * 64 * 2 + 2 * 8 * 64 * 2)
    config = model.model.config
    assert (config.num_attention_heads, config.num_key_value_heads, config.head_dim) == (4, 2, 8)
    assert summary.details["heads_after"] == 4 and summary.details["kv_heads_after"] == 2
    assert_reloads_identically(model, tmp_path)


def test_heads_removes_lowest_group(host):
    model = load_model("example:stories260K")
    scores = host.score("heads.magnitude", model)
    summary = prune(host, model, "prune.heads", fraction=0.5)
    for block, dropped in summary.details["removed_kv_groups"].items():
        groups = scores[block].reshape(4, 2).sum(dim=1)
        assert dropped == sorted(groups.argsort()[:2].tolist())


def test_heads_refused_on_gpt2_and_too_many(host):
    with pytest.raises(ArchitectureError, match="cannot express fewer attention heads") as error:
        prune(host, tiny_gpt2(), "prune.heads", groups=1)
    assert "\n" not in str(error.value)
    with pytest.raises(ConfigError, match="at least one must remain"):
        prune(host, load_model("example:stories260K"), "prune.heads", groups=4)
    # 6 heads do not divide Llama's hidden size 64: transformers would refuse to save the config
    with pytest.raises(ConfigError, match="removable group counts: 2, 3"):
        prune(host, load_model("example:stories260K"), "prune.heads", groups=1)


# -- recipes ---------------------------------------------------------------------------------


def test_recipe_with_calibration(host):
    data = {
        "calibration": {"n_samples": 8, "seq_len": 64, "seed": 0},
        "steps": [
            {"method": "prune.neurons", "params": {"fraction": 0.2, "scorer": "neurons.activation"}},
            {"method": "prune.heads", "params": {"groups": 2, "scorer": "heads.activation"}},
        ],
    }
    result = run_recipe(Recipe.from_data(data), "example:stories260K", host=host, catalogue=False)
    config = result.model.model.config
    assert config.intermediate_size == 172 - 34 and config.num_attention_heads == 4
    assert result.steps[0].details["parameters_removed"] == 34 * 64 * 3 * 5
