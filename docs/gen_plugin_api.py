"""Write the generated parts of docs/plugin_api.md: python docs/gen_plugin_api.py [--check].

Two regions of the page, each between ``<!-- generated: NAME -->`` and ``<!-- end generated -->``,
come from the code; the prose around them is written by hand:

- ``example-plugin``: the tutorial plugin's files (tests/fixtures/slimkit-example-plugin), verbatim;
- ``reference``: every name in ``slimkit.__all__``, by topic (``slimkit._TOPICS``), as a Python stub:
  the exact signature of each function, class, method and field, and the first paragraph of its
  docstring (or of the ``#:`` comment above a constant).

A test fails when either region is out of date.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import re
import sys
import textwrap
import typing
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DOC = Path(__file__).with_name("plugin_api.md")
EXAMPLE = ROOT / "tests" / "fixtures" / "slimkit-example-plugin"
EXAMPLE_FILES = ("pyproject.toml", "slimkit_example_plugin/__init__.py")
REGION = re.compile(r"(<!-- generated: (?P<name>[a-z-]+) -->\n)(?P<body>.*?)(<!-- end generated -->)", re.DOTALL)
WIDTH = 100
_MISSING = object()


class _Raw:
    """An annotation or default shown exactly as written in the source (not repr'd with quotes)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def _annotation(value: Any) -> Any:
    if value is inspect.Parameter.empty:
        return value
    if isinstance(value, str):  # postponed annotations: the source text, minus forward-reference quotes
        quoted = len(value) > 1 and value[0] == value[-1] and value[0] in "'\"" and value[0] not in value[1:-1]
        return _Raw(value[1:-1] if quoted else value)
    return _Raw(inspect.formatannotation(value).replace("typing.", ""))


def _named(default: Any, function: Any) -> Any:
    """A default that is one of its module's constants, shown by the constant's name."""
    if isinstance(default, (tuple, list, dict)) and default:
        for name, value in vars(sys.modules[function.__module__]).items():
            if value is default and name.isupper():
                return _Raw(name)
    return default


def _split_top_level(text: str) -> list[str]:
    """``text`` split at the commas outside brackets (the parameters of a signature)."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += char in "([{"
        depth -= char in ")]}"
        if char == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += char
    return [*parts, current.strip()] if current.strip() else parts


def signature(function: Any, name: str, indent: str = "") -> str:
    """``name(params) -> return`` as in the source, one parameter a line when it is long."""
    sig = inspect.signature(function)
    params = [p.replace(annotation=_annotation(p.annotation), default=_named(p.default, function))
              for p in sig.parameters.values()]
    text = str(sig.replace(parameters=params, return_annotation=_annotation(sig.return_annotation)))
    if len(indent) + len(name) + len(text) + 5 <= WIDTH:
        return f"{name}{text}"
    close = text.rindex(")")
    inner = "".join(f"{indent}    {part},\n" for part in _split_top_level(text[1:close]))
    return f"{name}(\n{inner}{indent}){text[close + 1:]}"


def first_paragraph(doc: str | None) -> str:
    if not doc:
        return ""
    paragraph = inspect.cleandoc(doc).split("\n\n")[0]
    return " ".join(line.strip() for line in paragraph.splitlines())


def docstring(text: str, indent: str) -> list[str]:
    if not text:
        return []
    text = text.replace('"""', "'''").replace("\\", "\\\\")
    lines = textwrap.wrap(text, WIDTH - len(indent) - 3, break_on_hyphens=False, break_long_words=False)
    if len(lines) == 1:
        return [f'{indent}"""{lines[0]}"""']
    return [f'{indent}"""{lines[0]}', *(f"{indent}{line}" for line in lines[1:]), f'{indent}"""']


def hash_comments(module: Any, node_name: str, within: str | None = None) -> str:
    """The ``#:`` comment lines above the assignment of ``node_name`` (in class ``within``)."""
    try:
        lines = inspect.getsource(module).splitlines()
    except (OSError, TypeError):
        return ""
    tree = ast.parse("\n".join(lines))
    body = tree.body
    if within is not None:
        body = next((n.body for n in tree.body if isinstance(n, ast.ClassDef) and n.name == within), [])
    for node in body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        if any(isinstance(t, ast.Name) and t.id == node_name for t in targets):
            comment, line = [], node.lineno - 2
            while line >= 0 and lines[line].strip().startswith("#:"):
                comment.insert(0, lines[line].strip()[2:].strip())
                line -= 1
            return " ".join(comment)
    return ""


def _simple(value: Any) -> bool:
    if isinstance(value, (str, int, float, bool, type(None))):
        return True
    if isinstance(value, (tuple, list)):
        return all(_simple(v) for v in value)
    if isinstance(value, dict):
        return all(_simple(k) and _simple(v) for k, v in value.items())
    return False


def _value(value: Any, indent: str) -> str:
    text = repr(value)
    if len(text) + len(indent) <= WIDTH - 20 or not isinstance(value, tuple):
        return text
    items = "".join(f"{indent}    {item!r},\n" for item in value)
    return f"(\n{items}{indent})"


def render_constant(name: str, value: Any, module: Any, source_name: str) -> list[str]:
    comment = hash_comments(module, source_name)
    lines = [f"# {line}" for line in textwrap.wrap(comment, WIDTH - 2)]
    if typing.get_origin(value) is typing.Literal:
        return [*lines, f"{name} = {inspect.formatannotation(value).replace('typing.', '')}"]
    annotation = getattr(module, "__annotations__", {}).get(source_name)
    shown = _annotation(annotation).text if annotation is not None else None
    if _simple(value):
        return [*lines, f"{name}{f': {shown}' if shown else ''} = {_value(value, '')}"]
    kind = shown or f"{type(value).__module__.split('.')[0]}.{type(value).__qualname__}"
    return [*lines, f"{name}: {kind}"]


def render_function(name: str, function: Any, indent: str = "") -> list[str]:
    lines = [f"{indent}def {signature(function, name, indent)}:"]
    return [*lines, *(docstring(first_paragraph(function.__doc__), indent + "    ") or [indent + "    ..."])]


def _public_bases(cls: type) -> tuple[list[type], list[type]]:
    """The bases to show and the private ones whose members are shown as the class's own."""
    shown, merged = [], []
    for base in cls.__bases__:
        if base.__name__.startswith("_"):
            merged.append(base)
            more_shown, more_merged = _public_bases(base)
            shown += more_shown
            merged += more_merged
        else:
            shown.append(base)
    return shown, merged


def _base_name(base: type) -> str:
    """How the source names a base class: ``nn.Module``, ``BaseModel``, ``SlimkitError``."""
    if base.__module__.startswith("torch.nn"):
        return f"nn.{base.__qualname__}"
    return base.__qualname__


def _members(owners: list[type]) -> list[tuple[str, Any]]:
    """Public attributes defined by the class itself and by its private bases, first one wins."""
    members: dict[str, Any] = {}
    for owner in owners:
        for attr, value in vars(owner).items():
            if not attr.startswith("_"):
                members.setdefault(attr, value)
    return list(members.items())


def _field_lines(cls: type) -> list[str]:
    """Dataclass or pydantic fields, as declared: ``name: type = default``."""
    lines = []
    if dataclasses.is_dataclass(cls):
        for field in dataclasses.fields(cls):
            if field.name.startswith("_"):
                continue
            if field.default_factory is not dataclasses.MISSING:
                default = f" = field(default_factory={field.default_factory.__name__})"
            elif field.default is not dataclasses.MISSING:
                default = f" = {field.default!r}"
            else:
                default = ""
            lines.append(f"    {field.name}: {_annotation(field.type).text}{default}")
        return lines
    declared: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):  # the annotations as written (pydantic's are resolved types)
        declared.update(vars(klass).get("__annotations__", {}))
    for name, info in cls.model_fields.items():  # type: ignore[attr-defined]
        annotation = _annotation(declared.get(name, info.annotation)).text
        if info.is_required():
            default = ""
        elif info.default_factory is not None:
            default = f" = Field(default_factory={info.default_factory.__name__})"
        else:
            default = f" = {info.default!r}"
        lines.append(f"    {name}: {annotation}{default}")
    return lines


