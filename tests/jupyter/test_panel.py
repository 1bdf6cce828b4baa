"""The panel's logic in-process (ipywidgets work without a front end): the model and method
pickers, the generated form gating Run, the recipe builder, a real run on the bundled model in
the background with its results and lineage, cancel, a failing run, and a third-party method."""

from __future__ import annotations

import pytest

pytest.importorskip("anywidget", reason="the jupyter extra is not installed")

from slimkit import hookimpl, make_host  # noqa: E402
from slimkit.core.catalogue import Catalogue  # noqa: E402
from slimkit.jupyter_ext.panel import Panel  # noqa: E402


@pytest.fixture
def panel(tmp_path, monkeypatch):
    monkeypatch.setenv("SLIMKIT_ARTIFACTS", str(tmp_path / "artifacts"))
    made = Panel(tmp_path / "cat.db", host=make_host(load_entrypoints=False))
    yield made
    if made.run_state is not None:
        made.run_state.cancel()
        made.wait(120)
    made.catalogue.close()


def quick(panel, sparsity=0.5):
    panel.method.value = "prune.unstructured"
    panel.form.set_values({"sparsity": sparsity})
    panel.windows.value = 2


def test_the_panel_starts_on_the_bundled_model_with_a_valid_default_method(panel):
    assert panel.model_spec == "example:stories260K" and panel.method.value == "prune.unstructured"
    assert "prune.unstructured" in panel.method.options and "distill" in panel.method.options
    assert not panel.run_button.disabled and panel.cancel_button.disabled
    assert panel.status.value == panel.summary()
    assert panel.summary().startswith("model: example:stories260K | run: prune.unstructured (defaults) | ready")


def test_an_invalid_form_value_disables_run_and_is_shown_beside_its_field(panel):
    panel.method.value = "quantize.rtn"
    field = panel.form.fields["group_size"]
    panel.form.set_values({"group_size": 0})
    assert "group_size" in panel.form.errors and field.message.value  # shown next to the field
    assert panel.run_button.disabled and panel.add_step.disabled and "not ready" in panel.status.value
    panel.form.set_values({"group_size": 4})
    assert not panel.form.errors and not panel.run_button.disabled


def test_a_run_records_the_model_and_shows_results_and_lineage(panel):
    quick(panel)
    run = panel.run()
    assert run is not None and panel.run_button.disabled and not panel.cancel_button.disabled
    assert panel.wait(300) == "done", panel.error.value
    result = panel.last_result
    child = result.provenance["content_id"]
    assert [m.id for m in panel.catalogue.models() if m.id == child] == [child]
    assert "perplexity.perplexity" in panel.results.value and "prune.unstructured" in panel.results.value
    assert panel.progress.value == panel.progress.max and panel.progress.bar_style == "success"
    # the new model is the panel's model now, in the picker, and focused in the lineage drawing
    assert panel.model_list.value == child and panel.model_spec == child.split(":", 1)[-1][:12]  # short id
    assert panel.views.focused == child and child.split(":", 1)[-1][:12] in panel.views.lineage.svg
    assert len(panel.views.lineage.clickable_ids) >= 2  # the base and the derived model
    assert panel.views.pareto.svg and "last: " + child.split(":", 1)[-1][:12] in panel.summary()
    # the Pareto plot puts non-zero parameters against perplexity, both models clickable
    assert (panel.views.x.value, panel.views.y.value) == ("size.nonzero_params", "perplexity.perplexity")
    assert sorted(panel.views.pareto.clickable_ids) == sorted(m.id for m in panel.catalogue.models())


def test_clicking_a_model_in_the_lineage_selects_it(panel):
    quick(panel)
    panel.run()
    assert panel.wait(300) == "done"
    base = next(m.id for m in panel.catalogue.models() if m.id != panel.last_result.provenance["content_id"])
    panel.views.lineage.select(base)
    assert panel.model_spec == base.split(":", 1)[-1][:12] and panel.views.focused == base


