"""Distillation on stories260K: the loss falls within a few steps, the teacher is recorded as a
second parent, pruned zeros stay zero, an interrupted run resumes to the same weights as an
uninterrupted one, a quantized student learns through fake quantization and goes back onto its
grid, and bad input (a foreign vocabulary, a zero budget, no text) is refused."""

from __future__ import annotations

import pytest
import torch

from slimkit import Recipe, load_model, run_recipe, save_model
from slimkit.core.errors import RecipeError
from slimkit.plugins.distill.losses import HiddenStateLoss, block_map, chunked_logit_loss, lm_loss, logit_loss
from slimkit.plugins.distill.training import recomputed

CALIBRATION = {"n_samples": 4, "seq_len": 64, "seed": 0}


def recipe(*steps, **extra):
    return Recipe.from_data({"calibration": CALIBRATION, "steps": list(steps), **extra})


PRUNE = {"method": "prune.unstructured", "params": {"sparsity": 0.5}}


def distill(**params):
    return {"method": "distill", "params": {"steps": 8, "seq_len": 64, "lr": 1e-3, **params}}


def weights(model):
    return {name: p.detach().clone() for name, p in model.model.named_parameters()}


def test_logit_loss_is_zero_for_equal_logits_and_positive_otherwise():
    logits = torch.randn(2, 5, 11)
    assert float(logit_loss(logits, logits, 2.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(logit_loss(logits + torch.randn(2, 5, 11), logits, 2.0)) > 0.01


@pytest.mark.parametrize("lm_weight", [0.0, 0.3])
@pytest.mark.parametrize("chunk", [7, 64, 4096])
def test_chunked_logit_loss_equals_the_whole_one_in_value_and_gradient(lm_weight, chunk):
    generator = torch.Generator().manual_seed(0)
    head, teacher_head = torch.nn.Linear(16, 50, bias=False), torch.nn.Linear(16, 50, bias=False)
    student_hidden = torch.randn(3, 21, 16, generator=generator, requires_grad=True)
    teacher_hidden = torch.randn(3, 21, 16, generator=generator)
    ids = torch.randint(0, 50, (3, 21), generator=generator)
    whole_logits = head(student_hidden)
    whole = (1 - lm_weight) * logit_loss(whole_logits, teacher_head(teacher_hidden), 2.0) \
        + lm_weight * lm_loss(whole_logits, ids)
    expected = torch.autograd.grad(whole, [student_hidden, head.weight])
    chunked = chunked_logit_loss(student_hidden, teacher_hidden, head, teacher_head, ids, 2.0, lm_weight, chunk)
    got = torch.autograd.grad(chunked, [student_hidden, head.weight])
    assert float(chunked.detach()) == pytest.approx(float(whole.detach()), rel=1e-5)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert teacher_head.weight.grad is None  # the teacher does not learn


def test_recomputed_blocks_give_the_same_gradients_and_leave_the_blocks_as_they_were(model):
    ids = torch.arange(40).reshape(2, 20) % 500
    blocks = list(model.model.model.layers)

    def gradients():
        model.model.zero_grad(set_to_none=True)
        model.model(input_ids=ids, use_cache=False).logits.square().mean().backward()
        return {name: p.grad.clone() for name, p in model.model.named_parameters() if p.grad is not None}

    plain = gradients()
    with recomputed(blocks):
        assert all("forward" in vars(block) for block in blocks)
        again = gradients()
    assert not any("forward" in vars(block) for block in blocks)
    assert plain.keys() == again.keys()
    for name in plain:
        torch.testing.assert_close(again[name], plain[name], rtol=1e-5, atol=1e-7)


def test_block_map_spreads_student_blocks_over_the_teacher():
    assert block_map(5, 5) == [0, 1, 2, 3, 4]
    assert block_map(2, 4) == [1, 3]  # every other layer
    assert block_map(3, 5)[-1] == 4
    loss = HiddenStateLoss(2, 4, 8, 12)
    assert all(isinstance(p, torch.nn.Linear) for p in loss.projections)  # widths differ: learned maps


def test_pruned_student_learns_keeps_its_zeros_and_records_the_teacher(host, tmp_path):
    result = run_recipe(recipe(PRUNE, distill()), "example:stories260K", out=tmp_path / "d", host=host,
                        catalogue=tmp_path / "cat.db")
    pruned_step, distill_step = result.steps
    details = result.summaries[1].details
    assert details["steps"] == 8 and details["loss_last"] < 0.8 * details["loss_first"]
    assert details["masked_layers"] == 35
    # the teacher is the recipe's input, recorded as the step's second parent
    assert distill_step.parents == ((pruned_step.child_id, "input"), (pruned_step.parent_id, "teacher"))
    zeros = sum(int((p == 0).sum()) for n, p in result.model.model.named_parameters() if "layers" in n and p.dim() == 2)
    assert zeros >= 113_280  # every weight the pruning zeroed is still zero
    from slimkit.core.catalogue import Catalogue

    with Catalogue(tmp_path / "cat.db") as cat:  # the catalogue has the second parent too
        (recorded,) = cat.steps_into(distill_step.child_id)
        assert (pruned_step.parent_id, "teacher") in recorded.parents


def test_interrupted_run_resumes_to_the_same_weights(host, tmp_path):
    steps = (PRUNE, distill(steps=6, checkpoint_every=2))
    whole = run_recipe(recipe(*steps), "example:stories260K", out=tmp_path / "whole", host=host, catalogue=False)

    def interrupt(event):
        if event.stage == "steps" and event.done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_recipe(recipe(*steps), "example:stories260K", out=tmp_path / "parts", host=host, catalogue=False,
                   progress=interrupt)
    assert not (tmp_path / "parts").exists()  # nothing half-saved
    resumed = run_recipe(recipe(*steps), "example:stories260K", out=tmp_path / "parts", host=host, catalogue=False)
    assert resumed.summaries[1].details["resumed_from"] == 2
    assert "resumed at step 2" in resumed.steps[1].summary
    for name, tensor in weights(whole.model).items():
        assert torch.equal(tensor, weights(resumed.model)[name]), name
    assert not list(tmp_path.glob(".parts.work-*"))  # checkpoints removed once the step is done


def test_hidden_state_distillation_of_a_shallower_student(host, tmp_path):
    shrink = {"method": "prune.blocks", "params": {"blocks": [1, 3]}}  # every other block of five
    result = run_recipe(recipe(shrink, distill(hidden_weight=1.0, lm_weight=0.1)), "example:stories260K",
                        host=host, catalogue=False)
    assert result.model.model.config.num_hidden_layers == 3
    details = result.summaries[1].details
    assert details["loss_last"] < details["loss_first"]


def test_a_teacher_with_another_vocabulary_is_refused(host, tmp_path):
    other = load_model("example:stories260K")
    other.model.resize_token_embeddings(600)
    save_model(other, tmp_path / "wide", {})
    with pytest.raises(Exception, match="vocabulary .*differs from the teacher's"):
        run_recipe(recipe(distill(teacher=str(tmp_path / "wide"))), "example:stories260K", host=host,
                   catalogue=False)


@pytest.mark.parametrize("params", [{"steps": 0}, {"max_tokens": 0}, {"time_limit_s": 0}, {"lr": 0}])
def test_a_zero_budget_is_refused(host, params):
    with pytest.raises(RecipeError):
        run_recipe(recipe(distill(**params)), "example:stories260K", host=host, catalogue=False)


def _quantized_layer(grid, activations=None):
    from slimkit.core.quant.formats import grid_params, quantize
    from slimkit.core.quant.modules import QuantizedLinear, fp16_exact

    weight = torch.randn(24, 64, generator=torch.Generator().manual_seed(0))
    scale, zero = grid_params(weight, grid)
    scale = fp16_exact(scale)
    return QuantizedLinear.from_codes(quantize(weight, scale, zero, grid), scale, zero, grid,
                                      bias=torch.randn(24), activations=activations)


@pytest.mark.parametrize("grid, activations", [((4, 32, False), None), ((4, None, True), None),
                                               ((8, None, True), None), ((8, None, True), "int8")])
def test_fake_quantization_computes_what_the_quantized_layer_computes_and_lets_gradients_through(grid, activations):
    from slimkit.core.quant.fake import FakeQuantLinear
    from slimkit.core.quant.formats import QuantGrid

    layer = _quantized_layer(QuantGrid(*grid), activations)
    fake = FakeQuantLinear(layer)
    x = torch.randn(3, 40, 64)  # 120 rows: the quantized layer's float (dequantize or int8-dynamic) path
    assert torch.allclose(fake(x), layer(x), rtol=1e-4, atol=1e-4)
    again = fake.to_quantized()  # untrained: the very same integers
    assert torch.equal(again.qweight, layer.qweight) and torch.equal(again.scales, layer.scales)
    assert (again.zeros is None) == (layer.zeros is None) and (again.zeros is None or torch.equal(again.zeros, layer.zeros))
    fake(x).sum().backward()
    assert fake.weight.grad is not None and float(fake.weight.grad.abs().sum()) > 0
    # pushed past the grid's top end, a latent weight gets no gradient (clipped straight-through)
    with torch.no_grad():
        fake.weight[0, 0] = float((fake.grid.max_code - fake.zero[0, 0] + 3) * fake.scale[0, 0])
    fake.weight.grad = None
    fake(x).sum().backward()
    assert float(fake.weight.grad[0, 0]) == 0.0 and float(fake.weight.grad[0, 1:].abs().sum()) > 0
    assert int(fake.codes()[0, 0]) == fake.grid.max_code


def test_a_quantized_student_learns_through_fake_quantization_and_stays_on_its_grid(host, tmp_path):
    from slimkit.core.quant.modules import QuantizedLinear

    quantize = {"method": "quantize.rtn", "params": {"bits": 4, "symmetric": False}}
    evaluate = [{"metric": "perplexity", "params": {"max_windows": 8, "seq_len": 128}}]
    rtn = run_recipe(recipe(quantize, evaluate=evaluate), "example:stories260K", host=host, catalogue=False)
    qat = distill(steps=60, seq_len=128, batch_size=8, lr=3e-4, keep_zeros=False)
    result = run_recipe(recipe(quantize, qat, evaluate=evaluate),
                        "example:stories260K", out=tmp_path / "qat", host=host, catalogue=False)
    details = result.summaries[1].details
    assert details["fake_quantized_layers"] == 35 and details["masked_layers"] == 0
    assert details["loss_last"] < 0.8 * details["loss_first"]
    before = {n: m for n, m in rtn.model.model.named_modules() if isinstance(m, QuantizedLinear)}
    after = {n: m for n, m in load_model(tmp_path / "qat").model.named_modules() if isinstance(m, QuantizedLinear)}
    assert after.keys() == before.keys()
    assert all(torch.equal(after[n].scales, before[n].scales) and torch.equal(after[n].zeros, before[n].zeros)
               for n in after)  # the grid is frozen: only codes moved
    moved = sum(int((after[n].codes() != before[n].codes()).sum()) for n in after)
    assert moved > 1000
    # learning on the grid recovers a share of the gap to the teacher (the float input) that rounding opened
    dense, rounded = rtn.before["perplexity"]["perplexity"], rtn.after["perplexity"]["perplexity"]
    assert rounded - result.after["perplexity"]["perplexity"] > 0.2 * (rounded - dense)


def test_without_text_or_calibration_it_says_what_is_missing(host):
    with pytest.raises(RecipeError, match="needs training text"):
        run_recipe(Recipe.from_data({"steps": [distill()]}), "example:stories260K", host=host, catalogue=False)


def test_the_bundled_prune_distil_quantize_recipe_records_three_steps(host, tmp_path):
    """example:wanda-distill-gptq with a shorter budget and no evaluations (the suite's time)."""
    from slimkit.core.quant.modules import QuantizedLinear
    from slimkit.core.recipe import load_recipe

    data = load_recipe("example:wanda-distill-gptq").model_dump(mode="json", exclude={"base_dir"})
    data["steps"][1]["params"]["steps"] = 4
    data["evaluate"] = []
    result = run_recipe(Recipe.from_data(data), "example:stories260K", out=tmp_path / "chain", host=host,
                        catalogue=tmp_path / "cat.db")
    assert [s.method for s in result.steps] == ["prune.unstructured", "distill", "quantize.gptq"]
    reloaded = load_model(tmp_path / "chain")
    assert [s["method"] for s in reloaded.provenance["steps"]] == ["prune.unstructured", "distill", "quantize.gptq"]
    layers = [m for m in reloaded.model.modules() if isinstance(m, QuantizedLinear)]
    zeros = sum(int((m.dequantized_weight() == 0).sum()) for m in layers)
    assert len(layers) == 35 and zeros >= 113_280  # Wanda's zeros survived distillation and GPTQ


def test_a_teacher_that_does_not_exist_fails_before_any_step_runs(host, tmp_path):
    from slimkit.core.errors import ModelLoadError

    events = []
    with pytest.raises(ModelLoadError, match="no such model folder or file: .*nowhere"):
        run_recipe(recipe(PRUNE, distill(teacher=str(tmp_path / "nowhere"))), "example:stories260K",
                   out=tmp_path / "out", host=host, catalogue=False, progress=events.append)
    assert events == [] and not (tmp_path / "out").exists()  # the pruning never ran, nothing written
