"""A real third-party plugin distribution, built and installed, is discovered through its entry point.

``tests/fixtures/slimkit-example-plugin`` (the tutorial plugin) is installed with pip into a
temporary folder, never into the virtualenv, and every check runs in a subprocess whose
``PYTHONPATH`` points at that folder: exactly what a user gets after ``pip install``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

FIXTURE = Path(__file__).parent / "fixtures" / "slimkit-example-plugin"


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder the example distribution is installed into (pip --target), built once per module."""
    root = tmp_path_factory.mktemp("example-plugin")
    # Build from a copy: setuptools writes build/ and *.egg-info beside the sources.
    source = shutil.copytree(
        FIXTURE, root / "src", ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__")
    )
    target = root / "site"
    command = [
        sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
        "--no-deps", "--no-build-isolation", "--no-index", "--target", str(target), str(source),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"pip install failed:\n{result.stdout}\n{result.stderr}"
    assert (target / "slimkit_example_plugin-0.3.1.dist-info" / "entry_points.txt").is_file()
    return target


def run_python(code: str, plugin_path: Path, **env_vars: str) -> dict:
    """Run ``code`` with the plugin on ``PYTHONPATH``; it prints one JSON object, returned parsed."""
    env = {k: v for k, v in os.environ.items() if k not in ("SLIMKIT_LOAD_PLUGINS", "SLIMKIT_BLOCK_PLUGINS")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(plugin_path), env.get("PYTHONPATH")]))
    env.update(env_vars)
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, f"subprocess failed:\n{result.stdout}\n{result.stderr}"
    return json.loads(result.stdout.strip().splitlines()[-1])


DISCOVER_AND_USE = """
    import json, warnings
    import torch
    import slimkit

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any plugin problem fails the run
        host = slimkit.make_host()
    [plugin] = [p for p in host.plugin_infos() if p.name == "example"]
    scorer = host.scorers.get("example.random")
    evaluator = host.evaluators.get("example.weight-norm")

    model = slimkit.load_model("example:stories260K")
    adapter = host.adapter_for(model)
    norm_before = host.evaluate("example.weight-norm", model)["weight_norm"]
    expected_norm = sum(float(torch.linalg.vector_norm(p)) for p in model.model.parameters())

    # The scorer is seeded: same seed, same scores; another seed, other scores.
    first = host.score("example.random", model, params={"scale": 2.0}, context=host.context(seed=3))
    again = host.score("example.random", model, params={"scale": 2.0}, context=host.context(seed=3))
    other = host.score("example.random", model, params={"scale": 2.0}, context=host.context(seed=4))
    name = next(iter(first.values))

    # Prune with the bundled compressor, ranking weights by the plugin's scorer.
    pruner = host.compressors.get("prune.unstructured")
    config = host.config(pruner, {"sparsity": 0.5, "scorer": "example.random", "roles": ["up", "down"]})
    ctx = host.context(seed=0)
    weight = adapter.layout(model.model).blocks[0].mlp.up.weight
    original = weight.detach().clone()
    pruner.create().check(model, adapter, config, ctx)
    summary = pruner.create().compress_(model, adapter, config, ctx)
    # Random ranking is not magnitude ranking: some weights below the median magnitude survive.
    kept = original[weight != 0].abs()

    print(json.dumps({
        "plugin": {"name": plugin.name, "source": plugin.source, "distribution": plugin.distribution,
                   "version": plugin.version, "hooks": list(plugin.hooks)},
        "problems": [str(p) for p in host.problems],
        "scorer": {"plugin": scorer.plugin, "plugin_version": scorer.plugin_version,
                   "version": scorer.version, "module": scorer.cls.__module__},
        "evaluator": {"plugin": evaluator.plugin, "plugin_version": evaluator.plugin_version},
        "scores": {"granularity": first.granularity, "config": dict(first.config),
                   "same_seed_equal": all(torch.equal(first[k], again[k]) for k in first.values),
                   "other_seed_differs": not torch.equal(first[name], other[name]),
                   "max": max(float(v.max()) for v in first.values.values()),
                   "min": min(float(v.min()) for v in first.values.values())},
        "summary": {"description": summary.description, "sparsity": summary.details["sparsity"],
                    "layers": sorted(summary.details["per_layer"])},
        "up_sparsity": float((weight == 0).float().mean()),
        "small_weight_kept": bool(kept.min() < original.abs().median()),
        "norm": {"before": norm_before, "expected": expected_norm,
                 "after": host.evaluate("example.weight-norm", model)["weight_norm"]},
    }))
"""


