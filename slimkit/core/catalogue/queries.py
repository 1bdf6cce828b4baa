"""Questions asked of a catalogue: lineage, descendants, metric filters, diffs, Pareto fronts.

Pure functions over a :class:`~slimkit.core.catalogue.Catalogue`; nothing here writes (and nothing
here draws: pictures and text renderings of the answers are in :mod:`slimkit.core.present`). Models
may be given as a full id, a unique id prefix or a name. Lineage is a graph that can hold
self-loops (a step that changed nothing, such as pruning at sparsity 0, has child == parent) and
models reached along several paths; every walk here visits a model at most once.
"""

from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from slimkit.core.catalogue.entities import ModelEntry, StepEntry
from slimkit.core.catalogue.migrate import CatalogueError
from slimkit.core.catalogue.store import Catalogue
from slimkit.core.present.html import node_html

COLUMNS = {"params": "params", "size": "size_bytes"}  # model columns usable as metric keys
_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le, ">=": operator.ge, "!=": lambda a, b: not math.isclose(a, b, rel_tol=1e-9),
    "==": lambda a, b: math.isclose(a, b, rel_tol=1e-9), "=": lambda a, b: math.isclose(a, b, rel_tol=1e-9),
    "<": operator.lt, ">": operator.gt,
}
_CONDITION = re.compile(r"^\s*([A-Za-z_][\w.\-]*)\s*(<=|>=|!=|==|=|<|>)\s*(\S.*?)\s*$")


def _model(cat: Catalogue, reference: str) -> ModelEntry:
    return cat.resolve(reference)


# -- lineage ---------------------------------------------------------------------------------
def lineage(cat: Catalogue, model_id: str) -> list[StepEntry]:
    """The steps from the base model to ``model_id``, oldest first (``[]`` for a base model).

    Each model is followed back through its earliest producing step whose ``input`` parent has
    not been visited yet, so steps that changed nothing (child == parent) and longer cycles are
    skipped instead of followed forever.
    """
    current = _model(cat, model_id).id
    seen = {current}
    chain: list[StepEntry] = []
    while True:
        step = next((s for s in cat.steps_into(current) if s.input_id is not None and s.input_id not in seen), None)
        if step is None or step.input_id is None:
            break
        chain.append(step)
        current = step.input_id
        seen.add(current)
    chain.reverse()
    return chain


def lineage_models(cat: Catalogue, model_id: str) -> tuple[list[ModelEntry], list[StepEntry]]:
    """``(models, steps)`` of a lineage: the base first, then each step's child, and the steps."""
    target = _model(cat, model_id)
    steps = lineage(cat, target.id)
    ids = [steps[0].input_id] if steps else [target.id]
    ids += [step.child_id for step in steps]
    return [cat.model(i) for i in ids if i is not None], steps


def lineage_json(cat: Catalogue, model_id: str) -> dict[str, Any]:
    """The lineage as JSON-able data: the model, its base, the chain's models and every step."""
    models, steps = lineage_models(cat, model_id)
    return {
        "model": models[-1].to_dict(), "base": models[0].to_dict(),
        "models": [m.to_dict() for m in models], "steps": [s.to_dict() for s in steps],
    }


# -- descendants -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Node:
    """A model in a descendants tree, the step that led to it (``None`` at the root) and what
    was derived from it. A model reachable along several paths appears once, under the first."""

    model: ModelEntry
    step: StepEntry | None = None
    children: tuple["Node", ...] = field(default_factory=tuple)

    def walk(self) -> Iterator["Node"]:
        """This node and every node below it, depth first."""
        yield self
        for child in self.children:
            yield from child.walk()

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.to_dict(),
            "step": None if self.step is None else {
                "id": self.step.id, "method": self.step.method, "config": self.step.config.get("data"),
                "seed": self.step.seed, "parents": [{"model_id": m, "role": r} for m, r in self.step.parents],
            },
            "children": [child.to_dict() for child in self.children],
        }

    def _repr_html_(self) -> str:  # notebooks: the tree as nested lists (a leaf renderer: see present)
        return node_html(self)

    def _repr_json_(self) -> dict[str, Any]:
        return self.to_dict()


