"""Parametrized over the registry, not a hand-written list: every installed method runs.

A new bundled or third-party method is covered here the moment it is registered: compressors
and scorers must run with their defaults on the bundled Llama, evaluators must either run or
refuse the model with a one-line slimkit error.
"""

from __future__ import annotations

import math

import pytest

from slimkit import Recipe, load_model, make_host, run_recipe
from slimkit.core.errors import SlimkitError
from slimkit.core.data import TextSource, calibration_samples
from slimkit.core.model_io import example_text

HOST = make_host(load_entrypoints=False)


def names(family: str) -> list[str]:
    return [info.name for info in HOST.registry(family)]


@pytest.fixture(scope="module")
def calibration():
    model = load_model("example:stories260K")
    return calibration_samples(model.tokenizer, TextSource(example_text()), n_samples=4, seq_len=64, seed=0)


PREREQUISITES = {"dequantize": [{"method": "quantize.rtn"}], "densify": [{"method": "lowrank.svd"}]}
SHORTER = {"distill": {"steps": 3}}  # defaults except a training budget (100 steps) the suite need not spend


@pytest.mark.parametrize("name", names("compressor"))
def test_every_compressor_runs_with_defaults(host, name, tmp_path):
    # Calibration is always given: a compressor may not need it itself but rank with a scorer
    # that does (prune.blocks with blocks.cosine); the others ignore it.
    before = PREREQUISITES.get(name, [])  # a method that only applies to a prepared model
    step = {"method": name, "params": SHORTER.get(name, {})}
    recipe = Recipe.from_data({"steps": [*before, step], "calibration": {"n_samples": 4, "seq_len": 64}})
    result = run_recipe(recipe, "example:stories260K", out=tmp_path / "out", host=host)
    step = result.steps[-1]
    assert step.summary and step.child_id != step.parent_id
    assert load_model(tmp_path / "out").provenance["steps"][-1]["method"] == name


@pytest.mark.parametrize("name", names("scorer"))
def test_every_scorer_scores_with_defaults(host, name, calibration):
    model = load_model("example:stories260K")
    ctx = host.context(calibration=calibration)
    scores = host.score(name, model, context=ctx)
    assert scores.scorer == name and scores.values
    assert all(bool(v.isfinite().all()) for v in scores.values.values())


@pytest.mark.parametrize("name", names("evaluator"))
def test_every_evaluator_runs_or_refuses_clearly(host, name):
    model = load_model("example:stories260K")
    try:
        metrics = host.evaluate(name, model, params={"max_windows": 2} if name == "perplexity" else None)
    except SlimkitError as error:
        assert "\n" not in str(error) and str(error)
        return
    assert metrics and all(isinstance(v, float) and math.isfinite(v) for v in metrics.values())


@pytest.mark.parametrize("name", names("architecture"))
def test_every_adapter_declares_what_it_matches(host, name):
    adapter = host.adapters()[name]
    assert adapter.model_types and adapter.config_fields.get("num_layers")
