"""A step's identity covers every method that shaped it, so the catalogue never reuses a stale result.

The scenario of issue 14: a third-party scorer changes (its formula and ``version``, or its
distribution's release) and the same recipe runs again. The step must be recomputed, recorded
with the new scorer, and the old result left alone.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner
from pydantic import Field

import slimkit
from slimkit import BaseCompressor, BaseScorer, CompressionSummary, MethodConfig, Recipe, Scores, hookimpl
from slimkit import load_model, run_recipe
from slimkit.core.catalogue import Catalogue
from slimkit.core.cli import make_cli
from slimkit.core.errors import PluginError, RecipeError


class PowerConfig(MethodConfig):
    power: float = Field(1.0, gt=0, description="Exponent of |W|.")


class PowerScorer(BaseScorer):
    """|W| ** power: a stand-in for a third party's scorer."""

    name = "acme.power"
    version = 1
    granularity = "weight"
    Config = PowerConfig

    def score(self, model, adapter, config, ctx):
        values = {ref.name: ref.weight_out_in().detach().abs() ** config.power
                  for _, ref in adapter.layout(model.model).linears()}
        return Scores(self.name, self.granularity, values, config.model_dump())


class InversePowerScorer(PowerScorer):
    """Version 2 changed the formula: the smallest weights now matter most."""

    version = 2

    def score(self, model, adapter, config, ctx):
        scores = super().score(model, adapter, config, ctx)
        return Scores(self.name, self.granularity, {k: -v for k, v in scores.values.items()}, scores.config)


class ScorerPlugin:
    def __init__(self, cls: type) -> None:
        self.cls = cls

    @hookimpl
    def register_scorers(self, register):
        register(self.cls)


RECIPE = [{"method": "prune.unstructured", "params": {"sparsity": 0.5, "scorer": "acme.power"}}]


def run(host: Any, out: Path, catalogue: Path, steps: list[dict[str, Any]] = RECIPE) -> Any:
    return run_recipe(Recipe.from_data(steps), "example:stories260K", out=out, host=host, catalogue=str(catalogue))


def install(host: Any, cls: type, version: str) -> None:
    host.register(ScorerPlugin(cls), name="acme", version=version)


def test_a_changed_plugin_scorer_makes_a_new_step_never_a_stale_reuse(slimkit_host, tmp_path):
    db = tmp_path / "cat.db"
    install(slimkit_host, PowerScorer, "1.0")
    first = run(slimkit_host, tmp_path / "a", db)
    again = run(slimkit_host, tmp_path / "b", db)
    assert again.reused == [True]  # nothing changed: the step is recognised
    assert again.provenance["content_id"] == first.provenance["content_id"]

    # The plugin's scorer changes its formula and its version; the recipe is the same.
    slimkit_host.unregister(name="acme")
    install(slimkit_host, InversePowerScorer, "2.0")
    changed = run(slimkit_host, tmp_path / "c", db)
    assert changed.reused == [False]
    assert changed.steps[0].step_id != first.steps[0].step_id
    assert changed.provenance["content_id"] != first.provenance["content_id"]
    # The saved weights are the new scorer's: it kept the largest weights the old one pruned.
    saved = load_model(tmp_path / "c").model.state_dict()
    old = load_model(tmp_path / "a").model.state_dict()
    name = "model.layers.0.mlp.up_proj.weight"
    assert torch.equal(saved[name] == 0, old[name] != 0)

    # Only the distribution's release changes (same class, same version): a new step too.
    slimkit_host.unregister(name="acme")
    install(slimkit_host, InversePowerScorer, "2.1")
    release = run(slimkit_host, tmp_path / "d", db)
    assert release.reused == [False] and release.steps[0].step_id != changed.steps[0].step_id

    # slimkit.json and the catalogue both name the scorer, its plugin, versions and config.
    recorded = json.loads((tmp_path / "d" / "slimkit.json").read_text())["steps"][0]["uses"]
    assert recorded == [{"family": "scorer", "plugin": "acme", "plugin_version": "2.1",
                         "config": {"type": "acme.power", "version": 2, "data": {"power": 1.0}}}]
    with Catalogue(str(db)) as cat:
        assert list(cat.step(release.steps[0].step_id).uses) == recorded
        assert cat.step(first.steps[0].step_id).uses[0]["plugin_version"] == "1.0"  # the old step is intact


def test_scorer_params_are_part_of_the_step_id(slimkit_host):
    install(slimkit_host, PowerScorer, "1.0")

    def key(power: float) -> str:
        steps = [{"method": "prune.unstructured",
                  "params": {"scorer": "acme.power", "scorer_params": {"power": power}}}]
        (planned,) = Recipe.from_data(steps).resolve(slimkit_host).planned()
        return planned.key([{"model_id": "sha256:00", "role": "input"}], None)

    assert key(1.0) == key(1.0) and key(1.0) != key(2.0)


def test_nested_params_are_validated_with_the_recipe(host, tmp_path):
    steps = [
        {"method": "prune.unstructured", "params": {"scorer": "wanda", "scorer_params": {"rolez": ["q"]}}},
        {"method": "prune.unstructured", "params": {"scorer": "no.such.scorer"}},
        {"method": "prune.neurons", "params": {"scorer_params": {"power": "x"}}},
    ]
    with pytest.raises(RecipeError) as caught:
        Recipe.from_data({"steps": steps, "calibration": {}}).resolve(host)
    message = str(caught.value)
    assert "step 1 (prune.unstructured): scorer 'wanda': rolez: unknown parameter (got ['q']); wanda takes: roles" in message
    assert "step 2 (prune.unstructured): unknown scorer 'no.such.scorer'" in message
    assert "step 3 (prune.neurons): scorer 'neurons.magnitude': power: unknown parameter (got 'x')" in message

    recipe = tmp_path / "r.yaml"
    recipe.write_text("steps:\n  - method: prune.unstructured\n    params: {scorer: magnitude, "
                      "scorer_params: {rolez: [q]}}\n")
    result = CliRunner().invoke(make_cli(host), ["validate", str(recipe)])
    assert result.exit_code == 1
    assert "scorer 'magnitude': rolez: unknown parameter (got ['q'])" in result.output
    assert "Traceback" not in result.output