def descendants(cat: Catalogue, model_id: str) -> Node:
    """The tree of models derived from ``model_id`` (through any parent role), cycle-safe."""
    root = _model(cat, model_id)
    seen = {root.id}

    def grow(model: ModelEntry, step: StepEntry | None) -> Node:
        children = []
        for child_step in cat.steps_from(model.id):
            child = child_step.child_id
            if child is None or child in seen:
                continue
            seen.add(child)
            children.append((cat.model(child), child_step))
        return Node(model, step, tuple(grow(m, s) for m, s in children))

    return grow(root, None)


# -- metrics ---------------------------------------------------------------------------------
def metric_keys(cat: Catalogue, models: list[ModelEntry] | None = None) -> set[str]:
    """Every ``evaluator.metric`` recorded for ``models`` (default: all models)."""
    return {e.key for m in (models if models is not None else cat.models()) for e in cat.evaluations(m.id)}


def resolve_key(name: str, keys: set[str]) -> str:
    """``name`` as a metric key: ``params`` and ``size`` (model columns), a full
    ``evaluator.metric``, or a bare metric name that only one evaluator records."""
    if name in COLUMNS or name in keys:
        return name
    matches = sorted(k for k in keys if k.endswith("." + name)) if "." not in name else []
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise CatalogueError(f"metric {name!r} is ambiguous: it matches {', '.join(matches)}")
    known = ", ".join(sorted(keys)) if keys else "no metrics recorded yet"
    raise CatalogueError(f"unknown metric {name!r}; the catalogue has {known} (and the model columns params, size)")


def value_of(cat: Catalogue, model: ModelEntry, key: str, metrics: dict[str, float] | None = None) -> float | None:
    """A model's value for a resolved key: a model column or its latest metric."""
    if key in COLUMNS:
        value = getattr(model, COLUMNS[key])
        return None if value is None else float(value)
    return (metrics if metrics is not None else cat.metrics(model.id)).get(key)


@dataclass(frozen=True)
class Condition:
    """``key op value``, parsed from text such as ``perplexity.perplexity<30``."""

    key: str
    op: str
    value: float

    def test(self, actual: float | None) -> bool:
        return actual is not None and not math.isnan(actual) and _OPERATORS[self.op](actual, self.value)


def parse_condition(text: str, keys: set[str]) -> Condition:
    """Parse ``METRIC OP NUMBER`` (OP one of < <= > >= = !=) against the known metric keys."""
    match = _CONDITION.match(text)
    if not match:
        raise CatalogueError(f"cannot read the condition {text!r}: write METRIC OP NUMBER, e.g. sparsity>0.4 "
                             "(OP one of < <= > >= = !=)")
    name, op, raw = match.groups()
    try:
        number = float(raw)
    except ValueError:
        raise CatalogueError(f"the condition {text!r} compares with {raw!r}, which is not a number") from None
    return Condition(resolve_key(name, keys), op, number)


def filter_models(
    cat: Catalogue, method: str | None = None, architecture: str | None = None, where: list[str] | tuple[str, ...] = (),
) -> list[ModelEntry]:
    """Models made by ``method``, of ``architecture``, meeting every ``where`` condition (a model
    without the metric does not meet it). Unknown or ambiguous metrics raise CatalogueError."""
    models = cat.models(method=method, architecture=architecture)
    if not where:
        return models
    conditions = [parse_condition(text, metric_keys(cat)) for text in where]
    kept = []
    for model in models:
        metrics = cat.metrics(model.id)
        if all(c.test(value_of(cat, model, c.key, metrics)) for c in conditions):
            kept.append(model)
    return kept


# -- diff ------------------------------------------------------------------------------------
def _step_summary(step: StepEntry | None) -> dict[str, Any] | None:
    if step is None:
        return None
    return {"id": step.id, "method": step.method, "config": step.config.get("data", step.config),
            "seed": step.seed, "calibration_fingerprint": step.calibration_fingerprint,
            "parent_id": step.input_id, "child_id": step.child_id}


