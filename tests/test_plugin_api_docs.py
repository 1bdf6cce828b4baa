"""Guard tests for docs/plugin_api.md ("What a plugin may use"), after datasette's: every public
name is documented with its exact signature, the tutorial plugin is shown byte for byte, the
page's examples parse and run, and no plugin documentation imports ``slimkit.core``."""

from __future__ import annotations

import ast
import importlib.util
import re
import sys
import types
from pathlib import Path

import pytest

import slimkit

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "plugin_api.md"
EXAMPLE = ROOT / "tests" / "fixtures" / "slimkit-example-plugin"
PLUGIN_DOCS = (DOC, ROOT / "docs" / "plugin_hooks.md", ROOT / "README.md")


def code_blocks(text: str) -> list[tuple[str, str, str]]:
    """``(language, code, the text just before the block)`` of every fenced block in ``text``."""
    return [(m.group(2), m.group(3), text[max(0, m.start() - 200):m.start()])
            for m in re.finditer(r"^(```)(\w*)\n(.*?)^```$", text, re.MULTILINE | re.DOTALL)]


def generator() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("gen_plugin_api", ROOT / "docs" / "gen_plugin_api.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def reference() -> str:
    text = DOC.read_text()
    return text[text.index("<!-- generated: reference -->"):]


def test_generated_parts_are_up_to_date() -> None:
    text = DOC.read_text()
    assert generator().render(text) == text, "run: python docs/gen_plugin_api.py"


@pytest.mark.parametrize("name", slimkit.__all__)
def test_every_public_name_is_in_the_reference(name: str) -> None:
    pattern = rf"^(?:class |def )?{re.escape(name)}\b[(:= ]"
    assert re.search(pattern, reference(), re.MULTILINE), f"docs/plugin_api.md does not document slimkit.{name}"


def test_every_topic_has_a_reference_section() -> None:
    headings = re.findall(r"^### (.+)$", reference(), re.MULTILINE)
    assert headings == list(slimkit._TOPICS)


def test_reference_shows_the_signatures_plugin_authors_asked_for() -> None:
    ref = reference()
    for line in [
        "    def score_block(\n        self,\n        block: BlockLayout,\n        stats: Mapping[str, LinearStatistics],",
        "class MethodContext:",
        "    def used_data(self, fingerprint: str) -> None:",
        "    def report(self, stage: str, done: int, total: int, message: str = '') -> None:",
        "    teacher: LoadedModel | None = None",
        "    work_dir: Path | None = None",
        "class Scores:\n    \"\"\"Scores from one scorer run.\"\"\"\n    scorer: str\n    granularity: str",
        "class LoadedModel:",
    ]:
        assert line in ref


def test_the_tutorial_plugin_is_in_the_docs_byte_for_byte() -> None:
    shown = {}
    for _language, code, before in code_blocks(DOC.read_text()):
        caption = re.search(r"`([\w./-]+)`:\n\n$", before)
        if caption:
            shown[caption.group(1)] = code
    files = sorted(p.relative_to(EXAMPLE).as_posix() for p in EXAMPLE.rglob("*")
                   if p.is_file() and p.suffix in (".py", ".toml") and "__pycache__" not in p.parts)  # fmt: skip
    assert sorted(shown) == files
    for relative in files:
        assert shown[relative] == (EXAMPLE / relative).read_text(), f"docs/plugin_api.md shows an old {relative}"


def test_every_python_block_of_the_page_parses() -> None:
    blocks = [code for language, code, _ in code_blocks(DOC.read_text()) if language == "python"]
    assert len(blocks) > 10
    for code in blocks:
        ast.parse(code)


@pytest.mark.parametrize("doc", PLUGIN_DOCS, ids=lambda path: path.name)
def test_plugin_docs_import_nothing_from_slimkit_core(doc: Path) -> None:
    from test_public_toolkit import core_imports

    offences = []
    for language, code, _ in code_blocks(doc.read_text()):
        if language == "python":  # IPython magics (%load_ext) are no Python: blank them
            offences += core_imports(re.sub(r"^\s*[%!].*$", "", code, flags=re.MULTILINE))
    assert not offences


@pytest.mark.parametrize("doc", ["README.md", "docs/plugin_hooks.md"])
def test_plugin_docs_link_the_page(doc: str) -> None:
    assert re.search(r"\]\((docs/)?plugin_api\.md[#)]", (ROOT / doc).read_text())


def test_the_try_it_example_runs(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    [code] = [code for language, code, _ in code_blocks(DOC.read_text())
              if language == "python" and "host.register(slimkit_example_plugin" in code]  # fmt: skip
    monkeypatch.syspath_prepend(str(EXAMPLE))
    try:
        exec(compile(code, f"{DOC}:try-it", "exec"), {"__name__": "plugin_api_md_try_it"})
    finally:
        sys.modules.pop("slimkit_example_plugin", None)
    assert "zeroed" in capsys.readouterr().out
