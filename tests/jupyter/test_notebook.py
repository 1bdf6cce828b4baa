"""The extension in a real IPython kernel, without a browser: ``%load_ext slimkit`` and
``%slimkit`` in a notebook executed by nbclient, and a kernel restarted in the middle of a run
(the run is recorded as failed and the next panel says so)."""

from __future__ import annotations

import json
import time

import pytest

nbformat = pytest.importorskip("nbformat", reason="nbformat is not installed (test extra)")
nbclient = pytest.importorskip("nbclient", reason="nbclient is not installed (test extra)")
pytest.importorskip("anywidget", reason="the jupyter extra is not installed")

from slimkit.core.catalogue import Catalogue  # noqa: E402

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
pytestmark = pytest.mark.slow


def _notebook(*cells: str):
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    return notebook


def _text(cell) -> str:
    return "".join(out.get("text", "") for out in cell.outputs if out.get("output_type") == "stream")


@pytest.mark.timeout(300)
def test_load_ext_shows_the_panel_and_a_run_lands_in_the_catalogue(tmp_path):
    db = tmp_path / "cat.db"
    notebook = _notebook(
        "%load_ext slimkit",
        f"%slimkit --catalogue {db}",
        "p = slimkit_panel\n"
        "p.method.value = 'prune.unstructured'\n"
        "p.form.set_values({'sparsity': 0.6})\n"
        "p.windows.value = 2\n"
        "p.run()\n"
        "print(p.wait(240))\n"
        "print(p.summary())",
        "p.last_result",
    )
    client = nbclient.NotebookClient(notebook, timeout=280, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    shown = notebook.cells[1].outputs
    assert any(WIDGET_VIEW in out.get("data", {}) for out in shown), shown  # the panel is a widget view
    state, summary = _text(notebook.cells[2]).splitlines()[:2]
    assert state == "done", _text(notebook.cells[2])
    assert "run: prune.unstructured (sparsity=0.6)" in summary and "catalogue: 2 models" in summary
    result_html = notebook.cells[3].outputs[0]["data"]["text/html"]
    assert "perplexity" in result_html and "prune.unstructured" in result_html
    with Catalogue(db) as cat:
        assert len(cat.models()) == 2 and [r.status for r in cat.runs()] == ["done"]
    # the notebook keeps the widgets' state (what JupyterLab would render on reopening)
    states = notebook.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    assert any(s["model_name"] == "IntProgressModel" and s["state"].get("bar_style") == "success"
               for s in states.values())


@pytest.mark.timeout(300)
def test_a_kernel_restarted_mid_run_is_recorded_failed_and_the_next_panel_says_so(tmp_path):
    from jupyter_client.manager import start_new_kernel

    db = tmp_path / "cat.db"
    manager, client = start_new_kernel(kernel_name="python3", cwd=str(tmp_path))
    try:
        start = (
            "import slimkit.jupyter_ext as j\n"
            f"p = j.panel({str(db)!r})\n"
            "p.method.value = 'distill'\n"
            "p.form.set_values({'steps': 100000, 'seq_len': 32, 'checkpoint_every': 1000000})\n"
            "p.metrics.value = ('size',)\n"
            "run = p.run()\n"
            "print(run is not None)"
        )
        reply = client.execute_interactive(start, timeout=120)
        assert reply["content"]["status"] == "ok"
        deadline = time.monotonic() + 120
        while True:  # the run is in the catalogue as running, by the kernel's process
            with Catalogue(db) as cat:
                if [r.status for r in cat.runs()] == ["running"]:
                    break
            assert time.monotonic() < deadline, "the run never started"
            time.sleep(0.5)
        manager.restart_kernel(now=True)  # what Kernel > Restart does: the old process is killed
        client.wait_for_ready(timeout=60)
        lines: list[str] = []
        check = (
            "import json, slimkit.jupyter_ext as j\n"
            f"p = j.panel({str(db)!r})\n"
            "print(json.dumps([p.notice.value, p.summary()]))"
        )
        client.execute_interactive(check, timeout=120, output_hook=lambda msg: lines.append(
            msg["content"].get("text", "")) if msg["msg_type"] == "stream" else None)
        notice, summary = json.loads("".join(lines))
        assert "1 run(s) were still in progress" in notice and "catalogue: 0 models" in summary
        with Catalogue(db) as cat:
            (run,) = cat.runs()
            assert run.status == "failed" and "process ended" in run.error and cat.models() == []
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