def test_installed_plugin_is_discovered_and_usable(plugin_path: Path) -> None:
    out = run_python(DISCOVER_AND_USE, plugin_path)
    assert out["problems"] == []
    assert out["plugin"] == {
        "name": "example",
        "source": "entrypoint",
        "distribution": "slimkit-example-plugin",
        "version": "0.3.1",
        "hooks": ["register_compressors", "register_evaluators", "register_scorers"],
    }
    # The catalogue and lineage learn which plugin, at which version, supplied each method.
    assert out["scorer"] == {"plugin": "example", "plugin_version": "0.3.1", "version": 1,
                             "module": "slimkit_example_plugin"}  # fmt: skip
    assert out["evaluator"] == {"plugin": "example", "plugin_version": "0.3.1"}

    scores = out["scores"]
    assert scores["granularity"] == "weight"
    assert scores["config"] == {"scale": 2.0}
    assert scores["same_seed_equal"] and scores["other_seed_differs"]
    assert 0.0 <= scores["min"] and scores["max"] <= 2.0 and scores["max"] > 1.0  # scale applied

    summary = out["summary"]
    assert summary["sparsity"] == pytest.approx(0.5, abs=0.01)
    assert "example.random" in summary["description"]
    assert summary["layers"] and all(".mlp." in layer for layer in summary["layers"])
    assert out["up_sparsity"] == pytest.approx(0.5, abs=0.01)
    assert out["small_weight_kept"]

    norm = out["norm"]
    assert norm["before"] == pytest.approx(norm["expected"], rel=1e-6)
    assert norm["after"] < norm["before"]


# The tutorial's data-aware scorer and its scorer-driven compressor, installed, on the bundled model.
DATA_AWARE = """
    import json
    import torch
    import slimkit

    host = slimkit.make_host()
    model = slimkit.load_model("example:stories260K")
    adapter = host.adapter_for(model)
    text = slimkit.TextSource(slimkit.example_text())
    calibration = slimkit.calibration_samples(model.tokenizer, text, n_samples=4, seq_len=32)
    ctx = host.context(calibration=calibration)

    # The scorer against the same quantity measured independently: mean |x| at every layer's input
    # over one plain forward pass of the dense model, times |W|.
    scores = host.score("example.activation", model, context=ctx)
    layers = [ref for _block, ref in adapter.layout(model.model).linears()]
    sums = {}
    def add(name, x):
        sums[name] = sums.get(name, 0) + x.detach().abs().reshape(-1, x.shape[-1]).double().sum(0)
    hooks = [ref.module.register_forward_pre_hook(lambda _m, args, name=ref.name: add(name, args[0]))
             for ref in layers]
    with torch.no_grad():
        model.model(input_ids=calibration.input_ids)
    for hook in hooks:
        hook.remove()
    tokens = calibration.input_ids.numel()
    matches = all(torch.allclose(scores[ref.name], ref.weight_out_in().detach().abs() * (sums[ref.name] / tokens).float(),
                                 rtol=1e-5, atol=1e-7) for ref in layers)
    only_mlp = host.score("example.activation", model, params={"roles": ["up", "down"]}, context=ctx)

    # Without calibration data the compressor's check refuses the data-aware scorer, in one line.
    pruner = host.compressors.get("example.threshold")
    config = host.config(pruner, {"scorer": "example.activation", "fraction": 0.5})
    try:
        pruner.create().check(model, adapter, config, host.context())
        refused = None
    except slimkit.ConfigError as error:
        refused = str(error)

    # A recipe: the runner validates, checks, draws the calibration windows and runs the step.
    recipe = slimkit.Recipe.from_data({
        "calibration": {"n_samples": 4, "seq_len": 32},
        "steps": [{"method": "example.threshold", "params": {"scorer": "example.activation", "fraction": 0.5}}],
        "evaluate": [{"metric": "example.weight-norm"}],
    })
    events = []
    result = slimkit.run_recipe(recipe, model, host=host, catalogue=False, progress=events.append)
    derived = result.model.model
    zeros = sum(int((ref.weight_out_in() == 0).sum()) for _block, ref in adapter.layout(derived).linears())
    print(json.dumps({
        "granularity": scores.granularity, "layers": len(scores.values), "expected_layers": len(layers),
        "matches_forward_pass": matches, "min": min(float(v.min()) for v in scores.values.values()),
        "only_mlp_roles": sorted({name.split(".")[-1] for name in only_mlp.values}),
        "refused": refused,
        "step": {"method": result.steps[0].method, "plugin": result.steps[0].plugin,
                 "details": result.summaries[0].details, "description": result.summaries[0].description},
        "zeros": zeros,
        "layer_events": sorted({event.stage for event in events}),
        "norm": {"before": result.before["example.weight-norm"]["weight_norm"],
                 "after": result.after["example.weight-norm"]["weight_norm"]},
    }))
"""


