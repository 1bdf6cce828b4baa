"""The command line: listings, run/eval/validate, and bad input answered in one line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from slimkit.core.cli import make_cli

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "tests" / "fixtures" / "slimkit-example-plugin"


@pytest.fixture
def cli(host):
    return make_cli(host)


def invoke(cli, *args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def slimkit(*args, cwd=None, env=None):
    """The real console entry point in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "slimkit", *args], capture_output=True, text=True, cwd=cwd,
        env={**os.environ, **(env or {})}, timeout=300,
    )


def test_plugins_json_lists_bundled_with_all(cli):
    result = invoke(cli, "plugins", "--all", "--json")
    assert result.exit_code == 0
    plugins = {p["name"]: p for p in json.loads(result.stdout)}
    magnitude = plugins["slimkit.plugins.pruning.magnitude"]
    assert magnitude["hooks"] == ["register_scorers"] and magnitude["source"] == "bundled"
    assert magnitude["status"] == "ok" and magnitude["errors"] == []
    assert magnitude["version"]
    assert json.loads(invoke(cli, "plugins", "--json").stdout) == []  # no third-party ones on this host


def test_methods_lists_every_family_and_shows_schema(cli, host):
    listed = json.loads(invoke(cli, "methods", "--json").stdout)
    assert {m["name"] for m in listed} == {info.name for info in host.methods()}
    one = json.loads(invoke(cli, "methods", "prune.unstructured", "--json").stdout)
    assert one["family"] == "compressor" and one["plugin"] == "slimkit.plugins.pruning.unstructured"
    sparsity = one["config_schema"]["properties"]["sparsity"]
    assert sparsity["minimum"] == 0 and sparsity["exclusiveMaximum"] == 1
    text = invoke(cli, "methods", "prune.unstructured").output
    assert "number >=0.0 <1.0" in text and "layer | row | global" in text
    assert invoke(cli, "methods", "--family", "evaluator", "--json").output.count('"family": "evaluator"') >= 4


def test_run_saves_model_and_prints_table(cli, tmp_path):
    out = tmp_path / "pruned"
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "steps: [{method: prune.unstructured, params: {sparsity: 0.5}}]\n"
        "evaluate: [{metric: perplexity, params: {max_windows: 4, seq_len: 128, add_bos: true}}, {metric: size}]\n"
    )
    result = invoke(cli, "run", str(recipe), "--model", "example:stories260K", "--out", str(out), "--no-progress")
    assert result.exit_code == 0, result.output
    assert "step 1 prune.unstructured: zeroed 113,280 of 226,560 weights (50.0%)" in result.output
    assert "perplexity.perplexity" in result.output and "size.sparsity" in result.output
    assert (out / "model.safetensors").is_file() and (out / "slimkit.json").is_file()
    again = invoke(cli, "run", str(recipe), "-m", "example:stories260K", "-o", str(out), "--overwrite", "--json")
    data = json.loads(again.stdout)
    assert data["after"]["size"]["sparsity"] > 0.4 and data["steps"][0]["method"] == "prune.unstructured"


def test_eval_defaults_and_params(cli):
    result = invoke(cli, "eval", "example:stories260K", "-p", "perplexity.max_windows=2", "--json")
    metrics = json.loads(result.stdout)["metrics"]
    assert set(metrics) == {"size", "perplexity"} and metrics["perplexity"]["windows"] == 2
    assert metrics["size"]["params"] == 260_032
    only = json.loads(invoke(cli, "eval", "example:stories260K", "--metric", "size", "--json").stdout)
    assert set(only["metrics"]) == {"size"}


def test_validate(cli):
    result = invoke(cli, "validate", "example:prune-50", "--model", "example:stories260K")
    assert result.exit_code == 0 and "valid" in result.output


