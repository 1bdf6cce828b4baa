"""Numbers, sizes, ratios, ids, durations and parameters as text, the same on every screen.

The rules, in one place:

* missing (``None``, or a change with a side missing, not a number, or from zero): :data:`MISSING`;
* unchanged (a change whose two sides are equal): an empty string, so real changes stand out;
* a change is always after / before, written ``x0.512`` (three significant digits; from 1000 up
  grouped, ``x4,096``);
* numbers: integers grouped (``260,032``), floats to four significant digits, from 1000 up
  grouped without decimals (``1,235``), never in exponent form there; ``nan`` and ``inf`` as such;
* sizes in bytes in binary units (``1.50 KiB``), sparsities (and other fractions of one) as
  percentages (``50.0%``), durations in seconds (``1.50 s``, ``12.3 s``, ``1,234 s``);
* a model or step id as the first 12 digits of its hash.

A leaf module: plain Python, nothing of slimkit imported (see :mod:`slimkit.core.present`).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Iterable

if TYPE_CHECKING:  # pragma: no cover
    from slimkit.core.catalogue.entities import StepEntry

MISSING = "-"
UNCHANGED = ""


def _not_a_number(value: float) -> bool:
    return isinstance(value, float) and math.isnan(value)


def number(value: Any) -> str:
    """A number as text (see the module's rules); anything else as ``str``, ``None`` as missing."""
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)  # nan, inf, -inf
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    return str(value)


def human_bytes(count: float | None) -> str:
    """``1536`` -> ``1.50 KiB``; whole bytes below 1 KiB (``512 B``)."""
    if count is None:
        return MISSING
    if _not_a_number(count):
        return "nan"
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.2f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def percent(fraction: float | None, digits: int = 1) -> str:
    """``0.5`` -> ``50.0%``."""
    if fraction is None:
        return MISSING
    return "nan" if _not_a_number(fraction) else f"{fraction:.{digits}%}"


def compact(count: float) -> str:
    """A count at a glance, where room is short (a drawing's box): ``260032`` -> ``260K``."""
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(count) >= scale:
            return f"{count / scale:.3g}{suffix}"
    return f"{count:.0f}"


def change(before: float | None, after: float | None) -> str:
    """after / before as ``x0.512``: :data:`UNCHANGED` when equal, :data:`MISSING` when a side is
    missing or not a number, or ``before`` is zero (no ratio exists)."""
    if before is None or after is None or _not_a_number(before) or _not_a_number(after):
        return MISSING
    if before == after:
        return UNCHANGED
    if before == 0:
        return MISSING
    ratio = after / before
    return f"x{ratio:.3g}" if abs(ratio) < 1000 else f"x{ratio:,.0f}"


def metric_value(key: str, value: float | None) -> str:
    """A metric's value by what it measures: ``..._bytes`` (and the model column ``size``) as a
    size, ``...sparsity`` as a percentage, anything else as a number."""
    if value is None:
        return MISSING
    if key == "size" or key.endswith("_bytes"):
        return human_bytes(value)
    if key.endswith("sparsity"):
        return percent(value)
    return number(value)


def comparison(rows: Iterable[tuple[str, float | None, float | None]]) -> list[tuple[str, str, str, str]]:
    """``(metric, before, after)`` rows (``RunResult.comparison()``) as the four strings every
    screen shows: metric, before, after, change."""
    return [(key, metric_value(key, before), metric_value(key, after), change(before, after))
            for key, before, after in rows]


def short_id(model_id: str | None) -> str:
    """``sha256:0123456789abcdef...`` -> ``0123456789ab``: enough to tell models apart, and a
    prefix the catalogue resolves back to the model."""
    return MISSING if model_id is None else model_id.split(":", 1)[-1][:12]


def duration(seconds: float | None) -> str:
    """``1.5`` -> ``1.50 s``, ``12.34`` -> ``12.3 s``, ``1234.5`` -> ``1,234 s``."""
    if seconds is None:
        return MISSING
    if seconds < 10:
        return f"{seconds:.2f} s"
    return f"{seconds:.1f} s" if seconds < 100 else f"{seconds:,.0f} s"


def config_params(config: Any, limit: int | None = 3) -> str:
    """A config's scalar fields as ``name=value, ...``, the first ``limit`` (``None``: all): numbers
    first (sparsity, bits, rank say most about a step), then words, then switches. ``config`` is a
    stored config (``{name, version, data}``) or its bare fields."""
    data = config.get("data", config) if isinstance(config, dict) else {}
    scalars = [(k, v) for k, v in data.items() if isinstance(v, (int, float, str, bool))]
    rank = {int: 0, float: 0, str: 1, bool: 2}
    scalars.sort(key=lambda item: rank[type(item[1])])  # stable: keeps name order within a kind
    return ", ".join(f"{k}={v}" for k, v in scalars[:limit])


BUNDLED_PLUGIN_PREFIX = "slimkit.plugins."


def method_use(use: Any) -> str:
    """One method a step ran inside it: ``scorer wanda v1``, with its plugin and release when it
    is not bundled (``scorer acme.power v2 from acme 2.1``). ``use`` is a stored identity:
    ``{family, plugin, plugin_version, config: {type, version, data}}``."""
    config = use.get("config", {})
    text = f"{use.get('family', 'method')} {config.get('type', '?')} v{config.get('version', '?')}"
    plugin = str(use.get("plugin") or "")
    if plugin and not plugin.startswith(BUNDLED_PLUGIN_PREFIX):
        text += f" from {plugin}" + (f" {use['plugin_version']}" if use.get("plugin_version") else "")
    return text


def uses_text(step: "StepEntry") -> str:
    """Every method a step ran inside it, ``; ``-separated (empty for none)."""
    return "; ".join(method_use(use) for use in getattr(step, "uses", ()) or ())


def key_params(step: "StepEntry", limit: int | None = 3) -> str:
    """:func:`config_params` of a catalogue step, then the methods it ran inside it
    (``sparsity=0.5, scorer=wanda; scorer wanda v1``): every screen names what shaped a step."""
    params = config_params(step.config, limit)
    nested = uses_text(step)
    return "; ".join(part for part in (params, nested) if part)


def step_label(method: str, params: str) -> str:
    """``prune.unstructured(sparsity=0.5)``, or the bare method without parameters."""
    return f"{method}({params})" if params else method
