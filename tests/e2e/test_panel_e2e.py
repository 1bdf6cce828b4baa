"""The panel in a real JupyterLab, driven through Chromium like a user: load the extension, pick
the bundled model, set magnitude pruning to 50% in the generated form, run, wait for the progress
bar, read the results table and find the new model in the lineage drawing; bad form input and a
failing run are shown in the panel; the Export tab writes the model with a third-party exporter
registered in the notebook; the Search tab runs a 2-trial search and a click on a front
point draws its lineage. Every test leaves screenshots (the docs' pictures)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from urllib.parse import unquote

import pytest

nbformat = pytest.importorskip("nbformat", reason="nbformat is not installed (test extra)")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (test extra)")
Locator, Page, expect = sync_api.Locator, sync_api.Page, sync_api.expect

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


def notebook(root: Path, name: str, catalogue: Path, source: str | None = None) -> str:
    book = nbformat.v4.new_notebook()
    book.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    book.cells = [nbformat.v4.new_code_cell(source or f"%load_ext slimkit\n%slimkit --catalogue {catalogue}")]
    nbformat.write(book, root / name)
    return name


def open_and_run(page: Page, lab: dict, name: str) -> Locator:
    """Open the notebook through JupyterLab's own API, wait until its kernel answered, run all."""
    page.goto(f"{lab['url']}/lab/workspaces/{lab['workspace']}?token={lab['token']}")
    page.wait_for_function("() => window.jupyterapp !== undefined")
    panel_id = page.evaluate(
        """async (path) => {
            const app = window.jupyterapp;
            await app.started; await app.restored;
            const panel = await app.commands.execute('docmanager:open', {path, factory: 'Notebook'});
            await panel.context.ready;
            await panel.sessionContext.ready;
            await panel.sessionContext.session.kernel.info;
            app.shell.activateById(panel.id);
            await app.commands.execute('notebook:run-all-cells');
            return panel.id;
        }""",
        name,
    )
    return page.locator(f"#{panel_id}")


def open_panel(page: Page, lab: dict, catalogue: Path, name: str,
               source: str | None = None) -> tuple[Locator, Locator, Locator]:
    """A notebook that shows the panel, opened and run: (notebook, panel, summary line)."""
    book = open_and_run(page, lab, notebook(lab["root"], name, catalogue, source))
    slimkit = book.locator(".slimkit-panel")
    summary = slimkit.locator(".slimkit-summary")
    expect(summary).to_contain_text("| ready |")
    expect(book.get_by_text("Error displaying widget")).to_have_count(0)
    return book, slimkit, summary


def choose_method(slimkit: Locator, summary: Locator, method: str) -> None:
    tab(slimkit, "Method")
    slimkit.get_by_label("Method", exact=True).select_option(method)
    expect(summary).to_contain_text(f"run: {method}")


def enter(box: Locator, text: str) -> None:
    """Type into a text box or a slider's readout and commit it, as a person does."""
    box.fill(text)
    box.press("Enter")


def tab(slimkit: Locator, title: str) -> None:
    slimkit.locator(".lm-TabBar-tab", has_text=re.compile(f"^{title}$")).click()


def field(slimkit: Locator, css: str, label: str) -> Locator:
    """The widget of kind ``css`` whose description/label reads ``label``."""
    return slimkit.locator(css).filter(has=slimkit.page.get_by_text(label, exact=True))