def test_recipe_builder_steps_run_in_order_and_round_trip_through_yaml(panel, tmp_path):
    quick(panel, 0.3)
    panel.add_step.click()
    panel.method.value = "quantize.rtn"
    panel.form.set_values({"bits": 8})
    panel.add_step.click()
    assert [s["method"] for s in panel.recipe.steps] == ["prune.unstructured", "quantize.rtn"]
    panel.recipe.move(1, -1)
    assert [s["method"] for s in panel.recipe.steps] == ["quantize.rtn", "prune.unstructured"]
    panel.recipe.move(0, +1)
    path = tmp_path / "r.yaml"
    panel.calibration.set_values({"n_samples": 8, "seq_len": 64})
    panel.recipe.save(str(path))
    import yaml

    saved = yaml.safe_load(path.read_text())  # the file runs what Run would run
    assert saved["calibration"]["n_samples"] == 8 and [e["metric"] for e in saved["evaluate"]] == ["perplexity", "size"]
    panel.calibration.set_values({})
    panel.recipe.clear()
    assert panel.recipe.steps == [] and "run: quantize.rtn (bits=8)" in panel.summary()  # the form again
    panel.recipe.path.value = str(path)
    panel.recipe.load_button.click()
    assert panel.recipe.steps == [{"method": "prune.unstructured", "params": {"sparsity": 0.3}},
                                  {"method": "quantize.rtn", "params": {"bits": 8}}]
    assert panel.calibration.params() == {"n_samples": 8, "seq_len": 64}  # loaded into its form
    # selecting a step loads it into the picker and its form; replace edits it
    panel.recipe.list.index = 1
    assert panel.method.value == "quantize.rtn" and panel.form.params() == {"bits": 8}
    panel.form.set_values({"bits": 3})
    panel.replace_step.click()
    assert panel.recipe.steps[1]["params"] == {"bits": 3}
    panel.recipe.remove(1)
    panel.metrics.value = ("size",)
    panel.run()
    assert panel.wait(300) == "done", panel.error.value
    assert [s.method for s in panel.last_result.steps] == ["prune.unstructured"]
    assert panel.last_result.provenance["steps"][0]["calibration"]["n_samples"] == 8


def test_a_name_already_in_the_catalogue_is_refused_before_any_work(panel):
    quick(panel)
    panel.name.value = "half"
    panel.run()
    assert panel.wait(300) == "done"
    panel.model_path.value = "example:stories260K"
    panel.form.set_values({"sparsity": 0.7})
    assert panel.run() is None and panel.run_state.state == "done"  # nothing started
    assert "the name &#x27;half&#x27; is already used by model" in panel.error.value


