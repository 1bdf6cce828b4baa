"""A form for any method's parameters, generated from its config class.

Every method declares its parameters once, as a pydantic :class:`~slimkit.core.config.MethodConfig`.
Recipes validate against that class and ``slimkit methods`` prints its JSON schema; this module
builds the notebook form from the same schema and validates with the same class, so the form can
never accept what a recipe would refuse, and a third-party method gets a usable form without
writing any UI code.

The schema only picks the widgets; every check is left to ``model_validate``. Widgets therefore
never clamp or coerce on their own: a value they cannot show exactly (one set from a recipe that
is out of a slider's range, text for a number) is kept as given and reported by the config
class, next to its field.
"""

from __future__ import annotations

import html
import json
import math
from typing import Any, Callable, Mapping

import ipywidgets as W
import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import to_jsonable_python

from slimkit.core.errors import ConfigError
from slimkit.jupyter_ext.serial import serialised

FORM_LEVEL = "(config)"  # the key of errors that belong to no single field (model validators)
_MISSING: Any = type("_Missing", (), {"__repr__": lambda self: "<missing>"})()
_MAX_STEPS = 10_000  # beyond this many slider positions a text box is easier to use


class _ParseError(ValueError):
    """A field's text (YAML or JSON) does not parse; its message is the field's error."""


def _resolve(schema: dict[str, Any], defs: Mapping[str, Any]) -> dict[str, Any]:
    """Inline a ``$ref`` (or a one-item ``allOf``), keeping the outer title, description, default."""
    for _ in range(16):
        ref = schema.get("$ref") or (len(schema.get("allOf", ())) == 1 and schema["allOf"][0].get("$ref"))
        if not ref:
            break
        outer = {k: v for k, v in schema.items() if k not in ("$ref", "allOf")}
        schema = {**defs.get(ref.rsplit("/", 1)[-1], {}), **outer}
    return schema


