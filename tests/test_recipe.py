"""Recipes: parsing, complete validation before work, and errors that say what is wrong."""

from __future__ import annotations

import pytest
from transformers import T5Config, T5ForConditionalGeneration

from slimkit import LoadedModel, Recipe, load_model, load_recipe
from slimkit.core.errors import RecipeError, SlimkitError


def problems_of(text: str, host, model=None) -> list[str]:
    with pytest.raises(RecipeError) as caught:
        Recipe.from_yaml(text, source="r.yaml").resolve(host, model)
    return caught.value.problems


def test_bundled_recipe_is_valid(host):
    recipe = load_recipe("example:prune-50")
    validated = recipe.resolve(host, load_model("example:stories260K"))
    assert [info.name for _, info, _ in validated.steps] == ["prune.unstructured"]
    assert validated.steps[0][2].sparsity == 0.5
    assert [spec.metric for spec in recipe.evaluate] == ["perplexity", "size"]


def test_malformed_yaml_names_line_and_column():
    with pytest.raises(RecipeError, match=r"r.yaml: malformed YAML at line 3, column \d+"):
        Recipe.from_yaml("steps:\n  - method: prune.unstructured\n    params: {sparsity: 0.5}}\n", source="r.yaml")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("", "the recipe is empty"),
        ("just a string", "a recipe is a mapping with 'steps'"),
        ("steps: []", "steps: List should have at least 1 item"),
        ("steps:\n  - params: {}\n", "step 1: method: Field required"),
        ("steps:\n  - method: prune.unstructured\n    parms: {}\n", "step 1: parms: unknown parameter"),
    ],
)
def test_shape_errors(text, expected):
    with pytest.raises(RecipeError) as caught:
        Recipe.from_yaml(text)
    assert any(expected in problem for problem in caught.value.problems), caught.value.problems


def test_every_problem_is_reported_at_once(host):
    problems = problems_of(
        """
steps:
  - method: prune.unstructured
    params: {sparsity: 1.5}
  - method: prune.magic
  - method: prune.unstructured
    params: {sparsity: half, scope: column, colour: red}
evaluate:
  - metric: bleu
""",
        host,
    )
    text = "\n".join(problems)
    assert "step 1 (prune.unstructured): sparsity: Input should be less than 1 (got 1.5)" in text
    installed = ", ".join(sorted(host.compressors.names()))
    assert f"step 2 (prune.magic): unknown compressor 'prune.magic'; installed compressors: {installed}" in text
    assert "step 3 (prune.unstructured): sparsity: Input should be a valid number" in text
    assert "scope: Input should be 'layer', 'row' or 'global' (got 'column')" in text
    from slimkit.plugins.pruning.unstructured import UnstructuredConfig

    takes = ", ".join(UnstructuredConfig.model_fields)
    assert f"colour: unknown parameter (got 'red'); UnstructuredConfig takes: {takes}" in text
    assert "evaluate 1 (bleu): unknown evaluator 'bleu'; installed evaluators:" in text
    assert len(problems) == 6


def test_method_that_does_not_fit_the_architecture(host):
    t5 = T5ForConditionalGeneration(T5Config(d_model=16, d_ff=32, num_layers=1, num_heads=2, vocab_size=32, d_kv=8))
    problems = problems_of("steps: [{method: prune.unstructured}]", host, LoadedModel(t5, None, "tiny-t5"))
    assert len(problems) == 1
    assert problems[0].startswith("model: no architecture adapter for T5ForConditionalGeneration")
    assert "llama" in problems[0] and "gpt2" in problems[0]

    stories = load_model("example:stories260K")
    problems = problems_of("steps: [{method: prune.unstructured, params: {roles: [qkv]}}]", host, stories)
    assert problems == ["step 1 (prune.unstructured): LlamaForCausalLM has no projections with roles qkv"]

    problems = problems_of(
        "steps: [{method: prune.unstructured}]\nevaluate: [{metric: stsb, params: {path: x.csv}}]", host, stories
    )
    assert len(problems) == 1 and problems[0].startswith("evaluate 1 (stsb): stsb needs a sentence encoder")


def test_recipe_from_python_and_yaml_round_trip(host):
    recipe = Recipe.from_data([{"method": "prune.unstructured", "params": {"sparsity": 0.25}}])
    again = Recipe.from_yaml(recipe.to_yaml())
    assert again == recipe
    assert again.resolve(host).steps[0][2].sparsity == 0.25


def test_relative_paths_are_relative_to_the_recipe(host, tmp_path):
    folder = tmp_path / "recipes"
    folder.mkdir()
    (folder / "eval.txt").write_text("Once upon a time there was a cat. " * 200)
    (folder / "r.yaml").write_text(
        "calibration: {text: eval.txt, n_samples: 2, seq_len: 16}\n"
        "steps: [{method: prune.unstructured}]\n"
        "evaluate: [{metric: perplexity, params: {text: eval.txt, seq_len: 32}}]\n"
    )
    recipe = load_recipe(folder / "r.yaml")
    validated = recipe.resolve(host)
    assert recipe.resolve_path(recipe.calibration.text) == folder / "eval.txt"
    assert validated.evaluations[0][2].text == folder / "eval.txt"

    (folder / "missing.yaml").write_text("calibration: {text: nowhere.txt}\nsteps: [{method: prune.unstructured}]\n")
    with pytest.raises(RecipeError, match="calibration: no such text file .*nowhere.txt"):
        load_recipe(folder / "missing.yaml").resolve(host)


def test_missing_and_unknown_recipe_files(tmp_path):
    with pytest.raises(SlimkitError, match="no such recipe file"):
        load_recipe(tmp_path / "nope.yaml")
    with pytest.raises(SlimkitError, match="no bundled recipe 'nope'; bundled: prune-50, sparsegpt-50"):
        load_recipe("example:nope")


def test_calibration_is_drawn_at_validation_and_problems_named(host, tmp_path):
    (tmp_path / "tiny.txt").write_text("Once upon a time.")
    (tmp_path / "ok.txt").write_text("Once upon a time there was a cat who liked the sun. " * 50)
    stories = load_model("example:stories260K")
    short = Recipe.from_data(
        {"calibration": {"text": "tiny.txt", "seq_len": 64}, "steps": [{"method": "prune.unstructured"}]},
        base_dir=tmp_path,
    )
    with pytest.raises(RecipeError, match=r"calibration: .*tiny.txt has \d+ tokens, too few for windows of 64"):
        short.resolve(host, stories)
    good = Recipe.from_data(
        {"calibration": {"text": "ok.txt", "n_samples": 3, "seq_len": 32, "seed": 5},
         "steps": [{"method": "prune.unstructured"}]},
        base_dir=tmp_path,
    )
    data = good.calibration_data(stories)
    assert tuple(data.input_ids.shape) == (3, 32) and data.seed == 5
    assert data.fingerprint == good.calibration_data(stories).fingerprint  # seeded: same windows
    other = Recipe.from_data({**good.model_dump(exclude={"base_dir"}), "calibration": {"text": "ok.txt", "n_samples": 3, "seq_len": 32, "seed": 6}}, base_dir=tmp_path)
    assert other.calibration_data(stories).fingerprint != data.fingerprint
