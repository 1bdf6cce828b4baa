"""The first-order Taylor scorer against a direct autograd computation, and with prune.unstructured."""

from __future__ import annotations

import pytest
import torch

import slimkit



def reference(model, ids, names):
    """|W * dL/dW| with plain autograd on one batch of all the samples."""
    module = model.model
    weights = [module.get_submodule(name).weight for name in names]
    loss = module(input_ids=ids, labels=ids, use_cache=False).loss
    grads = torch.autograd.grad(loss, weights)
    return {name: (w.detach() * g).abs() for name, w, g in zip(names, weights, grads)}


@pytest.mark.parametrize("batch_size", [4, 2])
def test_scores_equal_weight_times_gradient(host, model, calibration, batch_size):
    flags = {name: p.requires_grad for name, p in model.model.named_parameters()}
    scores = host.score("taylor", model, params={"batch_size": batch_size},
                        context=host.context(calibration=calibration))
    names = ["model.layers.0.self_attn.q_proj", "model.layers.2.mlp.gate_proj", "model.layers.4.mlp.down_proj"]
    expected = reference(model, calibration.input_ids, names)
    for name in names:
        torch.testing.assert_close(scores[name], expected[name], rtol=1e-4, atol=1e-9)
    assert len(scores.values) == 5 * 7
    assert {name: p.requires_grad for name, p in model.model.named_parameters()} == flags
    assert all(p.grad is None for p in model.model.parameters())


def test_roles_limit_what_is_scored(host, model, calibration):
    scores = host.score("taylor", model, params={"roles": ["down"]}, context=host.context(calibration=calibration))
    assert sorted(scores.values) == [f"model.layers.{i}.mlp.down_proj" for i in range(5)]


def test_taylor_drives_unstructured_pruning(host):
    recipe = slimkit.Recipe.from_data({
        "calibration": {"n_samples": 4, "seq_len": 64, "seed": 0},
        "steps": [{"method": "prune.unstructured", "params": {"sparsity": 0.5, "scorer": "taylor", "scope": "row"}}],
    })
    result = slimkit.run_recipe(recipe, "example:stories260K", host=host, catalogue=False)
    weight = result.model.model.get_submodule("model.layers.1.mlp.up_proj").weight
    assert torch.equal((weight == 0).sum(dim=1), torch.full((weight.shape[0],), weight.shape[1] // 2))


def gate_gradients(model, ids, block: int, kind: str) -> torch.Tensor:
    """dL/d alpha at alpha = 1, where alpha[u] scales every weight of unit u's group (a neuron's
    gate/up rows and down column, or a query head's q rows and o columns): the first-order loss
    change of removing each unit, computed with torch.func instead of weight gradients."""
    module = model.model
    prefix = f"model.layers.{block}."
    if kind == "neuron":
        units = module.config.intermediate_size
        groups = {"mlp.gate_proj.weight": 0, "mlp.up_proj.weight": 0, "mlp.down_proj.weight": 1}
        width = 1
    else:
        units = module.config.num_attention_heads
        width = module.config.hidden_size // units
        groups = {"self_attn.q_proj.weight": 0, "self_attn.o_proj.weight": 1}
    params = {prefix + name: module.get_submodule(prefix + name.rsplit(".", 1)[0]).weight.detach()
              for name in groups}

    def loss(alpha):
        scale = alpha.repeat_interleave(width)
        scaled = {name: w * (scale[:, None] if groups[name.removeprefix(prefix)] == 0 else scale[None, :])
                  for name, w in params.items()}
        return torch.func.functional_call(module, scaled, args=(), kwargs={
            "input_ids": ids, "labels": ids, "use_cache": False}).loss

    return torch.func.grad(loss)(torch.ones(units))


@pytest.mark.parametrize("kind", ["neuron", "head"])
def test_group_taylor_vector_is_the_loss_change_of_removing_the_unit(host, model, calibration, kind):
    scores = host.score(f"{kind}s.taylor", model, params={"aggregate": "vector"},
                        context=host.context(calibration=calibration))
    for block in (0, 3):
        expected = gate_gradients(model, calibration.input_ids, block, kind).abs()
        torch.testing.assert_close(scores[f"model.layers.{block}"], expected, rtol=2e-3, atol=1e-7)


def test_group_taylor_element_sums_the_weight_scores_of_the_group(host, model, calibration):
    context = host.context(calibration=calibration)
    neurons = host.score("neurons.taylor", model, context=context)
    heads = host.score("heads.taylor", model, context=context)
    weights = host.score("taylor", model, context=context)
    block = "model.layers.2"
    expected = (weights[f"{block}.mlp.gate_proj"].sum(1) + weights[f"{block}.mlp.up_proj"].sum(1)
                + weights[f"{block}.mlp.down_proj"].sum(0))
    torch.testing.assert_close(neurons[block], expected, rtol=1e-4, atol=1e-9)
    config = model.model.config
    head_dim = config.hidden_size // config.num_attention_heads
    per_feature = weights[f"{block}.self_attn.q_proj"].sum(1) + weights[f"{block}.self_attn.o_proj"].sum(0)
    torch.testing.assert_close(heads[block], per_feature.reshape(-1, head_dim).sum(1), rtol=1e-4, atol=1e-9)


def test_neuron_taylor_drives_structured_pruning(host):
    recipe = slimkit.Recipe.from_data({
        "calibration": {"n_samples": 4, "seq_len": 64, "seed": 0},
        "steps": [{"method": "prune.neurons", "params": {"fraction": 0.25, "scorer": "neurons.taylor"}}],
    })
    result = slimkit.run_recipe(recipe, "example:stories260K", host=host, catalogue=False)
    config = result.model.model.config
    assert config.intermediate_size == 172 - 43
    assert result.model.model.get_submodule("model.layers.4.mlp.down_proj").weight.shape[1] == 129
