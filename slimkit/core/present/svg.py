"""A lineage graph drawn as a self-contained SVG string, in pure Python.

Why pure: notebooks, exported reports and the Jupyter panel all want a picture of where a model
came from, and ``slimkit.core`` must work without graphviz, matplotlib or a browser.
The layout is a small layered drawing: every model sits one column right of the models it was
made from (longest path), the lineage chain on the first row, other models (teachers from
elsewhere, children of the focus) below it. Output is deterministic (same catalogue, same bytes),
every piece of text is XML-escaped (model names are user input), and no ``<style>`` element is
used because an inline SVG's stylesheet would leak into the whole notebook page.

Each model box is a ``<g>`` whose id is ``slimkit-select-`` + :func:`encode_id` (model id), the
contract :class:`slimkit.jupyter_ext.svgview.SvgView` uses to make it clickable.

A leaf module (models and steps are duck-typed; see :mod:`slimkit.core.present`).
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Mapping, Sequence
from urllib.parse import quote, unquote

from slimkit.core.present.format import compact, key_params, number, percent

if TYPE_CHECKING:  # pragma: no cover
    from slimkit.core.catalogue.entities import ModelEntry, StepEntry

SELECT_PREFIX = "slimkit-select-"
BOX_W, BOX_H, ROW_GAP, MARGIN = 180, 60, 34, 16
MIN_GAP, MAX_GAP, CHAR_W = 110, 230, 6.0  # CHAR_W: a rough width of one 11px sans-serif character
ARC = 40  # how far above its row an edge that skips columns bows
COLOURS = {"box": "#f8f9fa", "edge": "#495057", "focus": "#1c7ed6", "focus_fill": "#e7f5ff",
           "selected": "#e8590c", "selected_fill": "#fff4e6", "teacher": "#7048e8", "muted": "#495057"}
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
HEADLINE = ("perplexity.perplexity", "stsb.spearman", "latency.tokens_per_s")


def encode_id(model_id: str) -> str:
    """A model id as an XML/HTML-safe id suffix: percent-encoding (``sha256:ab`` -> ``sha256%3Aab``),
    which matplotlib's ``gid`` output keeps as written and JavaScript's ``decodeURIComponent`` reverses."""
    return quote(model_id, safe="")


def decode_id(text: str) -> str:
    return unquote(text)


def element_id(model_id: str) -> str:
    """The id a selectable element of ``model_id`` carries."""
    return SELECT_PREFIX + encode_id(model_id)


def xml_text(value: object) -> str:
    """``value`` as escaped XML text/attribute content; characters XML 1.0 forbids become U+FFFD."""
    return html.escape(_CONTROL.sub("\ufffd", str(value)), quote=True)


def clip(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[: max(chars - 1, 1)] + "\u2026"


def headline(metrics: Mapping[str, float]) -> tuple[str, float] | None:
    """The one metric worth a box's last line: perplexity if recorded, else the first non-size one."""
    for key in HEADLINE:
        if key in metrics:
            return key, metrics[key]
    others = sorted(k for k in metrics if not k.startswith("size."))
    return (others[0], metrics[others[0]]) if others else None


def box_lines(model: "ModelEntry", metrics: Mapping[str, float]) -> list[str]:
    """Up to three lines: label, size (params, sparsity), headline metric."""
    params = model.params if model.params is not None else metrics.get("size.params")
    size = [f"{compact(params)} params"] if params is not None else [model.architecture]
    sparsity = metrics.get("size.sparsity")
    if sparsity:
        size.append(f"{percent(sparsity, 0)} sparse")
    lines = [model.label, " \u00b7 ".join(size)]
    head = headline(metrics)
    if head is not None:
        lines.append(f"{head[0].split('.', 1)[-1]} {number(head[1])}")
    return lines


@dataclass(frozen=True)
class Edge:
    """One arrow: ``role`` is ``input`` for the step's main edge, else the extra parent's role."""

    source: str
    target: str
    method: str
    params: str
    role: str


