"""The space of a sweep or search: its dimensions, its points, and the recipe of each point.

A point maps dimension names to values: ``order`` (when every order of the steps is tried),
``stepN.present`` (an optional step), ``stepN.method`` (a choice of methods) and ``stepN.FIELD``
(a choice or range of a config field). A step's dimensions exist only while the step is present, so
the grid holds no duplicates and Optuna sees a conditional (define-by-run) space.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass, field as dataclass_field
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping

from pydantic import TypeAdapter, ValidationError

from slimkit.core.errors import UnknownMethodError
from slimkit.core.recipe import Recipe, StepSpec
from slimkit.core.search.spec import SearchError, SearchSpec, StepSpace

if TYPE_CHECKING:  # pragma: no cover
    from slimkit.core.host import Host

Point = dict[str, Any]


@dataclass(frozen=True)
class Dimension:
    """One axis: a choice among values, or an integer or real range."""

    name: str
    kind: str  # "choice", "int" or "float"
    choices: tuple[Any, ...] = ()
    low: float = 0.0
    high: float = 0.0
    step: float | None = None
    log: bool = False

    def grid(self) -> list[Any]:
        """Every value a sweep tries (a range needs a step)."""
        if self.kind == "choice":
            return list(self.choices)
        if self.step is None:
            raise SearchError([f"{self.name}: a sweep needs a 'step' for the range [{self.low}, {self.high}] "
                               "(or list the values)"])
        count = int(math.floor((self.high - self.low) / self.step + 1e-9)) + 1
        values = [self.low + i * self.step for i in range(count)]
        return [int(round(v)) for v in values] if self.kind == "int" else [round(v, 12) for v in values]

    def ends(self) -> list[Any]:
        """Values that stand for the dimension when checking what is valid (each choice, or both ends)."""
        return list(self.choices) if self.kind == "choice" else \
            ([int(self.low), int(self.high)] if self.kind == "int" else [self.low, self.high])

    def contains(self, value: Any) -> bool:
        if self.kind == "choice":
            return any(_same(value, choice) for choice in self.choices)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.kind == "int" and float(value) != int(value):
            return False
        if not self.low - 1e-12 <= value <= self.high + 1e-12:
            return False
        if self.step is None:
            return True
        offset = (value - self.low) / self.step
        return abs(offset - round(offset)) < 1e-6

    # -- Optuna (imported by the caller) ----------------------------------------------------------
    def suggest(self, trial: Any) -> Any:
        if self.kind == "choice":
            return _decode(trial.suggest_categorical(self.name, [_encode(c) for c in self.choices]))
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        value = trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)
        return round(value, 12) if self.step is not None else value  # (0.3, not 0.30000000000000004)

    def distribution(self) -> Any:
        import optuna

        if self.kind == "choice":
            return optuna.distributions.CategoricalDistribution([_encode(c) for c in self.choices])
        if self.kind == "int":
            return optuna.distributions.IntDistribution(int(self.low), int(self.high), step=int(self.step or 1),
                                                        log=self.log)
        return optuna.distributions.FloatDistribution(self.low, self.high, step=self.step, log=self.log)

    def optuna_value(self, value: Any) -> Any:
        return _encode(value) if self.kind == "choice" else value

    def describe(self) -> str:
        if self.kind == "choice":
            return ", ".join(_text(c) for c in self.choices)
        return f"{_text(self.low)}..{_text(self.high)}" + (f" by {_text(self.step)}" if self.step else "")


def _encode(value: Any) -> Any:
    """Optuna's categorical choices are None, bools, numbers and strings; others go as JSON."""
    return value if value is None or isinstance(value, (bool, int, float, str)) else "json:" + json.dumps(value)