def test_installed_data_aware_scorer_and_compressor_work(plugin_path: Path) -> None:
    out = run_python(DATA_AWARE, plugin_path)
    assert out["granularity"] == "weight"
    assert out["layers"] == out["expected_layers"] > 0
    assert out["matches_forward_pass"]
    assert out["min"] >= 0.0
    assert out["only_mlp_roles"] == ["down_proj", "up_proj"]
    assert out["refused"] == "scorer 'example.activation' needs calibration data; add a calibration section"
    step = out["step"]
    assert step["method"] == "example.threshold" and step["plugin"] == "example"
    assert 0.05 < step["details"]["sparsity"] < 0.95
    assert step["details"]["zeroed"] == out["zeros"] > 0
    assert "example.activation" in step["description"]
    assert "layers" in out["layer_events"]
    assert out["norm"]["after"] < out["norm"]["before"]


ENV_CASES: dict[str, dict[str, str]] = {
    "default-loads-all": {},
    "load-empty-means-none": {"SLIMKIT_LOAD_PLUGINS": ""},
    "load-by-entry-point-name": {"SLIMKIT_LOAD_PLUGINS": "example"},
    "load-by-distribution": {"SLIMKIT_LOAD_PLUGINS": "slimkit-example-plugin"},
    "load-other": {"SLIMKIT_LOAD_PLUGINS": "something-else"},
    "block-by-name": {"SLIMKIT_BLOCK_PLUGINS": "example"},
    "block-wins": {"SLIMKIT_LOAD_PLUGINS": "example", "SLIMKIT_BLOCK_PLUGINS": "example"},
}

# make_host() reads the variables when it is called, so one subprocess checks every case in turn
# (one torch import instead of seven).
LIST_PLUGINS = """
    import json, os, slimkit
    results = {}
    for case, env in json.loads(os.environ["CASES"]).items():
        for name in ("SLIMKIT_LOAD_PLUGINS", "SLIMKIT_BLOCK_PLUGINS"):
            os.environ.pop(name, None)
        os.environ.update(env)
        host = slimkit.make_host()
        results[case] = {"plugins": [p.name for p in host.plugin_infos()],
                         "status": {p.name: p.status for p in host.plugin_infos(unloaded=True)},
                         "scorers": host.scorers.names(),
                         "problems": [str(p) for p in host.problems]}
    print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def env_results(plugin_path: Path) -> dict:
    return run_python(LIST_PLUGINS, plugin_path, CASES=json.dumps(ENV_CASES))


@pytest.mark.parametrize(
    ("case", "status"),
    [
        ("default-loads-all", "ok"),
        ("load-empty-means-none", "not selected"),
        ("load-by-entry-point-name", "ok"),
        ("load-by-distribution", "ok"),
        ("load-other", "not selected"),
        ("block-by-name", "blocked"),
        ("block-wins", "blocked"),
    ],
)
def test_environment_selects_plugins(env_results: dict, case: str, status: str) -> None:
    out = env_results[case]
    loaded = status == "ok"
    assert ("example" in out["plugins"]) is loaded
    assert ("example.random" in out["scorers"]) is loaded
    assert out["status"]["example"] == status  # a plugin that did not load still says why
    # Bundled plugins are not entry points: SLIMKIT_LOAD_PLUGINS never removes them.
    assert "slimkit.plugins.pruning.magnitude" in out["plugins"]
    assert "magnitude" in out["scorers"]
    if case == "load-other":  # a name that matches nothing installed is reported, naming what is
        [problem] = out["problems"]
        assert problem.startswith("SLIMKIT_LOAD_PLUGINS names 'something-else', which is not installed")
        assert "example (slimkit-example-plugin)" in problem
        assert out["status"]["something-else"] == "not installed"
    else:
        assert out["problems"] == []
