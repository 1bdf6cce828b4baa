"""Running trials as a tree of steps: a step shared by several trials runs once.

Each trial is a chain of steps from the input model; equal prefixes are one node of the tree, so a
Wanda step feeding a GPTQ-3 and a GPTQ-4 child is a single task even when both trials are in flight.
A node is handed to the executor once its parent's result is saved; a trial's result is then
evaluated (each evaluation the catalogue already holds is taken from there). A task whose worker
died is retried once; a task that raised fails the trials that need it, and the others go on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from slimkit.core.contracts import ProgressEvent
from slimkit.core.search.executors import Executor
from slimkit.core.search.tasks import EvalDone, EvalTask, Failure, StepDone, StepTask, recorded_metrics

if TYPE_CHECKING:  # pragma: no cover
    from slimkit.core.catalogue import Catalogue
    from slimkit.core.host import Host
    from slimkit.core.search.space import Space
    from slimkit.core.search.trials import Trial

Evaluations = tuple[tuple[str, dict[str, Any]], ...]


@dataclass
class _Node:
    key: str
    parent: "_Node | None"
    task_yaml: str
    label: str
    owner: int  # the trial that asked for it first
    state: str = "new"  # new, running, done, failed
    result: StepDone | None = None
    error: str | None = None
    retried: bool = False


@dataclass
class _Job:
    """What a trial waits for: its chain of nodes, then an evaluation."""

    trial: "Trial"
    chain: list[_Node]
    evaluations: Evaluations
    full: bool  # the full evaluation (of a front trial), not the trial's own
    retried: bool = False


class Scheduler:
    def __init__(self, executor: Executor, space: "Space", host: "Host", cat: "Catalogue", model: str,
                 runtime: tuple[str, str], on_event: Callable[[str, "Trial", str], None],
                 on_progress: Callable[["Trial", ProgressEvent], None] | None = None) -> None:
        self.executor, self.space, self.host, self.cat = executor, space, host, cat
        self.model, self.runtime = model, runtime
        self.on_event, self.on_progress = on_event, on_progress
        self.nodes: dict[str, _Node] = {}
        self.jobs: list[_Job] = []
        self.tasks: dict[Any, Any] = {}  # executor key -> node or job
        self._counter = 0

    @property
    def busy(self) -> bool:
        return bool(self.tasks)

    @property
    def nodes_run(self) -> int:
        return sum(1 for n in self.nodes.values() if n.result is not None and not n.result.reused)

    @property
    def nodes_reused(self) -> int:
        return sum(1 for n in self.nodes.values() if n.result is not None and n.result.reused)

    # -- starting --------------------------------------------------------------------------------
    def start(self, trial: "Trial", evaluations: Evaluations) -> None:
        """Run ``trial``'s steps (those not already run or running in this search) and evaluate it."""
        recipe = self.space.recipe(trial.point)
        chain: list[_Node] = []
        parent: _Node | None = None
        for index, step in enumerate(recipe.steps):
            one = recipe.model_copy(update={"steps": [step], "name": f"{recipe.name or 'search'}-trial{trial.number}"})
            key = json.dumps([s.model_dump(mode="json") for s in recipe.steps[: index + 1]], sort_keys=True)
            node = self.nodes.get(key)
            if node is None:
                node = _Node(key, parent, one.to_yaml(), f"trial{trial.number}-step{index + 1}", trial.number)
                self.nodes[key] = node
            chain.append(node)
            parent = node
        job = _Job(trial, chain, evaluations, False)
        self.jobs.append(job)
        trial.status = "running"
        self.on_event("start", trial, trial.label)
        self._advance(job)

    def evaluate_fully(self, trial: "Trial", evaluations: Evaluations) -> None:
        """The full evaluation of a finished trial (the front, after cheap proxies)."""
        job = _Job(trial, [], evaluations, True)
        self.jobs.append(job)
        self._advance(job)

    def _advance(self, job: _Job) -> None:
        """Submit what ``job`` waits for next, or finish it."""
        for node in job.chain:
            if node.state == "failed":
                return self._fail(job, f"step {job.chain.index(node) + 1}: {node.error}")
            if node.state in {"new", "running"}:
                if node.state == "new" and (node.parent is None or node.parent.state == "done"):
                    self._submit_node(node)
                return None
        if job.chain:
            done = job.chain[-1].result
            assert done is not None
            job.trial.model_id, job.trial.location = done.model_id, done.location
        location, model_id = job.trial.location, job.trial.model_id
        assert location is not None
        if any(owner is job for owner, _ in self.tasks.values()):
            return None
        if model_id is not None:  # (the input model's id is known once it is evaluated)
            metrics, missing = recorded_metrics(self.cat, self.host, model_id, job.evaluations)
            if not missing and "size" in metrics:
                job.trial.evaluations_reused += len(job.evaluations)
                return self._finish(job, metrics)
        self._submit(job, EvalTask(location, job.evaluations, self.cat.url, *self.runtime))
        return None

    def _submit_node(self, node: _Node) -> None:
        node.state = "running"
        parent = node.parent.result.location if node.parent is not None and node.parent.result else self.model
        self._submit(node, StepTask(node.task_yaml, str(self.space.spec.base_dir) if self.space.spec.base_dir
                                    else None, parent, self.cat.url, node.label))

    def _submit(self, owner: Any, task: Any) -> None:
        self._counter += 1
        self.tasks[self._counter] = (owner, task)
        self.executor.submit(self._counter, task)

    # -- waiting ---------------------------------------------------------------------------------
    def progress(self, key: Any, event: ProgressEvent) -> None:
        """A task's progress, passed on for each trial it serves."""
        entry = self.tasks.get(key)
        if entry is None or self.on_progress is None:
            return
        for trial in self._trials_of(entry[0]):
            self.on_progress(trial, event)

    def _trials_of(self, owner: Any) -> list["Trial"]:
        if isinstance(owner, _Job):
            return [owner.trial]
        return [job.trial for job in self.jobs if owner in job.chain and job.trial.status == "running"]

    def wait(self) -> None:
        """Block until one task ends, and carry its result on."""
        key, outcome = self.executor.next_done()
        owner, task = self.tasks.pop(key)
        if isinstance(outcome, Failure) and outcome.died and not owner.retried:
            owner.retried = True
            for trial in self._trials_of(owner):
                trial.retried = True
                self.on_event("retry", trial, f"{outcome.message}; retrying once")
            self._submit(owner, task)
            return
        if isinstance(owner, _Node):
            self._node_done(owner, outcome)
        else:
            self._job_done(owner, outcome)

    def _node_done(self, node: _Node, outcome: StepDone | Failure) -> None:
        if isinstance(outcome, Failure):
            node.state, node.error = "failed", outcome.message
        else:
            node.state, node.result = "done", outcome
        for job in [j for j in self.jobs if node in j.chain and j.trial.status == "running"]:
            if isinstance(outcome, StepDone):
                mine = node.owner == job.trial.number and not outcome.reused
                job.trial.steps_run += mine
                job.trial.steps_reused += not mine
            self._advance(job)

    def _job_done(self, job: _Job, outcome: EvalDone | Failure) -> None:
        if isinstance(outcome, Failure):
            return self._fail(job, f"evaluation: {outcome.message}")
        job.trial.model_id = job.trial.model_id or outcome.model_id
        job.trial.evaluations_run += len(outcome.ran)
        job.trial.evaluations_reused += len(job.evaluations) - len(outcome.ran)
        job.trial.seconds += outcome.seconds
        return self._finish(job, outcome.metrics)

    def _finish(self, job: _Job, metrics: dict[str, float]) -> None:
        self.jobs.remove(job)
        if job.full:
            job.trial.full_metrics = metrics
            self.on_event("full", job.trial, "")
            return
        job.trial.metrics = metrics
        job.trial.seconds += sum(n.result.seconds for n in job.chain if n.result and n.owner == job.trial.number)
        job.trial.status = "done"
        self.on_event("done", job.trial, "")

    def _fail(self, job: _Job, message: str) -> None:
        self.jobs.remove(job)
        if job.full:
            job.trial.error = f"full evaluation failed: {message}"
            self.on_event("full", job.trial, message)
            return
        job.trial.status, job.trial.error = "failed", message
        self.on_event("failed", job.trial, message)

    def close(self) -> None:
        self.executor.close()
        self.tasks.clear()
        for job in list(self.jobs):
            if job.trial.status == "running":
                job.trial.status, job.trial.error = "failed", "stopped before it finished"
        self.jobs.clear()
