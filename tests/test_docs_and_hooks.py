"""Guard tests (after datasette's): every hook is specified, documented with its exact signature,
tested, and every example in docs/plugin_hooks.md runs."""

from __future__ import annotations

import ast
import inspect
import re
import sys
import textwrap
import types
from pathlib import Path

import pluggy
import pytest

from slimkit.core import hookspecs

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "plugin_hooks.md"
EXAMPLE_PLUGIN = Path(__file__).parent / "fixtures" / "slimkit-example-plugin"


def defined_hookspecs() -> set[str]:
    """Names of the hook specifications the module really defines (what pluggy sees)."""
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    return {name for name in vars(pm.hook) if not name.startswith("_") and getattr(pm.hook, name).has_spec()}


def doc_sections() -> dict[str, str]:
    """``## heading`` -> the text under it, for docs/plugin_hooks.md."""
    parts = re.split(r"^## (.+)$", DOCS.read_text(), flags=re.MULTILINE)
    return {heading.strip(): body for heading, body in zip(parts[1::2], parts[2::2])}


def python_blocks(text: str) -> list[tuple[int, str]]:
    """``(line number, code)`` of every python code block in ``text`` (indented ones dedented)."""
    blocks = []
    for match in re.finditer(r"^( *)```python\n(.*?)^\1```", text, re.MULTILINE | re.DOTALL):
        line = text.count("\n", 0, match.start()) + 2
        blocks.append((line, textwrap.dedent(match.group(2))))
    return blocks


def test_all_hooks_lists_exactly_the_defined_hookspecs() -> None:
    assert len(hookspecs.ALL_HOOKS) == len(set(hookspecs.ALL_HOOKS))
    assert set(hookspecs.ALL_HOOKS) == defined_hookspecs()


@pytest.mark.parametrize("hook", hookspecs.ALL_HOOKS)
def test_hook_has_a_docs_section_with_its_exact_signature(hook: str) -> None:
    sections = doc_sections()
    assert hook in sections, f"docs/plugin_hooks.md has no '## {hook}' section"
    specs = [code for _, code in python_blocks(sections[hook]) if code.startswith("@hookspec")]
    assert specs, f"the '## {hook}' section does not show the hookspec signature"
    documented = ast.parse(specs[0]).body[0]
    actual = ast.parse(textwrap.dedent(inspect.getsource(getattr(hookspecs, hook)))).body[0]
    assert isinstance(documented, ast.FunctionDef) and isinstance(actual, ast.FunctionDef)
    assert documented.name == actual.name
    assert ast.unparse(documented.args) == ast.unparse(actual.args)
    assert ast.unparse(documented.returns) == ast.unparse(actual.returns)  # type: ignore[arg-type]
    assert [ast.unparse(d) for d in documented.decorator_list] == [ast.unparse(d) for d in actual.decorator_list]
    runnable = [code for _, code in python_blocks(sections[hook]) if not code.startswith("@hookspec")]
    assert any(re.search(rf"^def {hook}\(|^    def {hook}\(", code, re.MULTILINE) for code in runnable), (
        f"the '## {hook}' section has no example implementing {hook}"
    )


def test_every_hook_heading_in_the_docs_is_a_hook() -> None:
    identifiers = {heading for heading in doc_sections() if re.fullmatch(r"[a-z_]+", heading)}
    assert identifiers == set(hookspecs.ALL_HOOKS)


@pytest.mark.parametrize("hook", hookspecs.ALL_HOOKS)
def test_hook_is_exercised_by_a_test(hook: str) -> None:
    here = Path(__file__).resolve()
    tests = [path for path in Path(__file__).parent.rglob("test_*.py") if path.resolve() != here]
    assert any(re.search(rf"\b{hook}\b", path.read_text()) for path in tests), f"no test mentions {hook}"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("line", "code"),
    [
        pytest.param(line, code, id=f"line-{line}")
        for line, code in python_blocks(DOCS.read_text())
        if not code.startswith("@hookspec")
    ],
)
def test_docs_example_runs(line: int, code: str, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    # Each example registers its own module (sys.modules[__name__]) as a plugin, as a script would.
    module = types.ModuleType(f"plugin_hooks_md_line_{line}")
    module.__file__ = str(DOCS)
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.syspath_prepend(str(EXAMPLE_PLUGIN))  # the walkthrough imports the tutorial plugin
    try:
        exec(compile(code, f"{DOCS}:{line}", "exec"), module.__dict__)
    finally:
        sys.modules.pop("slimkit_example_plugin", None)


def test_cli_reference_is_up_to_date():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gen_cli", Path(__file__).resolve().parents[1] / "docs" / "gen_cli.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.DOC.read_text() == module.render(), "run: python docs/gen_cli.py"
