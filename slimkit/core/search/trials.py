"""Trials and their front: what a sweep or search tried, what it measured, and what is best."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from slimkit.core.contracts import ProgressEvent
from slimkit.core.search.goals import Goals

#: how a trial ended: run now, taken from the catalogue, failed, or not run (refused by the space)
STATUSES = ("queued", "running", "done", "catalogue", "failed", "invalid")


def point_key(point: Mapping[str, Any]) -> str:
    """A point as text that equal points share (numbers rounded to 9 significant digits)."""
    def norm(value: Any) -> Any:
        if isinstance(value, float):
            return float(f"{value:.9g}")
        return value

    return json.dumps({k: norm(v) for k, v in point.items()}, sort_keys=True, default=str)


@dataclass
class Trial:
    """One recipe of the space, and what became of it."""

    number: int
    point: dict[str, Any]
    label: str
    status: str = "queued"
    model_id: str | None = None
    location: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)  # what the goals were judged on
    full_metrics: dict[str, float] = field(default_factory=dict)  # the full evaluation (front only, with a proxy)
    steps_run: int = 0
    steps_reused: int = 0
    evaluations_run: int = 0
    evaluations_reused: int = 0
    seconds: float = 0.0
    error: str | None = None
    feasible: bool | None = None
    retried: bool = False

    @property
    def finished(self) -> bool:
        return self.status in {"done", "catalogue"}

    def values(self) -> dict[str, float]:
        """The metrics to judge the trial on: the full evaluation when it has one."""
        return {**self.metrics, **self.full_metrics}

    def to_dict(self) -> dict[str, Any]:
        return {"number": self.number, "point": self.point, "recipe": self.label, "status": self.status,
                "model_id": self.model_id, "location": self.location, "metrics": self.metrics,
                "full_metrics": self.full_metrics, "feasible": self.feasible, "steps_run": self.steps_run,
                "steps_reused": self.steps_reused, "evaluations_run": self.evaluations_run,
                "evaluations_reused": self.evaluations_reused, "seconds": round(self.seconds, 3),
                "error": self.error, "retried": self.retried}


def nondominated(rows: Sequence[Sequence[float]]) -> list[int]:
    """Indices of the rows no other row dominates (all minimised: no worse everywhere, better
    somewhere); equal rows are all kept."""
    out = []
    for i, a in enumerate(rows):
        dominated = any(all(y <= x for x, y in zip(a, b)) and any(y < x for x, y in zip(a, b))
                        for j, b in enumerate(rows) if j != i)
        if not dominated:
            out.append(i)
    return out


def objective_row(goals: Goals, values: Mapping[str, float]) -> tuple[float, ...] | None:
    """The trial's objectives as values to minimise (``None`` when one is missing)."""
    row = []
    for objective in goals.objectives:
        value = values.get(objective.key)
        if value is None or math.isnan(value):
            return None
        row.append(value if objective.minimize else -value)
    return tuple(row)


def front(goals: Goals, trials: Sequence[Trial], base: Mapping[str, float], *, full: bool = False) -> list[Trial]:
    """The feasible finished trials no other dominates, judged on their full evaluation when
    ``full`` (trials without one are left out) and otherwise on what every trial has."""
    candidates: list[tuple[Trial, tuple[float, ...]]] = []
    for trial in trials:
        if not trial.finished or (full and not trial.full_metrics):
            continue
        values = trial.values() if full else trial.metrics
        row = objective_row(goals, values)
        if row is not None and goals.feasible(values, base):
            candidates.append((trial, row))
    if not goals.objectives:
        return []
    return sorted((candidates[i][0] for i in nondominated([row for _, row in candidates])),
                  key=lambda t: objective_row(goals, t.values() if full else t.metrics) or ())


@dataclass(frozen=True)
class SearchEvent:
    """What a sweep or search reports as it goes: ``note``, ``base`` (the input model's metrics in
    ``values``, as trials are judged), ``catalogue`` (a trial taken from the catalogue), ``start``,
    ``done``, ``failed``, ``retry``, ``full`` (a trial's full evaluation), ``progress`` (``event`` of
    a trial's task)."""

    kind: str
    trial: "Trial | None" = None
    message: str = ""
    event: ProgressEvent | None = None
    values: dict[str, float] = field(default_factory=dict)