def _unwrap_optional(schema: dict[str, Any], defs: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
    """``anyOf: [X, null]`` is X plus "unset"; anything else is returned as it is."""
    options = schema.get("anyOf", ())
    others = [o for o in options if o.get("type") != "null"]
    if len(options) == 2 and len(others) == 1:
        outer = {k: v for k, v in schema.items() if k != "anyOf"}
        return _resolve({**_resolve(others[0], defs), **outer}, defs), True
    return _resolve(schema, defs), False


def _bounds(schema: dict[str, Any]) -> tuple[float | None, bool, float | None, bool]:
    """(low, low is exclusive, high, high is exclusive); None where the schema gives no bound."""
    lo_x, hi_x = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    return (schema.get("minimum") if lo_x is None else lo_x, lo_x is not None,
            schema.get("maximum") if hi_x is None else hi_x, hi_x is not None)


def _slider(schema: dict[str, Any], default: Any, integer: bool) -> W.Widget | None:
    """A slider over the field's range, or None where a slider would not fit it.

    Exclusive bounds move one step inside. The step is a power of ten near a hundredth of the
    range, made finer until the default lies on the grid; a field whose default needs more than
    ``_MAX_STEPS`` positions (a learning rate of 5e-5 in (0, 1]), or a float whose step would be
    whole numbers, gets a text box instead.
    """
    lo, lo_excl, hi, hi_excl = _bounds(schema)
    if lo is None or hi is None or not hi > lo or not math.isfinite(hi - lo):
        return None
    if integer:
        step: float = 1
        lo = math.floor(lo) + 1 if lo_excl else math.ceil(lo)
        hi = math.ceil(hi) - 1 if hi_excl else math.floor(hi)
    else:
        step = 10.0 ** math.floor(math.log10((hi - lo) / 100))
        on_grid = not isinstance(default, (int, float)) or not math.isfinite(default)
        while not on_grid and (hi - lo) / step <= _MAX_STEPS:
            on_grid = abs(round((default - lo) / step) - (default - lo) / step) < 1e-6
            step = step if on_grid else step / 10
    places = max(0, -math.floor(math.log10(step)))
    if not integer:
        lo, hi = round(lo + step * lo_excl, places), round(hi - step * hi_excl, places)
    if (hi - lo) / step > _MAX_STEPS or hi <= lo or isinstance(default, (int, float)) and not lo <= default <= hi:
        return None
    if not integer and step >= 1:
        return None  # a float over a wide range (a temperature in (0, 100]): whole steps would hide 0.5
    if integer:
        return W.IntSlider(min=int(lo), max=int(hi), step=1, continuous_update=False)
    return W.FloatSlider(min=lo, max=hi, step=step, readout_format=f".{places}f", continuous_update=False)


def _make_widget(schema: dict[str, Any], defs: Mapping[str, Any], default: Any) -> tuple[str, W.Widget]:
    """The widget kind for one (resolved, non-optional) field schema."""
    kind = schema.get("type")
    if "enum" in schema or "const" in schema:
        choices = schema.get("enum", [schema.get("const")])
        return "choice", W.Dropdown(options=[(str(c), c) for c in choices])
    if kind in ("integer", "number"):
        slider = _slider(schema, default, kind == "integer")
        if slider is not None:
            return "slider", slider
        lo, lo_excl, hi, _ = _bounds(schema)  # an unset or required box starts at a value that can be valid
        start = 0 if lo is None else lo + 1 if lo_excl else lo
        start = ((lo + hi) / 2 if lo is not None else hi) if hi is not None and start > hi else start
        return "number", W.IntText(value=math.ceil(start)) if kind == "integer" else W.FloatText(value=start)
    if kind == "boolean":
        return "bool", W.Checkbox(indent=False)
    if kind == "string":
        return "text", W.Text(layout=W.Layout(width="24em"))
    if kind == "array":
        items = _resolve(schema.get("items", {}), defs)
        if "enum" in items:
            return "multi", W.SelectMultiple(options=[(str(c), c) for c in items["enum"]], rows=min(8, len(items["enum"])))
        if items.get("type") == "string":
            return "tags", W.TagsInput(allow_duplicates=False)
    area = W.Textarea(placeholder="YAML or JSON; empty: the default", rows=3, layout=W.Layout(width="30em"))
    return "yaml", area


def _accepts(kind: str, widget: W.Widget, value: Any) -> bool:
    """Whether ``value`` can be shown by the widget exactly (else it is kept as given and validated)."""
    if kind in ("slider", "number"):
        integer = isinstance(widget, (W.IntSlider, W.IntText))
        ok = isinstance(value, int if integer else (int, float)) and not isinstance(value, bool)
        return ok and (kind == "number" or widget.min <= value <= widget.max)
    if kind == "choice":
        return any(value == v and type(value) is type(v) for _, v in widget.options)
    if kind in ("bool", "text"):
        return isinstance(value, bool if kind == "bool" else str)
    if kind in ("multi", "tags"):
        allowed = [v for _, v in widget.options] if kind == "multi" else None
        return isinstance(value, (list, tuple)) and all(
            isinstance(v, str) and (allowed is None or v in allowed) for v in value)
    return True


def _fmt(value: Any) -> str:
    """A compact one-line rendering of a JSON-able value (help text, summaries)."""
    if isinstance(value, str):
        return value if value else '""'
    if isinstance(value, float):
        return f"{value:g}"
    return json.dumps(value, separators=(", ", ": "))


class FormField:
    """One top-level parameter: its value widget, an optional "set" toggle, and its message.

    ``widget`` holds the value; ``toggle`` (a Checkbox, only for optional fields) says whether the
    value is given at all (unticked means None); ``message`` shows this field's validation error.
    """

    def __init__(self, name: str, schema: dict[str, Any], defs: Mapping[str, Any], default: Any) -> None:
        inner, optional = _unwrap_optional(schema, defs)
        self.name, self.default = name, default
        self.title = str(schema.get("title") or name)
        self.description = str(schema.get("description") or inner.get("description") or "")
        self.kind, self.widget = _make_widget(inner, defs, default)
        self.toggle = W.Checkbox(description="set", indent=False, layout=W.Layout(width="4.5em")) \
            if optional and self.kind != "yaml" else None
        self.pending: Any = _MISSING  # a value given from outside that the widget cannot show
        self._neutral = None if self.kind == "yaml" else self.widget.value  # shown while unset or required
        self.widget.tooltip = self.description or None
        self.message = W.HTML()
        self.message.add_class("slimkit-field-error")
        label = W.HTML(f"<b>{html.escape(self.title)}</b>", layout=W.Layout(width="11em"))
        label.tooltip = self.description or None
        shown_default = "required" if default is _MISSING else f"default: {_fmt(default)}"
        help_text = W.HTML(f"<small>{html.escape(' '.join([self.description, f'({shown_default})']).strip())}</small>")
        help_text.add_class("slimkit-field-help")
        row = [label, *([self.toggle] if self.toggle else []), self.widget, self.message]
        self.box = W.VBox([W.HBox(row), help_text])
        self.box.add_class("slimkit-field")
        self.box.add_class(f"slimkit-field-{name}")  # a stable handle for styling and browser tests

    def _read_widget(self) -> Any:
        """The widget's value as the config expects it (lists, in the options' order)."""
        value = self.widget.value
        if self.kind == "slider" and isinstance(value, float):
            return float(f"{value:.12g}")  # drop the front end's float noise (0.7000000000000001)
        if self.kind == "multi":
            order = [v for _, v in self.widget.options]
            return sorted(value, key=order.index)
        return list(value) if self.kind == "tags" else value

    def value(self) -> Any:
        """The field's current value, ``_MISSING`` for "use the default"; raises ``_ParseError``."""
        if self.pending is not _MISSING:
            return self.pending
        if self.toggle is not None and not self.toggle.value:
            return None
        if self.kind != "yaml":
            return self._read_widget()
        text = self.widget.value.strip()
        if not text:
            return _MISSING
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
            raise _ParseError(f"not valid YAML or JSON: {getattr(error, 'problem', None) or error}{where}") from None

    def set(self, value: Any) -> None:
        """Show ``value`` (``_MISSING``: the default, or empty for a required field)."""
        self.pending = _MISSING
        if value is _MISSING:
            value = self.default
        if self.toggle is not None:
            self.toggle.value = value is not None and value is not _MISSING
            self.widget.disabled = not self.toggle.value
            if not self.toggle.value:
                return
        if self.kind == "yaml":
            empty = value is _MISSING or (value == self.default and value in (None, {}, []))
            self.widget.value = "" if empty else yaml.safe_dump(
                to_jsonable_python(value), default_flow_style=None, sort_keys=False, allow_unicode=True).strip()
            return
        shown = next((v for v in (value, self.default) if v is not _MISSING and _accepts(self.kind, self.widget, v)),
                     self._neutral)  # a value the widget cannot show is kept aside, the widget shows the default
        if self.kind in ("multi", "tags"):
            items = list(shown or ())
            self.widget.value = tuple(items) if self.kind == "multi" else items
        else:
            self.widget.value = shown
        if shown is not value and value is not _MISSING:
            self.pending = value


class ConfigForm:
    """An ipywidgets form for a method's config class; validated by that class on every change.

    ``widget`` is the container to display; ``fields`` maps each top-level parameter to its
    :class:`FormField`. ``errors``/``valid`` reflect the latest validation, ``params()`` is what
    a recipe step needs (only the values that differ from the defaults) and ``on_change``
    callbacks receive the form after every change, so a panel can disable its Run button.
    """

    def __init__(self, config_cls: type[BaseModel], values: Mapping[str, Any] | BaseModel | None = None, *,
                 title: str | None = None) -> None:
        self.config_cls = config_cls
        schema = config_cls.model_json_schema()
        defs = schema.get("$defs", {})
        infos = {(info.alias or name): info for name, info in config_cls.model_fields.items()}
        self.fields: dict[str, FormField] = {}
        for name, prop in schema.get("properties", {}).items():
            info = infos.get(name)
            if info is None or info.is_required():
                default = prop.get("default", _MISSING)
            else:
                default = to_jsonable_python(info.get_default(call_default_factory=True, validated_data={}))
            self.fields[name] = FormField(name, prop, defs, default)
        self.errors: dict[str, str] = {}
        self._config: BaseModel | None = None
        self._unknown: dict[str, Any] = {}
        self._callbacks: list[Callable[[ConfigForm], Any]] = []
        self._quiet = False  # True while set_values fills the widgets: one validation at the end
        for field in self.fields.values():
            for source in (field.widget, field.toggle):
                if source is not None:
                    source.observe(serialised(lambda _change, f=field: self._edited(f)), names="value")
        self.form_message = W.HTML()
        self.form_message.add_class("slimkit-form-error")
        head = [W.HTML(f"<h4>{html.escape(title)}</h4>")] if title else []
        if schema.get("description"):
            head.append(W.HTML(f"<small>{html.escape(schema['description'])}</small>"))
        body = [f.box for f in self.fields.values()] or [W.HTML("<i>No parameters.</i>")]
        self.widget = W.VBox([*head, *body, self.form_message])
        self.widget.add_class("slimkit-config-form")
        self.set_values(values if values is not None else {})

    @property
    def valid(self) -> bool:
        """Whether the latest values validate (what a Run button should follow)."""
        return self._config is not None and not self.errors

    def config(self) -> BaseModel:
        """The validated config instance; raises ``ConfigError`` naming the problems if invalid."""
        if not self.valid or self._config is None:
            raise ConfigError(self.summary())
        return self._config

    def params(self) -> dict[str, Any]:
        """The values that differ from their defaults (required ones always), JSON-able.

        Taken from the widgets as entered, not from the validated config, so a recipe step stays
        as short as what the user typed; fields whose text does not parse are left out.
        """
        out: dict[str, Any] = {}
        for name, field in self.fields.items():
            try:
                value = field.value()
            except _ParseError:
                continue
            if value is not _MISSING and (field.default is _MISSING or value != field.default):
                out[name] = to_jsonable_python(value)
        return {**out, **self._unknown}

    def set_values(self, values: Mapping[str, Any] | BaseModel) -> None:
        """Show a whole set of parameters (a recipe step's ``params``, or a config instance):
        absent ones go back to their defaults; unknown names are kept and reported, since the
        config will refuse them."""
        if isinstance(values, BaseModel):
            values = values.model_dump(mode="json", by_alias=True)
        self._quiet = True
        try:
            for name, field in self.fields.items():
                field.set(values.get(name, _MISSING))
        finally:
            self._quiet = False
        self._unknown = {k: v for k, v in values.items() if k not in self.fields}
        self._validate()

    def on_change(self, callback: Callable[[ConfigForm], Any], remove: bool = False) -> None:
        """Call ``callback(form)`` after every change (``remove=True`` unregisters it)."""
        if remove:
            self._callbacks.remove(callback)
        else:
            self._callbacks.append(callback)

    def summary(self) -> str:
        """One line: ``sparsity=0.7, scope=row``, ``defaults`` or ``invalid: field: message``."""
        if not self.valid:
            return "invalid: " + "; ".join(f"{k}: {v}" for k, v in self.errors.items())
        return ", ".join(f"{k}={_fmt(v)}" for k, v in self.params().items()) or "defaults"

    def _edited(self, field: FormField) -> None:
        if self._quiet:
            return
        field.pending = _MISSING
        if field.toggle is not None:
            field.widget.disabled = not field.toggle.value
        self._validate()

    def _validate(self) -> None:
        """Validate with the config class and route each error to its field (``loc[0]``)."""
        raw: dict[str, Any] = {}
        errors: dict[str, list[str]] = {}
        for name, field in self.fields.items():
            try:
                value = field.value()
            except _ParseError as error:
                errors.setdefault(name, []).append(str(error))
                continue
            if value is not _MISSING:
                raw[name] = value
        try:
            self._config = self.config_cls.model_validate({**raw, **self._unknown})
        except ValidationError as error:
            self._config = None
            for item in error.errors():
                loc = [str(part) for part in item.get("loc", ())]
                message = item.get("msg", "invalid").removeprefix("Value error, ")
                if item.get("type") == "extra_forbidden":
                    message = "unknown parameter"
                if loc and loc[0] in self.fields:
                    errors.setdefault(loc[0], []).append(".".join(loc[1:]) + ": " + message if loc[1:] else message)
                else:
                    errors.setdefault(FORM_LEVEL, []).append(f"{'.'.join(loc)}: {message}" if loc else message)
        self.errors = {name: "; ".join(lines) for name, lines in errors.items()}
        for name, field in self.fields.items():
            text = self.errors.get(name, "")
            field.message.value = f"<span style='color:#c62828'>{html.escape(text)}</span>" if text else ""
        level = self.errors.get(FORM_LEVEL, "")
        self.form_message.value = f"<span style='color:#c62828'>{html.escape(level)}</span>" if level else ""
        for callback in list(self._callbacks):
            callback(self)
