"""The panel's Export tab in-process (ipywidgets work without a front end), with a third-party
exporter registered through the host: the formats and their generated forms, the default output
path, a real export of the bundled model in the background and its result, refusals shown as the
exporter's lines, an existing output, Cancel leaving no file, and a plugin's bug.

The tests pick their own exporters by name, so they hold with the bundled ones installed too."""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path

import pytest
from pydantic import Field

pytest.importorskip("anywidget", reason="the jupyter extra is not installed")

from slimkit import BaseExporter, ExportError, ExportSummary, MethodConfig, hookimpl  # noqa: E402
from slimkit.core.catalogue import Catalogue  # noqa: E402
from slimkit.core.provenance import content_id  # noqa: E402
from slimkit.jupyter_ext.export_tab import default_out, model_folder  # noqa: E402
from slimkit.jupyter_ext.messages import error_html  # noqa: E402
from slimkit.jupyter_ext.panel import Panel  # noqa: E402

STORIES = Path(__file__).resolve().parents[2] / "slimkit" / "examples" / "stories260K"
GATE = threading.Event()  # the slow export waits on it between chunks (set: run straight through)


class TextConfig(MethodConfig):
    note: str = Field("", description="A line written after the content id.")
    chunks: int = Field(3, ge=1, le=10_000, description="Progress reports while writing.")
    refuse: bool = Field(False, description="Refuse the model with two reasons (for the tests).")
    explode: bool = Field(False, description="Fail with a bug half-way through (for the tests).")


class TextExporter(BaseExporter):
    """A text file holding the model's content id (a toy third-party format)."""

    name = "acme.text"
    version = 2
    Config = TextConfig
    writes = "file"
    suffix = ".acme.txt"

    def check(self, model, config, ctx):
        return ["layer model.layers.0.attn: low-rank, densify first", "group size 7: use 32"] if config.refuse else []

    def export(self, model, out, config, ctx):
        with open(out, "w") as handle:
            handle.write(f"{ctx.content_id}\n{config.note}\n")
            for i in range(config.chunks):
                handle.write(f"chunk {i}\n")
                handle.flush()
                if config.explode and i == config.chunks // 2:
                    raise ValueError("boom")
                ctx.report("write", i + 1, config.chunks)  # raises once Cancel was clicked
                if not GATE.is_set():
                    GATE.wait(0.02)
        return ExportSummary(f"{config.chunks} chunks of text", {"chunks": config.chunks})

    @classmethod
    def identify(cls, path):
        try:
            return Path(path).read_text().split("\n", 1)[0] or None
        except (OSError, UnicodeDecodeError):
            return None


class FolderConfig(MethodConfig):
    pass


class FolderExporter(TextExporter):
    """A folder with one file (a toy folder format)."""

    name = "acme.folder"
    version = 1
    Config = FolderConfig  # type: ignore[assignment]
    writes = "folder"
    suffix = ""

    def check(self, model, config, ctx):
        return []

    def export(self, model, out, config, ctx):
        (out / "id.txt").write_text(ctx.content_id)
        return ExportSummary("one file")


class Acme:
    @hookimpl
    def register_exporters(self, register):
        register(TextExporter)
        register(FolderExporter)


@pytest.fixture
def panel(tmp_path, monkeypatch, register_plugin):
    monkeypatch.setenv("SLIMKIT_ARTIFACTS", str(tmp_path / "artifacts"))
    monkeypatch.chdir(tmp_path)  # exports of the bundled model go to ./exports
    GATE.set()
    made = Panel(tmp_path / "cat.db", host=register_plugin(Acme(), name="acme"))
    yield made
    GATE.set()
    if made.export_tab.run_state is not None:
        made.export_tab.run_state.cancel()
        made.export_tab.wait(60)
    made.catalogue.close()


def test_every_installed_exporter_is_offered_with_a_generated_form_and_a_default_path(panel):
    tab = panel.export_tab
    assert panel.tabs.get_title(len(panel.tabs.children) - 1) == "Export"
    assert panel.tabs.children[-1] is tab.widget
    assert {"acme.text", "acme.folder"} <= set(tab.format.options)
    assert set(tab.format.options) == set(panel.host.exporters.names())  # bundled ones too, where installed
    tab.format.value = "acme.text"
    assert set(tab.form.fields) == {"note", "chunks", "refuse", "explode"}
    assert "plugin acme" in tab.format_help.value and "writes a file (.acme.txt)" in tab.format_help.value
    assert "example:stories260K" in tab.model_line.value
    assert tab.out.value == str(Path("exports") / "stories260K.acme.txt")
    tab.format.value = "acme.folder"  # the default follows the format ...
    assert tab.out.value == str(Path("exports") / "stories260K-acme.folder") and "writes a folder" in tab.format_help.value
    panel.model_path.value = str(STORIES)  # ... and the panel's model: beside the model's folder
    assert tab.out.value == str(STORIES.parent / "stories260K-acme.folder")
    assert str(STORIES) in tab.model_line.value
    tab.out.value = "mine/here"  # a path the user typed is kept
    tab.format.value = "acme.text"
    panel.model_path.value = "example:stories260K"
    assert tab.out.value == "mine/here" and not tab.export_button.disabled
    assert tab.status.value == tab.summary()
    assert tab.summary().startswith("export: example:stories260K as acme.text (defaults) to mine/here | ready")


