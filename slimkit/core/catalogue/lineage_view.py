"""A model's lineage as one object that notebooks display as a drawing plus a table of steps.

Why a separate object: :func:`queries.lineage` answers with bare steps (good for code and the
CLI), while a person in a notebook wants the picture. :class:`Lineage` holds the same chain plus
what the picture needs besides it (teachers from outside the chain, the models made directly
from the focus, each model's latest metrics), read once from the catalogue, so displaying it
again needs no database.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from slimkit.core.catalogue import html, svg
from slimkit.core.catalogue.entities import ModelEntry, StepEntry
from slimkit.core.catalogue.queries import lineage_models
from slimkit.core.catalogue.store import Catalogue


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
