"""bench/search.py stays runnable: its options, and its search and reference files checked against
the installed methods (``--dry-run``, in a child process as ``make bench-search`` runs it)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "search.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_search", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_search_space_holds_the_reference_recipe(bench, tmp_path):
    from slimkit import make_host
    from slimkit.core.search import SearchSpec, prepare

    args = bench.parse_args([])
    assert (args.trials, args.threads, args.size_limit) == (8, 2, 0.3)
    valid, test = tmp_path / "valid.txt", tmp_path / "test.txt"
    for path in (valid, test):
        path.write_text("checked to exist, not read\n")
    host = make_host(load_entrypoints=False)
    search = SearchSpec.from_yaml(bench.space_yaml(args, valid, test))
    space = prepare(search, host, "search").space
    reference = {"step1.present": False, "step2.method": "quantize.rtn", "step2.bits": 8,
                 "step2.group_size": None, "step2.embeddings": "int8"}
    assert all(space.dimension(name).contains(value) for name, value in reference.items())
    assert space.recipe(reference).steps[0].params == bench.REFERENCE["params"] | {"group_size": None}
    assert [c.text for c in prepare(search, host, "search").goals.constraints] == ["size <= 0.3 x base"]
    one = prepare(SearchSpec.from_yaml(bench.reference_yaml(args, valid, test)), host, "sweep")
    assert len(one.points) == 1 and one.evaluations == prepare(search, host, "search").evaluations


def test_a_bad_option_is_one_line_and_exit_2(bench, capsys):
    for argv, words in ((["--trials", "0"], ("--trials", "at least 1")),
                        (["--proxy-windows", "30"], ("--proxy-windows", "--eval-windows"))):
        with pytest.raises(SystemExit) as stop:
            bench.parse_args(argv)
        assert stop.value.code == 2
        err = capsys.readouterr().err.splitlines()
        assert all(word in err[-1] for word in words), err


def test_dry_run_checks_the_files_in_a_child_process(tmp_path):
    assets = tmp_path / "assets"
    for name in ("smollm2-135m-instruct-q4_1/SmolLM2-135M-Instruct.Q4_1.gguf",
                 "wikitext-2/wikitext-2-valid.tokens.txt", "wikitext-2/wikitext-2-raw-test.txt"):
        (assets / name).parent.mkdir(parents=True, exist_ok=True)
        (assets / name).write_text("placeholder: --dry-run reads no model and no text\n")
    done = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--assets", str(assets)], cwd=ROOT,
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "step2.group_size: None, 32, 64, 96, 192" in done.stdout and "reference:" in done.stdout
    missing = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--assets", str(tmp_path / "none")], cwd=ROOT,
                             capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert missing.returncode == 2 and "needs" in missing.stderr
