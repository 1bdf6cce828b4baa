"""Method authors need only the ``slimkit`` namespace: the bundled plugins and the tutorial plugin
import nothing from ``slimkit.core``, every public name resolves, and ``import slimkit`` stays
cheap (no torch) however many names it offers."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import typing
from pathlib import Path

import pytest

import slimkit

ROOT = Path(__file__).resolve().parents[1]
SCANNED = (ROOT / "slimkit" / "plugins", ROOT / "tests" / "fixtures")
# Files under SCANNED that are no plugin code, with why they may reach into core.
EXEMPT = {
    "tests/fixtures/make_catalogue_0001.py": "the record of how catalogue-0001.db was made: it drives the "
    "catalogue's Alembic migrations, which are slimkit internals and no plugin API",
}
IMPORTERS = {"importlib.import_module", "import_module", "__import__"}


def _is_core(module: str) -> bool:
    return module == "slimkit.core" or module.startswith("slimkit.core.")


def _package(path: Path) -> str:
    """The dotted package ``path`` belongs to (for relative imports), if it is inside slimkit."""
    parts = path.resolve().relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1]) if parts and parts[0] == "slimkit" else ""


def core_imports(source: str, package: str = "") -> list[tuple[int, str]]:
    """``(line, what)`` for every import of ``slimkit.core`` in ``source``, at any depth: ``import
    slimkit.core.x``, ``from slimkit.core[.x] import y``, ``from slimkit import core``, relative
    imports that land in core, and ``importlib.import_module("slimkit.core...")``/``__import__``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, f"import {a.name}") for a in node.names if _is_core(a.name)]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:  # relative: resolve against the file's package
                base = package.split(".")[: len(package.split(".")) - node.level + 1] if package else []
                module = ".".join([*base, module] if module else base)
            names = [a.name for a in node.names]
            if _is_core(module) or (module == "slimkit" and "core" in names):
                found.append((node.lineno, f"from {'.' * node.level}{node.module or ''} import {', '.join(names)}"))
        elif isinstance(node, ast.Call) and ast.unparse(node.func) in IMPORTERS and node.args:
            first = node.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str) and _is_core(first.value):
                found.append((node.lineno, ast.unparse(node)))
    return sorted(found)


def scanned_files() -> list[Path]:
    return sorted(path for folder in SCANNED for path in folder.rglob("*.py"))


def test_the_scan_covers_the_plugins_and_the_fixtures() -> None:
    files = {path.relative_to(ROOT).as_posix() for path in scanned_files()}
    assert "slimkit/plugins/pruning/magnitude.py" in files
    assert "tests/fixtures/slimkit-example-plugin/slimkit_example_plugin/__init__.py" in files
    assert len(files) > 30


def test_plugins_and_fixtures_import_nothing_from_slimkit_core() -> None:
    offences = []
    for path in scanned_files():
        relative = path.relative_to(ROOT).as_posix()
        if relative not in EXEMPT:
            offences += [f"{relative}:{line}: {what}" for line, what in core_imports(path.read_text(), _package(path))]
    assert not offences, "import these from slimkit instead (docs/plugin_api.md):\n" + "\n".join(offences)


def test_every_exemption_is_still_needed() -> None:
    for relative in EXEMPT:
        assert core_imports((ROOT / relative).read_text()), f"{relative} no longer imports slimkit.core: drop it from EXEMPT"


@pytest.mark.parametrize(
    ("source", "line"),
    [
        ("import slimkit.core.calibration", 1),
        ("import slimkit.core as core", 1),
        ("from slimkit.core import errors", 1),
        ("from slimkit.core.errors import ConfigError", 1),
        ("from slimkit import core", 1),
        ("def f():\n    from slimkit.core.calibration import SequentialCalibration", 2),
        ("class A:\n    def f(self):\n        import slimkit.core.quant.formats", 3),
        ("import importlib\nimportlib.import_module('slimkit.core.lowrank')", 2),
        ("from importlib import import_module\nimport_module('slimkit.core')", 2),
        ("__import__('slimkit.core.storage')", 1),
    ],
)
def test_the_scan_finds_every_form_of_core_import(source: str, line: int) -> None:
    assert [found for found, _ in core_imports(source)] == [line]


def test_the_scan_resolves_relative_imports() -> None:
    assert core_imports("from ..core.errors import DataError", "slimkit.plugins") == [
        (1, "from ..core.errors import DataError")
    ]
    assert core_imports("from ..pruning import magnitude", "slimkit.plugins.lowrank") == []


@pytest.mark.parametrize(
    "source",
    [
        "from slimkit import ConfigError, SequentialCalibration",
        "import slimkit\nslimkit.core_thing = 1",
        "from slimkit.plugins.pruning.unstructured import ScoredPruner",
        "importlib.import_module('slimkit.plugins.pruning')",
        "x = 'slimkit.core.errors'",
    ],
)
def test_the_scan_leaves_public_imports_alone(source: str) -> None:
    assert core_imports(source) == []