def edges_of(steps: Iterable["StepEntry"], ids: set[str]) -> list[Edge]:
    """The arrows among ``ids``: one per step (input -> child), one dashed per extra parent;
    self-loops (a step that changed nothing) are left out."""
    edges: list[Edge] = []
    for step in steps:
        if step.child_id not in ids:
            continue
        for parent, role in step.parents:
            edge = Edge(parent, step.child_id, step.method, key_params(step), role)
            if parent in ids and parent != step.child_id and edge not in edges:
                edges.append(edge)
    return edges


def layout(ids: Sequence[str], edges: Sequence[Edge]) -> dict[str, tuple[int, int]]:
    """``(column, row)`` per model: column = longest path from a model with no parent drawn
    (bounded, so a cycle cannot loop), row = order of arrival within the column."""
    column = dict.fromkeys(ids, 0)
    for _ in range(len(ids)):
        changed = False
        for e in edges:
            if column[e.target] < column[e.source] + 1 < len(ids):
                column[e.target], changed = column[e.source] + 1, True
        if not changed:
            break
    rows: dict[int, int] = {}
    place = {}
    for i in ids:
        place[i] = (column[i], rows.get(column[i], 0))
        rows[column[i]] = place[i][1] + 1
    return place


def _text(x: float, y: float, text: str, size: int = 11, anchor: str = "middle", extra: str = "") -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}"{extra}>'
            f"{xml_text(text)}</text>")


def wrap(text: str, chars: int, lines: int = 2) -> list[str]:
    """``a=1, b=2, c=3`` in at most ``lines`` lines of ``chars``, broken after commas, the rest clipped."""
    out: list[str] = []
    for part in text.split(", "):
        if out and len(out[-1]) + 2 + len(part) <= chars:
            out[-1] += ", " + part
        elif len(out) < lines:
            out.append(part)
        else:
            out[-1] += ", " + part
            break
    return [clip(line, chars) for line in out]


_HALO = ' stroke="#ffffff" stroke-width="3" paint-order="stroke"'  # text stays legible over lines


def _edge(e: Edge, source: tuple[float, float], target: tuple[float, float], adjacent: bool, chars: int) -> str:
    """One arrow with its label. Between neighbouring columns: straight along a row, or out of the
    source, down (or up) beside it and along the target's row, labelled there. Across several
    columns: a bow above the boxes, labelled at its top."""
    (sx, sy), (tx, ty) = source, target
    solid = e.role == "input"
    colour = COLOURS["edge"] if solid else COLOURS["teacher"]
    style = f'fill="none" stroke="{colour}" stroke-width="1.5"' + ("" if solid else ' stroke-dasharray="6 4"')
    if adjacent:
        x1, y1, x2, y2 = sx + BOX_W, sy + BOX_H / 2, tx, ty + BOX_H / 2
        if y1 == y2:
            path = f"M{x1:.1f},{y1:.1f} H{x2:.1f}"
        else:
            xv, r = x1 + 14, 8 if y2 > y1 else -8
            path = (f"M{x1:.1f},{y1:.1f} H{xv - 8:.1f} Q{xv:.1f},{y1:.1f} {xv:.1f},{y1 + r:.1f} "
                    f"V{y2 - r:.1f} Q{xv:.1f},{y2:.1f} {xv + 8:.1f},{y2:.1f} H{x2:.1f}")
        mx = (x1 + 20 + x2) / 2
        labels = [_text(mx, y2 - 6, clip(e.method if solid else f"{e.role} ({e.method})", chars), extra=_HALO)]
        for n, line in enumerate(wrap(e.params, chars) if solid and e.params else []):
            labels.append(_text(mx, y2 + 14 + 12 * n, line, 10, extra=_HALO))
    else:
        x1, x2, top = sx + BOX_W / 2, tx + BOX_W / 2, min(sy, ty)
        path = f"M{x1:.1f},{sy:.1f} C{x1:.1f},{top - ARC:.1f} {x2:.1f},{top - ARC:.1f} {x2:.1f},{ty:.1f}"
        text = f"{e.role} ({e.method})" if not solid else f"{e.method} ({e.params})" if e.params else e.method
        labels = [_text((x1 + x2) / 2, top - ARC * 0.75 - 2, clip(text, 48), extra=_HALO)]
    marker = "slimkit-arrow" if solid else "slimkit-arrow-teacher"
    title = f"{e.method} ({e.params}): {e.role}" if e.params else f"{e.method}: {e.role}"
    return (f'<g class="slimkit-edge slimkit-edge-{xml_text(e.role)}"><title>{xml_text(title)}</title>'
            f'<path d="{path}" {style} marker-end="url(#{marker})"/>' + "".join(labels) + "</g>")


