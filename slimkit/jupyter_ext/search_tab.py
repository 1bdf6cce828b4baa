"""The panel's Search tab: find the best recipes automatically (a sweep or an Optuna search).

The space is a search file in a YAML editor (a recipe whose step params may be lists or
``{range: [LOW, HIGH], step: S}``, see :mod:`slimkit.core.search.spec`), prefilled from the
panel's recipe ("From recipe"); the goals and budget are a form generated from
:class:`SearchGoals` by the same :class:`~slimkit.jupyter_ext.forms.ConfigForm` as the methods'
forms, and replace those keys of the file. Start checks everything the core checks before any work
(:func:`slimkit.core.search.prepare`) and shows a problem as one line; the search itself is one
call of the Python API (:func:`run_search` / :func:`run_sweep`, what ``slimkit search`` calls) in a
:class:`~slimkit.jupyter_ext.worker.BackgroundRun`, so what it records is what the CLI records.

As trials start and finish, the table and the front (trials drawn with the Pareto plot's
:func:`~slimkit.jupyter_ext.pareto_plot.draw_points`) are redrawn on the kernel's main thread.
While running, the front is judged on what every trial has (a proxy's cheap evaluation), and
against the input model once its metrics are known; at the end the search's own front replaces
it. Stop is the API's ``stop=``: polled between tasks, it ends the search after the running task
and keeps every finished trial (they are in the catalogue, and a later search starts from them).
Clicking a row or a point draws that trial's model lineage in the tab.
"""

from __future__ import annotations

import dataclasses
import html
import threading
import time
from pathlib import Path
from typing import Any, Callable, Literal

import ipywidgets as w
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from slimkit.core.contracts import ProgressEvent
from slimkit.core.errors import SlimkitError
from slimkit.core.present.format import duration, short_id
from slimkit.jupyter_ext.forms import ConfigForm
from slimkit.jupyter_ext.messages import error_html
from slimkit.jupyter_ext.progress import ProgressRow
from slimkit.jupyter_ext.search_views import front_svg, live_front, trials_table
from slimkit.jupyter_ext.serial import serialised
from slimkit.jupyter_ext.svgview import SvgView
from slimkit.jupyter_ext.worker import BackgroundRun

GOAL_KEYS = ("objectives", "constraints", "sampler", "budget")  # set by the form, over the file's
HINT = ("# A recipe whose params may hold several values: a list (sparsity: [0.3, 0.5]),\n"
        "# {choice: [...]} or {range: [LOW, HIGH], step: S}; 'optional: true' also tries without a step.\n"
        "# Objectives, constraints, sampler and budget are set below.\n")