def _class_attributes(owner: type) -> list[str]:
    """Annotated class attributes (``ClassVar`` settings), with their ``#:`` comments and values."""
    lines = []
    module = sys.modules[owner.__module__]
    for attr, annotation in vars(owner).get("__annotations__", {}).items():
        if attr.startswith("_"):
            continue
        comment = hash_comments(module, attr, within=owner.__name__)
        lines += [f"    # {line}" for line in textwrap.wrap(comment, WIDTH - 6)]
        value = vars(owner).get(attr, _MISSING)
        shown = ""
        if value is _MISSING:
            pass
        elif isinstance(value, type):
            shown = f" = {value.__name__}"
        elif _simple(value):
            shown = f" = {value!r}"
        lines.append(f"    {attr}: {_annotation(annotation).text}{shown}")
    return lines


def render_class(name: str, cls: type) -> list[str]:
    bases, merged = _public_bases(cls)
    owners = [cls, *merged]
    base_text = ", ".join(_base_name(b) for b in bases if b is not object)
    if "__orig_bases__" in vars(cls):  # a generic class: Generic[T] rather than Generic
        base_text = ", ".join(inspect.formatannotation(b).replace("typing.", "").replace("~", "")
                              for b in vars(cls)["__orig_bases__"])
    lines = []
    has_fields = dataclasses.is_dataclass(cls) or (cls.__module__.startswith("slimkit") and hasattr(cls, "model_fields"))
    if dataclasses.is_dataclass(cls):
        lines.append("@dataclass(frozen=True)" if cls.__dataclass_params__.frozen else "@dataclass")  # type: ignore[attr-defined]
    lines.append(f"class {name}{f'({base_text})' if base_text else ''}:")
    lines += docstring(first_paragraph(cls.__doc__), "    ")
    if has_fields:
        lines += _field_lines(cls)
    else:
        for owner in owners:
            lines += _class_attributes(owner)
        if "__init__" in vars(cls):
            lines += render_function("__init__", vars(cls)["__init__"], "    ")
    for attr, value in _members(owners):
        if isinstance(value, property):
            lines += ["    @property", *render_function(attr, value.fget, "    ")]
        elif isinstance(value, (classmethod, staticmethod)):
            lines += [f"    @{type(value).__name__}", *render_function(attr, value.__func__, "    ")]
        elif inspect.isfunction(value):
            lines += render_function(attr, value, "    ")
    return lines


