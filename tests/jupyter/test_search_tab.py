"""The panel's Search tab in-process (ipywidgets work without a front end): the space prefilled
from the recipe and the generated goals form, a real search of the bundled model in the
background (a few inline trials on a temporary catalogue) filling the trials table and the front
as trials finish, a click on a front trial drawing its lineage, Stop keeping what finished, and
bad input shown as one line before any work."""

from __future__ import annotations

import pytest

pytest.importorskip("anywidget", reason="the jupyter extra is not installed")
pytest.importorskip("optuna", reason="the search extra is not installed")

from slimkit import make_host  # noqa: E402
from slimkit.core.search.trials import Trial  # noqa: E402
from slimkit.jupyter_ext.panel import Panel  # noqa: E402
from slimkit.jupyter_ext.search_views import front_svg, trials_table  # noqa: E402

SPACE = """
name: panel-search
calibration: {n_samples: 8, seq_len: 32}
steps:
  - method: prune.unstructured
    params: {sparsity: [0.3, 0.5]}
    optional: true
  - method: quantize.rtn
    params: {bits: [4, 8], group_size: 4}
evaluate:
  - metric: perplexity
    params: {max_windows: 2, seq_len: 64}
"""


@pytest.fixture
def panel(tmp_path, monkeypatch):
    monkeypatch.setenv("SLIMKIT_ARTIFACTS", str(tmp_path / "artifacts"))
    made = Panel(tmp_path / "cat.db", host=make_host(load_entrypoints=False))
    yield made
    tab = made.search_tab
    if tab.run_state is not None:
        tab.stop()
        tab.wait(120)
    made.catalogue.close()


def search(panel, trials):
    tab = panel.search_tab
    tab.editor.value = SPACE
    tab.form.set_values({"trials": trials, "constraints": ["size <= 0.5 x base"]})
    return tab


def test_the_search_tab_starts_from_the_panels_recipe_with_a_generated_goals_form(panel):
    tab = panel.search_tab
    titles = [panel.tabs.get_title(i) for i in range(len(panel.tabs.children))]
    assert titles[-2:] == ["Search", "Export"] and panel.tabs.children[-2] is tab.widget
    assert "method: prune.unstructured" in tab.editor.value and "max_windows: 16" in tab.editor.value
    assert {"kind", "objectives", "constraints", "sampler", "trials", "time"} <= set(tab.form.fields)
    assert tab.form.config().objectives == ["minimize perplexity", "minimize size"]
    assert not tab.start_button.disabled and tab.stop_button.disabled
    assert tab.status.value == tab.summary()
    assert tab.summary().startswith("search: example:stories260K, 6 trials | ready | state: idle")
    panel.method.value = "quantize.rtn"  # a recipe of two steps, then "From recipe"
    panel.recipe.add("prune.unstructured", {"sparsity": 0.5})
    panel.recipe.add("quantize.rtn", {"bits": 4})
    tab.from_recipe.click()
    spec, goals = tab.spec()
    assert [s.method for s in spec.steps] == ["prune.unstructured", "quantize.rtn"]
    assert spec.steps[1].params == {"bits": 4} and spec.budget.trials == 6 and goals.kind == "search"
    assert [str(o) for o in spec.objectives] == ["minimize perplexity", "minimize size"]
    panel.model_path.value = ""  # no model: Start is disabled and says why
    assert tab.start_button.disabled and "choose it in the Model tab" in tab.model_line.value
    assert tab.start() is None and "choose the model to search from" in tab.error.value