def test_a_malformed_recipe_file_is_reported_and_the_steps_are_kept(panel, tmp_path):
    panel.add_step.click()
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: [method: prune.unstructured\n")
    panel.recipe.path.value = str(bad)
    panel.recipe.load_button.click()
    assert "malformed YAML" in panel.recipe.message.value and len(panel.recipe.steps) == 1


def test_a_failing_run_shows_its_error_and_leaves_the_catalogue_unchanged(panel):
    panel.method.value = "quantize.rtn"
    panel.form.set_values({"group_size": 5})  # a valid number that divides no layer of the model
    models = panel.catalogue.models()
    panel.run()
    assert panel.wait(300) == "failed"
    assert "slimkit-error" in panel.error.value and "group_size 5 does not divide" in panel.error.value
    assert "<details>" not in panel.error.value  # a problem with the input needs no traceback
    assert panel.catalogue.models() == models and panel.progress.bar_style == "danger"


def test_a_wrong_model_path_fails_in_the_panel(panel, tmp_path):
    panel.model_path.value = str(tmp_path / "nowhere")
    panel.run()
    assert panel.wait(60) == "failed" and "no such model" in panel.error.value


def test_cancel_stops_a_run_and_records_nothing(panel):
    panel.method.value = "distill"
    panel.form.set_values({"steps": 100_000, "seq_len": 32, "checkpoint_every": 1_000_000})
    panel.metrics.value = ("size",)
    models = panel.catalogue.models()
    run = panel.run()
    for _ in range(600):
        if run.events:
            break
        run.join(0.1)
    panel.cancel_button.click()
    assert panel.wait(120) == "cancelled"
    assert panel.catalogue.models() == models and "cancelled" in panel.progress_text.value
    assert ["RunCancelled: cancelled by the user"] == [r.error for r in panel.catalogue.runs(status="failed")]
    assert not panel.run_button.disabled


def test_a_third_party_method_gets_a_form_and_runs(tmp_path, monkeypatch):
    from typing import Literal

    from pydantic import Field

    from slimkit import BaseCompressor, CompressionSummary, MethodConfig

    class ScaleConfig(MethodConfig):
        factor: float = Field(0.5, ge=0.0, le=1.0, description="Multiply every block weight by this.")
        which: Literal["all", "first"] = "all"

    class Scale(BaseCompressor):
        """Scale the block weights (a toy third-party method)."""

        name = "acme.scale"
        version = 1
        Config = ScaleConfig

        def compress_(self, model, adapter, config, ctx):
            import torch

            with torch.no_grad():
                for name, param in model.model.named_parameters():
                    if ".layers." in name:
                        param.mul_(config.factor)
            return CompressionSummary(f"scaled by {config.factor}")

    class Explode(BaseCompressor):
        """Fail with an unexpected error (a bug in a third-party method)."""

        name = "acme.explode"
        version = 1
        Config = ScaleConfig

        def compress_(self, model, adapter, config, ctx):
            raise ValueError("boom")

    class Plugin:
        @hookimpl
        def register_compressors(self, register):
            register(Scale)
            register(Explode)

    host = make_host(load_entrypoints=False)
    host.register(Plugin(), "acme")
    monkeypatch.setenv("SLIMKIT_ARTIFACTS", str(tmp_path / "artifacts"))
    panel = Panel(Catalogue(tmp_path / "cat.db"), host=host)
    panel.method.value = "acme.scale"
    assert "acme" in panel.method_help.value and set(panel.form.fields) == {"factor", "which"}
    panel.form.set_values({"factor": 0.25})
    panel.metrics.value = ("size",)
    panel.run()
    assert panel.wait(120) == "done", panel.error.value
    assert panel.last_result.steps[0].method == "acme.scale"
    # a bug in a plugin: its type and message in the panel, the traceback folded away
    panel.method.value = "acme.explode"
    panel.run()
    assert panel.wait(120) == "failed"
    assert "ValueError: boom" in panel.error.value and "<details>" in panel.error.value
    assert "Traceback" in panel.error.value.split("<details>")[1]
    panel.catalogue.close()


def test_compare_shows_two_catalogue_models(panel):
    quick(panel)
    panel.run()
    assert panel.wait(300) == "done"
    panel.compare_button.click()
    assert "slimkit-compare" in panel.compare_out.value and "perplexity" in panel.compare_out.value


def test_any_installed_evaluator_can_be_chosen_and_one_that_does_not_fit_is_reported(panel):
    assert set(panel.metrics.options) >= {"perplexity", "size", "latency", "stsb"}
    quick(panel)
    panel.metrics.value = ("stsb",)  # a sentence-encoder benchmark, asked of a causal LM
    panel.run()
    assert panel.wait(120) == "failed"
    assert "stsb" in panel.error.value and panel.catalogue.models() == []


def test_the_model_tab_sets_precision_and_device(panel):
    import torch

    quick(panel)
    panel.runtime.set_values({"dtype": "bfloat16"})
    assert panel.recipe_data()["runtime"] == {"dtype": "bfloat16"}
    panel.run()
    assert panel.wait(300) == "done", panel.error.value
    assert panel.last_result.model.dtype == torch.bfloat16
    assert panel.last_result.steps[0].versions["dtype"] == "bfloat16"
    panel.runtime.set_values({"dtype": "float32", "device": "gpu"})  # not a device: Run is off, the field says why
    assert panel.run_button.disabled and "device" in panel.runtime.errors
    if not torch.cuda.is_available():
        panel.runtime.set_values({"device": "cuda"})
        assert not panel.run_button.disabled
        assert panel.run() is None and "torch sees no CUDA GPU here" in panel.error.value  # before loading


def test_the_model_tab_divides_a_run_among_ranks(panel):
    quick(panel)
    panel.form.set_values({"scorer": "wanda"})  # data-aware: the ranks divide the calibration samples
    panel.runtime.set_values({"ranks": 2})
    assert panel.recipe_data()["runtime"] == {"ranks": 2}
    panel.run()
    assert panel.wait(300) == "done", panel.error.value
    record = panel.last_result.steps[0].details["data_parallel"]
    assert record["ranks"] == 2 and len(record["peak_rss_bytes"]) == 2
    assert panel.progress.value == panel.progress.max  # rank 0's progress reached the panel
    assert panel.last_result.provenance["content_id"] in {m.id for m in panel.catalogue.models()}


def test_the_model_tab_streams_a_run(panel):
    quick(panel)
    panel.metrics.value = ("perplexity",)
    panel.runtime.set_values({"stream": True})
    assert panel.recipe_data()["runtime"] == {"stream": True}
    panel.run()
    assert panel.wait(300) == "done", panel.error.value
    result = panel.last_result
    assert result.steps[0].versions["streamed"] == "block by block"
    assert (result.output / "model.safetensors.index.json").is_file() or list(result.output.glob("slimkit-*"))
    assert "perplexity" in result.after
