"""HTML tables the panel shows: a run's metrics before and after, two models side by side, and
what an export wrote.

Plain functions of plain data (a :class:`~slimkit.core.runner.RunResult`, the dictionary of
:func:`slimkit.core.catalogue.queries.diff`, an :class:`~slimkit.core.export.run.ExportResult`),
so they are tested without widgets. Every value is written by :mod:`slimkit.core.present.format`
(as the CLI and the notebook reprs write it) and escaped: model names and parameters come from
users.
"""

from __future__ import annotations

import html
from typing import Any

from slimkit.core.present.format import (
    MISSING,
    UNCHANGED,
    change,
    comparison,
    config_params,
    duration,
    human_bytes,
    metric_value,
    number,
    short_id,
    step_label,
)


def row(*texts: str) -> str:
    """A table row of escaped texts."""
    return "<tr>" + "".join(f"<td>{html.escape(text)}</td>" for text in texts) + "</tr>"


def results_table(result: Any, *, seconds: float | None = None) -> str:
    """Metrics before/after and the steps of a :class:`RunResult`."""
    rows = "".join(row(*texts) for texts in comparison(result.comparison())) or (
        "<tr><td colspan='4'>no evaluations in this recipe</td></tr>")
    steps = "".join(
        f"<li><b>{html.escape(step.method)}</b>: {html.escape(step.summary or '')}"
        f"{' (reused from the catalogue)' if reused else f' ({duration(step.wall_time_s)})'}</li>"
        for step, reused in zip(result.steps, result.reused)
    )
    where = html.escape(str(result.output)) if result.output else "not saved"
    took = f" in {duration(seconds)}" if seconds is not None else ""
    return (
        "<table class='slimkit-results'><thead><tr><th>metric</th><th>before</th><th>after</th><th>change</th>"
        f"</tr></thead><tbody>{rows}</tbody></table><ol class='slimkit-steps'>{steps}</ol>"
        f"<div class='slimkit-output'>saved to <code>{where}</code>{took}</div>"
    )


def compare_table(diff: dict[str, Any]) -> str:
    """Two catalogue models side by side (``queries.diff``): their metrics and the steps apart."""
    a, b = diff["a"], diff["b"]

    def label(model: dict[str, Any]) -> str:
        return html.escape(model.get("name") or short_id(model["id"]))

    head = (f"<tr><th></th><th>{label(a)}</th><th>{label(b)}</th><th>change</th></tr>")
    arch_a, arch_b = a["architecture"], b["architecture"]
    facts = (row("architecture", arch_a, arch_b, UNCHANGED if arch_a == arch_b else MISSING)
             + row("parameters", number(a.get("params")), number(b.get("params")),
                   change(a.get("params"), b.get("params")))
             + row("size", human_bytes(a.get("size_bytes")), human_bytes(b.get("size_bytes")),
                   change(a.get("size_bytes"), b.get("size_bytes"))))
    metrics = "".join(
        row(m["metric"] + (" *" if m["same_settings"] is False else ""), metric_value(m["metric"], m["a"]),
            metric_value(m["metric"], m["b"]), change(m["a"], m["b"]))
        for m in diff["metrics"]
    )
    note = "" if all(m["same_settings"] is not False for m in diff["metrics"]) else (
        "<div>* measured with different settings on the two models: not comparable as is</div>")
    base = "same base model" if diff["same_base"] else "different base models"
    steps = "".join(f"<li>{html.escape(_step_line(step))}</li>" for step in diff["steps"])
    return (f"<table class='slimkit-compare'>{head}{facts}{metrics}</table>{note}"
            f"<div>{base}</div><ul class='slimkit-compare-steps'>{steps}</ul>")


def _step_line(row: dict[str, Any]) -> str:
    sides = []
    for side in ("a", "b"):
        step = row.get(side)
        if step is None:
            sides.append(MISSING)
            continue
        sides.append(step_label(step["method"], config_params(step.get("config") or {}, limit=None)))
    same = " (the same step)" if row.get("same") else ""
    return f"step {row['index']}: {sides[0]}  |  {sides[1]}{same}"


def export_table(result: Any, seconds: float | None = None) -> str:
    """What an export wrote: path, format and exporter, size, sha256 (short), model, summary."""
    sha = str(result.sha256).split(":", 1)[-1]
    plugin = result.plugin + (f" {result.plugin_version}" if result.plugin_version else "")
    rows = [("written", str(result.path)),
            ("format", f"{result.format} (exporter version {result.exporter_version}, {plugin})"),
            ("size", human_bytes(result.size_bytes)
             + (f" ({result.size_bytes:,} bytes)" if result.size_bytes >= 1024 else "")),
            ("sha256", sha[:16] + "…"),
            ("model", short_id(result.content_id)),
            ("summary", result.summary.description)]
    if seconds is not None:
        rows.append(("time", duration(seconds)))
    body = "".join(f"<tr><th style='text-align:left'>{k}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    return f"<table class='slimkit-export-result'>{body}</table>"
