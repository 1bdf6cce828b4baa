"""The search loop on an Optuna study: the sampler picks points, the scheduler runs them.

The study lives in memory; the catalogue is its memory across runs: the trials it already holds
are added to the study before the first new one is asked for, with their objective values and
constraint violations, so the sampler starts from them. A point drawn twice is not run twice.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any, Callable

from slimkit.core.errors import SlimkitError

if TYPE_CHECKING:  # pragma: no cover
    from slimkit.core.search.driver import OnEvent, Prepared, SearchResult
    from slimkit.core.search.schedule import Scheduler
    from slimkit.core.search.spec import Budget
    from slimkit.core.search.trials import Trial
    from slimkit.core.search.validity import ModelCheck

#: draws in a row that give no new point before the space counts as exhausted
_REPEATS = 50


def require_optuna() -> None:
    try:
        import optuna  # noqa: F401
    except ImportError:
        raise SlimkitError("a search needs Optuna: pip install 'slimkit[search]'") from None


def make_sampler(name: str, seed: int, startup: int) -> Any:
    import optuna

    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, startup))
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, constant_liar=True)


def _tell(study: Any, handle: Any, prepared: "Prepared", trial: "Trial", base: dict[str, float]) -> None:
    from optuna.trial import TrialState

    goals = prepared.goals
    values = [trial.metrics.get(o.key) for o in goals.objectives]
    if trial.status not in {"done", "catalogue"} or any(v is None or math.isnan(v) for v in values):
        study.tell(handle, state=TrialState.FAIL)
        return
    for index, violation in enumerate(goals.violations(trial.metrics, base)):
        handle.set_constraint(f"c{index}", violation)
    study.tell(handle, values)


def _recall(study: Any, prepared: "Prepared", trial: "Trial", base: dict[str, float]) -> None:
    """Add a trial the catalogue holds to the study (as if the sampler had drawn it)."""
    import optuna

    space = prepared.space
    params, distributions = {}, {}
    for name, value in trial.point.items():
        dim = space.dimension(name)
        if dim is None:
            return
        params[name], distributions[name] = dim.optuna_value(value), dim.distribution()
    values = [trial.metrics[o.key] for o in prepared.goals.objectives]
    constraints = {f"c{i}": v for i, v in enumerate(prepared.goals.violations(trial.metrics, base))}
    study.add_trial(optuna.trial.create_trial(params=params, distributions=distributions, values=values,
                                              constraints=constraints or None))


def search_loop(prepared: "Prepared", scheduler: "Scheduler", result: "SearchResult", known: dict[str, "Trial"],
                base: dict[str, float], budget: "Budget | None", stopped: Callable[[], bool], emit: "OnEvent",
                sampler: str, seed: int, check: "ModelCheck") -> None:
    import optuna

    from slimkit.core.search.trials import SearchEvent, Trial, point_key

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    goals, space = prepared.goals, prepared.space
    limit = budget.trials if budget and budget.trials is not None else math.inf
    deadline = time.monotonic() + budget.seconds if budget and budget.seconds is not None else math.inf
    startup = max(4, min(10, int(limit) if limit != math.inf else 10) // 2)
    study = optuna.create_study(directions=["minimize" if o.minimize else "maximize" for o in goals.objectives],
                                sampler=make_sampler(sampler, seed, startup))
    for trial in known.values():
        _recall(study, prepared, trial, base)
    handles: dict[int, Any] = {}
    started = repeats = 0
    told: set[str] = set()  # refusals already reported
    while True:
        while (not stopped() and started < limit and time.monotonic() < deadline and repeats < _REPEATS
               and len(handles) < scheduler.executor.slots):
            handle = study.ask()
            point = space.suggest(handle)
            key = point_key(point)
            broken = goals.space_allows(point)
            refused = None if key in known else (f"constraint {broken.text!r}" if broken else check.problem(space, point))
            if refused or key in known:
                repeats += 1
                if refused:
                    study.tell(handle, state=optuna.trial.TrialState.FAIL)
                    if refused not in told:
                        told.add(refused)
                        emit(SearchEvent("note", message=f"not run: {space.label(point)}: {refused}"))
                else:
                    _tell(study, handle, prepared, known[key], base)
                continue
            repeats = 0
            trial = Trial(len(result.trials) + 1, point, space.label(point))
            result.trials.append(trial)
            known[key] = trial
            handles[trial.number] = handle
            started += 1
            scheduler.start(trial, prepared.trial_evaluations)
            _tell_finished(study, handles, prepared, result, base)
        if not scheduler.busy:
            _tell_finished(study, handles, prepared, result, base)
            if not handles:
                break
        if stopped():
            result.stopped = "stopped on request"
            return
        scheduler.wait()
        _tell_finished(study, handles, prepared, result, base)
    if repeats >= _REPEATS:
        emit(SearchEvent("note", message=f"the sampler drew {_REPEATS} known or refused points in a row: the space "
                                         "looks exhausted"))
        result.notes.append("stopped early: the space looks exhausted")
    elif time.monotonic() >= deadline:
        result.notes.append("the time budget ran out")


def _tell_finished(study: Any, handles: dict[int, Any], prepared: "Prepared", result: "SearchResult",
                   base: dict[str, float]) -> None:
    for trial in result.trials:
        handle = handles.get(trial.number)
        if handle is not None and trial.status in {"done", "failed"}:
            trial.feasible = prepared.goals.feasible(trial.metrics, base) if trial.status == "done" else None
            _tell(study, handle, prepared, trial, base)
            del handles[trial.number]
