"""The README's Python examples run as written."""

from __future__ import annotations

import re
import types
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_api_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    api = next(block for block in python_blocks() if "run_recipe" in block)
    exec(compile(api, "README api example", "exec"), {})
    assert (tmp_path / "derived" / "slimkit.json").is_file()


def test_plugin_example_registers_and_prunes(slimkit_host, register_plugin):
    source = next(block for block in python_blocks() if "register_scorers" in block)
    module = types.ModuleType("my_plugin")
    exec(compile(source, "README plugin example", "exec"), module.__dict__)
    register_plugin(module, name="my_plugin")
    info = slimkit_host.scorers.get("my.noisy")
    assert info.plugin == "my_plugin"
    import slimkit

    recipe = slimkit.Recipe.from_data(
        [{"method": "prune.unstructured", "params": {"scorer": "my.noisy", "scorer_params": {"scale": 0.01}}}]
    )
    result = slimkit.run_recipe(recipe, "example:stories260K", host=slimkit_host)
    assert result.steps[0].details["sparsity"] == pytest.approx(0.5)