def _box(m: "ModelEntry", x: float, y: float, metrics: Mapping[str, float], focus: bool, selected: bool) -> str:
    kind = "selected" if selected else "focus" if focus else ""
    fill = COLOURS[f"{kind}_fill"] if kind else COLOURS["box"]
    stroke = COLOURS[kind] if kind else COLOURS["edge"]
    classes = "slimkit-model" + (" slimkit-focus" if focus else "") + (" slimkit-selected" if selected else "")
    lines = box_lines(m, metrics)
    title = f"{m.name} \u2014 {m.id}" if m.name else m.id
    out = [f'<g id="{xml_text(element_id(m.id))}" class="{classes}"><title>{xml_text(title)}</title>'
           f'<rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="6" fill="{fill}" '
           f'stroke="{stroke}" stroke-width="{3 if kind else 1.2}"/>',
           _text(x + BOX_W / 2, y + 18, clip(lines[0], 24), 12, extra=' font-weight="bold"')]
    for n, line in enumerate(lines[1:]):
        out.append(_text(x + BOX_W / 2, y + 35 + 15 * n, clip(line, 28), 11, extra=f' fill="{COLOURS["muted"]}"'))
    return "".join(out) + "</g>"


def lineage_svg(models: Sequence["ModelEntry"], steps: Iterable["StepEntry"], *, focus: str | None = None,
                metrics: Mapping[str, Mapping[str, float]] | None = None, selected: str | None = None) -> str:
    """The SVG of ``models`` (lineage chain first: it fills the first row) joined by ``steps``.

    ``focus`` (the model the lineage is of) gets a blue frame, ``selected`` an orange one.
    """
    unique = list({m.id: m for m in models}.values())
    if not unique:
        return ('<svg xmlns="http://www.w3.org/2000/svg" width="240" height="40" viewBox="0 0 240 40">'
                + _text(120, 24, "no models to draw") + "</svg>\n")
    ids = [m.id for m in unique]
    edges = edges_of(steps, set(ids))
    place = layout(ids, edges)
    adjacent = [e for e in edges if place[e.target][0] - place[e.source][0] == 1]
    longest = [len(e.method) for e in adjacent] + [max(map(len, wrap(e.params, 200))) for e in adjacent if e.params]
    gap = int(min(MAX_GAP, max(MIN_GAP, max(longest + [0]) * CHAR_W + 44)))
    top = MARGIN + (ARC + 12 if len(adjacent) < len(edges) else 0)
    columns, rows = 1 + max(c for c, _ in place.values()), 1 + max(r for _, r in place.values())
    width = 2 * MARGIN + columns * BOX_W + (columns - 1) * gap
    height = top + rows * BOX_H + (rows - 1) * ROW_GAP + MARGIN

    def corner(model_id: str) -> tuple[float, float]:
        c, r = place[model_id]
        return MARGIN + c * (BOX_W + gap), top + r * (BOX_H + ROW_GAP)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" class="slimkit-lineage">', "<defs>"]
    for name, colour in (("slimkit-arrow", COLOURS["edge"]), ("slimkit-arrow-teacher", COLOURS["teacher"])):
        out.append(f'<marker id="{name}" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
                   f'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="{colour}"/>'
                   "</marker>")
    out.append("</defs>")
    chars = int((gap - 44) / CHAR_W)
    out += [_edge(e, corner(e.source), corner(e.target), e in adjacent, chars) for e in edges]
    out += [_box(m, *corner(m.id), (metrics or {}).get(m.id, {}), m.id == focus, m.id == selected) for m in unique]
    out.append("</svg>")
    return "\n".join(out) + "\n"
