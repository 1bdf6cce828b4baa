"""The sequential calibration engine and the Wanda scorer, against independent computations."""

from __future__ import annotations

import pytest
import torch

from slimkit import Recipe, load_model, run_recipe
from slimkit.core.calibration import SequentialCalibration
from slimkit.core.data import TextSource, calibration_samples
from slimkit.core.model_io import example_text
from slimkit.plugins.pruning.unstructured import prune_mask


@pytest.fixture
def calibration(model):
    return calibration_samples(model.tokenizer, TextSource(example_text()), n_samples=6, seq_len=48, seed=1)


def test_dense_pass_reproduces_the_models_hidden_states(host, model, calibration):
    with torch.no_grad():
        reference = model.model(calibration.input_ids, output_hidden_states=True, use_cache=False).hidden_states
    engine = SequentialCalibration(model, host.adapter_for(model), calibration, batch_size=4)
    for index, step in enumerate(engine):
        assert torch.equal(step.inputs, reference[index])
        step.collect([], ())
    assert index == 4


def test_equal_keyword_tensors_are_stored_once(host, model, calibration):
    """Rotary embeddings are the same for every batch of equal-length samples: one object kept,
    and the blocks still reproduce the model's hidden states."""
    with torch.no_grad():
        reference = model.model(calibration.input_ids, output_hidden_states=True, use_cache=False).hidden_states
    engine = SequentialCalibration(model, host.adapter_for(model), calibration, batch_size=2)
    for index, step in enumerate(engine):
        if index == 0:
            kwargs = engine._kwargs
            assert len(kwargs) == 3
            assert all(kw["position_embeddings"] is kwargs[0]["position_embeddings"] for kw in kwargs)
        torch.testing.assert_close(step.inputs, reference[index], rtol=0, atol=1e-6)
        step.collect([], ())


def inputs_of(model, name, input_ids):
    """Inputs of the layer called ``name`` on a full forward pass (float64 rows)."""
    seen = []
    handle = model.model.get_submodule(name).register_forward_hook(lambda m, a, o: seen.append(a[0]))
    with torch.no_grad():
        model.model(input_ids, use_cache=False)
    handle.remove()
    rows = torch.cat(seen).reshape(-1, seen[0].shape[-1]).double()
    return rows


def test_statistics_match_a_direct_computation(host, model, calibration):
    engine = SequentialCalibration(model, host.adapter_for(model), calibration, batch_size=4)
    step = next(iter(engine))
    refs = [ref for ref in step.block.linears() if ref.role in ("q", "down")]
    stats = step.collect(refs, ("input_sq_sum", "hessian"))
    for ref in refs:
        rows = inputs_of(model, ref.name, calibration.input_ids)
        assert stats[ref.name].tokens == rows.shape[0] == 6 * 48
        torch.testing.assert_close(stats[ref.name].input_sq_sum, (rows * rows).sum(0), rtol=1e-12, atol=1e-12)
        # per-batch products in float32, summed in float64: within float32 rounding of the scale
        expected = rows.T @ rows
        assert stats[ref.name].hessian.dtype == torch.float64
        torch.testing.assert_close(stats[ref.name].hessian, expected, rtol=1e-5,
                                   atol=1e-6 * float(expected.abs().max()))


def test_layers_fed_one_input_share_their_statistics(host, model, calibration):
    """q/k/v read one normalised hidden state and gate/up another: one statistics object each,
    equal to what a layer's own hook would have seen."""
    step = next(iter(SequentialCalibration(model, host.adapter_for(model), calibration, batch_size=4)))
    refs = {ref.role: ref for ref in step.block.linears()}
    stats = step.collect(list(refs.values()), ("input_sq_sum", "hessian"))
    assert stats[refs["q"].name] is stats[refs["k"].name] is stats[refs["v"].name]
    assert stats[refs["gate"].name] is stats[refs["up"].name]
    distinct = {id(s) for s in stats.values()}
    assert len(distinct) == 4  # qkv, o, gate/up, down
    rows = inputs_of(model, refs["v"].name, calibration.input_ids)
    torch.testing.assert_close(stats[refs["v"].name].input_sq_sum, (rows * rows).sum(0), rtol=1e-12, atol=1e-12)
    assert stats[refs["v"].name].tokens == rows.shape[0]


def test_wanda_dense_scores_are_weight_times_input_norm(host, model, calibration):
    scores = host.score("wanda", model, context=host.context(calibration=calibration))
    for name in ("model.layers.0.self_attn.q_proj", "model.layers.3.mlp.down_proj"):
        weight = model.model.get_submodule(name).weight.detach()
        norm = inputs_of(model, name, calibration.input_ids).pow(2).sum(0).sqrt().float()
        torch.testing.assert_close(scores[name], weight.abs() * norm, rtol=1e-6, atol=1e-7)