def test_the_default_path_comes_from_the_models_folder_never_the_model_itself(tmp_path):
    catalogue = Catalogue(tmp_path / "cat.db")
    catalogue.record_model("sha256:" + "ab" * 32, "llama", location=str(STORIES), name="tiny")
    assert model_folder("tiny", catalogue) == STORIES  # a catalogue name, as the Model tab gives it
    assert model_folder("abababab", catalogue) == STORIES
    assert model_folder("example:stories260K", catalogue) is None and model_folder("org/hub-model", catalogue) is None
    assert default_out("tiny", catalogue, "gguf", ".gguf") == str(STORIES.parent / "stories260K.gguf")
    assert default_out("org/hub-model", catalogue, "gguf", ".gguf") == str(Path("exports") / "hub-model.gguf")
    gguf = tmp_path / "m.Q4_0.gguf"
    gguf.write_bytes(b"GGUF")
    assert default_out(str(gguf), catalogue, "gguf", ".gguf") == str(tmp_path / "m.Q4_0-gguf.gguf")
    assert default_out(str(gguf), catalogue, "ct", "") == str(tmp_path / "m.Q4_0-ct")
    catalogue.close()


def test_an_export_runs_in_the_background_and_shows_what_it_wrote(panel):
    tab = panel.export_tab
    tab.format.value = "acme.text"
    tab.form.set_values({"note": "hello", "chunks": 4})
    assert "note=hello, chunks=4" in tab.summary()
    run = tab.export()
    assert run is not None and tab.export_button.disabled and not tab.cancel_button.disabled
    assert tab.wait(120) == "done", tab.error.value
    result = tab.last_result
    target = Path("exports") / "stories260K.acme.txt"
    assert result.path.resolve() == target.resolve() and result.format == "acme.text" and result.plugin == "acme"
    lines = target.read_text().splitlines()
    import slimkit

    assert lines[:2] == [content_id(slimkit.load_model("example:stories260K").model), "hello"]
    assert lines[0] == result.content_id and len(lines) == 6
    data = target.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    assert result.sha256 == "sha256:" + sha and result.size_bytes == len(data)
    recorded = panel.catalogue.find_export(sha256=result.sha256)  # a location of its model in the panel's catalogue
    assert recorded is not None and recorded.model_id == result.content_id and recorded.format == "acme.text"
    shown = tab.result.value
    assert "slimkit-export-result" in shown and sha[:16] in shown and sha not in shown  # short
    assert str(result.path) in shown and f"{len(data)} B" in shown and "4 chunks of text" in shown
    assert "exporter version 2" in shown and result.content_id.split(":")[1][:12] in shown
    assert tab.progress.bar_style == "success" and tab.progress.value == tab.progress.max
    assert "state: done" in tab.status.value
    assert not tab.export_button.disabled and tab.cancel_button.disabled and tab.error.value == ""
    # the file is there now: a second export is refused before any work, unless overwrite is ticked
    assert tab.export() is None and "already exists (tick overwrite" in tab.error.value and tab.result.value == ""
    assert tab.run_state is run
    tab.overwrite.value = True
    tab.form.set_values({"note": "again"})
    tab.export()
    assert tab.wait(120) == "done", tab.error.value
    assert target.read_text().splitlines()[1] == "again" and sorted(p.name for p in target.parent.iterdir()) == [
        target.name]


def test_a_catalogue_model_chosen_in_the_panel_is_exported(panel, tmp_path):
    panel.catalogue.record_model("sha256:" + "cd" * 32, "llama", location=str(STORIES), name="tiny")
    panel.refresh()
    panel.model_list.value = "sha256:" + "cd" * 32  # the Model tab's picker
    tab = panel.export_tab
    tab.format.value = "acme.text"
    assert panel.model_spec == "tiny" and tab.out.value == str(STORIES.parent / "stories260K.acme.txt")
    tab.out.value = str(tmp_path / "tiny.txt")
    tab.export()
    assert tab.wait(120) == "done", tab.error.value
    assert (tmp_path / "tiny.txt").read_text().startswith("sha256:")


