"""bench/scale.py stays runnable: its options and plan (in process), and a real streamed run of
its tiny Llama shape (2 blocks, RTN) in a child process, measured as the benchmark measures the
large ones."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "scale.py"


@pytest.fixture(scope="module")
def scale():
    spec = importlib.util.spec_from_file_location("bench_scale", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_default_plan_truncates_only_the_long_methods_on_the_large_shapes(scale):
    runs = scale.plan(scale.parse_args([]))
    assert ("1b", 16, "gptq") in runs and ("8b", 32, "rtn") in runs
    assert ("8b", 4, "wanda") in runs and ("3b", 2, "gptq") in runs
    assert scale.plan(scale.parse_args(["--shapes", "8b", "--layers", "3", "--methods", "rtn"])) == [("8b", 3, "rtn")]


def test_a_bad_option_is_one_line_and_exit_2(scale, capsys):
    for argv, words in ((["--shapes", "70b"], ("unknown shape", "8b")), (["--layers", "gptq=x"], ("--layers", "METHOD=K"))):
        with pytest.raises(SystemExit) as stop:
            scale.parse_args(argv)
        assert stop.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and all(word in err for word in words), err


@pytest.mark.slow
def test_tiny_shape_streams_and_is_measured(tmp_path):
    out = tmp_path / "scale.json"
    done = subprocess.run([sys.executable, str(SCRIPT), "--shapes", "tiny", "--methods", "rtn", "--no-peer",
                           "--root", str(tmp_path / "models"), "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    (row,) = json.loads(out.read_text())["rows"]
    assert (row["shape"], row["blocks"], row["method"], row["tool"]) == ("tiny", 2, "rtn", "slimkit")
    assert row["peak_rss"] > 100 * 2**20  # the child's own peak: torch and slimkit at least
    assert 0 < row["s_per_block"] < row["total_s"]
    assert row["runtime"]["stream"] is True and row["runtime"]["dtype"] == "bfloat16"
    assert "round-to-nearest" in row["summary"]
    assert "tiny" in done.stdout and "capability" in done.stdout
    assert not (tmp_path / "models" / "out" / "tiny-2-rtn").exists()  # outputs are removed after each run
    folder = tmp_path / "models" / "tiny" / "blocks-2"
    index = json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"]
    assert index["model.layers.1.mlp.down_proj.weight"] == "block-00001.safetensors"
    assert (folder / ".complete").is_file()