def test_prune_the_bundled_model_from_the_panel(lab, page, screenshot, tmp_path):
    _, slimkit, summary = open_panel(page, lab, tmp_path / "cat.db", "prune.ipynb")

    # the model: the bundled example, typed into the path box
    path = field(slimkit, ".widget-text", "or path").locator("input")
    enter(path, "example:stories260K")
    expect(summary).to_contain_text("model: example:stories260K")
    screenshot(slimkit, "panel-model")

    # the method and its generated form: magnitude scorer, 50% sparsity
    choose_method(slimkit, summary, "prune.unstructured")
    readout = slimkit.locator(".slimkit-field-sparsity .widget-readout")
    enter(readout, "0.3")
    expect(summary).to_contain_text("sparsity=0.3")  # the kernel has the value before Run is clicked
    enter(readout, "0.5")
    expect(summary).to_contain_text("run: prune.unstructured (defaults)")  # 50% magnitude is the default
    scorer = slimkit.locator(".slimkit-field-scorer input")
    expect(scorer).to_have_value("magnitude")
    screenshot(slimkit, "panel-method-form")

    # the step goes into the recipe, which Run then runs
    slimkit.locator("button.slimkit-add-step").click()
    expect(summary).to_contain_text("run: recipe of 1 steps: prune.unstructured")
    tab(slimkit, "Recipe")
    expect(slimkit.locator(".slimkit-recipe-steps select option")).to_have_text(["1. prune.unstructured"])

    # run, and wait for the progress bar to fill
    windows = field(slimkit, ".widget-inline-hbox", "ppl windows").locator("input")
    enter(windows, "4")
    expect(summary).to_contain_text("| ready |")
    screenshot(slimkit, "panel-recipe")
    slimkit.locator("button.slimkit-run").click()
    bar = slimkit.locator(".slimkit-run-progress .progress-bar")  # the Export tab has a bar of its own
    expect(bar).to_have_attribute("style", re.compile(r"width: 100%"), timeout=300_000)
    expect(summary).to_contain_text("state: done")

    # the results table, then the new model in the lineage drawing
    results = slimkit.locator("table.slimkit-results")
    expect(results).to_be_visible()
    expect(results).to_contain_text("perplexity.perplexity")
    expect(slimkit.locator(".slimkit-steps")).to_contain_text("prune.unstructured")
    screenshot(slimkit, "panel-results")
    new_id = re.search(r"last: ([0-9a-f]{12})", summary.inner_text()).group(1)
    tab(slimkit, "Lineage")
    lineage = slimkit.locator("div.slimkit-lineage")
    expect(lineage.locator("[id^='slimkit-select-']")).to_have_count(2)
    expect(lineage).to_contain_text(new_id)
    screenshot(slimkit, "panel-lineage")

    # clicking the base model in the drawing selects it in the panel
    base = lineage.locator("[id^='slimkit-select-']").filter(has_not_text=new_id).first
    base_id = unquote(base.get_attribute("id").removeprefix("slimkit-select-")).split(":")[-1][:12]
    base.click()
    expect(summary).to_contain_text(f"model: {base_id} |")
    tab(slimkit, "Pareto")
    expect(slimkit.locator("div.slimkit-pareto svg").first).to_be_visible()
    screenshot(slimkit, "panel-pareto")
    tab(slimkit, "Compare")
    slimkit.locator("button.slimkit-compare-button").click()
    table = slimkit.locator("table.slimkit-compare")
    expect(table).to_contain_text("perplexity")
    # the table compares exactly what the two dropdowns show
    shown = [slimkit.get_by_label(side, exact=True).evaluate(
        "el => el.options[el.selectedIndex].text")[:12] for side in ("A", "B")]
    expect(table.locator("th")).to_have_text(["", *shown, "change"])
    screenshot(slimkit, "panel-compare")


def test_bad_form_input_disables_run_and_a_failing_run_is_shown_in_the_panel(lab, page, screenshot, tmp_path):
    _, slimkit, summary = open_panel(page, lab, tmp_path / "cat.db", "bad.ipynb")
    choose_method(slimkit, summary, "quantize.rtn")
    row = slimkit.locator(".slimkit-field-group_size")
    row.locator("input[type='checkbox']").first.check()  # an optional field: tick "set", then type
    number = row.locator("input[type='number']")
    enter(number, "0")
    message = row.locator(".slimkit-field-error")
    expect(message).to_contain_text("greater than or equal to 1")
    expect(slimkit.locator("button.slimkit-run")).to_be_disabled()
    expect(summary).to_contain_text("not ready")
    screenshot(slimkit, "panel-invalid-field")

    enter(number, "5")  # valid for the form, but 5 divides no layer of the model: the run fails
    expect(message).to_have_text("")
    run = slimkit.locator("button.slimkit-run")
    expect(run).to_be_enabled()
    run.click()
    error = slimkit.locator(".slimkit-error")
    expect(error).to_contain_text("group_size 5 does not divide")
    expect(summary).to_contain_text("state: failed")
    expect(summary).to_contain_text("catalogue: 0 models")
    screenshot(slimkit, "panel-failed-run")


def test_cancel_stops_a_long_run_and_the_notebook_stays_responsive(lab, page, screenshot, tmp_path):
    book, slimkit, summary = open_panel(page, lab, tmp_path / "cat.db", "cancel.ipynb")
    choose_method(slimkit, summary, "distill")
    steps = slimkit.locator(".slimkit-field-steps input")
    enter(steps, "100000")
    expect(summary).to_contain_text("steps=100000")
    tab(slimkit, "Recipe")
    slimkit.locator(".slimkit-metrics select").select_option(["size"])  # no perplexity: straight to training
    expect(summary).to_contain_text("| ready |")
    slimkit.locator("button.slimkit-run").click()
    expect(slimkit.locator(".widget-label").filter(has_text=re.compile(r"^steps \d+/100000"))).to_be_visible()
    expect(slimkit.locator("button.slimkit-cancel")).to_be_enabled()
    screenshot(slimkit, "panel-running")
    # the kernel answers while the run trains in its thread: a new cell runs at once
    page.evaluate("""async () => {
        const app = window.jupyterapp;
        const panel = app.shell.currentWidget;
        panel.content.activeCellIndex = 0;
        await app.commands.execute('notebook:insert-cell-below');
        const cell = panel.content.activeCell;
        cell.model.sharedModel.setSource('print("kernel answers", 6 * 7)');
        await app.commands.execute('notebook:run-cell');
    }""")
    expect(book.locator(".jp-OutputArea-output").filter(has_text="kernel answers 42")).to_be_visible()
    expect(summary).to_contain_text("state: running")
    slimkit.locator("button.slimkit-cancel").click()
    expect(summary).to_contain_text("state: cancelled")
    expect(slimkit.locator(".slimkit-error")).to_contain_text("cancelled by the user")
    expect(summary).to_contain_text("catalogue: 0 models")
    expect(slimkit.locator("button.slimkit-run")).to_be_enabled()