def test_a_refused_export_shows_the_exporters_lines_and_writes_nothing(panel, tmp_path):
    tab = panel.export_tab
    tab.format.value = "acme.text"
    tab.form.set_values({"refuse": True})
    tab.out.value = str(tmp_path / "out" / "m.txt")
    tab.export()
    assert tab.wait(120) == "failed"
    assert isinstance(tab.run_state.error, ExportError)
    shown = tab.error.value
    assert shown.count("<li>") == 2 and "<li>layer model.layers.0.attn: low-rank, densify first</li>" in shown
    assert "<li>group size 7: use 32</li>" in shown and "acme.text" in shown
    assert "<details>" not in shown and "Traceback" not in shown  # the lines, not a traceback
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    assert tab.progress.bar_style == "danger" and "nothing was written" in tab.progress_text.value
    assert tab.last_result is None and "state: failed" in tab.status.value


def test_cancel_stops_an_export_and_leaves_no_partial_file(panel, tmp_path):
    tab = panel.export_tab
    tab.format.value = "acme.text"
    tab.form.set_values({"chunks": 10_000})
    out = tmp_path / "slow"
    out.mkdir()
    tab.out.value = str(out / "m.txt")
    GATE.clear()  # 20 ms a chunk: 200 s unless cancelled
    run = tab.export()
    deadline = time.monotonic() + 60
    while run.events < 5 and time.monotonic() < deadline:
        run.join(0.05)
    assert run.running and any(out.iterdir())  # the exporter is writing its staging file
    tab.cancel_button.click()
    assert tab.wait(60) == "cancelled"
    assert list(out.iterdir()) == []  # no file, no staging leftover
    assert "cancelled by the user" in tab.error.value and "<details>" not in tab.error.value
    assert tab.progress.bar_style == "warning" and not tab.export_button.disabled


def test_a_bug_in_an_exporter_is_shown_with_its_traceback_folded_and_writes_nothing(panel, tmp_path):
    tab = panel.export_tab
    tab.format.value = "acme.text"
    tab.form.set_values({"explode": True, "chunks": 4})
    tab.out.value = str(tmp_path / "m.txt")
    tab.export()
    assert tab.wait(120) == "failed"
    shown = tab.error.value
    assert "ValueError: boom" in shown.split("<details>")[0] and "Traceback" in shown.split("<details>")[1]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(("m.txt", ".m.txt"))) == []


def test_cheap_problems_are_refused_before_a_model_is_loaded(panel):
    tab = panel.export_tab
    tab.format.value = "acme.text"
    tab.form.set_values({"chunks": 0})
    assert tab.export_button.disabled and "not ready" in tab.status.value and tab.form.fields["chunks"].message.value
    assert tab.export() is None and "the acme.text settings are not valid: invalid: chunks" in tab.error.value
    tab.form.set_values({})
    tab.out.value = ""
    assert tab.export_button.disabled and tab.export() is None and "give the path" in tab.error.value
    panel.model_path.value = ""
    assert tab.export() is None and "choose the model to export" in tab.error.value
    assert tab.run_state is None


def test_error_html_lists_an_export_errors_problems():
    one = error_html(ExportError(["layer x: low-rank"], "cannot export m as gguf"))
    assert "cannot export m as gguf<ul class='slimkit-problems'><li>layer x: low-rank</li></ul>" in one
    two = error_html(ExportError(["a <b>", "c"], "cannot export m as gguf"))
    assert "cannot export m as gguf: 2 problems<ul" in two and "<li>a &lt;b&gt;</li><li>c</li>" in two


def test_the_result_table_gives_big_sizes_in_units_and_bytes_and_escapes_paths():
    from slimkit import ExportResult
    from slimkit.jupyter_ext.tables import export_table

    result = ExportResult(Path("runs/<m>.gguf"), "gguf", 3, "slimkit.plugins.export.gguf", None, {},
                          "sha256:" + "0123456789ab" * 5 + "cdef", 5 * 2**20, "sha256:" + "f" * 64,
                          ExportSummary("Q4_0: 12 tensors"))
    shown = export_table(result, 1.5)
    assert "runs/&lt;m&gt;.gguf" in shown and "5.00 MiB (5,242,880 bytes)" in shown and "f" * 16 + "…" in shown
    assert "gguf (exporter version 3, slimkit.plugins.export.gguf)" in shown and "0123456789ab" in shown
    assert "Q4_0: 12 tensors" in shown and "1.50 s" in shown
