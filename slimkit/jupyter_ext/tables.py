"""HTML tables the panel shows: a run's metrics before and after, and two models side by side.

Plain functions of plain data (a :class:`~slimkit.core.runner.RunResult`, the dictionary of
:func:`slimkit.core.catalogue.queries.diff`), so they are tested without widgets. Every value
that comes from a user (model names, parameters) is escaped.
"""

from __future__ import annotations

import html
import math
from typing import Any


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if value.is_integer() and abs(value) < 1e15:  # counts and bytes, stored as floats
            return f"{int(value):,}"
        return f"{value:,.4g}" if abs(value) < 1e6 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return html.escape(str(value))


def change(before: float | None, after: float | None) -> str:
    if before is None or after is None or before == after:
        return ""
    return f"x{after / before:.3g}" if before else "-"


def results_table(result: Any, *, seconds: float | None = None) -> str:
    """Metrics before/after and the steps of a :class:`RunResult`."""
    rows = "".join(
        f"<tr><td>{html.escape(metric)}</td><td>{fmt(before)}</td><td>{fmt(after)}</td>"
        f"<td>{change(before, after)}</td></tr>"
        for metric, before, after in result.comparison()
    ) or "<tr><td colspan='4'>no evaluations in this recipe</td></tr>"
    steps = "".join(
        f"<li><b>{html.escape(step.method)}</b>: {html.escape(step.summary or '')}"
        f"{' (reused from the catalogue)' if reused else f' ({step.wall_time_s:.1f} s)'}</li>"
        for step, reused in zip(result.steps, result.reused)
    )
    where = html.escape(str(result.output)) if result.output else "not saved"
    took = f" in {seconds:.1f} s" if seconds is not None else ""
    return (
        "<table class='slimkit-results'><thead><tr><th>metric</th><th>before</th><th>after</th><th>change</th>"
        f"</tr></thead><tbody>{rows}</tbody></table><ol class='slimkit-steps'>{steps}</ol>"
        f"<div class='slimkit-output'>saved to <code>{where}</code>{took}</div>"
    )


def compare_table(diff: dict[str, Any]) -> str:
    """Two catalogue models side by side (``queries.diff``): their metrics and the steps apart."""
    a, b = diff["a"], diff["b"]

    def label(model: dict[str, Any]) -> str:
        return html.escape(model.get("name") or model["id"].split(":", 1)[-1][:12])

    head = (f"<tr><th></th><th>{label(a)}</th><th>{label(b)}</th><th>change</th></tr>")
    facts = "".join(
        f"<tr><td>{name}</td><td>{fmt(a.get(key))}</td><td>{fmt(b.get(key))}</td>"
        f"<td>{change(a.get(key), b.get(key))}</td></tr>"
        for name, key in (("architecture", "architecture"), ("parameters", "params"), ("size (bytes)", "size_bytes"))
    )
    metrics = "".join(
        f"<tr><td>{html.escape(row['metric'])}{' *' if row['same_settings'] is False else ''}</td><td>{fmt(row['a'])}</td>"
        f"<td>{fmt(row['b'])}</td><td>{change(row['a'], row['b'])}</td></tr>"
        for row in diff["metrics"]
    )
    note = "" if all(row["same_settings"] is not False for row in diff["metrics"]) else (
        "<div>* measured with different settings on the two models: not comparable as is</div>")
    base = "same base model" if diff["same_base"] else "different base models"
    steps = "".join(f"<li>{html.escape(_step_line(row))}</li>" for row in diff["steps"])
    return (f"<table class='slimkit-compare'>{head}{facts}{metrics}</table>{note}"
            f"<div>{base}</div><ul class='slimkit-compare-steps'>{steps}</ul>")


def _step_line(row: dict[str, Any]) -> str:
    sides = []
    for side in ("a", "b"):
        step = row.get(side)
        if step is None:
            sides.append("-")
            continue
        config = step.get("config") or {}
        params = ", ".join(f"{k}={v}" for k, v in config.items()) if isinstance(config, dict) else str(config)
        sides.append(f"{step['method']}({params})")
    same = " (the same step)" if row.get("same") else ""
    return f"step {row['index']}: {sides[0]}  |  {sides[1]}{same}"
