"""Data-parallel calibration on torch.distributed, with real processes and gloo on this machine.

* Two ranks measure what one process measures: every statistic of the calibration engine (float64
  sums, Hessians, AWQ/SmoothQuant activation figures, Block Influence) after the reductions.
* ``slimkit run --nproc 2`` (and ``torchrun ... -m slimkit run``) makes the model one process makes:
  bit-identical for GPTQ, AWQ, SmoothQuant, Wanda, MI neurons and Block Influence on the bundled
  model; SparseGPT gives the same masks, its updated weights within float32 rounding (its Hessians
  are summed in another order: see docs/distributed.md).
* Bad input: a rank that dies mid-block, ranks started with different recipes or models, a method
  that does not reduce what it measures, fewer samples than ranks.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

import slimkit
from slimkit.core.catalogue import Catalogue
from slimkit.core.distributed.launch import free_port
from slimkit.core.errors import DistributedError
from slimkit.core.provenance import content_id
from slimkit.core.runtime import RuntimeSpec
from slimkit.core.distributed.world import World, assign
from slimkit.testing import one_line_error, write_distributions

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


def slimkit_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "slimkit", *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, cwd=ROOT)


def failed(done: subprocess.CompletedProcess) -> SimpleNamespace:
    """A finished command as :func:`one_line_error` reads a click result."""
    return SimpleNamespace(exit_code=done.returncode, output=done.stdout + done.stderr, stderr=done.stderr)


def tensors(folder: Path) -> dict[str, torch.Tensor]:
    found: dict[str, torch.Tensor] = {}
    for part in sorted(folder.glob("*.safetensors")):
        found.update(load_file(str(part)))
    assert found, f"no weights in {folder}"
    return found


def recipe(tmp_path: Path, name: str, steps: str, samples: int = 16) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"name: {name}\ncalibration: {{n_samples: {samples}, seq_len: 128, seed: 0}}\nsteps:\n{steps}")
    return path


def test_shares_are_contiguous_and_balanced():
    for count in (2, 7, 13, 64):
        for size in (1, 2, 3, 5):
            shares = [World(rank, size).share(count) for rank in range(size)]
            assert [i for share in shares for i in share] == list(range(count))
            assert max(map(len, shares)) - min(map(len, shares)) <= 1


def test_solves_are_assigned_longest_first_to_the_least_loaded_rank():
    # q/k/v (one big group), o, gate/up, down of a block: the big ones spread, loads close
    costs = [9.0, 1.0, 8.0, 4.0, 4.0]
    owners = assign(costs, 2)
    loads = [sum(c for c, o in zip(costs, owners) if o == r) for r in range(2)]
    assert owners == [0, 1, 1, 1, 0] and loads == [13.0, 13.0]
    assert assign(costs, 1) == [0] * 5
    assert assign(costs, 2) == owners  # the same on every rank, every time


def test_two_gloo_ranks_measure_what_one_process_measures(tmp_path):
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        from distributed_worker import SINGLE, measure
    finally:
        sys.path.remove(str(ROOT / "tests"))
    out = tmp_path / "ranks.pt"
    done = subprocess.run(
        [PYTHON, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
         str(ROOT / "tests" / "distributed_worker.py"), str(out)],
        capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks, one = torch.load(out), measure(SINGLE)
    assert ranks.pop("samples") == list(range(7)) and one.pop("samples") == list(range(13))
    assert ranks.keys() == one.keys()
    layers = sites = 0
    for key, expected in one.items():
        got = ranks[key]
        if key.endswith("/cosine"):  # [sum of cos, tokens] of Block Influence
            assert got[1] == expected[1] == 13 * 32
            torch.testing.assert_close(got, expected, rtol=1e-12, atol=0)
        elif "abs_max" in expected:  # an AWQ/SmoothQuant site: sums, maxima, sampled tokens
            sites += 1
            assert got["tokens"] == expected["tokens"] == 13 * 32
            assert torch.equal(got["abs_max"], expected["abs_max"])  # a maximum is exact
            assert torch.equal(got["samples"], expected["samples"])  # each row from the rank that saw it
            torch.testing.assert_close(got["abs_sum"], expected["abs_sum"], rtol=1e-12, atol=0)
        else:  # a linear layer's LinearStatistics, all float64
            layers += 1
            assert got["tokens"] == expected["tokens"] == 13 * 32
            for name in ("input_sum", "input_sq_sum", "input_abs_sum"):
                assert got[name].dtype == torch.float64
                torch.testing.assert_close(got[name], expected[name], rtol=1e-12, atol=1e-12)
            # X^T X is accumulated in float32 between float64 flushes: other groupings, float32 rounding
            scale = expected["hessian"].abs().max()
            assert float((got["hessian"] - expected["hessian"]).abs().max() / scale) < 1e-6
    assert layers == 5 * 7 and sites >= 5 * 2


SAME_MODEL = {  # recipe steps -> what must match between one process and two ranks
    "gptq": ("  - method: quantize.gptq\n    params: {bits: 4, group_size: null}\n", "identical"),
    "awq": ("  - method: quantize.awq\n    params: {bits: 4, group_size: null}\n", "identical"),
    "smoothquant": ("  - method: quantize.smoothquant\n    params: {alpha: 0.5}\n", "identical"),
    "wanda-mi-blocks": ("  - method: prune.unstructured\n    params: {sparsity: 0.5, scorer: wanda, scope: row}\n"
                        "  - method: prune.neurons\n    params: {fraction: 0.25, scorer: neurons.mi}\n"
                        "  - method: prune.blocks\n    params: {count: 1, scorer: blocks.cosine}\n", "identical"),
    "sparsegpt": ("  - method: prune.sparsegpt\n    params: {sparsity: 0.5}\n", "masks"),
}


def assert_same_model(one: Path, two: Path, how: str) -> None:
    a, b = tensors(one), tensors(two)
    assert a.keys() == b.keys()
    for key in a:
        if how == "identical" or not a[key].is_floating_point():
            assert torch.equal(a[key], b[key]), key
        else:  # same pruning mask; values within float32 rounding of the updates
            assert torch.equal(a[key] == 0, b[key] == 0), key
            torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6 * float(a[key].abs().max()))


@pytest.mark.parametrize("name", sorted(SAME_MODEL))
def test_two_ranks_make_the_model_one_process_makes(name, tmp_path):
    steps, how = SAME_MODEL[name]
    path = recipe(tmp_path, name, steps)
    slimkit.run_recipe(slimkit.load_recipe(path), "example:stories260K", out=tmp_path / "one", catalogue=False,
                       runtime=RuntimeSpec())
    ranks = ["--nproc", "2"]
    if name == "wanda-mi-blocks":  # the recipe's own runtime: section asks for the ranks
        path.write_text(path.read_text().replace("steps:", "runtime: {ranks: 2}\nsteps:"))
        ranks = []
    done = slimkit_cli("run", str(path), "-m", "example:stories260K", "--out", str(tmp_path / "two"),
                       "--no-record", "--no-progress", *ranks)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("saved ") == 1  # rank 0 alone speaks for the run
    assert_same_model(tmp_path / "one", tmp_path / "two", how)


def test_run_recipe_divides_a_run_among_ranks_from_python(tmp_path):
    path = recipe(tmp_path, "gptq", SAME_MODEL["gptq"][0])
    one = slimkit.run_recipe(slimkit.load_recipe(path), "example:stories260K", out=tmp_path / "one", catalogue=False)
    events = []
    two = slimkit.run_recipe(slimkit.load_recipe(path), "example:stories260K", out=tmp_path / "two", catalogue=False,
                             runtime=RuntimeSpec(ranks=2), progress=events.append)
    assert two.provenance["content_id"] == one.provenance["content_id"] and two.output == tmp_path / "two"
    assert two.steps[0].details["data_parallel"]["ranks"] == 2
    assert ("blocks", 5, 5) in [(e.stage, e.done, e.total) for e in events]  # rank 0's progress, here
    assert content_id(two.model.model) == two.provenance["content_id"]  # the saved model, opened
    with pytest.raises(DistributedError, match="a model in memory cannot be divided among ranks"):
        slimkit.run_recipe(slimkit.load_recipe(path), one.model, out=tmp_path / "three", catalogue=False,
                           runtime=RuntimeSpec(ranks=2))


def test_torchrun_and_streamed_ranks_make_the_same_model(tmp_path, monkeypatch):
    monkeypatch.setenv("SLIMKIT_CATALOGUE", f"sqlite:///{tmp_path / 'catalogue.db'}")
    path = recipe(tmp_path, "sg", SAME_MODEL["sparsegpt"][0])
    slimkit.run_recipe(slimkit.load_recipe(path), "example:stories260K", out=tmp_path / "one", catalogue=False)
    torchrun = subprocess.run(
        [PYTHON, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
         "-m", "slimkit", "run", str(path), "-m", "example:stories260K", "--out", str(tmp_path / "torchrun"),
         "--no-progress"], capture_output=True, text=True, timeout=300, cwd=ROOT, env=dict(os.environ))
    assert torchrun.returncode == 0, torchrun.stderr[-3000:]
    streamed = slimkit_cli("run", str(path), "-m", "example:stories260K", "--out", str(tmp_path / "streamed"),
                           "--no-progress", "--stream", "--nproc", "2", "--force")
    assert streamed.returncode == 0, streamed.stderr[-3000:]
    assert_same_model(tmp_path / "one", tmp_path / "torchrun", "masks")
    assert tensors(tmp_path / "torchrun").keys() == tensors(tmp_path / "streamed").keys()
    for key, value in tensors(tmp_path / "torchrun").items():  # streamed ranks: the in-memory ranks' weights
        assert torch.equal(value, tensors(tmp_path / "streamed")[key]), key
    with Catalogue(os.environ["SLIMKIT_CATALOGUE"]) as cat:
        runs = cat.runs()
        assert len(runs) == 2 and {run.status for run in runs} == {"done"}  # rank 0 recorded each run, once
        derived = [model for model in cat.models() if cat.steps_into(model.id)]
        assert len(derived) == 1  # the same weights twice: one model
        steps = cat.steps_into(derived[0].id)
    assert steps, "no step recorded"
    record = steps[0].details["data_parallel"]
    assert record["ranks"] == 2 and record["backend"] == "gloo" and len(record["peak_rss_bytes"]) == 2
    assert not list(Path(os.environ.get("TMPDIR", "/tmp")).glob("slimkit-rank1-*/model"))  # scratch removed


BAD_PLUGIN = '''
import os

import torch

from slimkit import BaseCompressor, CompressionSummary, MethodConfig, SequentialCalibration, hookimpl


class Crash(BaseCompressor):
    """Rank 1 dies (no cleanup, like a killed process) in the third block."""

    name = "dp.crash"
    version = 1
    Config = MethodConfig
    needs_calibration = True

    def compress_(self, model, adapter, config, ctx):
        engine = SequentialCalibration(model, adapter, ctx.calibration)
        for index, step in enumerate(engine):
            if index == 2 and step.world.rank == 1:
                os._exit(7)
            step.collect(step.block.linears(), ("input_sq_sum",))
        return CompressionSummary("nothing", {})


class Local(BaseCompressor):
    """Scales each block by a figure of its own rank's samples, never reduced."""

    name = "dp.local"
    version = 1
    Config = MethodConfig
    needs_calibration = True

    def compress_(self, model, adapter, config, ctx):
        engine = SequentialCalibration(model, adapter, ctx.calibration)
        for step in engine:
            factor = float(step.inputs.float().abs().mean())
            with torch.no_grad():
                for ref in step.block.linears():
                    ref.weight_out_in().mul_(factor)
        return CompressionSummary("scaled", {})


