"""Sweeps and searches: check everything, recall what the catalogue knows, run trials, find the front.

:func:`run_sweep` runs every point of a grid; :func:`run_search` lets an Optuna sampler choose
points under a budget of trials or time. Both first check the file (space, goals, evaluators)
and find a valid point, evaluate the input model, then load every trial the catalogue already
holds for this input and these evaluation settings (:mod:`slimkit.core.search.memory`): a second
search starts where the first stopped, and nothing recorded is computed again. With ``proxy``
evaluator params, every trial is evaluated cheaply and only the trials on the cheap front fully.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Literal

from slimkit.core.errors import SlimkitError
from slimkit.core.search.goals import Goals, build_goals
from slimkit.core.search.schedule import Evaluations, Scheduler
from slimkit.core.search.space import Point, Space, build_space
from slimkit.core.search.spec import Budget, SearchError, SearchSpec
from slimkit.core.search.trials import SearchEvent, Trial, front, point_key
from slimkit.core.search.validity import ModelCheck, valid_points, why_empty

if TYPE_CHECKING:  # pragma: no cover
    from slimkit.core.catalogue import Catalogue
    from slimkit.core.host import Host


@dataclass
class Prepared:
    """A file checked against the installed methods, before any work."""

    spec: SearchSpec
    space: Space
    goals: Goals
    evaluations: Evaluations  # the full ones
    trial_evaluations: Evaluations  # with the proxy params
    points: list[Point]  # a sweep's valid points (a search: the valid corners)
    refused: list[tuple[Point, str]]  # points a sweep cannot run, and why

    @property
    def proxied(self) -> bool:
        return self.trial_evaluations != self.evaluations


@dataclass
class SearchResult:
    kind: str
    name: str | None
    base_id: str | None = None
    base_metrics: dict[str, float] = field(default_factory=dict)  # judged as trials are (proxy)
    base_full: dict[str, float] = field(default_factory=dict)
    trials: list[Trial] = field(default_factory=list)
    front: list[Trial] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    stopped: str | None = None
    run_id: str | None = None
    seconds: float = 0.0
    steps_run: int = 0
    steps_reused: int = 0
    steps_shared: int = 0
    goals: Goals | None = None

    @property
    def counts(self) -> dict[str, int]:
        out = {status: 0 for status in ("done", "catalogue", "failed", "invalid")}
        for trial in self.trials:
            out[trial.status] = out.get(trial.status, 0) + 1
        return out

    def to_dict(self) -> dict[str, Any]:
        goals = self.goals
        return {
            "kind": self.kind, "name": self.name, "base": {"model_id": self.base_id, "metrics": self.base_metrics,
                                                          "full_metrics": self.base_full},
            "objectives": [str(o) for o in goals.objectives] if goals else [],
            "constraints": [c.text for c in goals.constraints] if goals else [],
            "trials": [t.to_dict() for t in self.trials], "front": [t.number for t in self.front],
            "counts": self.counts, "steps": {"run": self.steps_run, "reused_from_catalogue": self.steps_reused,
                                             "shared_in_this_run": self.steps_shared},
            "notes": self.notes, "stopped": self.stopped, "run_id": self.run_id, "seconds": round(self.seconds, 3),
        }


OnEvent = Callable[[SearchEvent], None]


def prepare(spec: SearchSpec, host: "Host", kind: Literal["sweep", "search"]) -> Prepared:
    """Everything checkable without a model: the space, the goals, the evaluators; and that some
    point is valid (else :class:`SearchError` names what refuses every one)."""
    space = build_space(spec, host)
    goals = build_goals(spec, host, space)
    evaluations = tuple((e.metric, dict(e.params)) for e in spec.evaluate)
    problems = []
    for name, params in evaluations:
        for label, chosen in (("evaluate", params), ("proxy", {**params, **spec.proxy.get(name, {})})):
            try:
                host.config(host.evaluators.get(name), chosen)
            except SlimkitError as error:
                problems.append(f"{label} {name}: {error}")
    if problems:
        raise SearchError(problems)
    trial_evaluations = tuple((name, {**params, **spec.proxy.get(name, {})}) for name, params in evaluations)
    if kind == "search" and not goals.objectives:
        raise SearchError(["a search needs at least one objective, e.g. objectives: [minimize perplexity]"])
    candidates = list(space.grid()) if kind == "sweep" else list(space.corners())
    points, refused = valid_points(space, goals, host, candidates)
    if not points:
        raise SearchError([why_empty(space, goals, refused)])
    return Prepared(spec, space, goals, evaluations, trial_evaluations,
                    points if kind == "sweep" else [], refused if kind == "sweep" else [])


def run_sweep(spec: SearchSpec, model: str, **kwargs: Any) -> SearchResult:
    """Run every point of ``spec``'s grid on ``model`` (see :func:`run_search` for the options)."""
    return _run(spec, model, "sweep", **kwargs)