def reference_sequential_wanda(model, input_ids, sparsity):
    """Wanda as the paper's code does it: block by block, each scored on a full forward pass of
    the model whose earlier blocks are already pruned."""
    for index, block in enumerate(model.model.model.layers):
        names = [n for n, m in block.named_modules() if isinstance(m, torch.nn.Linear)]
        norms = {
            name: inputs_of(model, f"model.layers.{index}.{name}", input_ids).pow(2).sum(0).sqrt().float()
            for name in names
        }
        with torch.no_grad():
            for name in names:
                weight = block.get_submodule(name).weight
                mask = prune_mask(weight.abs() * norms[name].unsqueeze(0), sparsity, "row")
                weight.masked_fill_(mask, 0.0)


def test_sequential_wanda_matches_the_reference_protocol(host, calibration):
    ours = load_model("example:stories260K")
    recipe = Recipe.from_data({"steps": [{"method": "prune.unstructured",
                                          "params": {"sparsity": 0.5, "scorer": "wanda", "scope": "row"}}]})
    validated = recipe.resolve(host)
    _, info, config = validated.steps[0]
    compressor = info.create()
    compressor.compress_(ours, host.adapter_for(ours), config, host.context(calibration=calibration))
    reference = load_model("example:stories260K")
    reference_sequential_wanda(reference, calibration.input_ids, 0.5)
    for (name, a), (_, b) in zip(ours.model.named_parameters(), reference.model.named_parameters()):
        assert torch.equal(a == 0, b == 0), name

    dense = load_model("example:stories260K")
    dense_config = host.config(info, {"sparsity": 0.5, "scorer": "wanda", "scope": "row", "sequential": False})
    compressor.compress_(dense, host.adapter_for(dense), dense_config, host.context(calibration=calibration))
    first = "model.layers.0.mlp.up_proj.weight"
    last = "model.layers.4.mlp.up_proj.weight"
    params_ours, params_dense = dict(ours.model.named_parameters()), dict(dense.model.named_parameters())
    assert torch.equal(params_ours[first] == 0, params_dense[first] == 0)  # block 0 sees the same inputs
    assert not torch.equal(params_ours[last] == 0, params_dense[last] == 0)  # later blocks do not


def test_wanda_beats_magnitude_at_half_sparsity(host):
    """The paper's headline property, on the bundled model: lower perplexity at 50%, per row."""
    evaluate = [{"metric": "perplexity", "params": {"add_bos": True, "collapse_blank_lines": True,
                                                    "seq_len": 256, "max_windows": 40}}]
    results = {}
    for scorer in ("magnitude", "wanda"):
        recipe = Recipe.from_data({
            "calibration": {"n_samples": 32, "seq_len": 256, "seed": 0},
            "steps": [{"method": "prune.unstructured", "params": {"sparsity": 0.5, "scorer": scorer, "scope": "row"}}],
            "evaluate": evaluate,
        })
        results[scorer] = run_recipe(recipe, "example:stories260K", host=host, catalogue=False).after["perplexity"]
    assert results["wanda"]["perplexity"] < 0.75 * results["magnitude"]["perplexity"]


def test_wanda_needs_calibration(host):
    from slimkit.core.errors import RecipeError

    recipe = Recipe.from_data([{"method": "prune.unstructured", "params": {"scorer": "wanda"}}])
    with pytest.raises(RecipeError, match="scorer 'wanda' needs calibration data"):
        recipe.resolve(host, load_model("example:stories260K"))


def test_owl_allocates_more_weights_to_blocks_with_more_outliers(host, calibration):
    from slimkit.plugins.pruning.unstructured import owl_sparsities

    model = load_model("example:stories260K")
    _, info, config = Recipe.from_data([{"method": "prune.unstructured", "params": {
        "sparsity": 0.6, "scorer": "wanda", "allocation": "owl", "owl": {"spread": 0.1}}}]).resolve(host).steps[0]
    ctx = host.context(calibration=calibration)
    adapter = host.adapter_for(model)
    per_layer = owl_sparsities(model, adapter, config, ctx)
    blocks = adapter.layout(model.model).blocks
    per_block = [per_layer[block.mlp.up.name] for block in blocks]
    assert sum(per_block) / len(per_block) == pytest.approx(0.6, abs=1e-9)
    assert max(per_block) - min(per_block) == pytest.approx(0.2, abs=1e-9)  # the full 2 x lambda spread
    # independent outlier ratios: fraction of Wanda scores above 5 x the block mean
    scores = host.score("wanda", model, context=ctx)
    ratios = []
    for block in blocks:
        values = torch.cat([scores[ref.name].reshape(-1) for ref in block.linears()])
        ratios.append(float((values > 5 * values.mean()).float().mean()))
    assert per_block.index(min(per_block)) == ratios.index(max(ratios))
    assert per_block.index(max(per_block)) == ratios.index(min(ratios))