def diff(cat: Catalogue, a: str, b: str) -> dict[str, Any]:
    """Two models side by side: lineage steps by position from the base (``same`` when it is
    the very same step) and metrics with ``change`` = b - a and ``ratio`` = b / a, taken from
    evaluations with the same settings where both have them (``same_settings``)."""
    first, second = _model(cat, a), _model(cat, b)
    steps_a, steps_b = lineage(cat, first.id), lineage(cat, second.id)
    base_a = steps_a[0].input_id if steps_a else first.id
    base_b = steps_b[0].input_id if steps_b else second.id
    rows = []
    for index in range(max(len(steps_a), len(steps_b))):
        sa = steps_a[index] if index < len(steps_a) else None
        sb = steps_b[index] if index < len(steps_b) else None
        rows.append({"index": index + 1, "a": _step_summary(sa), "b": _step_summary(sb),
                     "same": sa is not None and sb is not None and sa.id == sb.id})
    metrics_a, metrics_b = cat.metrics(first.id), cat.metrics(second.id)
    paired = cat.paired_metrics(first.id, second.id)
    metrics = []
    for key in sorted(set(metrics_a) | set(metrics_b)):
        va, vb = metrics_a.get(key), metrics_b.get(key)
        comparable = None
        if key in paired:
            va, vb, comparable = paired[key]
        change = ratio = None
        if va is not None and vb is not None:
            change, ratio = vb - va, (vb / va if va else None)
        metrics.append({"metric": key, "a": va, "b": vb, "change": change, "ratio": ratio,
                        "same_settings": comparable})
    return {"a": first.to_dict(), "b": second.to_dict(), "same_base": base_a == base_b,
            "base_a": base_a, "base_b": base_b, "steps": rows, "metrics": metrics}


# -- pareto ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ParetoPoint:
    """A model with its two values."""

    model: ModelEntry
    x: float
    y: float

    def to_dict(self) -> dict[str, Any]:
        return {"model_id": self.model.id, "name": self.model.name, "x": self.x, "y": self.y}


def pareto_front(points: list[ParetoPoint], minimize_x: bool = True, minimize_y: bool = True) -> list[ParetoPoint]:
    """The points no other point dominates (no worse in both values and better in one); equal
    points are all kept. Sorted by x (then y, then id)."""
    sx, sy = (1.0 if minimize_x else -1.0), (1.0 if minimize_y else -1.0)
    ordered = sorted(points, key=lambda p: (sx * p.x, sy * p.y, p.model.id))
    front: list[ParetoPoint] = []
    best_before = math.inf  # best (normalised) y among points with a strictly better x
    index = 0
    while index < len(ordered):
        group_end = index
        while group_end < len(ordered) and ordered[group_end].x == ordered[index].x:
            group_end += 1
        group = ordered[index:group_end]
        group_best = sy * group[0].y
        front += [p for p in group if sy * p.y == group_best and group_best < best_before]
        best_before = min(best_before, group_best)
        index = group_end
    return sorted(front, key=lambda p: (p.x, p.y, p.model.id))


def pareto(
    cat: Catalogue, x: str, y: str, minimize_x: bool = True, minimize_y: bool = True,
) -> tuple[list[ParetoPoint], list[ParetoPoint]]:
    """``(front, points)`` of every model having both values (NaN counts as missing); ``x`` and
    ``y`` are metric keys, bare metric names, or the model columns ``params`` and ``size``."""
    models = cat.models()
    keys = metric_keys(cat, models)
    kx, ky = resolve_key(x, keys), resolve_key(y, keys)
    points = []
    for model in models:
        metrics = cat.metrics(model.id)
        vx, vy = value_of(cat, model, kx, metrics), value_of(cat, model, ky, metrics)
        if vx is not None and vy is not None and not (math.isnan(vx) or math.isnan(vy)):
            points.append(ParetoPoint(model, vx, vy))
    points.sort(key=lambda p: (p.x, p.y, p.model.id))
    return pareto_front(points, minimize_x, minimize_y), points