BAD_INPUTS = [
    (["run", "example:prune-50", "--model", "./no/such/model"], "no such model folder or file: ./no/such/model"),
    (["run", "example:prune-50", "--model", "{notmodel}"], "is not a model folder: it has no config.json"),
    (["run", "{malformed}", "--model", "example:stories260K"], "malformed YAML at line 3, column 1: expected ',' or ']', but got '<stream end>' (while parsing a flow sequence at line 2, column 13)"),
    (["run", "{unknown}", "--model", "example:stories260K"], "unknown compressor 'prune.magic'; installed compressors: densify, dequantize, distill, lowrank.asvd,"),
    (["run", "{range}", "--model", "example:stories260K"], "step 1 (prune.unstructured): sparsity: Input should be less than 1 (got 1.5)"),
    (["run", "{wrongtype}", "--model", "example:stories260K"], "sparsity: Input should be a valid number"),
    (["run", "{unfit}", "--model", "example:stories260K"], "LlamaForCausalLM has no projections with roles qkv"),
    (["run", "example:prune-50", "--model", "example:stories260K", "--out", "{existing}"], "already exists (use --overwrite to replace it)"),
    (["eval", "example:stories260K", "--metric", "bleu"], "unknown evaluator 'bleu'"),
    (["eval", "example:stories260K", "-p", "perplexity.seq_len=4096"], "exceeds the model's context of 512 tokens"),
]


@pytest.mark.slow
@pytest.mark.parametrize("args, message", BAD_INPUTS, ids=[m[:30] for _, m in BAD_INPUTS])
def test_bad_input_is_one_line_nonzero_and_writes_nothing(tmp_path, args, message):
    files = {
        "notmodel": tmp_path / "notmodel",
        "malformed": tmp_path / "malformed.yaml",
        "unknown": tmp_path / "unknown.yaml",
        "range": tmp_path / "range.yaml",
        "wrongtype": tmp_path / "wrongtype.yaml",
        "unfit": tmp_path / "unfit.yaml",
        "existing": tmp_path / "existing",
    }
    files["notmodel"].mkdir()
    files["existing"].mkdir()
    files["malformed"].write_text("steps:\n  - method: [prune.unstructured\n")
    files["unknown"].write_text("steps: [{method: prune.magic}]\n")
    files["range"].write_text("steps: [{method: prune.unstructured, params: {sparsity: 1.5}}]\n")
    files["wrongtype"].write_text("steps: [{method: prune.unstructured, params: {sparsity: half}}]\n")
    files["unfit"].write_text("steps: [{method: prune.unstructured, params: {roles: [qkv]}}]\n")
    args = [a.format(**files) for a in args]
    if "--out" not in args and args[0] == "run":
        args += ["--out", str(tmp_path / "out")]
    before = sorted(p.name for p in tmp_path.iterdir())
    result = slimkit(*args, cwd=tmp_path)
    assert result.returncode == 1, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert message in lines[0]
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written, nothing half-written


