"""Distillation on stories260K: the loss falls within a few steps, the teacher is recorded as a
second parent, pruned zeros stay zero, an interrupted run resumes to the same weights as an
uninterrupted one, and bad input (a foreign vocabulary, a zero budget, a quantized student) is
refused."""

from __future__ import annotations

import pytest
import torch

from slimkit import Recipe, load_model, run_recipe, save_model
from slimkit.core.errors import RecipeError
from slimkit.plugins.distill.losses import HiddenStateLoss, block_map, logit_loss

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
    assert distill_step.parents == [{"model_id": pruned_step.child_id, "role": "input"},
                                    {"model_id": pruned_step.parent_id, "role": "teacher"}]
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


def test_a_quantized_student_is_refused(host):
    quantize = {"method": "quantize.rtn", "params": {"bits": 8}}
    with pytest.raises(Exception, match="quantized layers, which cannot learn"):
        run_recipe(recipe(quantize, distill()), "example:stories260K", host=host, catalogue=False)


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
