"""A model's lineage as one object that notebooks display as a drawing plus a table of steps,
and as the Mermaid and Graphviz texts ``slimkit lineage --format mermaid|dot`` prints.

Why a separate object: :func:`queries.lineage` answers with bare steps (good for code and the
CLI), while a person in a notebook wants the picture. :class:`Lineage` holds the same chain plus
what the picture needs besides it (teachers from outside the chain, the models made directly
from the focus, each model's latest metrics), read once from the catalogue, so displaying it
again needs no database. The one module of :mod:`slimkit.core.present` above the catalogue.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from slimkit.core.catalogue.entities import ModelEntry, StepEntry
from slimkit.core.catalogue.queries import lineage_models
from slimkit.core.catalogue.store import Catalogue
from slimkit.core.present import html, svg
from slimkit.core.present.format import key_params


@dataclass
class Lineage:
    """``models``: base .. focus (as :func:`queries.lineage_models`); ``steps``: the chain, oldest
    first (as :func:`queries.lineage`); ``focus``: the model's id. ``related``: other models
    drawn (extra parents such as teachers off the chain, direct descendants of the focus);
    ``derived``: the steps that used the focus; ``metrics``: latest metrics per drawn model."""

    models: list[ModelEntry]
    steps: list[StepEntry]
    focus: str
    related: list[ModelEntry] = field(default_factory=list)
    derived: list[StepEntry] = field(default_factory=list)
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)

    @classmethod
    def of(cls, cat: Catalogue, ref: str, *, derived: bool = True) -> "Lineage":
        """The lineage of ``ref`` (id, id prefix or name); ``derived`` adds the focus's children
        (one more query: the steps that used it)."""
        models, steps = lineage_models(cat, ref)
        focus = models[-1].id
        known = {m.id for m in models}
        related: list[ModelEntry] = []

        def add(model_id: str | None) -> None:
            if model_id is not None and model_id not in known:
                known.add(model_id)
                related.append(cat.model(model_id))

        for step in steps:
            for parent, _role in step.parents:
                add(parent)
        children = [s for s in cat.steps_from(focus) if s.child_id not in (None, focus)] if derived else []
        for step in children:
            add(step.child_id)
        metrics = {m.id: cat.metrics(m.id) for m in [*models, *related]}
        return cls(models, steps, focus, related, children, metrics)

    @property
    def model(self) -> ModelEntry:
        """The focus model."""
        return next(m for m in self.models if m.id == self.focus)

    @property
    def base(self) -> ModelEntry:
        return self.models[0]

    def svg(self, selected: str | None = None) -> str:
        """The drawing (:func:`svg.lineage_svg`); ``selected`` (a model id) gets the orange frame."""
        return svg.lineage_svg([*self.models, *self.related], [*self.steps, *self.derived], focus=self.focus,
                               metrics=self.metrics, selected=selected)

    def to_dict(self) -> dict[str, Any]:
        return {"focus": self.focus, "models": [m.to_dict() for m in self.models],
                "steps": [s.to_dict() for s in self.steps], "related": [m.to_dict() for m in self.related],
                "derived": [s.to_dict() for s in self.derived], "metrics": self.metrics}

    def _repr_html_(self) -> str:
        return html.lineage_html(self, self.svg())

    def _repr_svg_(self) -> str:
        return self.svg()

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        drawing = self.svg()
        return {"text/html": html.lineage_html(self, drawing), "image/svg+xml": drawing,
                "application/json": self.to_dict()}


# -- text drawings ------------------------------------------------------------------------------
def _graph(view: Lineage) -> tuple[list[ModelEntry], list[tuple[str, str, str, bool]]]:
    """Nodes (the chain, then extra parents such as teachers) and edges ``(from id, to id, label,
    is_step)`` of a lineage (read with ``derived=False``: its children are not drawn)."""
    known = {m.id: m for m in [*view.models, *view.related]}
    nodes = {m.id: m for m in view.models}
    edges: list[tuple[str, str, str, bool]] = []
    for step in view.steps:
        if step.input_id is None or step.child_id is None:
            continue
        params = key_params(step)
        edges.append((step.input_id, step.child_id, step.method + (f" ({params})" if params else ""), True))
        for parent, role in step.parents:
            if role != "input":
                nodes.setdefault(parent, known[parent])
                edges.append((parent, step.child_id, role, False))
    return list(nodes.values()), edges


def lineage_mermaid(cat: Catalogue, model_id: str) -> str:
    """A Mermaid ``graph TD``: one node per model, one solid edge per step (dotted for teachers)."""
    nodes, edges = _graph(Lineage.of(cat, model_id, derived=False))
    names = {m.id: f"m{i}" for i, m in enumerate(nodes)}

    def quote(text: str) -> str:
        return '"' + text.replace('"', "#quot;").replace("|", "#124;").replace("\n", " ") + '"'

    lines = ["graph TD"] + [f"    {names[m.id]}[{quote(m.label)}]" for m in nodes]
    for source, target, label, is_step in edges:
        arrow = "-->" if is_step else "-.->"
        lines.append(f"    {names[source]} {arrow}|{quote(label)}| {names[target]}")
    return "\n".join(lines) + "\n"


def lineage_dot(cat: Catalogue, model_id: str) -> str:
    """A Graphviz ``digraph``: one box per model, one edge per step (dashed for teachers)."""
    nodes, edges = _graph(Lineage.of(cat, model_id, derived=False))
    names = {m.id: f"m{i}" for i, m in enumerate(nodes)}

    def quote(text: str) -> str:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'

    lines = ["digraph lineage {", "    rankdir=TB;", "    node [shape=box];"]
    lines += [f"    {names[m.id]} [label={quote(m.label)}, tooltip={quote(m.id)}];" for m in nodes]
    for source, target, label, is_step in edges:
        style = "" if is_step else ", style=dashed"
        lines.append(f"    {names[source]} -> {names[target]} [label={quote(label)}{style}];")
    return "\n".join(lines + ["}"]) + "\n"