def _decode(value: Any) -> Any:
    return json.loads(value[5:]) if isinstance(value, str) and value.startswith("json:") else value


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool) \
            and not isinstance(b, bool):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def _text(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


@dataclass(frozen=True)
class StepAxes:
    """One step of the space: its fixed params and its dimensions."""

    number: int  # 1-based, as in the file
    methods: tuple[str, ...]
    fixed: dict[str, Any]
    fields: dict[str, Dimension]  # config field -> dimension
    optional: bool
    seed: int | None
    #: each method's config fields: a param applies to the methods that have it (a Wanda scorer
    #: for prune.unstructured, not for prune.sparsegpt, in one step choosing between them)
    accepts: dict[str, frozenset[str]] = dataclass_field(default_factory=dict)

    def dimensions_of(self, method: str) -> dict[str, Dimension]:
        """The dimensions that apply to ``method`` (by config field)."""
        known = self.accepts.get(method)
        return {f: d for f, d in self.fields.items() if known is None or f in known}

    def params_of(self, method: str, point: Mapping[str, Any]) -> dict[str, Any]:
        """``method``'s params at ``point``: the fixed ones and the chosen values it takes."""
        known = self.accepts.get(method)
        fixed = {f: v for f, v in self.fixed.items() if known is None or f in known}
        return {**fixed, **{f: point[d.name] for f, d in self.dimensions_of(method).items()}}

    @property
    def present(self) -> str:
        return f"step{self.number}.present"

    @property
    def method(self) -> str:
        return f"step{self.number}.method"


@dataclass(frozen=True)
class Space:
    """The dimensions of a sweep or search, and how a point becomes a recipe."""

    spec: SearchSpec
    steps: tuple[StepAxes, ...]
    orders: tuple[tuple[int, ...], ...]  # step numbers in each order tried

    # -- the dimensions a point may hold --------------------------------------------------------
    @property
    def order_dimension(self) -> Dimension | None:
        if len(self.orders) < 2:
            return None
        return Dimension("order", "choice", tuple(_order_label(o) for o in self.orders))

    def dimensions(self) -> list[Dimension]:
        """Every dimension, in the order points are drawn."""
        out = [d for d in [self.order_dimension] if d is not None]
        for step in self.steps:
            if step.optional:
                out.append(Dimension(step.present, "choice", (True, False)))
            if len(step.methods) > 1:
                out.append(Dimension(step.method, "choice", step.methods))
            out.extend(step.fields.values())
        return out

    def dimension(self, name: str) -> Dimension | None:
        return next((d for d in self.dimensions() if d.name == name), None)

    # -- points ----------------------------------------------------------------------------------
    def grid(self) -> Iterator[Point]:
        """Every point of a sweep, once (an absent step's values are not multiplied in)."""
        return self._points(Dimension.grid)

    def corners(self) -> Iterator[Point]:
        """Points that stand for the whole space when checking validity: every structure (order,
        present steps, method) with each choice and both ends of each range."""
        return self._points(Dimension.ends)

    def _points(self, values: Callable[[Dimension], list[Any]]) -> Iterator[Point]:
        order_dim = self.order_dimension
        for order in (order_dim.grid() if order_dim else [None]):
            base: Point = {} if order is None else {"order": order}
            per_step = [list(self._step_points(step, values)) for step in self.steps]
            for parts in itertools.product(*per_step):
                point = dict(base)
                for part in parts:
                    point.update(part)
                yield point

    def _step_points(self, step: StepAxes, values: Callable[[Dimension], list[Any]]) -> Iterator[Point]:
        if step.optional:
            yield {step.present: False}
        head: Point = {step.present: True} if step.optional else {}
        for method in step.methods:
            dims = list(step.dimensions_of(method).values())
            for chosen in itertools.product(*(values(d) for d in dims)):
                point = dict(head)
                if len(step.methods) > 1:
                    point[step.method] = method
                point.update({d.name: v for d, v in zip(dims, chosen)})
                yield point

    def suggest(self, trial: Any) -> Point:
        """A point drawn by an Optuna trial (define-by-run: an absent step draws nothing more)."""
        point: Point = {}
        order_dim = self.order_dimension
        if order_dim is not None:
            point["order"] = order_dim.suggest(trial)
        for step in self.steps:
            if step.optional:
                point[step.present] = trial.suggest_categorical(step.present, [True, False])
                if not point[step.present]:
                    continue
            method = step.methods[0]
            if len(step.methods) > 1:
                method = point[step.method] = trial.suggest_categorical(step.method, list(step.methods))
            for dim in step.dimensions_of(method).values():
                point[dim.name] = dim.suggest(trial)
        return point

    # -- recipes ---------------------------------------------------------------------------------
    def active(self, point: Mapping[str, Any]) -> list[StepAxes]:
        """The steps of ``point``, in its order."""
        order = self.orders[0] if "order" not in point else _parse_order(point["order"])
        by_number = {s.number: s for s in self.steps}
        return [by_number[n] for n in order if point.get(by_number[n].present, True)]

    def recipe(self, point: Mapping[str, Any], name: str | None = None) -> Recipe:
        """The recipe of ``point`` (without evaluations: a trial evaluates its result itself)."""
        spec = self.spec
        steps = []
        for step in self.active(point):
            method = point.get(step.method, step.methods[0])
            steps.append(StepSpec(method=method, params=step.params_of(method, point), seed=step.seed))
        if not steps:
            raise SearchError(["a point of the space has no step (every step is optional and absent)"])
        return Recipe(name=name or spec.name, seed=spec.seed, calibration=spec.calibration, steps=steps,
                      runtime=spec.runtime, base_dir=spec.base_dir)

    def label(self, point: Mapping[str, Any]) -> str:
        """The point in a few words: each present step's method and chosen values."""
        parts = []
        for step in self.active(point):
            method = point.get(step.method, step.methods[0])
            chosen = [f"{field}={_text(point[dim.name])}" for field, dim in step.dimensions_of(method).items()]
            parts.append(method + (f"({', '.join(chosen)})" if chosen else ""))
        return " -> ".join(parts)

    def structures(self) -> list[list[tuple[StepAxes, str]]]:
        """Every chain of (step, method) the space can make: to match recorded chains against."""
        out = []
        for order in self.orders:
            steps = [s for n in order for s in self.steps if s.number == n]
            for present in itertools.product(*((True, False) if s.optional else (True,) for s in steps)):
                chosen = [s for s, p in zip(steps, present) if p]
                if chosen:
                    out.extend([list(zip(chosen, methods)) for methods in itertools.product(*(s.methods for s in chosen))])
        return out

    def point_of(self, chain: list[tuple[StepAxes, str]], configs: list[Mapping[str, Any]]) -> Point | None:
        """The point whose steps are ``chain`` with these recorded config values, or ``None``
        when a value lies outside its dimension."""
        point: Point = {}
        if self.order_dimension is not None:
            numbers = [s.number for s, _ in chain]
            full = [o for o in self.orders if [n for n in o if n in numbers] == numbers]
            if not full:
                return None
            point["order"] = _order_label(full[0])
        present = {s.number for s, _ in chain}
        for step in self.steps:
            if step.optional:
                point[step.present] = step.number in present
        for (step, method), data in zip(chain, configs):
            if len(step.methods) > 1:
                point[step.method] = method
            for field, dim in step.dimensions_of(method).items():
                if field not in data or not dim.contains(data[field]):
                    return None
                point[dim.name] = data[field]
        return point


def _order_label(order: tuple[int, ...]) -> str:
    return ">".join(f"step{n}" for n in order)


def _parse_order(label: str) -> tuple[int, ...]:
    return tuple(int(part.removeprefix("step")) for part in label.split(">"))


def build_space(spec: SearchSpec, host: "Host") -> Space:
    """The space of ``spec``: each parameter read as a value, a choice or a range against the
    fields of its step's methods. Raises :class:`SearchError` listing every problem."""
    problems: list[str] = []
    steps = [_step_axes(number, step, host, problems) for number, step in enumerate(spec.steps, start=1)]
    if problems:
        raise SearchError(problems)
    numbers = tuple(range(1, len(steps) + 1))
    orders = tuple(itertools.permutations(numbers)) if spec.order == "any" else (numbers,)
    return Space(spec, tuple(s for s in steps if s is not None), orders)


def _step_axes(number: int, step: StepSpace, host: "Host", problems: list[str]) -> StepAxes | None:
    label = f"step {number}"
    fields_of: list[dict[str, Any]] = []
    for method in step.methods:
        try:
            fields_of.append(host.compressors.get(method).cls.Config.model_fields)
        except UnknownMethodError as error:
            problems.append(f"{label}: {error}")
    if len(fields_of) != len(step.methods):
        return None
    for field in step.params:
        if not any(field in f for f in fields_of):
            problems.append(f"{label}: no method of the step ({', '.join(step.methods)}) has the field {field!r}")
    fixed: dict[str, Any] = {}
    dims: dict[str, Dimension] = {}
    for field, value in step.params.items():
        name = f"step{number}.{field}"
        annotations = [f[field].annotation for f in fields_of if field in f]
        dim = _dimension(name, value, annotations, problems)
        if dim is None:
            fixed[field] = value
        else:
            dims[field] = dim
    accepts = {m: frozenset(f) for m, f in zip(step.methods, fields_of)} if len(step.methods) > 1 else {}
    return StepAxes(number, step.methods, fixed, dims, step.optional, step.seed, accepts)


def _dimension(name: str, value: Any, annotations: list[Any], problems: list[str]) -> Dimension | None:
    """``value`` as a dimension, or ``None`` when it is a plain value of the field."""
    if isinstance(value, dict) and set(value) == {"choice"}:
        choices = value["choice"]
        if not isinstance(choices, list) or not choices:
            problems.append(f"{name}: 'choice' takes a non-empty list of values")
            return None
        return Dimension(name, "choice", tuple(choices))
    if isinstance(value, dict) and "range" in value and set(value) <= {"range", "step", "log"}:
        return _range(name, value, problems)
    if isinstance(value, list) and value and not _takes(annotations, value):
        return Dimension(name, "choice", tuple(value))
    return None


def _takes(annotations: list[Any], value: Any) -> bool:
    """Whether a field of one of these types takes ``value`` as it is (a list-typed field)."""
    for annotation in annotations:
        try:
            TypeAdapter(annotation).validate_python(value)
            return True
        except (ValidationError, TypeError, ValueError):  # (a type pydantic cannot adapt: not a list field)
            continue
    return False


def _range(name: str, value: dict[str, Any], problems: list[str]) -> Dimension | None:
    bounds, step, log = value.get("range"), value.get("step"), bool(value.get("log", False))
    numeric = (int, float)
    if not (isinstance(bounds, list) and len(bounds) == 2 and all(isinstance(b, numeric) and not isinstance(b, bool)
                                                                  for b in bounds)):
        problems.append(f"{name}: 'range' takes [LOW, HIGH], two numbers")
        return None
    low, high = bounds
    if low >= high:
        problems.append(f"{name}: the range's low end {low} is not below its high end {high}")
        return None
    if step is not None and (not isinstance(step, numeric) or isinstance(step, bool) or step <= 0):
        problems.append(f"{name}: 'step' must be a positive number")
        return None
    if log and (low <= 0 or step is not None):
        problems.append(f"{name}: a log range needs a positive low end and no step")
        return None
    kind = "int" if all(isinstance(v, int) for v in (low, high)) and (step is None or isinstance(step, int)) \
        else "float"
    return Dimension(name, kind, low=low, high=high, step=step, log=log)
