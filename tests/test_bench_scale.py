"""bench/scale.py stays runnable: its options, and a real streamed run of its tiny Llama shape
(2 blocks, RTN) in a child process, measured as the benchmark measures the large ones."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "scale.py"


def bench(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)


def test_default_plan_truncates_only_the_long_methods_on_the_large_shapes():
    done = bench("--dry-run", "--no-peer")
    assert done.returncode == 0, done.stderr
    plan = done.stdout.splitlines()[0]
    assert "1b gptq 16/16 blocks" in plan and "8b rtn 32/32 blocks" in plan
    assert "8b wanda 4/32 blocks" in plan and "3b gptq 4/28 blocks" in plan


def test_a_bad_option_is_one_line_and_exit_2():
    done = bench("--shapes", "70b", "--dry-run")
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "unknown shape" in done.stderr and "8b" in done.stderr
    done = bench("--layers", "gptq=x", "--dry-run")
    assert done.returncode == 2 and "--layers" in done.stderr


def test_tiny_shape_streams_and_is_measured(tmp_path):
    out = tmp_path / "scale.json"
    done = bench("--shapes", "tiny", "--methods", "rtn", "--no-peer", "--root", str(tmp_path / "models"),
                 "--json", str(out))
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
