"""The main panel: choose a model, configure methods, build a recipe, run it off the main thread,
see results, lineage and trade-offs, and export the model in any installed format (the Export
tab, :mod:`slimkit.jupyter_ext.export_tab`), and search for the best recipes (the Search tab,
:mod:`slimkit.jupyter_ext.search_tab`), all against one catalogue.

Everything the panel does goes through the Python API (:func:`run_recipe`, the catalogue
queries), so what it records is what the CLI would record. Its state is summarised, by the kernel,
in one line (:meth:`Panel.summary`, also shown in the panel): users see what Run will do, and
browser tests wait on it before clicking, since a click can reach the kernel before a value that
was typed just before it.

Failures are shown in the panel, never as tracebacks (:mod:`slimkit.jupyter_ext.messages`): a
problem with the input (a :class:`~slimkit.core.errors.SlimkitError`) by its message, anything
else by its type and message with the traceback folded away. A failed or cancelled run changes
no model in the catalogue (the runner saves and records only complete results; the run itself is
kept as failed). Runs that were in progress when their kernel died are marked failed when the
catalogue is next opened, and the panel says so.
"""

from __future__ import annotations

import collections
import html
import threading
from pathlib import Path
from typing import Any, Callable

import ipywidgets as w

from slimkit.core.errors import SlimkitError
from slimkit.core.present.format import number, short_id
from slimkit.jupyter_ext.export_tab import ExportTab
from slimkit.jupyter_ext.forms import ConfigForm
from slimkit.jupyter_ext.messages import error_html
from slimkit.jupyter_ext.progress import ProgressRow
from slimkit.jupyter_ext.recipe_builder import RecipeBuilder, describe_step
from slimkit.jupyter_ext.search_tab import SearchTab
from slimkit.jupyter_ext.serial import serialised
from slimkit.jupyter_ext.tables import compare_table, results_table
from slimkit.jupyter_ext.views import CatalogueViews, set_choices
from slimkit.jupyter_ext.worker import BackgroundRun

BUNDLED = "example:stories260K"
DEFAULT_METHOD = "prune.unstructured"
DEFAULT_METRICS = ("perplexity", "size")  # size is cheap, and the Pareto plot's natural x axis


def _kernel_loop() -> Any:
    """The running IPython kernel's main event loop, or None outside a kernel."""
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    return getattr(getattr(get_ipython(), "kernel", None), "io_loop", None)


