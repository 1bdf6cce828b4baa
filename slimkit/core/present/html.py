"""HTML snippets for notebook reprs of catalogue entries, lineages, run results and loaded models.

Why: a model, step or run printed in a notebook should show its facts (ids, methods, key
parameters, metrics) in a table rather than a dataclass repr. Everything that reaches the page
goes through :func:`esc`: model names, configs and summaries are user input, and an unescaped
``<script>`` in a model name must not run in someone's notebook. Plain HTML only (no scripts, no
stylesheets) so the snippets also render in static exports (nbconvert, GitHub). Values are
written by :mod:`slimkit.core.present.format`, as in the CLI and the panel.

A leaf module: the objects shown are duck-typed (their classes are imported for type checking
only), which lets the catalogue's entries call it from ``_repr_html_`` (see
:mod:`slimkit.core.present`).
"""

from __future__ import annotations

import json
from html import escape
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from slimkit.core.present.format import (
    MISSING,
    comparison,
    config_params,
    duration,
    human_bytes,
    key_params,
    metric_value,
    number,
    short_id,
)

if TYPE_CHECKING:  # pragma: no cover
    from slimkit.core.catalogue.entities import EvaluationEntry, ModelEntry, StepEntry
    from slimkit.core.catalogue.queries import Node
    from slimkit.core.model_io import LoadedModel
    from slimkit.core.present.lineage import Lineage
    from slimkit.core.run_result import RunResult

TABLE = 'style="border-collapse:collapse;text-align:left"'
CELL = 'style="padding:2px 8px;border-bottom:1px solid #ddd;text-align:left;vertical-align:top"'


def esc(value: object) -> str:
    """``value`` as escaped HTML text (``None`` as missing)."""
    return MISSING if value is None else escape(str(value), quote=True)


def num(value: Any) -> str:
    """A number as :func:`~slimkit.core.present.format.number` writes it, escaped."""
    return esc(number(value))


def code(value: object) -> str:
    return f"<code>{esc(value)}</code>"


