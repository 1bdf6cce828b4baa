"""The panel's Export tab: write the panel's model in any installed format, off the main thread.

The formats are the host's exporters, third-party ones included; each one's settings are a form
generated from its config class (:class:`~slimkit.jupyter_ext.forms.ConfigForm`), so a plugin
gets a usable tab without UI code. The export itself is one call of the Python API
(:func:`run_export`), the call ``slimkit export`` makes, so the file and its catalogue record are
the same from every face.

Cancel is raised by the progress callback inside the export (:class:`BackgroundRun`), and the
tab lets it travel out of the API untouched: the API removes its staging path on the way, so a
cancelled or failed export leaves no partial file. A refused export shows the exporter's
problems, one line each (:func:`~slimkit.jupyter_ext.messages.error_html`), not a traceback.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any, Callable

import ipywidgets as w

from slimkit.core.contracts import ProgressEvent
from slimkit.core.errors import OutputExistsError, SlimkitError
from slimkit.jupyter_ext.forms import ConfigForm
from slimkit.jupyter_ext.messages import error_html
from slimkit.jupyter_ext.progress import ProgressRow
from slimkit.jupyter_ext.serial import serialised
from slimkit.jupyter_ext.tables import export_table
from slimkit.jupyter_ext.worker import BackgroundRun

EXPORTS_DIR = "exports"  # beside the notebook, for models with no folder of their own (examples, hub ids)


def run_export(model: Any, out: str | Path, *, format: str, params: dict[str, Any], host: Any, catalogue: Any,
               overwrite: bool, progress: Callable[[ProgressEvent], None]) -> Any:
    """The tab's one call into the export API (:func:`slimkit.export_model`).

    ``catalogue`` is the panel's: the export is recorded there as a location of its model.
    """
    from slimkit.core.export.run import export_model

    return export_model(model, out, format=format, params=params, host=host, catalogue=catalogue,
                        overwrite=overwrite, progress=progress)


def model_folder(spec: str, catalogue: Any) -> Path | None:
    """Where the model ``spec`` lives on disk (a path, or a catalogue model's folder), or None for
    an example, a hub id or a name the catalogue does not know. Cheap: loads nothing."""
    if not spec or spec.startswith("example:"):
        return None
    path = Path(spec).expanduser()
    if path.exists():
        return path
    try:
        location = catalogue.resolve(spec).location
    except SlimkitError:
        return None
    if location and "://" in location:  # in a remote artifact store: no folder to write beside
        return None
    return Path(location) if location else None


def default_out(spec: str, catalogue: Any, format: str, suffix: str) -> str:
    """Where ``slimkit export`` would write without ``--out`` (beside the model's folder: ``runs/m`` ->
    ``runs/m.gguf`` or ``runs/m-NAME``); a model with no folder of its own goes to ``exports/`` in
    the kernel's working folder."""
    from slimkit.core.export.staging import default_target

    folder = model_folder(spec, catalogue)
    if folder is not None:
        return str(default_target(folder, format, suffix, spec))
    stem = spec.rsplit(":", 1)[-1].rstrip("/").rsplit("/", 1)[-1] or "model"
    return str(Path(EXPORTS_DIR) / (stem + (suffix or f"-{format}")))


class ExportTab:
    """The Export tab of a panel; ``widget`` is the tab's content.

    :param model_spec: returns the panel's current model, as its path box holds it.
    :param on_main: runs a widget update on the kernel's main thread (the panel's hand-over);
        without it updates are made at once (no kernel, no front end).
    :param drain: runs the updates handed over so far (for :meth:`wait` on the main thread).
    """

    def __init__(self, host: Any, catalogue: Any, *, model_spec: Callable[[], str],
                 on_main: Callable[[Callable[[], None]], None] | None = None,
                 drain: Callable[[], None] | None = None) -> None:
        self.host, self.catalogue, self.model_spec = host, catalogue, model_spec
        self._on_main = on_main or (lambda update: update())
        self._drain = drain
        self.run_state: BackgroundRun | None = None
        self.last_result: Any = None
        self.form: ConfigForm | None = None
        self._auto_out = ""  # the last default put in the path box: replaced while the user keeps it

        self.model_line = w.HTML()
        names = sorted(host.exporters.names())
        self.format = w.Dropdown(options=names, value=names[0] if names else None, description="Format")
        self.format_help = w.HTML()
        self.form_box = w.VBox()
        self.out = w.Text(description="Write to", layout=w.Layout(width="70%"))
        self.overwrite = w.Checkbox(description="overwrite", indent=False)
        self.export_button = w.Button(description="Export", button_style="primary", icon="download")
        self.cancel_button = w.Button(description="Cancel", button_style="warning", icon="stop", disabled=True)
        self.progress_row = ProgressRow("slimkit-export-progress", self._on_main,
                                        lambda: self.run_state is not None and self.run_state.running)
        self.progress, self.progress_text = self.progress_row.bar, self.progress_row.text
        self.result = w.HTML()
        self.error = w.HTML()
        self.status = w.Label()
        for widget, css in ((self.export_button, "slimkit-export"), (self.cancel_button, "slimkit-export-cancel"),
                            (self.out, "slimkit-export-out"), (self.format, "slimkit-export-format"),
                            (self.status, "slimkit-export-summary")):
            widget.add_class(css)  # stable handles for styling and browser tests
        self.format.observe(serialised(lambda change: self._build_form(change["new"])), names="value")
        for box in (self.out, self.overwrite):
            box.observe(serialised(lambda _: self._changed()), names="value")
        self.export_button.on_click(serialised(lambda _: self.export()))
        self.cancel_button.on_click(serialised(lambda _: self.cancel()))
        self.widget = w.VBox([
            self.model_line, self.format, self.format_help, self.form_box, w.HBox([self.out, self.overwrite]),
            w.HBox([self.export_button, self.cancel_button, self.progress, self.progress_text]),
            self.error, self.result, self.status])
        self.widget.add_class("slimkit-export-tab")
        self._build_form(self.format.value)

    # -- state ------------------------------------------------------------------------------
    def summary(self) -> str:
        """One line, computed by the kernel: what Export will do, whether it can, its state."""
        fmt = self.format.value or "-"
        settings = f" ({self.form.summary()})" if self.form is not None else ""
        ready = "ready" if not self.export_button.disabled else "not ready"
        state = self.run_state.state if self.run_state else "idle"
        return (f"export: {self.model_spec() or '-'} as {fmt}{settings} to {self.out.value.strip() or '-'} | "
                f"{ready} | state: {state}")

    def _changed(self) -> None:
        running = self.run_state is not None and self.run_state.running
        form_ok = self.form is not None and self.form.valid
        self.export_button.disabled = running or not self.model_spec() or not form_ok or not self.out.value.strip()
        self.cancel_button.disabled = not running
        self.status.value = self.summary()

    def model_changed(self) -> None:
        """The panel's model changed: show it, and follow it with the default path."""
        spec = self.model_spec()
        self.model_line.value = (f"<b>Model:</b> {html.escape(spec or '-')} "
                                 "<small>(choose it in the Model tab)</small>")
        self._follow_default()
        self._changed()

    def _follow_default(self) -> None:
        """Put the default path in the box, unless the user typed another one."""
        if not self.format.value or self.out.value.strip() not in ("", self._auto_out):
            return
        suffix = str(getattr(self.host.exporters.get(self.format.value).cls, "suffix", "") or "")
        try:
            self._auto_out = default_out(self.model_spec(), self.catalogue, self.format.value, suffix)
        except Exception:  # a catalogue that cannot be read: the box just stays empty
            self._auto_out = ""
        self.out.value = self._auto_out

    def _build_form(self, name: str | None) -> None:
        if not name:
            self.form, self.form_box.children = None, ()
            self.format_help.value = "<i>No exporter is installed.</i>"
        else:
            info = self.host.exporters.get(name)
            writes = "a folder" if getattr(info.cls, "writes", "file") == "folder" else "a file"
            suffix = getattr(info.cls, "suffix", "")
            where = "" if info.plugin.startswith("slimkit.") else f" <i>(plugin {html.escape(info.plugin)})</i>"
            self.format_help.value = (f"<div class='slimkit-export-help'>{html.escape(info.description)}{where} "
                                      f"<small>writes {writes}{html.escape(f' ({suffix})' if suffix else '')}"
                                      "</small></div>")
            self.form = ConfigForm(info.cls.Config, title=name)
            self.form.on_change(serialised(lambda _: self._changed()))
            self.form_box.children = (self.form.widget,)
        self.model_changed()

    # -- exporting --------------------------------------------------------------------------
    def export(self) -> BackgroundRun | None:
        """Start the export in the background (returns at once); :meth:`wait` waits for it."""
        if self.run_state is not None and self.run_state.running:
            return self.run_state
        self.error.value = self.result.value = ""
        spec, out, fmt, overwrite = self.model_spec(), self.out.value.strip(), self.format.value, self.overwrite.value
        try:  # the cheap checks, before a model is loaded
            if not fmt:
                raise SlimkitError("no exporter is installed: install a plugin that registers one")
            if not spec:
                raise SlimkitError("choose the model to export in the Model tab")
            if self.form is None or not self.form.valid:
                raise SlimkitError(f"the {fmt} settings are not valid: "
                                   + (self.form.summary() if self.form else "no form"))
            if not out:
                raise SlimkitError("give the path to write the export to")
            if Path(out).expanduser().exists() and not overwrite:
                raise OutputExistsError(f"{out} already exists (tick overwrite to replace it)")
            params = self.form.params()
        except SlimkitError as error:
            self.error.value = error_html(error)
            self._changed()
            return None
        self.progress_row.start(f"{fmt} -> {out}")

        def work(progress: Callable[[ProgressEvent], None]) -> Any:
            from slimkit.core.model_refs import load_model_ref

            progress(ProgressEvent("load", 0, 1, spec))  # a Cancel clicked by now stops here
            model = load_model_ref(spec, self.catalogue)
            progress(ProgressEvent("load", 1, 1, spec))
            # RunCancelled is raised inside this call and must leave it: the API cleans up on its way out
            return run_export(model, out, format=fmt, params=params, host=self.host, catalogue=self.catalogue,
                              overwrite=overwrite, progress=progress)

        self.run_state = BackgroundRun(work, on_event=self.progress_row.event,
                                       on_finish=lambda run: self._on_main(lambda: self._show_outcome(run)))
        self.run_state.start()
        self._changed()
        return self.run_state

    def cancel(self) -> None:
        if self.run_state is not None and self.run_state.running:
            self.run_state.cancel()
            self.progress_row.cancelling()

    def wait(self, timeout: float | None = None) -> str:
        """Wait for the current export to end (scripts and tests); returns its state."""
        if self.run_state is None:
            return "idle"
        self.run_state.join(timeout)
        if self._drain is not None:
            self._drain()  # the kernel's loop cannot show the outcome while this cell waits
        return self.run_state.state

    def _show_outcome(self, run: BackgroundRun) -> None:
        self.progress_row.finished(run.state, run.seconds, "nothing was written")
        if run.state == "done":
            self.last_result = run.result
            self.result.value = export_table(run.result, run.seconds)
        else:
            error = run.error or RuntimeError(run.state)
            plain = isinstance(error, SlimkitError) and error.__cause__ is None  # a user's problem: no traceback
            self.error.value = error_html(error, "" if plain else run.details)
        self._changed()