def run_search(spec: SearchSpec, model: str, **kwargs: Any) -> SearchResult:
    """Search ``spec``'s space on ``model`` with an Optuna sampler, under ``budget``.

    :param model: a folder, ``example:NAME``, a catalogued model's name or id prefix, or a hub id.
    :param budget: new trials and/or time (default: the file's ``budget:``).
    :param executor: ``inline`` (this process), ``pool`` (``workers`` local processes) or ``ray``
        (``address``: ``auto``, HOST:PORT, or ``local`` for a cluster of ``workers`` CPUs here).
    :param catalogue: where trials are recorded and recalled (default: the default catalogue).
    :param on_event: called with each :class:`SearchEvent`.
    :param stop: polled between tasks; when it returns true, the running tasks are stopped and
        the result so far returned (``result.stopped`` says so).
    :raises SearchError: before any work, listing what is wrong with the file, space or goals.
    :raises KeyboardInterrupt: after stopping the workers; every finished trial is in the catalogue.
    """
    return _run(spec, model, "search", **kwargs)


def _run(spec: SearchSpec, model: str, kind: Literal["sweep", "search"], *, budget: Budget | None = None,
         executor: str = "inline", workers: int = 2, address: str | None = None,
         catalogue: "Catalogue | str | None" = None, host: "Host | None" = None, on_event: OnEvent | None = None,
         stop: Callable[[], bool] | None = None, sampler: str | None = None, seed: int | None = None) -> SearchResult:
    from slimkit.core.host import get_host
    from slimkit.core.recording import open_catalogue, recorded_run

    started = time.perf_counter()
    host = host or get_host()
    prepared = prepare(spec, host, kind)
    budget = budget or spec.budget
    if kind == "search":
        if budget is None or (budget.trials is None and budget.time is None):
            raise SearchError(["a search needs a budget: --budget trials=N or time=DURATION (or 'budget:' in the "
                               "file)"])
        from slimkit.core.search.study import require_optuna

        require_optuna()
    emit = on_event or (lambda event: None)
    cat = open_catalogue(catalogue)
    assert cat is not None
    from slimkit.core.model_refs import model_location

    location = model_location(model, cat)
    from slimkit.core.search.executors import make_executor

    result = SearchResult(kind, spec.name, goals=prepared.goals)
    holder: dict[str, Scheduler] = {}
    pool = make_executor(executor, workers, address, host=host,
                         on_progress=lambda key, event: holder["s"].progress(key, event) if "s" in holder else None)
    with recorded_run(cat, kind, spec.name, spec.to_yaml()) as run_id:
        result.run_id = run_id
        runtime = spec.runtime
        dtype, device = (runtime.dtype, runtime.device) if runtime else ("float32", "cpu")

        def on_trial(what: str, trial: Trial, message: str) -> None:
            if not trial.number:  # (the input model's evaluation is reported as a note)
                return
            if what == "done" and result.base_metrics:
                trial.feasible = prepared.goals.feasible(trial.metrics, result.base_metrics)
            emit(SearchEvent(what, trial, message))

        scheduler = Scheduler(pool, prepared.space, host, cat, location, (dtype, device), on_trial,
                              lambda trial, event: emit(SearchEvent("progress", trial, "", event)))
        holder["s"] = scheduler
        try:
            _explore(prepared, kind, scheduler, cat, host, result, budget, emit, stop, sampler, seed, location)
        except BaseException:
            scheduler.close()
            result.seconds = time.perf_counter() - started
            raise
        scheduler.close()
    result.steps_run, result.steps_reused = scheduler.nodes_run, scheduler.nodes_reused
    used = sum(t.steps_run + t.steps_reused for t in result.trials if t.status == "done")
    result.steps_shared = max(0, used - result.steps_run - result.steps_reused)
    result.seconds = time.perf_counter() - started
    return result


