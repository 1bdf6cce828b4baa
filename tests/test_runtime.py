"""Precision and device: ``dtype``/``device`` resolved against the checkpoint and the hardware, the
measured half-precision probe and its cache, ``load_model``, the CLI's --dtype/--device, a
recipe's ``runtime:`` section, and what a step records."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import slimkit
from slimkit import Recipe, run_recipe
from slimkit.core import hardware
from slimkit.core.cli import make_cli
from slimkit.core.errors import DeviceError, RecipeError
from slimkit.core.runtime import checkpoint_dtype, resolve, resolve_device

NO_GPU = not torch.cuda.is_available()


@pytest.fixture
def probe_cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("SLIMKIT_CACHE_DIR", str(folder))
    return folder / "cpu-probe.json"


def test_explicit_dtypes_and_the_cpu():
    assert resolve("bfloat16", "cpu").dtype == torch.bfloat16
    assert resolve("float16").dtype == torch.float16
    assert resolve(None, None).dtype == torch.float32 and resolve(None, None).device == torch.device("cpu")
    assert resolve(torch.bfloat16).dtype_name == "bfloat16"
    with pytest.raises(DeviceError, match="unknown dtype 'int8': use auto, bfloat16, float16, float32"):
        resolve("int8")
    with pytest.raises(DeviceError, match="unknown device 'tpu'"):
        resolve_device("tpu")


@pytest.mark.skipif(not NO_GPU, reason="checks the message a machine without a GPU gives")
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_a_gpu_that_is_not_there_is_one_line(device):
    with pytest.raises(DeviceError, match=f"device {device}: torch sees no CUDA GPU here"):
        resolve_device(device)
    assert resolve_device("auto") == torch.device("cpu")


def test_auto_keeps_a_half_checkpoint_only_where_it_is_native(monkeypatch):
    assert resolve("auto", checkpoint=torch.float32).dtype == torch.float32
    assert resolve("auto", checkpoint=None).dtype == torch.float32  # a GGUF, a hub id
    for ratio, expected in ((0.25, torch.bfloat16), (7.7, torch.float32)):
        monkeypatch.setattr(hardware, "half_cost",
                            lambda dtype, r=ratio: hardware.HalfCost("bfloat16", r, "AVX2", True))
        chosen = resolve("auto", "cpu", checkpoint=torch.bfloat16)
        assert chosen.dtype == expected
        assert ("kept" if expected == torch.bfloat16 else "float32 instead of") in chosen.reason
        assert f"{7.7 if ratio > 1 else 4.0:.1f}x {'slower' if ratio > 1 else 'faster'}" in chosen.reason


def test_the_probe_measures_once_and_caches_per_cpu_and_threads(probe_cache, monkeypatch):
    calls = []
    real = hardware._time
    monkeypatch.setattr(hardware, "_time", lambda dtype, repeats=2: calls.append(dtype) or real(dtype, repeats))
    first = hardware.half_cost(torch.bfloat16)
    assert not first.cached and calls == [torch.bfloat16, torch.float32] and first.ratio > 0
    again = hardware.half_cost(torch.bfloat16)
    assert again.cached and again.ratio == first.ratio and len(calls) == 2
    key = next(iter(json.loads(probe_cache.read_text())))
    assert hardware.cpu_capability() in key and f"{torch.get_num_threads()} threads" in key
    with pytest.raises(ValueError):
        hardware.half_cost(torch.float32)


def test_an_unwritable_or_broken_cache_is_measured_again(probe_cache, monkeypatch):
    monkeypatch.setattr(hardware, "_time", lambda dtype, repeats=5: 1.0 if dtype == torch.float32 else 2.0)
    probe_cache.parent.mkdir(parents=True)
    probe_cache.write_text("{not json")
    assert hardware.half_cost(torch.bfloat16).ratio == 2.0  # broken: measured, and rewritten
    assert json.loads(probe_cache.read_text())
    probe_cache.unlink()
    probe_cache.mkdir()  # a folder where the file should be: cannot be written
    cost = hardware.half_cost(torch.float16)
    assert not cost.cached and not cost.native and "2.0x slower" in cost.describe()


def test_checkpoint_dtype_reads_config_json(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"torch_dtype": "bfloat16"}))
    assert checkpoint_dtype(tmp_path) == torch.bfloat16
    (tmp_path / "config.json").write_text(json.dumps({"dtype": "float16"}))
    assert checkpoint_dtype(tmp_path / "config.json") == torch.float16
    (tmp_path / "config.json").write_text("{broken")
    assert checkpoint_dtype(tmp_path) is None
    assert checkpoint_dtype(tmp_path / "m.gguf") is None


def test_load_model_in_bfloat16_and_auto(tmp_path, probe_cache, stories):
    model = slimkit.load_model("example:stories260K", dtype="bfloat16")
    assert model.dtype == torch.bfloat16 and model.device == torch.device("cpu")
    half = Path(shutil.copytree(stories, tmp_path / "half"))
    config = json.loads((half / "config.json").read_text())
    (half / "config.json").write_text(json.dumps({**config, "torch_dtype": "bfloat16", "dtype": "bfloat16"}))
    auto = slimkit.load_model(half, dtype="auto")
    native = hardware.half_cost(torch.bfloat16).native
    assert auto.dtype == (torch.bfloat16 if native else torch.float32)
    assert auto.extras["dtype_reason"].startswith("auto: ")
    assert slimkit.load_model("example:stories260K", dtype="auto").dtype == torch.float32  # a float32 checkpoint


def test_recipe_runtime_section_loads_and_is_recorded(host):
    recipe = Recipe.from_data({"steps": [{"method": "quantize.rtn", "params": {"bits": 8, "group_size": None}}],
                               "runtime": {"dtype": "bfloat16"}})
    result = run_recipe(recipe, "example:stories260K", catalogue=False, host=host)
    assert result.model.dtype == torch.bfloat16
    versions = result.steps[0].versions
    assert versions["dtype"] == "bfloat16" and versions["device"] == "cpu"
    assert versions["cpu_capability"] == hardware.cpu_capability()
    assert "runtime:\n  dtype: bfloat16" in recipe.to_yaml()


@pytest.mark.parametrize("runtime, fragment", [
    ({"dtype": "fp8"}, "runtime.dtype"),
    ({"device": "gpu"}, "runtime.device"),
    ({"threads": 4}, "runtime"),
])
def test_a_bad_runtime_section_is_named(runtime, fragment):
    with pytest.raises(RecipeError, match=fragment):
        Recipe.from_data({"steps": [{"method": "prune.unstructured"}], "runtime": runtime})


@pytest.mark.skipif(not NO_GPU, reason="checks the message a machine without a GPU gives")
def test_cli_device_cuda_without_a_gpu_fails_before_loading(tmp_path, host):
    result = CliRunner().invoke(make_cli(host), ["--catalogue", str(tmp_path / "c.db"), "eval", "/no/such/model",
                                                 "--device", "cuda"])
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        "Error: device cuda: torch sees no CUDA GPU here (a CPU-only torch build); use --device cpu (or auto, "
        "which takes a GPU only when there is one)"]  # the device, not the missing model: checked first


def test_cli_dtype_overrides_the_recipe(tmp_path, host):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("steps: [{method: prune.unstructured, params: {sparsity: 0.5}}]\nruntime: {dtype: bfloat16}\n")
    cli = make_cli(host)
    base = ["--catalogue", str(tmp_path / "c.db"), "run", str(recipe), "-m", "example:stories260K", "--no-progress",
            "--json"]
    as_recipe = CliRunner().invoke(cli, [*base, "-o", str(tmp_path / "a")], catch_exceptions=False)
    overridden = CliRunner().invoke(cli, [*base, "-o", str(tmp_path / "b"), "--dtype", "float32"],
                                    catch_exceptions=False)
    assert as_recipe.exit_code == 0 and overridden.exit_code == 0, (as_recipe.output, overridden.output)
    # the saved weights themselves (dtype="auto" would load float32 on a CPU where bfloat16 is slow)
    from safetensors import safe_open

    with safe_open(str(next((tmp_path / "a").glob("*.safetensors"))), "pt") as saved:
        assert {saved.get_tensor(key).dtype for key in saved.keys()} == {torch.bfloat16}
    assert json.loads((tmp_path / "a" / "slimkit.json").read_text())["steps"][0]["versions"]["dtype"] == "bfloat16"
    assert json.loads((tmp_path / "b" / "slimkit.json").read_text())["steps"][0]["versions"]["dtype"] == "float32"


def test_export_loads_in_the_dtype_asked_for(tmp_path):
    """``slimkit export --dtype bfloat16``: the export is of the bfloat16 weights, under their id."""
    from click.testing import CliRunner

    from slimkit.core.cli import make_cli
    from slimkit.core.provenance import content_id

    out = tmp_path / "m.gguf"
    result = CliRunner().invoke(make_cli(), ["export", "example:stories260K", "-f", "gguf", "-p", "float_type=BF16",
                                             "--dtype", "bfloat16", "--no-record", "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    written = json.loads(result.output[result.output.index("{"):])
    half = content_id(slimkit.load_model("example:stories260K", dtype="bfloat16").model)
    assert written["content_id"] == half != content_id(slimkit.load_model("example:stories260K").model)