class SearchGoals(BaseModel):
    """What to find, and how long to look."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["search", "sweep"] = Field("search", description="search: a sampler picks trials under the "
                                             "budget; sweep: every point of the space.")
    objectives: list[str] = Field(default_factory=lambda: ["minimize perplexity", "minimize size"],
                                  description="'minimize METRIC' or 'maximize METRIC' (empty: the file's).")
    constraints: list[str] = Field(default_factory=list, description="e.g. 'size <= 0.5 x base' (empty: the "
                                   "file's).")
    sampler: Literal["tpe", "nsga2", "random"] = Field("tpe", description="The Optuna sampler of a search.")
    trials: int = Field(6, ge=1, le=10_000, description="New trials a search runs (the catalogue's are free).")
    time: str | None = Field(None, description="Stop starting trials after this long, e.g. 90s, 20m.")
    executor: Literal["inline", "pool"] = Field("inline", description="inline: in the kernel; pool: local "
                                                "processes.")
    workers: int = Field(2, ge=1, le=256, description="Processes of the pool executor.")

    @field_validator("time")
    @classmethod
    def _time(cls, value: str | None) -> str | None:
        from slimkit.core.search.spec import parse_duration

        if value is not None and value.strip():
            parse_duration(value)
            return value.strip()
        return None


def space_yaml(recipe: dict[str, Any]) -> str:
    """A search file's text for the editor, from a recipe's data (the panel's Run recipe)."""
    keep = {k: v for k, v in recipe.items() if k not in GOAL_KEYS and v not in (None, {}, [])}
    keep["steps"] = recipe.get("steps", [])
    ordered: dict[str, Any] = {k: keep[k] for k in ("name", "calibration", "steps", "evaluate") if k in keep}
    ordered.update({k: v for k, v in keep.items() if k not in ordered})
    return HINT + yaml.safe_dump(ordered, sort_keys=False, default_flow_style=None)


def _snapshot(trial: Any) -> Any:
    """A copy the widgets can read while the search goes on changing the trial."""
    return dataclasses.replace(trial, point=dict(trial.point), metrics=dict(trial.metrics),
                               full_metrics=dict(trial.full_metrics))


class SearchTab:
    """The Search tab of a panel; ``widget`` is the tab's content.

    :param model_spec: returns the panel's current model, as its path box holds it.
    :param recipe_data: returns the panel's recipe (what Run would run), for "From recipe".
    :param on_main: runs a widget update on the kernel's main thread (the panel's hand-over).
    :param drain: runs the updates handed over so far (for :meth:`wait` on the main thread).
    :param on_finish: called on the main thread after a search ended (the panel re-reads its catalogue).
    :param on_open: called with a trial's model id by "Open in the panel".
    """

    def __init__(self, host: Any, catalogue: Any, *, model_spec: Callable[[], str],
                 recipe_data: Callable[[], dict[str, Any]] | None = None,
                 on_main: Callable[[Callable[[], None]], None] | None = None,
                 drain: Callable[[], None] | None = None, on_finish: Callable[[], None] | None = None,
                 on_open: Callable[[str], None] | None = None) -> None:
        self.host, self.catalogue, self.model_spec = host, catalogue, model_spec
        self._recipe_data, self._on_finish, self._on_open = recipe_data, on_finish, on_open
        self._on_main = on_main or (lambda update: update())
        self._drain = drain
        self.run_state: BackgroundRun | None = None
        self.last_result: Any = None
        self.trials: dict[int, Any] = {}  # number -> snapshot of the trial, as last reported
        self.front: list[Any] = []
        self.goals: Any = None
        self.base: dict[str, float] | None = None  # the input model's metrics (x base), once known
        self.selected: str | None = None
        self._stop = threading.Event()
        self._prepared: Any = None
        self._last_text = 0.0

        self.model_line = w.HTML()
        self.editor = w.Textarea(rows=14, layout=w.Layout(width="95%"))
        self.editor.add_class("slimkit-search-yaml")
        self.from_recipe = w.Button(description="From recipe", icon="arrow-down",
                                    tooltip="Fill the editor from the Recipe tab (or the Method tab's form)")
        self.form = ConfigForm(SearchGoals, title="Goals and budget")
        self.start_button = w.Button(description="Start", button_style="primary", icon="play")
        self.stop_button = w.Button(description="Stop", button_style="warning", icon="stop", disabled=True)
        self.progress_row = ProgressRow("slimkit-search-progress", self._on_main,
                                        lambda: self.run_state is not None and self.run_state.running)
        self.progress, self.progress_text = self.progress_row.bar, self.progress_row.text
        self.error = w.HTML()
        self.outcome = w.HTML()
        self.table = SvgView()  # HTML, not SVG: the view makes its marked rows clickable all the same
        self.plot = SvgView()
        self.lineage_title = w.HTML("<i>click a trial (row or point) to see its model's lineage</i>")
        self.lineage = SvgView()
        self.open_button = w.Button(description="Open in the panel", icon="external-link", disabled=True,
                                    tooltip="Make this trial's model the panel's model")
        self.status = w.Label()
        for widget, css in ((self.start_button, "slimkit-search-start"), (self.stop_button, "slimkit-search-stop"),
                            (self.from_recipe, "slimkit-search-from-recipe"), (self.table, "slimkit-search-trials"),
                            (self.plot, "slimkit-search-front"), (self.lineage, "slimkit-search-lineage"),
                            (self.error, "slimkit-search-error"), (self.status, "slimkit-search-summary")):
            widget.add_class(css)  # stable handles for styling and browser tests
        self.from_recipe.on_click(serialised(lambda _: self.fill_from_recipe()))
        self.start_button.on_click(serialised(lambda _: self.start()))
        self.stop_button.on_click(serialised(lambda _: self.stop()))
        self.open_button.on_click(serialised(lambda _: self._open()))
        self.form.on_change(serialised(lambda _: self._changed()))
        self.editor.observe(serialised(lambda _: self._changed()), names="value")
        for view in (self.table, self.plot):
            view.observe(serialised(lambda change: self.show_lineage(change["new"]) if change["new"] else None),
                         names="selected")
        self.widget = w.VBox([
            self.model_line, w.HTML("<b>Space</b> <small>(a search file: see docs/jupyter.md)</small>"),
            self.editor, self.from_recipe,
            w.Accordion(children=[self.form.widget], titles=("Goals and budget",), selected_index=0),
            w.HBox([self.start_button, self.stop_button, self.progress, self.progress_text]),
            self.error, self.outcome, self.table, self.plot,
            w.HBox([self.lineage_title, self.open_button]), self.lineage, self.status])
        self.widget.add_class("slimkit-search-tab")
        self.fill_from_recipe(quiet=True)
        self.model_changed()

    # -- state ------------------------------------------------------------------------------
    def summary(self) -> str:
        """One line, computed by the kernel: what Start will do, whether it can, its state."""
        goals: Any = self.form.config() if self.form.valid else None
        kind = goals.kind if goals else "search"
        budget = (f", {goals.trials} trials" + (f" or {goals.time}" if goals.time else "")
                  if goals and kind == "search" else "")
        finished = sum(t.finished for t in self.trials.values())
        ready = "ready" if not self.start_button.disabled else "not ready"
        state = self.run_state.state if self.run_state else "idle"
        if self.run_state is not None and self.run_state.running and self._stop.is_set():
            state = "stopping"
        return (f"{kind}: {self.model_spec() or '-'}{budget} | {ready} | state: {state} | "
                f"trials: {finished} finished, {len(self.front)} on the front")

    def _changed(self) -> None:
        running = self.run_state is not None and self.run_state.running
        self.start_button.disabled = running or not self.model_spec() or not self.form.valid \
            or not self.editor.value.strip()
        self.stop_button.disabled = not running or self._stop.is_set()
        self.from_recipe.disabled = running
        self.status.value = self.summary()

    def model_changed(self) -> None:
        """The panel's model changed: show it."""
        self.model_line.value = (f"<b>Model:</b> {html.escape(self.model_spec() or '-')} "
                                 "<small>(choose it in the Model tab)</small>")
        self._changed()

    def fill_from_recipe(self, quiet: bool = False) -> None:
        """Put the panel's recipe (steps, calibration, evaluation) in the editor."""
        if self._recipe_data is None:
            return
        try:
            self.editor.value = space_yaml(self._recipe_data())
            self.error.value = ""
        except SlimkitError as error:
            if not quiet:
                self.error.value = error_html(error)

    def spec(self) -> tuple[Any, SearchGoals]:
        """The search file the editor and the form make; :class:`SearchError` if it is not one."""
        from slimkit.core.search import SearchSpec

        if not self.form.valid:
            raise SlimkitError("the goals and budget are not valid: " + self.form.summary())
        goals: SearchGoals = self.form.config()  # type: ignore[assignment]
        source = "search space"
        written = SearchSpec.from_yaml(self.editor.value, source=source)  # a YAML problem, said as the CLI says it
        data = written.model_dump(mode="json", exclude_none=True, exclude={"base_dir"})
        if goals.objectives:
            data["objectives"] = list(goals.objectives)
        if goals.constraints:
            data["constraints"] = list(goals.constraints)
        data["sampler"] = goals.sampler
        if goals.kind == "search":
            data["budget"] = {"trials": goals.trials, **({"time": goals.time} if goals.time else {})}
        return SearchSpec.from_data(data, source=source, base_dir=Path.cwd()), goals

    # -- running ----------------------------------------------------------------------------
    def start(self) -> BackgroundRun | None:
        """Start the sweep or search in the background (returns at once); :meth:`wait` waits."""
        if self.run_state is not None and self.run_state.running:
            return self.run_state
        self.error.value = self.outcome.value = ""
        model = self.model_spec()
        try:  # everything checkable without a model, before any work
            from slimkit.core.search import prepare

            if not model:
                raise SlimkitError("choose the model to search from in the Model tab")
            spec, goals = self.spec()
            prepared = prepare(spec, self.host, goals.kind)
        except SlimkitError as error:
            self.error.value = error_html(error)
            self._changed()
            return None
        self._prepared, self.goals, self.base = prepared, prepared.goals, None
        self.trials, self.front, self.selected, self.last_result = {}, [], None, None
        self._stop.clear()
        self._draw()
        total = goals.trials if goals.kind == "search" else len(prepared.points)
        self.progress_row.start(f"{goals.kind} of {model}: checking the model and evaluating it")
        self.progress.max = max(1, total)

        def work(progress: Callable[[ProgressEvent], None]) -> Any:
            from slimkit.core.search import run_search, run_sweep

            run = run_search if goals.kind == "search" else run_sweep
            return run(spec, model, executor=goals.executor, workers=goals.workers, catalogue=self.catalogue,
                       host=self.host, on_event=lambda event: self._event(event, total), stop=self._stop.is_set)

        self.run_state = BackgroundRun(work, on_finish=lambda run: self._on_main(lambda: self._show_outcome(run)))
        self.run_state.start()
        self._changed()
        return self.run_state

    def stop(self) -> None:
        """Ask the search to end after its running task; what finished is kept."""
        if self.run_state is not None and self.run_state.running:
            self._stop.set()
            self.progress.description = "stopping"
            self._changed()

    def wait(self, timeout: float | None = None) -> str:
        """Wait for the current search to end (scripts and tests); returns its state."""
        if self.run_state is None:
            return "idle"
        self.run_state.join(timeout)
        if self._drain is not None:
            self._drain()  # the kernel's loop cannot show the outcome while this cell waits
        return self.run_state.state

    def _event(self, event: Any, total: int) -> None:
        """Called on the search's thread for every :class:`SearchEvent`."""
        if event.kind == "base":
            self.base = dict(event.values)  # what 'x base' constraints refer to, as trials are judged
        elif event.kind == "note":
            text = event.message
            self._on_main(lambda: self._say(text))
        elif event.kind == "progress":
            now = time.monotonic()
            if event.event is None or now - self._last_text < 0.1:
                return  # the front end needs no more than ~10 updates a second
            self._last_text = now
            step = event.event
            text = f"trial {event.trial.number}: {step.stage} {step.done}/{step.total}" if event.trial else ""
            self._on_main(lambda: self._say(text))
        elif event.trial is not None:
            snap = _snapshot(event.trial)
            self._on_main(lambda: self._trial(snap, event.kind, total))

    def _say(self, text: str) -> None:
        if self.run_state is not None and self.run_state.running:
            self.progress_text.value = text[:160]

    def _trial(self, trial: Any, kind: str, total: int) -> None:
        if self.run_state is None or not self.run_state.running:
            return  # a late event of a search that has ended: the result is shown already
        if trial.finished and self.goals is not None and self.base is not None:
            trial.feasible = self.goals.feasible(trial.metrics, self.base)
        self.trials[trial.number] = trial
        self.front = live_front(list(self.trials.values()), self.goals, self.base)
        finished = sum(t.finished or t.status == "failed" for t in self.trials.values())
        self.progress.value = min(finished, self.progress.max)
        self.progress.description = f"{finished}/{total}"
        self.progress_text.value = f"trial {trial.number} {kind}: {trial.label}"[:160]
        self._draw()
        self._changed()

    def _draw(self) -> None:
        trials = [self.trials[n] for n in sorted(self.trials)]
        self.table.svg = trials_table(trials, self.goals, [t.number for t in self.front], self.selected)
        try:
            self.plot.svg = front_svg(trials, self.goals, self.front, selected=self.selected)
        except Exception as error:  # a picture must never break the panel
            self.plot.svg = f"<i>no front plot: {html.escape(type(error).__name__)}: {html.escape(str(error))}</i>"

    def _show_outcome(self, run: BackgroundRun) -> None:
        self.progress_row.finished(run.state, run.seconds, "every finished trial is in the catalogue")
        if run.state == "done":
            result = self.last_result = run.result
            self.trials = {t.number: t for t in result.trials}
            self.front = list(result.front)
            counts = ", ".join(f"{n} {status}" for status, n in result.counts.items() if n)
            lines = [f"{result.kind}: {counts or 'no trials'}; {len(result.front)} on the front, "
                     f"in {duration(result.seconds)}"]
            if result.stopped:
                lines.append(f"{result.stopped}: the finished trials are kept, and a new search starts from them")
                self.progress.description = "stopped"
            lines += result.notes
            self.outcome.value = ("<div class='slimkit-search-outcome'>"
                                  + "<br>".join(html.escape(line) for line in lines) + "</div>")
            self._draw()
        else:
            error = run.error or RuntimeError(run.state)
            plain = isinstance(error, SlimkitError) and error.__cause__ is None  # a user's problem: one line
            self.error.value = error_html(error, "" if plain else run.details)
        if self._on_finish is not None:
            self._on_finish()
        self._changed()

    # -- lineage ----------------------------------------------------------------------------
    def trial_of(self, model_id: str) -> Any:
        return next((t for t in self.trials.values() if t.model_id == model_id), None)

    def show_lineage(self, model_id: str) -> None:
        """Draw the lineage of the trial that made ``model_id`` (a click on its row or point)."""
        if model_id == self.selected:
            return
        from slimkit.jupyter_ext.lineage_svg import lineage_svg

        self.selected = model_id
        trial = self.trial_of(model_id)
        what = f"trial {trial.number}: {trial.label}" if trial is not None else "model"
        try:
            self.lineage.svg = lineage_svg(self.catalogue, model_id, selected=model_id)
            self.lineage_title.value = (f"<b>Lineage of {html.escape(what)}</b> "
                                        f"<small>(model {html.escape(short_id(model_id))})</small>")
        except Exception as error:  # a picture must never break the panel
            self.lineage_title.value = f"<i>no lineage drawing: {html.escape(type(error).__name__)}: " \
                                       f"{html.escape(str(error))}</i>"
        self.open_button.disabled = self._on_open is None
        for view in (self.table, self.plot):
            view.selected = model_id if model_id in view.clickable_ids else ""
        self._draw()

    def _open(self) -> None:
        if self.selected and self._on_open is not None:
            self._on_open(self.selected)
