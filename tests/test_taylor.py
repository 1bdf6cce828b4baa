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