def test_a_search_fills_the_table_and_front_as_trials_finish_and_a_click_shows_the_lineage(panel):
    tab = search(panel, 3)
    run = tab.start()
    assert run is not None and tab.start_button.disabled and not tab.stop_button.disabled
    seen_live = False
    while not run.join(0.05):
        seen_live = seen_live or (run.running and any(t.finished for t in list(tab.trials.values())))
    assert tab.wait(120) == "done", tab.error.value
    assert seen_live  # the table filled in while the search ran, not only at its end
    result = tab.last_result
    assert result.stopped is None and len(result.trials) == 3 and all(t.status == "done" for t in result.trials)
    assert result.front and {t.number for t in tab.front} == {t.number for t in result.front}
    # the input model's metrics were known while it ran (the live feasibility): the search's own
    assert tab.base is not None and tab.base["size"] == result.base_metrics["size"]
    shown = tab.table.svg
    assert shown.count("<tr class='slimkit-trial") == 3 and shown.count("slimkit-front-row") == len(result.front)
    assert "perplexity.perplexity ↓" in shown and "size ↓" in shown and ">yes<" in shown
    for trial in result.trials:
        assert trial.label.replace(">", "&gt;") in shown
    assert sorted(tab.table.clickable_ids) == sorted(t.model_id for t in result.trials)
    assert sorted(tab.plot.clickable_ids) == sorted(t.model_id for t in result.trials)
    assert f"{len(result.front)} of 3 trial(s) on the front" in tab.plot.svg
    assert "3 done; " in tab.outcome.value and tab.progress.bar_style == "success"
    assert "state: done | trials: 3 finished" in tab.status.value
    # the trials' models are in the panel's catalogue and pickers
    assert {t.model_id for t in result.trials} <= {value for _, value in panel.model_list.options}
    # a click on a front point draws its lineage: the input model and the trial's model
    best = result.front[0]
    tab.plot.select(best.model_id)
    assert tab.selected == best.model_id and tab.table.selected == best.model_id
    assert best.model_id in tab.lineage.clickable_ids and result.base_id in tab.lineage.clickable_ids
    assert f"trial {best.number}: {best.label}" in tab.lineage_title.value.replace("&gt;", ">")
    assert "slimkit-selected-row" in tab.table.svg and "slimkit-highlight-" in tab.plot.svg
    tab.open_button.click()  # the trial's model becomes the panel's model
    assert panel.model_list.value == best.model_id and panel.tabs.selected_index == 4


def test_stop_ends_the_search_after_the_running_trial_and_keeps_what_finished(panel):
    tab = search(panel, 5)
    run = tab.start()
    while not run.join(0.02) and not any(t.finished for t in list(tab.trials.values())):
        pass
    tab.stop_button.click()
    assert tab.stop_button.disabled and "state: stopping" in tab.summary()
    assert tab.wait(120) == "done", tab.error.value
    result = tab.last_result
    assert result.stopped == "stopped on request" and 1 <= len(result.trials) < 5
    assert "stopped on request" in tab.outcome.value and tab.progress.description == "stopped"
    assert tab.table.svg.count("<tr class='slimkit-trial") == len(result.trials)
    assert not tab.start_button.disabled and tab.stop_button.disabled


def test_bad_input_is_one_line_before_any_work(panel):
    tab = panel.search_tab
    tab.editor.value = "steps:\n  - method: [prune.unstructured\n"
    assert tab.start() is None and tab.run_state is None
    shown = tab.error.value
    assert "search space: malformed YAML at line" in shown and "Traceback" not in shown and "<details>" not in shown
    tab.editor.value = SPACE
    tab.form.set_values({"objectives": ["minimize speed"]})
    assert tab.start() is None
    assert "no evaluator of this file produces the metric &#x27;speed&#x27;" in tab.error.value
    assert tab.error.value.count("Error:") == 1 and "<details>" not in tab.error.value
    tab.form.set_values({"time": "soon"})  # the generated form refuses it beside the field
    assert tab.start_button.disabled and tab.form.fields["time"].message.value
    assert tab.start() is None and "the goals and budget are not valid: invalid: time" in tab.error.value


def test_the_trials_table_and_front_plot_of_plain_trials():
    from slimkit.core.search.goals import Goals, Objective

    goals = Goals((Objective("perplexity.perplexity", True), Objective("size", True)), ())
    a = Trial(1, {}, "quantize.rtn(bits=<4>)", "done", "sha256:" + "a" * 64, metrics={
        "perplexity.perplexity": 5.0, "size": 1000.0}, feasible=True)
    b = Trial(2, {}, "quantize.rtn(bits=8)", "failed", error="out of memory")
    table = trials_table([a, b], goals, front=[1])
    assert "bits=&lt;4&gt;" in table and "1 ★" in table and "failed: out of memory" in table
    assert table.count("id='slimkit-select-") == 1 and "1000 B" in table
    assert "no trials yet" in trials_table([], goals)
    assert "no finished trial yet" in front_svg([b], goals, [])
    assert "1 of 1 trial(s) on the front" in front_svg([a, b], goals, [a])