# A third-party exporter, registered on the panel's host in the notebook itself (as a user would
# try one before packaging it): a text file holding the model's content id.
EXPORTER_CELL = """\
from pathlib import Path
from slimkit import BaseExporter, ExportSummary, MethodConfig, hookimpl, make_host
from slimkit.jupyter_ext import panel

class NoteConfig(MethodConfig):
    note: str = "hello"

class NoteExporter(BaseExporter):
    \"\"\"The model's content id and a note, as text (a third-party format).\"\"\"
    name = "e2e.note"
    version = 1
    Config = NoteConfig
    writes = "file"
    suffix = ".note.txt"

    def export(self, model, out, config, ctx):
        ctx.report("write", 1, 1)
        Path(out).write_text(f"{ctx.content_id}\\n{config.note}\\n")
        return ExportSummary(f"a note: {config.note}")

class E2E:
    @hookimpl
    def register_exporters(self, register):
        register(NoteExporter)

host = make_host()
host.register(E2E(), "e2e")
slimkit_panel = panel(CATALOGUE, host=host)
slimkit_panel
"""


def test_export_the_model_with_a_third_party_exporter(lab, page, screenshot, tmp_path):
    source = EXPORTER_CELL.replace("CATALOGUE", repr(str(tmp_path / "cat.db")))
    _, slimkit, _ = open_panel(page, lab, tmp_path / "cat.db", "export.ipynb", source)
    tab(slimkit, "Export")
    export = slimkit.locator(".slimkit-export-tab")
    summary = export.locator(".slimkit-export-summary")
    export.locator(".slimkit-export-format select").select_option("e2e.note")
    expect(export.locator(".slimkit-export-help")).to_contain_text("plugin e2e")
    expect(export.locator(".slimkit-export-out input")).to_have_value("exports/stories260K.note.txt")
    enter(export.locator(".slimkit-field-note input"), "from the browser")
    expect(summary).to_contain_text("export: example:stories260K as e2e.note (note=from the browser) to "
                                    "exports/stories260K.note.txt | ready | state: idle")
    export.locator("button.slimkit-export").click()
    expect(export.locator(".slimkit-export-progress .progress-bar")).to_have_attribute(
        "style", re.compile(r"width: 100%"))
    result = export.locator("table.slimkit-export-result")
    expect(result).to_contain_text("a note: from the browser")
    expect(summary).to_contain_text("state: done")
    screenshot(slimkit, "panel-export")
    written = lab["root"] / "exports" / "stories260K.note.txt"
    model_id, note = written.read_text().splitlines()
    assert note == "from the browser" and model_id.startswith("sha256:")
    expect(result).to_contain_text(model_id.split(":")[1][:12])  # the model, by its short id
    expect(result).to_contain_text(hashlib.sha256(written.read_bytes()).hexdigest()[:16])


SEARCH_SPACE = """name: e2e-search
calibration: {n_samples: 8, seq_len: 32}
steps:
  - method: quantize.rtn
    params: {bits: [4, 8], group_size: 4}
evaluate:
  - metric: perplexity
    params: {max_windows: 2, seq_len: 64}
"""


def test_search_the_bundled_model_from_the_search_tab(lab, page, screenshot, tmp_path):
    _, slimkit, _ = open_panel(page, lab, tmp_path / "cat.db", "search.ipynb")
    tab(slimkit, "Search")
    search = slimkit.locator(".slimkit-search-tab")
    summary = search.locator(".slimkit-search-summary")
    expect(search.locator(".slimkit-search-yaml textarea")).to_have_value(re.compile("method: prune.unstructured"))
    search.locator(".slimkit-search-yaml textarea").fill(SEARCH_SPACE)
    enter(search.locator(".slimkit-field-trials .widget-readout"), "2")
    expect(summary).to_contain_text("search: example:stories260K, 2 trials | ready | state: idle")
    search.locator("button.slimkit-search-start").click()
    expect(summary).to_contain_text("state: done | trials: 2 finished", timeout=300_000)
    rows = search.locator("table.slimkit-trials tr.slimkit-trial")
    expect(rows).to_have_count(2)
    expect(search.locator("table.slimkit-trials")).to_contain_text("quantize.rtn(bits=4)")
    expect(search.locator(".slimkit-search-outcome")).to_contain_text("search: 2 done")
    # a click on a point of the front draws that trial's lineage: the input model and the trial's
    point = search.locator("div.slimkit-search-front [id^='slimkit-select-']").first
    chosen = unquote(point.get_attribute("id").removeprefix("slimkit-select-")).split(":")[-1][:12]
    point.click()
    lineage = search.locator("div.slimkit-search-lineage")
    expect(lineage.locator("[id^='slimkit-select-']")).to_have_count(2)
    expect(lineage).to_contain_text(chosen)
    expect(search.locator("table.slimkit-trials tr.slimkit-selected-row")).to_have_count(1)
    screenshot(search, "panel-search")
