"""What a search wants: objectives to minimise or maximise, and constraints a result must meet.

A metric is a model column (``size``: bytes on disk, ``params``) or ``EVALUATOR.METRIC`` of an
evaluator the file runs (a bare metric name when one evaluator declares it). Constraints read
``METRIC OP NUMBER``, ``METRIC OP FACTOR x base`` (relative to the input model's value) or
``stepN.FIELD OP NUMBER`` (on the space itself: checked before any work).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

from slimkit.core.catalogue.queries import Condition
from slimkit.core.search.spec import SearchError, SearchSpec

if TYPE_CHECKING:  # pragma: no cover
    from slimkit.core.host import Host
    from slimkit.core.search.space import Point, Space

COLUMNS = ("size", "params")
_LIMIT = re.compile(r"^\s*([A-Za-z_][\w.\-]*)\s*(<=|>=|==|!=|<|>|=)\s*([-+0-9.eE]+)\s*(?:(x|\*)\s*base)?\s*$")
_GOAL = re.compile(r"^\s*(minimi[sz]e|maximi[sz]e|min|max)\s+(\S+)\s*$")


@dataclass(frozen=True)
class Objective:
    key: str  # a model column or EVALUATOR.METRIC
    minimize: bool

    def __str__(self) -> str:
        return f"{'minimize' if self.minimize else 'maximize'} {self.key}"


@dataclass(frozen=True)
class Constraint:
    text: str
    key: str  # a metric key, or a dimension name (on_space)
    op: str
    number: float
    relative: bool  # NUMBER x the input model's value
    on_space: bool

    def bound(self, base: Mapping[str, float]) -> float | None:
        if not self.relative:
            return self.number
        value = base.get(self.key)
        return None if value is None or math.isnan(value) else self.number * value

    def holds(self, value: Any, base: Mapping[str, float]) -> bool:
        bound = self.bound(base)
        if bound is None or value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        return Condition(self.key, self.op, bound).test(float(value))

    def violation(self, value: float | None, base: Mapping[str, float]) -> float:
        """How far ``value`` is from meeting the constraint (<= 0: met), as Optuna's constrained
        samplers take it; a missing value counts as far off."""
        bound = self.bound(base)
        if value is None or bound is None or math.isnan(value):
            return 1e30
        if self.holds(value, base):
            return 0.0
        return abs(value - bound) / max(abs(bound), 1e-12) + 1e-9


@dataclass(frozen=True)
class Goals:
    objectives: tuple[Objective, ...]
    constraints: tuple[Constraint, ...]

    @property
    def metric_constraints(self) -> tuple[Constraint, ...]:
        return tuple(c for c in self.constraints if not c.on_space)

    @property
    def keys(self) -> list[str]:
        """Every metric the goals need, objectives first."""
        out: list[str] = []
        for key in [o.key for o in self.objectives] + [c.key for c in self.metric_constraints]:
            if key not in out:
                out.append(key)
        return out

    def feasible(self, values: Mapping[str, float], base: Mapping[str, float]) -> bool:
        return all(c.holds(values.get(c.key), base) for c in self.metric_constraints)

    def violations(self, values: Mapping[str, float], base: Mapping[str, float]) -> list[float]:
        return [c.violation(values.get(c.key), base) for c in self.metric_constraints]

    def space_allows(self, point: "Point") -> Constraint | None:
        """The first constraint on the space that ``point`` breaks (an absent step breaks none)."""
        for constraint in self.constraints:
            if constraint.on_space and constraint.key in point \
                    and not constraint.holds(point[constraint.key], {}):
                return constraint
        return None


def declared_metrics(spec: SearchSpec, host: "Host") -> dict[str, tuple[str, ...]]:
    """Each evaluator of the file -> the metrics it declares (empty: it declares none)."""
    return {e.metric: tuple(getattr(host.evaluators.get(e.metric).cls, "metrics", ()) or ())
            for e in spec.evaluate}


def metric_key(name: str, declared: Mapping[str, tuple[str, ...]]) -> str:
    """``name`` as a metric key, or :class:`ValueError` saying what the evaluators produce."""
    if name in COLUMNS:
        return name
    evaluator, dot, metric = name.partition(".")
    if dot:
        if evaluator in declared and (not declared[evaluator] or metric in declared[evaluator]):
            return name
    else:
        matches = [f"{e}.{name}" for e, names in declared.items() if name in names]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise ValueError(f"the metric {name!r} is ambiguous: {', '.join(matches)}")
    produced = "; ".join(f"{e}: {', '.join(m) if m else 'undeclared metrics'}" for e, m in declared.items())
    raise ValueError(f"no evaluator of this file produces the metric {name!r} (the model columns are size, params"
                     + (f"; {produced})" if produced else "; add an 'evaluate:' section)"))


def build_goals(spec: SearchSpec, host: "Host", space: "Space") -> Goals:
    """The file's objectives and constraints, each metric checked against what its evaluators
    declare. Raises :class:`SearchError` listing every problem."""
    problems: list[str] = []
    declared = declared_metrics(spec, host)
    objectives = []
    for entry in spec.objectives:
        text = entry if isinstance(entry, str) else " ".join(f"{k} {v}" for k, v in entry.items())
        match = _GOAL.match(text)
        if not match:
            problems.append(f"objective {text!r}: write 'minimize METRIC' or 'maximize METRIC'")
            continue
        try:
            objectives.append(Objective(metric_key(match.group(2), declared), match.group(1).startswith("min")))
        except ValueError as error:
            problems.append(f"objective {text!r}: {error}")
    constraints = []
    names = {d.name for d in space.dimensions()}
    for text in spec.constraints:
        match = _LIMIT.match(text)
        if not match:
            problems.append(f"constraint {text!r}: write METRIC OP NUMBER, METRIC OP FACTOR x base, or "
                            "stepN.FIELD OP NUMBER (OP one of < <= > >= = !=)")
            continue
        name, op, raw, relative = match.groups()
        try:
            number = float(raw)
        except ValueError:
            problems.append(f"constraint {text!r}: {raw!r} is not a number")
            continue
        if name in names:
            if relative:
                problems.append(f"constraint {text!r}: 'x base' applies to metrics, not to {name}, a parameter")
            constraints.append(Constraint(text, name, op, number, False, True))
            continue
        try:
            key = metric_key(name, declared)
        except ValueError as error:
            known = f" (parameters: {', '.join(sorted(names))})" if re.match(r"step\d+\.", name) and names else ""
            problems.append(f"constraint {text!r}: {error}{known}")
            continue
        if op in {"=", "==", "!="}:
            problems.append(f"constraint {text!r}: a metric is bounded with < <= > >=, not {op}")
            continue
        constraints.append(Constraint(text, key, op, number, bool(relative), False))
    for evaluator in spec.proxy:
        if evaluator not in declared:
            problems.append(f"proxy {evaluator!r}: not an evaluator of this file's 'evaluate:' section")
    if problems:
        raise SearchError(problems)
    return Goals(tuple(objectives), tuple(constraints))