def _explore(prepared: Prepared, kind: str, scheduler: Scheduler, cat: "Catalogue", host: "Host",
             result: SearchResult, budget: Budget | None, emit: OnEvent, stop: Callable[[], bool] | None,
             sampler: str | None, seed: int | None, location: str) -> None:
    from slimkit.core.runner import calibration_record
    from slimkit.core.search.memory import recorded_points
    from slimkit.core.search.tasks import recorded_metrics

    from slimkit.core.model_io import load_model

    spec, space, goals = prepared.spec, prepared.space, prepared.goals
    dtype, device = scheduler.runtime
    check = ModelCheck(host, lambda: load_model(location, dtype=dtype, device=device))  # type: ignore[arg-type]
    candidates = prepared.points if kind == "sweep" else valid_points(space, goals, host, list(space.corners()))[0]
    fitting, refused = check.split(space, candidates)
    if not fitting:  # before any trial: say what refuses every point
        raise SearchError([why_empty(space, goals, prepared.refused + refused)])
    if kind == "sweep":
        prepared.points, prepared.refused = fitting, prepared.refused + refused
        check.release()
    base = _evaluate_base(prepared, scheduler, result, location, emit)
    if prepared.proxied:
        emit(SearchEvent("note", message=_proxy_note(prepared)))
    assert result.base_id is not None
    recorded = recorded_points(cat, host, space, result.base_id, calibration_record(space.recipe(
        prepared.points[0] if prepared.points else next(iter(space.corners())))))
    known: dict[str, Trial] = {}
    for key, entry in recorded.items():
        metrics, missing = recorded_metrics(cat, host, entry.model_id, prepared.trial_evaluations)
        if missing or any(k not in metrics for k in goals.keys):
            continue
        trial = Trial(len(result.trials) + 1, entry.point, space.label(entry.point), "catalogue", entry.model_id,
                      entry.location, metrics, steps_reused=entry.steps, evaluations_reused=len(prepared.evaluations))
        full, missing_full = recorded_metrics(cat, host, entry.model_id, prepared.evaluations)
        if prepared.proxied and not missing_full:
            trial.full_metrics = full
        trial.feasible = goals.feasible(metrics, base)
        result.trials.append(trial)
        known[key] = trial
        emit(SearchEvent("catalogue", trial))
    if known:
        emit(SearchEvent("note", message=f"the catalogue already holds {len(known)} trial(s) of this space for this "
                                         "model and these evaluation settings: taken from there"))
    stopped = (lambda: bool(stop and stop()))
    if kind == "sweep":
        _sweep(prepared, scheduler, result, known, stopped)
    else:
        from slimkit.core.search.study import search_loop

        search_loop(prepared, scheduler, result, known, base, budget, stopped, emit, sampler or spec.sampler,
                    spec.seed if seed is None else seed, check)
    if result.stopped is None and prepared.proxied and goals.objectives:
        _evaluate_front_fully(prepared, scheduler, result, stopped)
    result.front = front(goals, result.trials, result.base_full if prepared.proxied else result.base_metrics,
                         full=prepared.proxied)
    for trial in result.trials:
        values = trial.values() if prepared.proxied and trial.full_metrics else trial.metrics
        if trial.finished:
            trial.feasible = goals.feasible(values, result.base_full if trial.full_metrics and prepared.proxied
                                            else result.base_metrics)


def _evaluate_base(prepared: Prepared, scheduler: Scheduler, result: SearchResult, location: str,
                   emit: OnEvent) -> dict[str, float]:
    """The input model's metrics (recorded, or measured now): what ``x base`` refers to."""
    for evaluations, full in ((prepared.trial_evaluations, False), (prepared.evaluations, True)):
        if full and not prepared.proxied:
            result.base_full = result.base_metrics
            break
        base = Trial(0, {}, "input model", "done", location=location)
        scheduler.evaluate_fully(base, evaluations)
        while scheduler.busy:
            scheduler.wait()
        if base.error:
            raise SlimkitError(f"the input model could not be evaluated: {base.error}")
        result.base_id = base.model_id
        if full:
            result.base_full = base.full_metrics
        else:
            result.base_metrics = base.full_metrics
    emit(SearchEvent("note", message="input model " + (result.base_id or "?")[:19] + ": " + ", ".join(
        f"{k}={v:.6g}" for k, v in sorted(result.base_metrics.items()))))
    emit(SearchEvent("base", values=dict(result.base_metrics)))
    return result.base_metrics


def _proxy_note(prepared: Prepared) -> str:
    changed = [f"{name} {params}" for (name, params), (_, full) in zip(prepared.trial_evaluations,
                                                                      prepared.evaluations) if params != full]
    return ("cheap proxy: every trial is evaluated with " + "; ".join(changed)
            + "; the trials on that front are then evaluated with the full settings")


def _sweep(prepared: Prepared, scheduler: Scheduler, result: SearchResult, known: dict[str, Trial],
           stopped: Callable[[], bool]) -> None:
    space = prepared.space
    for point, reason in prepared.refused:
        result.trials.append(Trial(len(result.trials) + 1, point, space.label(point), "invalid", error=reason))
    for point in prepared.points:
        if point_key(point) in known:
            continue
        trial = Trial(len(result.trials) + 1, point, space.label(point))
        result.trials.append(trial)
        scheduler.start(trial, prepared.trial_evaluations)
    _drain(scheduler, result, stopped)


def _drain(scheduler: Scheduler, result: SearchResult, stopped: Callable[[], bool]) -> bool:
    """Wait for every task in flight; ``False`` when stopped on request first."""
    while scheduler.busy:
        if stopped():
            result.stopped = "stopped on request"
            return False
        scheduler.wait()
    return True


def _evaluate_front_fully(prepared: Prepared, scheduler: Scheduler, result: SearchResult,
                          stopped: Callable[[], bool]) -> None:
    cheap = front(prepared.goals, result.trials, result.base_metrics)
    for trial in cheap:
        if not trial.full_metrics:
            scheduler.evaluate_fully(trial, prepared.evaluations)
    if not _drain(scheduler, result, stopped):
        return
    result.notes.append(f"full evaluation of the {len(cheap)} trial(s) on the cheap front "
                        f"(of {sum(t.finished for t in result.trials)} evaluated cheaply)")