@pytest.mark.slow
def test_install_and_uninstall_a_plugin_into_slimkits_environment(tmp_path):
    if not PLUGIN.is_dir():
        pytest.skip("the example plugin fixture is missing")
    # Build from a copy: setuptools writes build/ and *.egg-info beside the sources it builds.
    source = tmp_path / "plugin"
    shutil.copytree(PLUGIN, source, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    installed = slimkit("install", "--no-deps", "--no-build-isolation", str(source))
    try:
        assert installed.returncode == 0, installed.stderr
        listed = json.loads(slimkit("plugins", "--json").stdout)
        assert [(p["name"], p["version"], p["distribution"]) for p in listed] == [
            ("example", "0.3.1", "slimkit-example-plugin")
        ]
    finally:
        removed = slimkit("uninstall", "-y", "slimkit-example-plugin")
    assert removed.returncode == 0, removed.stderr
    assert json.loads(slimkit("plugins", "--json").stdout) == []


def test_score_writes_inspectable_scores(cli, tmp_path):
    from slimkit import Scores

    out = tmp_path / "scores.safetensors"
    result = invoke(cli, "score", "example:stories260K", "-s", "magnitude", "-p", "roles=[down]", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert "model.layers.4.mlp.down_proj" in result.stdout
    scores = Scores.load(out)
    assert scores.scorer == "magnitude" and len(scores.values) == 5
    again = CliRunner().invoke(cli, ["score", "example:stories260K", "-s", "magnitude", "-o", str(out)])
    assert again.exit_code == 1 and "already exists" in again.stderr
    bad = CliRunner().invoke(cli, ["score", "example:stories260K", "-s", "magnitude", "-p", "roles=[nose]", "-o", str(tmp_path / "x")])
    assert bad.exit_code == 1 and "roles.0: Input should be" in bad.stderr and not (tmp_path / "x").exists()


def test_score_calibration_precision(cli, tmp_path):
    import torch

    from slimkit import Scores

    runs = {}
    for precision in ("float32", "bfloat16"):
        out = tmp_path / f"{precision}.safetensors"
        result = invoke(cli, "score", "example:stories260K", "-s", "wanda", "-p", "roles=[down]", "-o", str(out),
                        "--samples", "4", "--seq-len", "64", "--precision", precision)
        assert result.exit_code == 0, result.output
        runs[precision] = Scores.load(out).values["model.layers.0.mlp.down_proj"]
    assert not torch.equal(runs["float32"], runs["bfloat16"])  # the passes really ran in bfloat16 ...
    assert torch.allclose(runs["float32"], runs["bfloat16"], rtol=0.05, atol=1e-4)  # ... to bfloat16 accuracy
    bad = CliRunner().invoke(cli, ["score", "example:stories260K", "-s", "wanda", "-o", str(tmp_path / "x"),
                                   "--precision", "float16"])
    assert bad.exit_code == 2 and "float16" in bad.output


def test_methods_name_shared_by_two_families_must_say_which(slimkit_host, register_plugin):
    from slimkit import BaseEvaluator, hookimpl

    class MagnitudeMetric(BaseEvaluator):
        """An evaluator that happens to share the scorer's name."""

        name = "magnitude"

        def evaluate(self, model, config, ctx):
            return {"x": 1.0}

    class Plugin:
        @hookimpl
        def register_evaluators(self, register):
            register(MagnitudeMetric)

    register_plugin(Plugin(), name="shadow")
    cli = make_cli(slimkit_host)
    ambiguous = CliRunner().invoke(cli, ["methods", "magnitude"])
    assert ambiguous.exit_code == 1 and "'magnitude' is a scorer and an evaluator; say which family" in ambiguous.stderr
    chosen = CliRunner().invoke(cli, ["methods", "magnitude", "--family", "evaluator", "--json"])
    assert json.loads(chosen.stdout)["plugin"] == "shadow"


def test_run_records_and_models_are_found_by_name(cli, tmp_path):
    catalogue = tmp_path / "c.db"
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: half\nsteps: [{method: prune.unstructured, params: {sparsity: 0.5}}]\n")
    first = invoke(cli, "--catalogue", str(catalogue), "run", str(recipe), "-m", "example:stories260K",
                   "--name", "half-pruned", "--no-progress")
    assert first.exit_code == 0, first.output
    from slimkit.core.catalogue import Catalogue

    with Catalogue(str(catalogue)) as cat:
        entry = cat.resolve("half-pruned")
        assert entry.location and entry.location.startswith(str(tmp_path / "artifacts"))
        assert [r.status for r in cat.runs()] == ["done"]
    again = invoke(cli, "--catalogue", str(catalogue), "run", str(recipe), "-m", "example:stories260K",
                   "-o", str(tmp_path / "copy"), "--no-progress")
    assert "reused from the catalogue" in again.stdout
    evaluated = invoke(cli, "--catalogue", str(catalogue), "eval", "half-pruned", "--metric", "size", "--json")
    assert json.loads(evaluated.stdout)["metrics"]["size"]["sparsity"] > 0.4
    with Catalogue(str(catalogue)) as cat:
        assert cat.metrics(entry.id)["size.sparsity"] > 0.4
    refused = CliRunner().invoke(cli, ["--catalogue", str(catalogue), "run", str(recipe), "-m",
                                       "example:stories260K", "--no-record"])
    assert refused.exit_code == 2 and "--out is needed with --no-record" in refused.stderr