@hookimpl
def register_compressors(register):
    register(Crash)
    register(Local)
'''


@pytest.fixture
def bad_plugin(tmp_path) -> dict[str, str]:
    folder = tmp_path / "plugins"
    folder.mkdir()
    write_distributions(folder, {"slimkit-dp-test": ("dptest", BAD_PLUGIN)})
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")]))}


def test_a_rank_that_dies_mid_block_stops_the_run(tmp_path, bad_plugin):
    database = tmp_path / "catalogue.db"
    path = recipe(tmp_path, "crash", "  - method: dp.crash\n")
    done = slimkit_cli("--catalogue", f"sqlite:///{database}", "run", str(path), "-m", "example:stories260K",
                       "--out", str(tmp_path / "out"), "--no-progress", "--nproc", "2", env=bad_plugin)
    line = one_line_error(failed(done), "rank 1 of 2 failed (exit code 7)")
    assert "another rank stopped" in line or "stopped by its launcher" in line, line
    assert not (tmp_path / "out").exists()
    with Catalogue(f"sqlite:///{database}") as cat:
        assert [run.status for run in cat.runs()] == ["failed"] and not cat.models()


def test_ranks_started_differently_are_refused_before_work(tmp_path):
    one = recipe(tmp_path, "a", "  - method: prune.unstructured\n    params: {sparsity: 0.5, scorer: wanda}\n")
    other = recipe(tmp_path, "b", "  - method: prune.unstructured\n    params: {sparsity: 0.4, scorer: wanda}\n")
    port = str(free_port())
    base = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "WORLD_SIZE": "2"}
    processes = [subprocess.Popen(
        [PYTHON, "-m", "slimkit", "run", str(path), "-m", "example:stories260K", "--out", str(tmp_path / f"out{rank}"),
         "--no-record", "--no-progress"], env={**base, "RANK": str(rank), "LOCAL_RANK": str(rank)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT) for rank, path in enumerate((one, other))]
    outputs = [process.communicate(timeout=300) for process in processes]
    for process, (_, err) in zip(processes, outputs):
        assert process.returncode == 1, err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: the ranks were started with different recipe"), err
        assert "recipe differs (rank 0: sha256:" in lines[0] and "model differs" not in lines[0]
    assert not (tmp_path / "out0").exists() and not (tmp_path / "out1").exists()


def test_a_method_that_does_not_reduce_what_it_measures_is_stopped(tmp_path, bad_plugin):
    path = recipe(tmp_path, "local", "  - method: dp.local\n")
    done = slimkit_cli("run", str(path), "-m", "example:stories260K", "--out", str(tmp_path / "out"), "--no-record",
                       "--no-progress", "--nproc", "2", env=bad_plugin)
    one_line_error(failed(done), "different weights for model.layers.0", "run it in one process")
    assert not (tmp_path / "out").exists()


def test_fewer_samples_than_ranks_is_refused(tmp_path):
    path = recipe(tmp_path, "few", SAME_MODEL["gptq"][0], samples=1)
    done = slimkit_cli("run", str(path), "-m", "example:stories260K", "--out", str(tmp_path / "out"), "--no-record",
                       "--no-progress", "--nproc", "2")
    one_line_error(failed(done), "1 calibration samples cannot be divided among 2 ranks")
    assert not (tmp_path / "out").exists()