class Sneaky(BaseCompressor):
    """Uses a scorer it does not declare."""

    name = "test.sneaky"

    def compress_(self, model, adapter, config, ctx):
        ctx.score("magnitude", model, adapter)
        return CompressionSummary("never")


class BadShape(PowerScorer):
    name = "acme.badshape"

    def score(self, model, adapter, config, ctx):
        return Scores(self.name, "weight", {ref.name: torch.ones(3) for _, ref in adapter.layout(model.model).linears()})


class Broken(PowerScorer):
    name = "acme.broken"

    def score(self, model, adapter, config, ctx):
        return 1 / 0


class MixedPlugin:
    @hookimpl
    def register_compressors(self, register):
        register(Sneaky)

    @hookimpl
    def register_scorers(self, register):
        register(BadShape)
        register(Broken)


@pytest.mark.parametrize(("steps", "expected"), [
    ([{"method": "test.sneaky"}],
     "test.sneaky used scorer 'magnitude', which its uses() did not declare (declared: none)"),
    ([{"method": "prune.unstructured", "params": {"scorer": "acme.badshape"}}],
     "scorer 'acme.badshape' (plugin 'mixed' 0.9) returned scores of shape [3] for model.layers.0.self_attn.q_proj, "
     "whose weight is [64, 64] ([out, in])"),
    ([{"method": "prune.unstructured", "params": {"scorer": "acme.broken"}}],
     "scorer 'acme.broken' (plugin 'mixed' 0.9) failed in score: ZeroDivisionError: division by zero"),
])
def test_plugin_mistakes_are_one_line_naming_the_plugin(slimkit_host, tmp_path, steps, expected):
    slimkit_host.register(MixedPlugin(), name="mixed", version="0.9")
    db = tmp_path / "cat.db"
    with pytest.raises(PluginError) as caught:
        run(slimkit_host, tmp_path / "out", db, steps)
    assert expected in str(caught.value) and "\n" not in str(caught.value)
    assert not (tmp_path / "out").exists()
    with Catalogue(str(db)) as cat:
        assert cat.models() == [] and [run.status for run in cat.runs()] == ["failed"]


def test_every_screen_names_the_nested_methods(slimkit_host, tmp_path):
    from slimkit.core.present.html import step_html
    from slimkit.core.present.lineage import lineage_dot, lineage_mermaid

    db = tmp_path / "cat.db"
    install(slimkit_host, InversePowerScorer, "2.1")
    result = run(slimkit_host, tmp_path / "m", db)
    expected = "scorer acme.power v2 from acme 2.1"
    cli = make_cli(slimkit_host)
    for command in (["lineage", result.provenance["content_id"]], ["show", result.provenance["content_id"]]):
        shown = CliRunner().invoke(cli, ["--catalogue", str(db), *command], terminal_width=300)
        assert shown.exit_code == 0 and expected in shown.output, shown.output
    with Catalogue(str(db)) as cat:
        assert expected in lineage_mermaid(cat, result.provenance["content_id"])
        assert expected in lineage_dot(cat, result.provenance["content_id"])
        assert expected in step_html(cat.step(result.steps[0].step_id))


class Raising(BaseCompressor):
    """A check with a bug."""

    name = "test.raising-check"

    def check(self, model, adapter, config, ctx):
        return {}["missing"]

    def compress_(self, model, adapter, config, ctx):
        return CompressionSummary("never")


class Wordy(slimkit.BaseEvaluator):
    """Returns words, not numbers."""

    name = "acme.wordy"

    def evaluate(self, model, config, ctx):
        return {"verdict": "fine"}


class Crashing(slimkit.BaseEvaluator):
    name = "acme.crashing"

    def evaluate(self, model, config, ctx):
        raise OSError("sensor unplugged")


class EvaluatorPlugin:
    @hookimpl
    def register_evaluators(self, register):
        register(Wordy)
        register(Crashing)

    @hookimpl
    def register_compressors(self, register):
        register(Raising)


@pytest.mark.parametrize(("data", "error", "expected"), [
    ({"steps": [{"method": "test.raising-check"}]}, RecipeError,
     "step 1 (test.raising-check): compressor 'test.raising-check' (plugin 'evals' 1.2) failed in check: KeyError: 'missing'"),
    ({"steps": [{"method": "prune.unstructured"}], "evaluate": [{"metric": "acme.wordy"}]}, PluginError,
     "evaluator 'acme.wordy' (plugin 'evals' 1.2): evaluate returned dict, not a mapping of metric names to numbers"),
    ({"steps": [{"method": "prune.unstructured"}], "evaluate": [{"metric": "acme.crashing"}]}, PluginError,
     "evaluator 'acme.crashing' (plugin 'evals' 1.2) failed in evaluate: OSError: sensor unplugged"),
])
def test_checks_and_evaluators_of_plugins_fail_in_one_line(slimkit_host, tmp_path, data, error, expected):
    slimkit_host.register(EvaluatorPlugin(), name="evals", version="1.2")
    with pytest.raises(error) as caught:
        run_recipe(Recipe.from_data(data), "example:stories260K", out=tmp_path / "out", host=slimkit_host,
                   catalogue=str(tmp_path / "cat.db"))
    assert expected in str(caught.value) and "\n" not in str(caught.value)
    assert not (tmp_path / "out").exists()