def render_name(name: str, where: str) -> list[str]:
    module_name, _, source_name = where.partition(":")
    module = importlib.import_module(module_name)
    source_name = source_name or name
    value = getattr(module, source_name)
    if inspect.isclass(value):
        return render_class(name, value)
    if inspect.isfunction(value):
        return render_function(name, value)
    return render_constant(name, value, module, source_name)


def render_reference() -> str:
    import slimkit

    parts = []
    for topic, names in slimkit._TOPICS.items():
        blocks = ["\n".join(render_name(name, where)) for name, where in names.items()]
        parts.append(f"### {topic}\n\n```python\n" + "\n\n".join(blocks) + "\n```\n")
    return "\n".join(parts)


def render_example() -> str:
    parts = []
    for relative in EXAMPLE_FILES:
        language = "toml" if relative.endswith(".toml") else "python"
        parts.append(f"`{relative}`:\n\n```{language}\n{(EXAMPLE / relative).read_text()}```\n")
    return "\n".join(parts)


RENDERERS = {"reference": render_reference, "example-plugin": render_example}


def render(text: str) -> str:
    """``text`` (the page) with every generated region rewritten."""

    def region(match: re.Match[str]) -> str:
        name = match.group("name")
        if name not in RENDERERS:
            raise SystemExit(f"{DOC}: unknown generated region {name!r}")
        return f"{match.group(1)}\n{RENDERERS[name]()}\n{match.group(4)}"

    return REGION.sub(region, text)


if __name__ == "__main__":
    current = DOC.read_text()
    content = render(current)
    if "--check" in sys.argv:
        sys.exit(0 if content == current else 1)
    DOC.write_text(content)
