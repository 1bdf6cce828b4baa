"""The two kinds of work a trial is made of, as plain data a worker process or Ray task runs.

A :class:`StepTask` applies one step to a model and saves the result into the catalogue's
artifact folder, recorded (a step the catalogue already has, with its result on disk, is taken
from there: :func:`~slimkit.core.runner.run_recipe`). An :class:`EvalTask` measures a model with
the file's evaluators, taking each evaluation the catalogue already holds with the same evaluator
version and config instead of running it again. Both name their catalogue by URL, so a worker
elsewhere opens the same one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from slimkit.core.contracts import ProgressCallback

if TYPE_CHECKING:  # pragma: no cover
    from slimkit.core.catalogue import Catalogue
    from slimkit.core.host import Host


@dataclass(frozen=True)
class StepTask:
    recipe_yaml: str  # one step, with the file's calibration, seed and runtime
    base_dir: str | None
    model: str  # the parent: a folder, or the input model's spec
    catalogue: str
    label: str


@dataclass(frozen=True)
class StepDone:
    model_id: str
    location: str
    reused: bool  # taken from the catalogue, not computed
    seconds: float


@dataclass(frozen=True)
class EvalTask:
    model: str
    evaluations: tuple[tuple[str, dict[str, Any]], ...]  # (evaluator, params), in the file's order
    catalogue: str
    dtype: str = "float32"
    device: str = "cpu"


@dataclass(frozen=True)
class EvalDone:
    model_id: str
    metrics: dict[str, float]  # EVALUATOR.METRIC and the columns size, params
    seconds: float
    ran: tuple[str, ...]  # the evaluators run now (the others were taken from the catalogue)


@dataclass(frozen=True)
class Failure:
    """A task that did not finish: its error in one line, and whether its worker died."""

    message: str
    died: bool = False


def failure_of(error: BaseException) -> Failure:
    from slimkit.core.failures import describe

    return Failure(describe(error))


def run_step_task(task: StepTask, progress: ProgressCallback | None = None, host: "Host | None" = None) -> StepDone:
    from slimkit.core.catalogue import Catalogue
    from slimkit.core.catalogue.artifacts import new_artifact_path
    from slimkit.core.recipe import Recipe
    from slimkit.core.runner import run_recipe

    recipe = Recipe.from_yaml(task.recipe_yaml, base_dir=Path(task.base_dir) if task.base_dir else None)
    started = time.perf_counter()
    with Catalogue(task.catalogue) as cat:
        result = run_recipe(recipe, task.model, out=new_artifact_path(cat, task.label), catalogue=cat,
                            progress=progress, host=host)
    record = result.steps[-1]
    assert record.child_id is not None and result.output is not None
    return StepDone(record.child_id, str(result.output), bool(result.reused[-1]), time.perf_counter() - started)


def recorded_evaluation(cat: "Catalogue", model_id: str, evaluator: str, version: int,
                        config: dict[str, Any]) -> dict[str, float] | None:
    """The latest recorded metrics of ``model_id`` by ``evaluator`` at this version with this
    config (``None`` when there are none)."""
    entries = [e for e in cat.evaluations(model_id)
               if e.evaluator == evaluator and e.evaluator_version == version and e.config == config]
    if not entries:
        return None
    latest = max(e.created for e in entries)
    return {e.metric: e.value for e in entries if e.created == latest}


def evaluation_plan(host: "Host", evaluations: tuple[tuple[str, dict[str, Any]], ...]) -> list[tuple[str, int, dict]]:
    """(evaluator, version, stored config) of each evaluation: what a recorded one must match."""
    plan = []
    for name, params in evaluations:
        info = host.evaluators.get(name)
        plan.append((name, info.version, host.config(info, params).model_dump(mode="json")))
    return plan


def recorded_metrics(cat: "Catalogue", host: "Host", model_id: str,
                     evaluations: tuple[tuple[str, dict[str, Any]], ...]) -> tuple[dict[str, float], list[str]]:
    """The metrics the catalogue holds for these evaluations (with the model columns), and the
    evaluators it has none for."""
    from slimkit.core.catalogue import CatalogueError

    metrics: dict[str, float] = {}
    missing = []
    for name, version, config in evaluation_plan(host, evaluations):
        found = recorded_evaluation(cat, model_id, name, version, config)
        if found is None:
            missing.append(name)
        else:
            metrics.update({f"{name}.{k}": v for k, v in found.items()})
    try:
        entry = cat.model(model_id)
    except CatalogueError:
        return metrics, [name for name, _ in evaluations]
    if entry.size_bytes is not None:
        metrics["size"] = float(entry.size_bytes)
    if entry.params is not None:
        metrics["params"] = float(entry.params)
    return metrics, missing


def run_eval_task(task: EvalTask, progress: ProgressCallback | None = None, host: "Host | None" = None) -> EvalDone:
    from slimkit.core.catalogue import Catalogue
    from slimkit.core.evaluation import evaluate_model, model_id
    from slimkit.core.host import get_host
    from slimkit.core.model_io import disk_bytes, load_model

    host = host or get_host()
    started = time.perf_counter()
    loaded = load_model(task.model, dtype=task.dtype, device=task.device)  # type: ignore[arg-type]
    identity = model_id(loaded)
    with Catalogue(task.catalogue) as cat:
        metrics, missing = recorded_metrics(cat, host, identity, task.evaluations)
        todo = {name: params for name, params in task.evaluations if name in missing}
        if todo or "size" not in metrics:  # (evaluate_model also records the model itself)
            results = evaluate_model(loaded, todo, host=host, catalogue=cat, progress=progress)
            metrics.update({f"{name}.{k}": v for name, values in results.items() for k, v in values.items()})
    size = disk_bytes(loaded.path)
    if size is not None:
        metrics["size"] = float(size)
    metrics["params"] = float(sum(p.numel() for p in loaded.model.parameters()))
    return EvalDone(identity, metrics, time.perf_counter() - started, tuple(todo))


def run_task(task: Any, progress: ProgressCallback | None = None, host: "Host | None" = None) -> Any:
    """Run a :class:`StepTask` or an :class:`EvalTask` (what every executor calls) with ``host``'s
    plugins (default: the installed ones, as a worker process has)."""
    runner: Callable[..., Any] = run_step_task if isinstance(task, StepTask) else run_eval_task
    return runner(task, progress, host)
