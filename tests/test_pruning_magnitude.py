"""Magnitude scoring and unstructured pruning, the method that proves the contract end to end."""

from __future__ import annotations

import torch
import pytest
from transformers import GPT2Config, GPT2LMHeadModel

from slimkit import BaseScorer, LoadedModel, MethodConfig, Scores, hookimpl, load_model
from slimkit.core.errors import ConfigError
from slimkit.plugins.pruning.unstructured import prune_mask


def _prune(host, model, **params):
    info = host.compressors.get("prune.unstructured")
    config = host.config(info, params)
    adapter = host.adapter_for(model)
    ctx = host.context()
    compressor = info.create()
    compressor.check(model, adapter, config, ctx)
    return compressor.compress_(model, adapter, config, ctx), adapter


@pytest.mark.parametrize("scope", ["layer", "row"])
@pytest.mark.parametrize("sparsity", [0.3, 0.5, 0.9])
def test_exact_sparsity_and_smallest_weights_removed(host, scope, sparsity):
    model = load_model("example:stories260K")
    original = {name: p.detach().clone() for name, p in model.model.named_parameters()}
    summary, adapter = _prune(host, model, sparsity=sparsity, scope=scope)
    layout = adapter.layout(model.model)
    for _, ref in layout.linears():
        weight = ref.weight_out_in()
        before = original[ref.name + ".weight"]
        zeroed = (weight == 0) & (before != 0)
        groups = [(weight, before, zeroed)] if scope == "layer" else [
            (weight[i], before[i], zeroed[i]) for i in range(weight.shape[0])
        ]
        for w, b, z in groups:
            assert int(z.sum()) == int(sparsity * w.numel())
            # every removed weight is no larger than every kept one
            assert b[z].abs().max() <= b[~z].abs().min()
    assert summary.details["sparsity"] == pytest.approx(sparsity, abs=0.01)
    # embeddings (tied with the LM head) and norms are untouched
    for name, tensor in model.model.named_parameters():
        if "proj" not in name:
            assert torch.equal(tensor, original[name]), name


def test_gpt2_conv1d_rows_are_output_features(host):
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=64, n_positions=32))
    model = LoadedModel(gpt2, None, "tiny-gpt2")
    _prune(host, model, sparsity=0.25, scope="row")
    conv = gpt2.transformer.h[0].mlp.c_fc  # weight stored [in=32, out=128]
    zeros_per_output = (conv.weight == 0).sum(dim=0)
    assert torch.all(zeros_per_output == int(0.25 * 32))


def test_prune_mask_breaks_ties_by_position():
    scores = torch.ones(2, 4)
    mask = prune_mask(scores, 0.5, "layer")
    assert mask.flatten().tolist() == [True, True, True, True, False, False, False, False]
    assert prune_mask(scores, 0.5, "row").tolist() == [[True, True, False, False]] * 2
    assert not prune_mask(scores, 0.0, "layer").any()


def test_scores_save_load_round_trip(host, tmp_path):
    model = load_model("example:stories260K")
    scores = host.score("magnitude", model, params={"roles": ["up", "down"]})
    assert all(key.endswith(("up_proj", "down_proj")) for key in scores.values)
    path = scores.save(tmp_path / "scores.safetensors")
    loaded = Scores.load(path)
    assert loaded.scorer == "magnitude" and loaded.granularity == "weight"
    assert loaded.config == {"roles": ["up", "down"]}
    assert all(torch.equal(loaded[k], scores[k]) for k in scores.values)
    assert set(loaded.summary()) == set(scores.values)


class ReverseConfig(MethodConfig):
    pass


class ReverseMagnitude(BaseScorer):
    """Prefers small weights: prunes the largest (to prove third-party scorers drive the pruner)."""

    name = "test.reverse"
    granularity = "weight"
    Config = ReverseConfig

    def score(self, model, adapter, config, ctx):
        layout = adapter.layout(model.model)
        return Scores(self.name, "weight", {r.name: -r.weight_out_in().abs() for _, r in layout.linears()})


class ReversePlugin:
    @hookimpl
    def register_scorers(self, register):
        register(ReverseMagnitude)


def test_third_party_scorer_drives_the_pruner(slimkit_host, register_plugin):
    register_plugin(ReversePlugin(), name="reverse")
    model = load_model("example:stories260K")
    before = model.model.model.layers[0].mlp.up_proj.weight.detach().clone()
    _prune(slimkit_host, model, sparsity=0.5, scorer="test.reverse")
    after = model.model.model.layers[0].mlp.up_proj.weight
    removed = (after == 0) & (before != 0)
    assert before[removed].abs().min() >= before[~removed].abs().max()


def test_non_weight_scorer_is_refused(slimkit_host, register_plugin):
    class NeuronScorer(BaseScorer):
        name = "test.neurons"
        granularity = "neuron"

        def score(self, model, adapter, config, ctx):  # pragma: no cover - never reached
            raise AssertionError

    class Plugin:
        @hookimpl
        def register_scorers(self, register):
            register(NeuronScorer)

    register_plugin(Plugin(), name="neurons")
    with pytest.raises(ConfigError, match="scores neurons; prune.unstructured needs a weight scorer"):
        _prune(slimkit_host, load_model("example:stories260K"), scorer="test.neurons")


def test_global_scope_ranks_across_layers(host):
    model = load_model("example:stories260K")
    original = {name: p.detach().clone() for name, p in model.model.named_parameters()}
    summary, adapter = _prune(host, model, sparsity=0.5, scope="global")
    refs = [ref for _, ref in adapter.layout(model.model).linears()]
    removed = torch.cat([original[r.name + ".weight"][r.weight_out_in() == 0].abs() for r in refs])
    kept = torch.cat([original[r.name + ".weight"][r.weight_out_in() != 0].abs() for r in refs])
    assert removed.numel() == int(0.5 * (removed.numel() + kept.numel()))
    assert removed.max() <= kept.min()  # one threshold for every layer
    per_layer = summary.details["per_layer"].values()
    assert max(per_layer) - min(per_layer) > 0.1  # so the layers end up with different sparsities


def test_global_scope_with_a_data_aware_scorer_must_not_be_sequential(host):
    from slimkit import Recipe
    from slimkit.core.errors import RecipeError

    model = load_model("example:stories260K")
    recipe = Recipe.from_data({"calibration": {"n_samples": 2, "seq_len": 32},
                               "steps": [{"method": "prune.unstructured", "params": {"scope": "global", "scorer": "wanda"}}]})
    with pytest.raises(RecipeError, match="set sequential: false"):
        recipe.resolve(host, model)