class Panel:
    """The slimkit panel. ``Panel()`` uses the default catalogue and every installed plugin.

    :param catalogue: a :class:`Catalogue`, a path or SQLAlchemy URL, or ``None`` for the default.
    :param host: the plugin host (default: :func:`slimkit.get_host`, entry points included).
    :param model: the model to start with, as the path box takes it (default: the bundled
        ``example:stories260K``).
    """

    def __init__(self, catalogue: Any = None, *, host: Any = None, model: str = BUNDLED) -> None:
        from slimkit.core.catalogue import Catalogue
        from slimkit.core.host import get_host

        self.host = host or get_host()
        self.catalogue = catalogue if isinstance(catalogue, Catalogue) else Catalogue(catalogue)
        self.run_state: BackgroundRun | None = None
        self.last_result: Any = None
        self._pending: collections.deque[Callable[[], None]] = collections.deque()
        self._loop = _kernel_loop()

        # model picker: catalogue models, or any path/spec typed in the box
        self.model_list = w.Dropdown(description="Model", layout=w.Layout(width="70%"))
        self.model_path = w.Text(value=model, description="or path", placeholder="folder, .gguf, hub id, example:…",
                                 layout=w.Layout(width="70%"))
        self.model_list.observe(serialised(self._model_picked), names="value")
        from slimkit.core.runtime import RuntimeSpec

        self.runtime = ConfigForm(RuntimeSpec, title="Precision and device")
        self.runtime.on_change(serialised(lambda _: self._changed()))
        self.model_path.observe(serialised(lambda _: self._changed()), names="value")

        # method picker and its generated form
        names = sorted(self.host.compressors.names())
        self.method = w.Dropdown(options=names, value=DEFAULT_METHOD if DEFAULT_METHOD in names else None,
                                 description="Method")
        self.method_help = w.HTML()
        self.form_box = w.VBox()
        self.form: ConfigForm | None = None
        self.add_step = w.Button(description="Add to recipe", icon="plus")
        self.replace_step = w.Button(description="Replace selected step", icon="pencil")
        self.add_step.on_click(serialised(lambda _: self._add_step()))
        self.replace_step.on_click(serialised(lambda _: self._replace_step()))
        self._quiet = False  # set while a recipe step is loaded into the picker and its form
        self.method.observe(serialised(lambda change: None if self._quiet else self._build_form(change["new"])),
                            names="value")

        # recipe, evaluation and run controls
        self.recipe = RecipeBuilder(defaults=self._recipe_defaults)
        self.recipe.on_change(serialised(lambda _: self._recipe_changed()))
        self.recipe.list.observe(serialised(self._step_picked), names="index")
        from slimkit.core.recipe import CalibrationSpec

        self.calibration = ConfigForm(CalibrationSpec, title="Calibration data (for data-aware methods)")
        self.calibration.on_change(serialised(lambda _: self._changed()))
        evaluators = sorted(self.host.evaluators.names())
        self.metrics = w.SelectMultiple(options=evaluators, value=[m for m in DEFAULT_METRICS if m in evaluators],
                                        description="Evaluate", rows=min(6, max(2, len(evaluators))))
        self.metrics.add_class("slimkit-metrics")
        self.windows = w.BoundedIntText(value=16, min=1, max=100_000, description="ppl windows",
                                        style={"description_width": "initial"})
        self.name = w.Text(description="Save as", placeholder="name in the catalogue (optional)")
        self.run_button = w.Button(description="Run", button_style="primary", icon="play")
        self.cancel_button = w.Button(description="Cancel", button_style="warning", icon="stop", disabled=True)
        self.progress_row = ProgressRow("slimkit-run-progress", self._on_main,
                                        lambda: self.run_state is not None and self.run_state.running)
        self.progress, self.progress_text = self.progress_row.bar, self.progress_row.text
        self.error = w.HTML()
        self.results = w.HTML()
        for button, css in ((self.run_button, "slimkit-run"), (self.cancel_button, "slimkit-cancel"),
                            (self.add_step, "slimkit-add-step"), (self.replace_step, "slimkit-replace-step")):
            button.add_class(css)  # stable handles for styling and browser tests
        self.run_button.on_click(serialised(lambda _: self.run()))
        self.cancel_button.on_click(serialised(lambda _: self.cancel()))
        for box in (self.metrics, self.windows, self.name):
            box.observe(serialised(lambda _: self._changed()), names="value")

        self.compare_a = w.Dropdown(description="A")
        self.compare_b = w.Dropdown(description="B")
        self.compare_button = w.Button(description="Compare")
        self.compare_out = w.HTML()
        self.compare_button.add_class("slimkit-compare-button")
        self.compare_button.on_click(serialised(lambda _: self.compare()))

        self.views = CatalogueViews(self.catalogue, on_select=serialised(self.select_model))
        self.status = w.Label()
        self.status.add_class("slimkit-summary")
        self.notice = w.HTML()
        failed = getattr(self.catalogue, "failed_runs", [])
        if failed:
            self.notice.value = (f"<div class='slimkit-notice'>{len(failed)} run(s) were still in progress when "
                                 "their kernel or process ended; they are recorded as failed.</div>")

        # the Export tab writes the panel's model (the path box's) in any installed format
        self.export_tab = ExportTab(self.host, self.catalogue, model_spec=lambda: self.model_spec,
                                on_main=self._on_main, drain=self._drain_if_main)
        self.model_path.observe(serialised(lambda _: self.export_tab.model_changed()), names="value")
        # the Search tab finds the best recipes for the panel's model (a sweep or an Optuna search)
        self.search_tab = SearchTab(self.host, self.catalogue, model_spec=lambda: self.model_spec,
                                    recipe_data=self.recipe_data, on_main=self._on_main, drain=self._drain_if_main,
                                    on_finish=self.refresh, on_open=self._open_trial)
        self.model_path.observe(serialised(lambda _: self.search_tab.model_changed()), names="value")

        run_row = w.HBox([self.run_button, self.cancel_button, self.progress, self.progress_text])
        tabs = w.Tab(children=[
            w.VBox([self.model_list, self.model_path, self.runtime.widget]),
            w.VBox([self.method, self.method_help, self.form_box, w.HBox([self.add_step, self.replace_step])]),
            w.VBox([self.recipe.widget, w.HBox([self.metrics, self.windows]),
                    w.Accordion(children=[self.calibration.widget], titles=("Calibration data",))]),
            self.results,
            self.views.lineage_box,
            self.views.pareto_box,
            w.VBox([w.HBox([self.compare_a, self.compare_b, self.compare_button]), self.compare_out]),
            self.search_tab.widget,
            self.export_tab.widget,
        ])
        for index, title in enumerate(("Model", "Method", "Recipe", "Results", "Lineage", "Pareto", "Compare",
                                       "Search", "Export")):
            tabs.set_title(index, title)
        self.tabs = tabs
        self.widget = w.VBox([w.HTML("<b>slimkit</b>"), self.notice, tabs, self.name, run_row, self.error,
                              self.status])
        self.widget.add_class("slimkit-panel")
        self.refresh()
        self._build_form(self.method.value)
        self.search_tab.fill_from_recipe(quiet=True)  # the method's form exists now

    # -- display ----------------------------------------------------------------------------
    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    def summary(self) -> str:
        """One line: the model, what Run will do, the run's state and the catalogue's size."""
        if self.recipe.steps:
            plan = f"recipe of {len(self.recipe.steps)} steps: " + " -> ".join(s["method"] for s in self.recipe.steps)
        elif self.form is not None:
            plan = f"{self.method.value} ({self.form.summary()})"
        else:
            plan = "no method"
        state = self.run_state.state if self.run_state else "idle"
        ready = "ready" if not self.run_button.disabled else "not ready"
        last = ""
        if self.last_result is not None:
            last = f" | last: {short_id(self.last_result.provenance['content_id'])}"
        return (f"model: {self.model_spec or '-'} | run: {plan} | {ready} | state: {state} | "
                f"catalogue: {len(self.model_list.options) - 1} models{last}")

    def _changed(self) -> None:
        running = self.run_state is not None and self.run_state.running
        form_ok = self.form is not None and self.form.valid
        self.run_button.disabled = (running or not self.model_spec or not self.calibration.valid
                                    or not self.runtime.valid
                                    or not (self.recipe.steps or form_ok))
        self.add_step.disabled = not form_ok
        self.replace_step.disabled = not form_ok or self.recipe.selected is None
        self.cancel_button.disabled = not running
        self.windows.disabled = "perplexity" not in self.metrics.value
        self.status.value = self.summary()

    # -- model ------------------------------------------------------------------------------
    @property
    def model_spec(self) -> str:
        return self.model_path.value.strip()

    def _model_picked(self, change: dict[str, Any]) -> None:
        if change["new"]:
            self.model_path.value = self.catalogue.model(change["new"]).label

    def select_model(self, reference: str) -> None:
        """Make a catalogue model (id, id prefix or name) the panel's model and focus the views on it."""
        entry = self.catalogue.resolve(reference)
        if entry.id in [value for _, value in self.model_list.options]:
            self.model_list.value = entry.id
        self.model_path.value = entry.label  # its name, or the short id: both resolve to it
        self.views.focus(entry.id)
        self.compare_b.value = entry.id if entry.id in [v for _, v in self.compare_b.options] else None

    def _open_trial(self, model_id: str) -> None:
        """A search's trial chosen in the Search tab: the panel's model, shown in the Lineage tab."""
        self.refresh()
        self.select_model(model_id)
        self.tabs.selected_index = 4

    def refresh(self) -> None:
        """Re-read the catalogue's models (after a run, or another process's)."""
        models = self.catalogue.models()
        options = [("(type a path below)", "")] + [
            (f"{m.label} - {m.architecture}, {number(m.params or 0)} params", m.id) for m in models]
        current = self.model_list.value
        set_choices(self.model_list, options, current if current in [v for _, v in options] else "")
        pairs = [(label, value) for label, value in options[1:]]
        for box in (self.compare_a, self.compare_b):
            keep = box.value
            set_choices(box, pairs, keep if keep in [v for _, v in pairs] else (pairs[0][1] if pairs else None))
        self.views.refresh()
        self._changed()

    # -- method and recipe ------------------------------------------------------------------
    def _build_form(self, method: str | None, values: dict[str, Any] | None = None) -> None:
        if not method:
            self.form, self.form_box.children = None, ()
            return
        info = self.host.compressors.get(method)
        where = "" if info.plugin.startswith("slimkit.") else f" <i>(plugin {html.escape(info.plugin)})</i>"
        self.method_help.value = f"<div class='slimkit-method-help'>{html.escape(info.description)}{where}</div>"
        self.form = ConfigForm(info.cls.Config, values, title=method)
        self.form.on_change(serialised(lambda _: self._changed()))
        self.form_box.children = (self.form.widget,)
        self._changed()

    def _add_step(self) -> None:
        if self.form is not None and self.form.valid:
            self.recipe.add(self.method.value, self.form.params())

    def _replace_step(self) -> None:
        index = self.recipe.selected
        if self.form is not None and self.form.valid and index is not None:
            self.recipe.replace(index, self.method.value, self.form.params())

    def _step_picked(self, change: dict[str, Any]) -> None:
        index = change["new"]
        if index is None or index < 0 or index >= len(self.recipe.steps):
            return
        step = self.recipe.steps[index]
        if step["method"] in self.host.compressors.names():
            self._quiet = True
            try:
                self.method.value = step["method"]
            finally:
                self._quiet = False
            self._build_form(step["method"], step.get("params", {}))
        self._changed()

    def _recipe_defaults(self) -> dict[str, Any]:
        """The sections the panel adds to the steps: calibration (its form) and evaluation."""
        evaluate = [{"metric": name, "params": {"max_windows": int(self.windows.value)} if name == "perplexity" else {}}
                    for name in self.metrics.value]  # each evaluator's defaults, but perplexity's length
        if not self.calibration.valid:
            raise SlimkitError("the calibration settings are not valid: " + self.calibration.summary())
        if not self.runtime.valid:
            raise SlimkitError("the precision and device are not valid: " + self.runtime.summary())
        runtime = self.runtime.params()  # only what differs from float32 on the CPU
        return {"calibration": self.calibration.params(), "evaluate": evaluate, **({"runtime": runtime} if runtime else {})}

    def _recipe_changed(self) -> None:
        loaded = self.recipe.sections.pop("calibration", None)
        if loaded is not None:  # a loaded recipe's calibration goes into the calibration form
            self.calibration.set_values(loaded)
        runtime = self.recipe.sections.pop("runtime", None)
        if runtime is not None:  # and its runtime into the Model tab's
            self.runtime.set_values(runtime)
        self._changed()

    def recipe_data(self) -> dict[str, Any]:
        """The recipe Run would run: the builder's steps, or else the method and its form."""
        defaults = self._recipe_defaults()
        if self.recipe.steps:
            return self.recipe.recipe_data(defaults)
        if self.form is None or not self.form.valid:
            raise SlimkitError("the method's settings are not valid: " + self.form.summary() if self.form
                               else "choose a method")
        return {**defaults, "steps": [{"method": self.method.value, "params": self.form.params()}]}

    # -- running ----------------------------------------------------------------------------
    def run(self) -> BackgroundRun | None:
        """Start the run in the background (returns at once); :meth:`wait` waits for it."""
        if self.run_state is not None and self.run_state.running:
            return self.run_state
        self.error.value = ""
        spec, name = self.model_spec, self.name.value.strip() or None
        try:
            from slimkit.core.preflight import check_name
            from slimkit.core.recipe import Recipe

            from slimkit.core.runtime import RuntimeSpec, resolve_device

            recipe = Recipe.from_data(self.recipe_data())
            validated = recipe.resolve(self.host)  # every problem the model does not decide; resolved once
            check_name(self.catalogue, name)  # the same check as the CLI's, before any work
            runtime = recipe.runtime or RuntimeSpec()
            resolve_device(runtime.device)  # a GPU that is not here: said now, not after loading
        except SlimkitError as error:
            self.error.value = error_html(error)
            return None
        steps = " -> ".join(describe_step(s) for s in recipe.model_dump(mode="json")["steps"])
        self.progress_row.start(steps)

        def work(progress):
            from slimkit.core.catalogue.artifacts import new_artifact_path
            from slimkit.core.model_refs import load_model_ref
            from slimkit.core.runner import run_recipe

            from slimkit.core.model_refs import model_location
            from slimkit.core.stream.plan import memory_plan

            out = new_artifact_path(self.catalogue, name or recipe.name or Path(spec).name or "model")
            location = model_location(spec, self.catalogue)
            chosen = runtime
            if not chosen.stream and memory_plan(self.host, validated, location, out, chosen).stream:
                chosen = chosen.model_copy(update={"stream": True})  # too big for memory: the run says so
            model = location if chosen.stream or chosen.ranks > 1 else \
                load_model_ref(spec, self.catalogue, dtype=runtime.dtype, device=runtime.device)
            return run_recipe(validated, model, out=out, host=self.host, progress=progress, inplace=True,
                              catalogue=self.catalogue, name=name, runtime=chosen)

        self.run_state = BackgroundRun(work, on_event=self.progress_row.event, on_finish=self._on_finish)
        self.run_state.start()
        self._changed()
        return self.run_state

    def cancel(self) -> None:
        if self.run_state is not None and self.run_state.running:
            self.run_state.cancel()
            self.progress_row.cancelling()

    def wait(self, timeout: float | None = None) -> str:
        """Wait for the current run to end (for scripts and tests); returns its state."""
        if self.run_state is None:
            return "idle"
        self.run_state.join(timeout)
        self._drain_if_main()
        return self.run_state.state

    def _drain_if_main(self) -> None:
        if threading.current_thread() is threading.main_thread():
            self._drain()  # the kernel's loop cannot show the outcome while a cell waits

    # Widgets are changed on the kernel's main thread only: the worker hands its updates over.
    # ipywidgets' syncing (the echo of a value the front end just sent) is not thread-safe, and a
    # refresh from the worker racing a click's message left a dropdown showing one model while
    # the kernel held another.
    def _on_main(self, update: Callable[[], None]) -> None:
        self._pending.append(update)
        if self._loop is None:
            self._drain()  # no kernel, no front end: nothing else touches the widgets
        else:
            self._loop.add_callback(self._drain)

    @serialised
    def _drain(self) -> None:
        while True:
            try:
                update = self._pending.popleft()
            except IndexError:
                return
            update()

    def _on_finish(self, run: BackgroundRun) -> None:
        self._on_main(lambda: self._show_outcome(run))

    def _show_outcome(self, run: BackgroundRun) -> None:
        self.progress_row.finished(run.state, run.seconds, "the catalogue's models are unchanged")
        if run.state == "done":
            result = self.last_result = run.result
            self.results.value = results_table(result, seconds=run.seconds)
            self.views.focused = result.provenance["content_id"]  # refresh() draws the views once, for it
            self.refresh()
            self.select_model(result.provenance["content_id"])
            self.tabs.selected_index = 3
        else:
            error = run.error or RuntimeError(run.state)  # a user's problem needs no traceback
            # A plugin's bug arrives as one PluginError line with the original chained: fold its traceback.
            plain = isinstance(error, SlimkitError) and error.__cause__ is None
            self.error.value = error_html(error, "" if plain else run.details)
            self.refresh()
        self._changed()

    # -- comparing ----------------------------------------------------------------------------
    def compare(self) -> None:
        from slimkit.core.catalogue import queries

        if not self.compare_a.value or not self.compare_b.value:
            self.compare_out.value = error_html(SlimkitError("choose two catalogue models"))
            return
        try:
            self.compare_out.value = compare_table(queries.diff(self.catalogue, self.compare_a.value,
                                                                self.compare_b.value))
        except SlimkitError as error:
            self.compare_out.value = error_html(error)