# -- the namespace ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", slimkit.__all__)
def test_every_public_name_resolves(name: str) -> None:
    value = getattr(slimkit, name)
    assert value is not None
    assert name in dir(slimkit)


def test_public_names_are_unique_and_grouped_by_topic() -> None:
    grouped = [name for names in slimkit._TOPICS.values() for name in names]
    assert len(grouped) == len(set(grouped)) == len(slimkit.__all__)
    assert slimkit.__all__ == grouped
    assert dir(slimkit) == sorted(slimkit.__all__)


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="module 'slimkit' has no attribute 'nothing_here'"):
        slimkit.nothing_here  # noqa: B018


def test_renamed_exports_are_the_core_objects() -> None:
    from slimkit.core import architecture, calibration, lowrank
    from slimkit.core.quant import formats

    assert slimkit.resolve_module is architecture.resolve
    assert slimkit.CALIBRATION_STATISTICS is calibration.STATISTICS
    assert slimkit.quantize_weight is formats.quantize
    assert slimkit.dequantize_weight is formats.dequantize
    assert slimkit.QUANT_BITS is formats.BITS
    assert slimkit.low_rank_saves is lowrank.saves


def test_every_slimkit_error_is_public() -> None:
    from slimkit.core import errors

    defined = {name for name, value in vars(errors).items()
               if isinstance(value, type) and issubclass(value, (errors.SlimkitError, Warning))
               and value.__module__ == errors.__name__}  # fmt: skip
    assert defined <= set(slimkit.__all__)


def test_import_slimkit_does_not_import_torch() -> None:
    code = (
        "import sys, slimkit\n"
        "slimkit.ConfigError, slimkit.Role, slimkit.ALL_ROLES, slimkit.hookimpl\n"
        "print(sorted(m for m in ('torch', 'transformers', 'numpy', 'pydantic') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert result.stdout.strip() == "[]"


# -- one role vocabulary ---------------------------------------------------------------------
def test_roles_are_one_vocabulary() -> None:
    assert typing.get_args(slimkit.Role) == slimkit.ALL_ROLES
    assert set(slimkit.ATTENTION_ROLES) | set(slimkit.MLP_ROLES) == set(slimkit.ALL_ROLES)
    assert not set(slimkit.ATTENTION_ROLES) & set(slimkit.MLP_ROLES)


def test_every_bundled_roles_field_uses_the_core_vocabulary(slimkit_host) -> None:
    fields = []
    for info in slimkit_host.methods():
        config = getattr(info.cls, "Config", None)
        if config is not None and "roles" in config.model_fields:
            field = config.model_fields["roles"]
            fields.append(info.name)
            assert field.annotation == tuple[slimkit.Role, ...], info.name
            assert set(field.default) <= set(slimkit.ALL_ROLES), info.name
    # pruning, quantization and low rank all choose layers by role
    assert {"prune.unstructured", "quantize.gptq", "lowrank.svd", "magnitude"} <= set(fields)


def test_type_checkers_see_exactly_the_public_names() -> None:
    """The ``if TYPE_CHECKING:`` imports in slimkit/__init__.py (what mypy and IDEs read) name the
    same objects as the lazy table, so ``from slimkit import X`` is typed for plugin authors."""
    tree = ast.parse((ROOT / "slimkit" / "__init__.py").read_text())
    block = next(node for node in tree.body if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING")
    seen = {}
    for node in block.body:
        assert isinstance(node, ast.ImportFrom)
        for alias in node.names:
            target = alias.asname or alias.name
            seen[target] = node.module if alias.name == target else f"{node.module}:{alias.name}"
    expected = {name: where for name, where in slimkit._LAZY.items() if name != "hookimpl"}
    assert seen == expected


def test_mypy_sees_the_toolkit_types(tmp_path: Path) -> None:
    """A plugin's wrong use of a toolkit name is a type error, not Any."""
    plugin = tmp_path / "plugin.py"
    plugin.write_text("from slimkit import MethodUse, Scores\n"
                      "use: MethodUse = MethodUse('scorer', 'wanda')\n"
                      "name: int = use.name\n")
    # MYPYPATH: mypy cannot follow an editable install's import hook; a wheel install needs none.
    result = subprocess.run([sys.executable, "-m", "mypy", "--no-incremental", "--follow-imports=silent",
                             "--ignore-missing-imports", str(plugin)], capture_output=True, text=True, timeout=600,
                            cwd=tmp_path, env={**os.environ, "MYPYPATH": str(ROOT)})
    assert 'Incompatible types in assignment (expression has type "str", variable has type "int")' in result.stdout, \
        result.stdout + result.stderr
