"""The background runner (progress, cancel, errors) and the panel's HTML tables, in-process."""

from __future__ import annotations

import threading

import pytest

pytest.importorskip("ipywidgets", reason="the jupyter extra is not installed")

from slimkit.core.contracts import ProgressEvent  # noqa: E402
from slimkit.core.errors import ConfigError  # noqa: E402
from slimkit.jupyter_ext.tables import compare_table, results_table  # noqa: E402
from slimkit.jupyter_ext.worker import BackgroundRun  # noqa: E402


def test_work_runs_in_another_thread_and_reports_progress():
    seen, threads = [], []

    def work(progress):
        threads.append(threading.current_thread().name)
        for i in range(3):
            progress(ProgressEvent("blocks", i + 1, 3))
        return 42

    run = BackgroundRun(work, on_event=seen.append).start()
    assert run.join(10) and run.state == "done" and run.result == 42
    assert threads == ["slimkit-run"] and [e.done for e in seen] == [1, 2, 3]


def test_cancel_stops_the_work_at_its_next_progress_report():
    started, release = threading.Event(), threading.Event()
    reached = []

    def work(progress):
        progress(ProgressEvent("steps", 0, 100))
        started.set()
        release.wait(10)
        for i in range(100):
            progress(ProgressEvent("steps", i + 1, 100))  # raises once cancelled
            reached.append(i)
        return "finished"

    finished = []
    run = BackgroundRun(work, on_finish=finished.append).start()
    assert started.wait(10)
    run.cancel()
    release.set()
    assert run.join(10)
    assert run.state == "cancelled" and run.result is None and reached == [] and finished == [run]


def test_errors_are_kept_not_raised_in_the_thread():
    def work(progress):
        raise ConfigError("sparsity must be below 1")

    run = BackgroundRun(work).start()
    run.join(10)
    assert run.state == "failed" and isinstance(run.error, ConfigError) and "ConfigError" in run.details
    with pytest.raises(RuntimeError, match="started already"):
        run.start()


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    from slimkit import Recipe, make_host, run_recipe
    from slimkit.core.catalogue import Catalogue

    folder = tmp_path_factory.mktemp("tables")
    cat = Catalogue(folder / "cat.db")
    host = make_host(load_entrypoints=False)
    evaluate = [{"metric": "perplexity", "params": {"max_windows": 2, "seq_len": 64}}]
    results = []
    for sparsity, name in ((0.3, "p30"), (0.6, "<p60>")):
        recipe = Recipe.from_data({"steps": [{"method": "prune.unstructured", "params": {"sparsity": sparsity}}],
                                   "evaluate": evaluate})
        results.append(run_recipe(recipe, "example:stories260K", out=folder / name.strip("<>"), host=host,
                                  catalogue=cat, name=name))
    yield cat, results
    cat.close()


def test_results_table_lists_metrics_before_and_after_and_the_steps(two_models):
    _, (first, _) = two_models
    page = results_table(first, seconds=1.5)
    before, after = first.before["perplexity"]["perplexity"], first.after["perplexity"]["perplexity"]
    assert "class='slimkit-results'" in page and "perplexity.perplexity" in page
    assert f"{before:,.4g}" in page and f"{after:,.4g}" in page and f"x{after / before:.3g}" in page
    assert "prune.unstructured" in page and "in 1.50 s" in page  # durations as present.format.duration writes them


def test_compare_table_puts_two_models_side_by_side_and_escapes_names(two_models):
    from slimkit.core.catalogue import queries

    cat, (first, second) = two_models
    page = compare_table(queries.diff(cat, first.provenance["content_id"], second.provenance["content_id"]))
    assert "&lt;p60&gt;" in page and "<p60>" not in page
    assert "same base model" in page and "sparsity=0.3" in page and "sparsity=0.6" in page
    a = cat.metrics(first.provenance["content_id"])["perplexity.perplexity"]
    assert f"{a:,.4g}" in page


def test_serialised_callbacks_never_overlap_even_from_two_threads():
    import time

    from slimkit.jupyter_ext.serial import serialised

    trace = []

    @serialised
    def handler(name):
        trace.append(("in", name))
        time.sleep(0.05)
        trace.append(("out", name))

    @serialised
    def outer():
        handler("nested")  # re-entrant: a callback may call another

    threads = [threading.Thread(target=handler, args=(n,)) for n in "ab"] + [threading.Thread(target=outer)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(trace) == 6 and all(trace[i][0] == "in" and trace[i + 1] == ("out", trace[i][1])
                                   for i in range(0, 6, 2))


def test_without_the_jupyter_extra_the_panel_says_what_to_install():
    import subprocess
    import sys

    code = ("import sys; sys.modules['ipywidgets'] = None\n"  # as if it were not installed
            "from slimkit.core.errors import SlimkitError\n"
            "import slimkit.jupyter_ext as j\n"
            "try:\n    j.panel()\nexcept SlimkitError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "the JupyterLab panel needs ipywidgets: pip install 'slimkit[jupyter]'", out.stderr