def test_owl_beats_uniform_allocation_at_high_sparsity(host):
    """The OWL paper's property: at 70% sparsity, non-uniform allocation gives lower perplexity."""
    evaluate = [{"metric": "perplexity", "params": {"add_bos": True, "collapse_blank_lines": True,
                                                    "seq_len": 256, "max_windows": 40}}]
    results = {}
    for allocation in ("uniform", "owl"):
        recipe = Recipe.from_data({
            "calibration": {"n_samples": 32, "seq_len": 256, "seed": 0},
            "steps": [{"method": "prune.unstructured", "params": {
                "sparsity": 0.7, "scorer": "wanda", "scope": "row", "allocation": allocation}}],
            "evaluate": evaluate,
        })
        result = run_recipe(recipe, "example:stories260K", host=host, catalogue=False)
        results[allocation] = result.after["perplexity"]["perplexity"]
        # per-row counts are floored, so the achieved total can fall a little short of 70%
        assert result.steps[0].details["sparsity"] == pytest.approx(0.7, abs=0.015)
    assert results["owl"] < results["uniform"]


@pytest.mark.parametrize("step", [
    {"method": "prune.sparsegpt", "params": {"sparsity": 0.5}},
    {"method": "prune.unstructured", "params": {"sparsity": 0.5, "scorer": "wanda", "scope": "row"}},
    {"method": "prune.neurons", "params": {"fraction": 0.2, "scorer": "neurons.mi"}},
], ids=["sparsegpt", "wanda", "mi"])
def test_non_finite_activations_stop_the_method_and_leave_the_parent_alone(host, model, step):
    from slimkit.core.errors import DataError

    with torch.no_grad():
        model.model.get_submodule("model.layers.1.self_attn.v_proj").weight[0, 0] = float("nan")
    before = {name: p.detach().clone() for name, p in model.model.state_dict().items()}
    recipe = Recipe.from_data({"calibration": {"n_samples": 4, "seq_len": 64, "seed": 0}, "steps": [step]})
    with pytest.raises(DataError, match="non-finite activations"):
        run_recipe(recipe, model, host=host, catalogue=False)
    after = model.model.state_dict()
    assert all(torch.equal(before[name].nan_to_num(7.0), after[name].nan_to_num(7.0)) for name in before)


def test_bfloat16_calibration_is_a_distinct_fingerprint_and_close_statistics(host, model):
    from slimkit.core.data import TextSource, calibration_samples
    from slimkit.core.errors import DataError
    from slimkit.core.model_io import example_text

    source = TextSource(example_text())
    plain = calibration_samples(model.tokenizer, source, n_samples=4, seq_len=64)
    half = calibration_samples(model.tokenizer, source, n_samples=4, seq_len=64, precision="bfloat16")
    assert plain.precision == "float32" and half.precision == "bfloat16"
    assert torch.equal(plain.input_ids, half.input_ids) and plain.fingerprint != half.fingerprint
    with pytest.raises(DataError, match="precision"):
        calibration_samples(model.tokenizer, source, n_samples=4, seq_len=64, precision="float8")

    def stats(data):
        steps = iter(SequentialCalibration(model, host.adapter_for(model), data))
        next(steps)
        step = next(steps)  # the second block: its inputs went through a whole block in bf16
        refs = [ref for ref in step.block.linears() if ref.role in ("q", "down")]
        return {ref.role: s for ref, s in zip(refs, step.collect(refs, ("input_sq_sum", "hessian")).values())}

    full, low = stats(plain), stats(half)
    for role in ("q", "down"):
        scale = float(full[role].hessian.abs().max())
        assert float((full[role].hessian - low[role].hessian).abs().max()) < 0.02 * scale, role
        torch.testing.assert_close(low[role].input_sq_sum, full[role].input_sq_sum, rtol=0.03, atol=1e-3 * scale)
    assert all(p.dtype == torch.float32 for p in model.model.parameters())  # weights untouched


def test_bfloat16_calibration_prunes_about_as_well(host):
    evaluate = [{"metric": "perplexity", "params": {"add_bos": True, "collapse_blank_lines": True,
                                                    "seq_len": 256, "max_windows": 30}}]

    def ppl(precision):
        data = {"calibration": {"n_samples": 16, "seq_len": 128, "precision": precision},
                "steps": [{"method": "prune.sparsegpt", "params": {"sparsity": 0.5}}], "evaluate": evaluate}
        result = run_recipe(Recipe.from_data(data), "example:stories260K", host=host, catalogue=False)
        assert result.steps[0].calibration["precision"] == precision
        return result.after["perplexity"]["perplexity"]

    full, low = ppl("float32"), ppl("bfloat16")
    assert abs(low - full) / full < 0.05, (full, low)
