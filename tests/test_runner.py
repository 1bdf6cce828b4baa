"""Running recipes: the chain is applied, saved atomically and recorded in slimkit.json."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from slimkit import BaseCompressor, Recipe, hookimpl, load_model, run_recipe
from slimkit.core.errors import OutputExistsError, PluginError, RecipeError
from slimkit.core.provenance import content_id


def test_three_step_chain_is_recorded_and_reloads(host, tmp_path):
    recipe = Recipe.from_data(
        {
            "name": "chain",
            "seed": 7,
            "steps": [
                {"method": "prune.unstructured", "params": {"sparsity": 0.2}},
                {"method": "prune.unstructured", "params": {"sparsity": 0.4, "scope": "row"}},
                {"method": "prune.unstructured", "params": {"sparsity": 0.6, "roles": ["up", "gate", "down"]}},
            ],
            "evaluate": [{"metric": "size"}],
        }
    )
    out = tmp_path / "derived"
    result = run_recipe(recipe, "example:stories260K", out=out, host=host)
    document = json.loads((out / "slimkit.json").read_text())
    steps = document["steps"]
    assert [s["config"]["data"]["sparsity"] for s in steps] == [0.2, 0.4, 0.6]
    assert all(s["config"]["type"] == "prune.unstructured" and s["config"]["version"] == 1 for s in steps)
    assert all(s["plugin"] == "slimkit.plugins.pruning.unstructured" and s["seed"] == 7 for s in steps)
    assert steps[0]["parent_id"] == document["base"]["content_id"]
    assert steps[1]["parent_id"] == steps[0]["child_id"] and steps[2]["parent_id"] == steps[1]["child_id"]
    assert steps[2]["child_id"] == document["content_id"]
    assert set(steps[0]["versions"]) >= {"slimkit", "torch", "transformers"}
    assert steps[0]["wall_time_s"] >= 0 and steps[0]["peak_rss_bytes"] > 0
    assert document["evaluations"][0]["metrics"]["sparsity"] == result.after["size"]["sparsity"]
    assert result.after["size"]["sparsity"] > result.before["size"]["sparsity"] == 0

    # Plain transformers reloads it to the same weights, and the content id is reproducible.
    plain = AutoModelForCausalLM.from_pretrained(out)
    assert content_id(plain) == document["content_id"]
    ids = torch.tensor([[1, 403, 407, 261, 378]])
    with torch.no_grad():
        assert torch.equal(plain(ids).logits, result.model.model(ids).logits)
    # every stored config resolves back through the registry
    for step in steps:
        info, config = host.config_from_dict("compressor", step["config"])
        assert config.model_dump(mode="json") == step["config"]["data"]


def test_lineage_extends_across_runs(host, tmp_path):
    first = tmp_path / "first"
    second = tmp_path / "second"
    run_recipe(Recipe.from_data([{"method": "prune.unstructured", "params": {"sparsity": 0.3}}]),
               "example:stories260K", out=first, host=host)
    run_recipe(Recipe.from_data([{"method": "prune.unstructured", "params": {"sparsity": 0.5}}]),
               str(first), out=second, host=host)
    document = json.loads((second / "slimkit.json").read_text())
    assert [s["config"]["data"]["sparsity"] for s in document["steps"]] == [0.3, 0.5]
    assert document["base"]["source"] == "example:stories260K"
    assert document["steps"][1]["parent_id"] == document["steps"][0]["child_id"]


def test_existing_output_is_refused_before_any_work(host, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    with pytest.raises(OutputExistsError, match="already exists"):
        run_recipe(Recipe.from_data([{"method": "prune.unstructured"}]), "example:stories260K", out=out, host=host)
    assert (out / "keep.txt").read_text() == "precious"


class Exploding(BaseCompressor):
    """Changes some weights, then fails, like a run interrupted half-way."""

    name = "test.exploding"

    def compress_(self, model, adapter, config, ctx):
        next(model.model.parameters()).data.zero_()
        raise RuntimeError("out of memory (simulated)")


class ExplodingPlugin:
    @hookimpl
    def register_compressors(self, register):
        register(Exploding)


def test_failed_step_leaves_nothing_behind(slimkit_host, register_plugin, tmp_path):
    register_plugin(ExplodingPlugin(), name="exploding")
    out = tmp_path / "out"
    recipe = Recipe.from_data([{"method": "prune.unstructured"}, {"method": "test.exploding"}])
    model = load_model("example:stories260K")
    before = content_id(model.model)
    # The plugin's own exception reaches the caller as one line naming the method and plugin,
    # with the original chained (what --debug shows).
    with pytest.raises(PluginError, match=r"^compressor 'test.exploding' \(plugin 'exploding'\) failed in "
                                          r"compress_: RuntimeError: out of memory \(simulated\)$") as caught:
        run_recipe(recipe, model, out=out, host=slimkit_host)
    assert isinstance(caught.value.__cause__, RuntimeError)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []
    assert content_id(model.model) == before  # the caller's model was copied, not changed


def test_invalid_recipe_does_no_work(host, tmp_path):
    out = tmp_path / "out"
    model = load_model("example:stories260K")
    before = content_id(model.model)
    with pytest.raises(RecipeError):
        run_recipe(Recipe.from_data([{"method": "prune.unstructured", "params": {"roles": ["qkv"]}}]),
                   model, out=out, host=host, inplace=True)
    assert content_id(model.model) == before and not out.exists()


def test_progress_is_reported(host):
    events = []
    run_recipe(Recipe.from_data([{"method": "prune.unstructured"}]), "example:stories260K",
               host=host, progress=events.append, catalogue=False)
    blocks = [e for e in events if e.stage == "blocks"]  # magnitude pruning goes block by block
    assert [e.done for e in blocks] == [1, 2, 3, 4, 5] and blocks[-1].total == 5


def test_calibration_fingerprint_and_seed_are_recorded(host, tmp_path):
    recipe = Recipe.from_data({
        "seed": 3,
        "calibration": {"n_samples": 2, "seq_len": 32, "seed": 11},
        "steps": [{"method": "prune.unstructured"}, {"method": "prune.unstructured", "seed": 9}],
    })
    result = run_recipe(recipe, "example:stories260K", host=host)
    expected = recipe.calibration_data(result.model).fingerprint
    assert [s.calibration_fingerprint for s in result.steps] == [expected, expected]
    assert [s.seed for s in result.steps] == [3, 9]
    plain = run_recipe(Recipe.from_data([{"method": "prune.unstructured"}]), "example:stories260K", host=host)
    assert plain.steps[0].calibration_fingerprint is None