def short(model_id: str | None) -> str:
    """A model id as its short id, the full id in a tooltip."""
    if model_id is None:
        return esc(None)
    return f'<code title="{esc(model_id)}">{esc(short_id(model_id))}</code>'


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], caption: str | None = None) -> str:
    """A table from already-escaped cell HTML; headers are escaped here."""
    head = "".join(f"<th {CELL}>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td {CELL}>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    cap = f"<caption style=\"text-align:left;font-weight:bold\">{esc(caption)}</caption>" if caption else ""
    return f"<table {TABLE}>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def fields(pairs: Iterable[tuple[str, str]], caption: str | None = None) -> str:
    """A two-column field/value table; values are already-escaped HTML, empty ones left out."""
    rows = "".join(f"<tr><th {CELL}>{esc(k)}</th><td {CELL}>{v}</td></tr>" for k, v in pairs if v)
    cap = f"<caption style=\"text-align:left;font-weight:bold\">{esc(caption)}</caption>" if caption else ""
    return f"<table {TABLE}>{cap}<tbody>{rows}</tbody></table>"


def config_details(config: Any, summary: str = "config") -> str:
    """A collapsed ``<details>`` holding the full config as JSON."""
    text = json.dumps(config, indent=2, sort_keys=True, default=str)
    return f"<details><summary>{esc(summary)}</summary><pre>{esc(text)}</pre></details>"


def model_html(model: "ModelEntry", metrics: Mapping[str, float] | None = None) -> str:
    pairs = [("name", esc(model.name) if model.name else ""), ("id", code(model.id)),
             ("architecture", esc(model.architecture)),
             ("params", num(model.params) if model.params is not None else ""),
             ("size", esc(human_bytes(model.size_bytes)) if model.size_bytes is not None else ""),
             ("location", code(model.location) if model.location else ""),
             ("source", esc(model.source) if model.source else ""), ("created", esc(model.created.isoformat()))]
    pairs += [(key, esc(metric_value(key, value))) for key, value in sorted((metrics or {}).items())]
    return fields(pairs, f"model {model.label}")


def parents_html(parents: Iterable[tuple[str, str]]) -> str:
    return ", ".join(f"{short(m)} ({esc(role)})" for m, role in parents)


def step_html(step: "StepEntry") -> str:
    pairs = [("method", f"{code(step.method)} v{esc(step.method_version)}"), ("family", esc(step.family)),
             ("parents", parents_html(step.parents)), ("child", short(step.child_id)),
             ("key params", esc(key_params(step))), ("seed", esc(step.seed)), ("status", esc(step.status)),
             ("plugin", esc(f"{step.plugin} {step.plugin_version or ''}".strip())),
             ("calibration", code(step.calibration_fingerprint) if step.calibration_fingerprint else ""),
             ("wall time", esc(duration(step.wall_time_s)) if step.wall_time_s is not None else ""),
             ("summary", esc(step.summary) if step.summary else ""), ("step id", code(step.id))]
    return fields(pairs, f"step {step.method}") + config_details(step.config)


def evaluation_html(entry: "EvaluationEntry") -> str:
    value = esc(metric_value(entry.key, entry.value))
    pairs = [("metric", code(entry.key)), ("value", value), ("model", short(entry.model_id)),
             ("evaluator version", esc(entry.evaluator_version)),
             ("dataset", code(entry.dataset_fingerprint) if entry.dataset_fingerprint else ""),
             ("created", esc(entry.created.isoformat()))]
    return fields(pairs, f"{entry.key} = {metric_value(entry.key, entry.value)}") + config_details(entry.config)


def node_html(node: "Node") -> str:
    """A descendants tree as nested lists: model label, short id, and the step that made it."""
    def item(n: "Node") -> str:
        how = ""
        if n.step is not None:
            params = key_params(n.step)
            how = f" \u2190 {code(n.step.method)}" + (f" ({esc(params)})" if params else "")
        kids = "".join(item(c) for c in n.children)
        ident = f" {short(n.model.id)}" if n.model.name else ""
        return (f"<li><b>{esc(n.model.label)}</b>{ident}{how}"
                + (f"<ul>{kids}</ul>" if kids else "") + "</li>")

    return f'<ul style="list-style:none;padding-left:0">{item(node)}</ul>'


def steps_table(steps: Sequence["StepEntry"], caption: str | None = None) -> str:
    rows = [[esc(i + 1), code(s.method), esc(key_params(s)), parents_html(s.parents), short(s.child_id),
             esc(s.seed), esc(duration(s.wall_time_s)),
             esc(s.summary or "")] for i, s in enumerate(steps)]
    return table(["#", "method", "key params", "parents", "child", "seed", "time", "summary"], rows, caption)


def lineage_html(lineage: "Lineage", svg: str | None = None) -> str:
    """The drawing (if given) above a table of the steps from the base to the focus model."""
    base, focus = lineage.models[0], lineage.model
    head = (f"<p>lineage of <b>{esc(focus.label)}</b> {short(focus.id)} from base <b>{esc(base.label)}</b> "
            f"{short(base.id)}: {len(lineage.steps)} step(s)</p>")
    body = steps_table(lineage.steps) if lineage.steps else "<p>a base model: no steps</p>"
    drawing = f'<div style="overflow-x:auto">{svg}</div>' if svg else ""
    return f'<div class="slimkit-lineage-view">{head}{drawing}{body}</div>'


def metrics_table(rows: Sequence[tuple[str, float | None, float | None]]) -> str:
    """``(metric, before, after)`` rows with the change after / before."""
    return table(["metric", "before", "after", "change"],
                 [[code(k), esc(a), esc(b), esc(c)] for k, a, b, c in comparison(rows)], "metrics")


def run_result_html(result: "RunResult") -> str:
    content = result.provenance.get("content_id")
    steps = [[esc(i + 1), code(s.method), esc(config_params(s.config)), short(s.child_id),
              esc(duration(s.wall_time_s) + (" (reused)" if i < len(result.reused) and result.reused[i] else "")),
              esc(s.summary)] for i, s in enumerate(result.steps)]
    parts = [fields([("model", short(content) if content else ""),
                     ("output", code(result.output) if result.output else esc("not saved")),
                     ("run", code(result.run_id) if result.run_id else "")], "run result"),
             table(["#", "method", "key params", "child", "time", "summary"], steps, "steps")]
    if result.after or result.before:
        parts.append(metrics_table(result.comparison()))
    return "<div>" + "".join(parts) + "</div>"


def loaded_model_html(loaded: "LoadedModel") -> str:
    provenance = loaded.provenance or {}
    try:
        params: int | None = sum(p.numel() for p in loaded.model.parameters())
    except (AttributeError, TypeError):
        params = None
    steps = provenance.get("steps", [])
    rows = [[esc(i + 1), code(s.get("method")), esc(config_params(s.get("config", {}))), short(s.get("child_id")),
             esc(s.get("summary"))] for i, s in enumerate(steps)]
    base = provenance.get("base", {})
    parts = [fields([("architecture", esc(loaded.architecture)), ("params", num(params) if params else ""),
                     ("source", esc(loaded.source) if loaded.source else ""),
                     ("path", code(loaded.path) if loaded.path else ""),
                     ("content id", code(provenance["content_id"]) if "content_id" in provenance else ""),
                     ("base", short(base.get("content_id")) + (f" ({esc(base['source'])})" if base.get("source")
                                                              else "") if base else "")], "loaded model")]
    if rows:
        parts.append(table(["#", "method", "key params", "child", "summary"], rows, "provenance steps"))
    return "<div>" + "".join(parts) + "</div>"
