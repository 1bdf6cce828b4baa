"""Catalogue integrity: concurrent writer processes, ``kill -9`` mid-run, artifacts written before
their rows, failed runs, and refused (or cascading) deletes; each on SQLite and on PostgreSQL
(the ``catalogue_url`` fixture)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from slimkit import BaseCompressor, Recipe, hookimpl, load_model, run_recipe
from slimkit.core.errors import PluginError
from slimkit.core.catalogue import Catalogue, CatalogueError
from slimkit.core.catalogue.migrate import read_only_sqlite as read_only
from slimkit.core.provenance import content_id

from backends import query, row_counts

TABLES = ("runs", "models", "steps", "step_parents", "step_uses", "evaluations")
ARCHITECTURE = "LlamaForCausalLM"


def counts(url: str) -> dict[str, int]:
    return row_counts(url, TABLES)


def prune(*sparsities: float, evaluate: bool = False) -> Recipe:
    data: dict[str, Any] = {"steps": [{"method": "prune.unstructured", "params": {"sparsity": s}} for s in sparsities]}
    if evaluate:
        data["evaluate"] = [{"metric": "size"}]
    return Recipe.from_data(data)


def start_script(tmp_path: Path, name: str, source: str, *args: str) -> subprocess.Popen[str]:
    script = tmp_path / name
    script.write_text(textwrap.dedent(source))
    return subprocess.Popen([sys.executable, str(script), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})


def wait_for(marker: Path, process: subprocess.Popen[str], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not marker.exists():
        if process.poll() is not None:
            _, stderr = process.communicate()
            pytest.fail(f"the subprocess ended (status {process.returncode}) before {marker.name}:\n{stderr}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"no {marker.name} after {timeout} s")
        time.sleep(0.02)


# -- eight writer processes at once -------------------------------------------------------------------
WRITER = """
    import sys, time
    from pathlib import Path
    import slimkit
    from slimkit.core.catalogue import Catalogue

    url, out, sparsity, tag, go = sys.argv[1:]
    catalogue = Catalogue(url)
    host = slimkit.make_host(load_entrypoints=False)
    recipe = slimkit.Recipe.from_data([{"method": "prune.unstructured", "params": {"sparsity": float(sparsity)}}])
    model = slimkit.load_model("example:stories260K")
    Path(go + "." + tag).touch()
    while not Path(go).exists():
        time.sleep(0.005)
    result = slimkit.run_recipe(recipe, model, out=out, catalogue=catalogue, host=host)
    model_id = result.provenance["content_id"]
    for i in range(30):
        catalogue.record_evaluations(model_id, "writer", 1, {f"{tag}-{i}": float(i)}, run_id=result.run_id)
    print(result.run_id, model_id)
"""


WRITERS = {tag: f"0.{i}" for i, tag in enumerate("abcdefgh", start=1)}  # tag: sparsity


@pytest.mark.slow
def test_eight_writer_processes_at_once_all_succeed(tmp_path: Path, catalogue_url: str) -> None:
    url = catalogue_url
    base = load_model("example:stories260K")
    with Catalogue(url) as catalogue:
        catalogue.record_model(content_id(base.model), ARCHITECTURE, source="example:stories260K")
    go = tmp_path / "go"
    writers = {tag: start_script(tmp_path, f"writer_{tag}.py", WRITER, url, str(tmp_path / f"out-{tag}"),
                                 sparsity, tag, str(go))
               for tag, sparsity in WRITERS.items()}
    for tag, process in writers.items():
        wait_for(tmp_path / f"go.{tag}", process)
    go.touch()  # all are loaded and waiting: release them together
    results = {}
    for tag, process in writers.items():
        stdout, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr
        results[tag] = stdout.split()

    with Catalogue(url) as catalogue:
        assert {run.id: run.status for run in catalogue.runs()} == {run_id: "done" for run_id, _ in results.values()}
        for tag, (run_id, model_id) in results.items():
            entry = catalogue.model(model_id)
            assert entry.location == str((tmp_path / f"out-{tag}").resolve())
            (step,) = catalogue.steps_into(model_id)
            assert step.run_id == run_id and step.input_id == content_id(base.model)
            assert {k for k in catalogue.metrics(model_id) if k.startswith("writer.")} == {
                f"writer.{tag}-{i}" for i in range(30)}
    n = len(WRITERS)
    assert counts(url) == {"runs": n, "models": n + 1, "steps": n, "step_parents": n, "step_uses": n,
                           "evaluations": 30 * n}
    if "://" not in url:
        with read_only(Path(url)) as connection:
            assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_two_writers_recording_the_same_new_model_both_succeed(tmp_path: Path, catalogue_url: str) -> None:
    """The race made deterministic: writer 2 wants to record a model while writer 1's insert of
    the same model is still uncommitted. Writer 2 must wait (SQLite transactions take the write
    lock at BEGIN, PostgreSQL ones an advisory lock) and then find the row, not fail on the unique id."""
    url = catalogue_url
    first, second = Catalogue(url), Catalogue(url)
    model_id = "sha256:" + "ab" * 32
    began = threading.Event()
    errors: list[BaseException] = []

    def record() -> None:
        began.set()
        try:
            second.record_model(model_id, ARCHITECTURE, location="/elsewhere")
        except BaseException as error:  # reported by the assertion below
            errors.append(error)

    try:
        with first.session() as session, session.begin():
            first.record_model(model_id, ARCHITECTURE, session=session)  # flushed, not committed
            writer = threading.Thread(target=record)
            writer.start()
            assert began.wait(30)
            time.sleep(0.5)  # writer 2 is now blocked on the write lock
            assert writer.is_alive()
        writer.join(90)
        assert not writer.is_alive()
        assert errors == []
        assert counts(url)["models"] == 1
        assert second.model(model_id).location == "/elsewhere"  # its update applied after the wait
    finally:
        first.close()
        second.close()


# -- kill -9 in the middle of a run ---------------------------------------------------------------------
SLOW_RUN = """
    import sys, time
    from pathlib import Path
    import slimkit
    from slimkit import BaseCompressor, hookimpl

    url, out, marker = sys.argv[1:]


    class Slow(BaseCompressor):
        \"\"\"Says it is inside the step, then takes far longer than the test waits.\"\"\"

        name = "test.slow"

        def compress_(self, model, adapter, config, ctx):
            Path(marker).write_text("inside the step")
            time.sleep(300)
            raise AssertionError("should have been killed by now")


    class SlowPlugin:
        @hookimpl
        def register_compressors(self, register):
            register(Slow)


    host = slimkit.make_host(load_entrypoints=False)
    host.register(SlowPlugin(), name="slow")
    recipe = slimkit.Recipe.from_data([
        {"method": "prune.unstructured", "params": {"sparsity": 0.5}}, {"method": "test.slow"},
    ])
    slimkit.run_recipe(recipe, "example:stories260K", out=out, catalogue=url, host=host)
"""


def test_kill_9_mid_run_leaves_a_consistent_catalogue(tmp_path: Path, catalogue_url: str) -> None:
    url = catalogue_url
    out = tmp_path / "models" / "derived"
    marker = tmp_path / "inside-step"
    process = start_script(tmp_path, "slow_run.py", SLOW_RUN, url, str(out), str(marker))
    try:
        wait_for(marker, process)
        (running,) = query(url, "SELECT id, status, pid FROM runs")  # recorded as running, by that process
        assert running[1:] == ("running", process.pid)
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL

    # No model folder, and no half-written hidden one, at the output location.
    assert not out.exists()
    assert not out.parent.exists() or not any(out.parent.iterdir())
    assert list(tmp_path.rglob(".derived.partial-*")) == []
    with Catalogue(url) as catalogue:
        assert catalogue.failed_runs == [running[0]]
        (run,) = catalogue.runs()
        assert run.status == "failed" and run.ended is not None
        assert run.error is not None and "killed" in run.error
        # Nothing from the run but the failed run itself: inputs are recorded with the result.
        assert catalogue.models() == []
    assert counts(url) == {"runs": 1, "models": 0, "steps": 0, "step_parents": 0, "step_uses": 0, "evaluations": 0}
    with Catalogue(url) as catalogue:
        assert catalogue.failed_runs == []  # marked once; the next open has nothing to do


HOLDER = """
    import sys, time
    from pathlib import Path
    from slimkit.core.catalogue import Catalogue
    from slimkit.core.catalogue.schema import RunRow
    from slimkit.core.catalogue.store import utcnow

    url, marker = sys.argv[1:]
    catalogue = Catalogue(url)
    with catalogue.session() as session, session.begin():
        session.add(RunRow(id="f" * 32, kind="recipe", status="running", host="h", started=utcnow()))
        session.flush()  # written, holding the write lock, never committed
        Path(marker).touch()
        time.sleep(300)
"""


def test_kill_9_inside_a_write_transaction_releases_the_lock(tmp_path: Path, catalogue_url: str) -> None:
    """A writer killed while it holds the write lock (SQLite's file lock, PostgreSQL's advisory
    lock, released when the server sees the connection drop): the next writer gets in at once and
    the uncommitted row is gone."""
    url = catalogue_url
    Catalogue(url).close()
    marker = tmp_path / "holding"
    process = start_script(tmp_path, "holder.py", HOLDER, url, str(marker))
    try:
        wait_for(marker, process)
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.communicate(timeout=60)
    started = time.monotonic()
    with Catalogue(url) as catalogue:
        run_id = catalogue.start_run("recipe", "after the kill")
        assert [run.id for run in catalogue.runs()] == [run_id]
    assert time.monotonic() - started < 10
    assert counts(url)["runs"] == 1


# -- artifacts before rows, failed runs, deletes (in-process) ------------------------------------------
def test_artifact_is_complete_before_its_row_commits(host: Any, tmp_path: Path, monkeypatch: Any,
                                                    catalogue_url: str) -> None:
    url = catalogue_url
    out = tmp_path / "derived"
    seen: dict[str, Any] = {}
    original = Catalogue.record_provenance

    def spy(self: Catalogue, document: dict[str, Any], *, location: str | None, **kwargs: Any) -> Any:
        if location == str(out.resolve()):  # the derived model: look at the folder and the rows now
            folder = Path(location)
            seen["files"] = {p.name for p in folder.iterdir()}
            seen["document"] = json.loads((folder / "slimkit.json").read_text())
            seen["weights"] = content_id(load_model(folder).model)
            seen["rows"] = counts(url)
        return original(self, document, location=location, **kwargs)

    monkeypatch.setattr(Catalogue, "record_provenance", spy)
    result = run_recipe(prune(0.5, evaluate=True), "example:stories260K", out=out, host=host, catalogue=url)
    model_id = result.provenance["content_id"]
    assert {"config.json", "model.safetensors", "slimkit.json"} <= seen["files"]
    assert seen["document"]["content_id"] == seen["weights"] == model_id
    assert seen["document"]["evaluations"]  # the final slimkit.json, with the after-metrics
    assert seen["rows"]["steps"] == 0 and seen["rows"]["models"] == 1  # only the input was recorded

    with Catalogue(url) as catalogue:
        entry = catalogue.model(model_id)
        folder = Path(entry.location or "")
        assert folder == out.resolve()
        assert {"config.json", "model.safetensors", "slimkit.json"} <= {p.name for p in folder.iterdir()}
        assert json.loads((folder / "slimkit.json").read_text())["content_id"] == model_id
        assert entry.size_bytes and entry.size_bytes >= (folder / "model.safetensors").stat().st_size
        assert not list(tmp_path.glob(".derived.*"))


class Exploding(BaseCompressor):
    """Changes some weights, then fails."""

    name = "test.exploding_catalogue"

    def compress_(self, model: Any, adapter: Any, config: Any, ctx: Any) -> Any:
        next(model.model.parameters()).data.zero_()
        raise RuntimeError("out of memory (simulated)")


class ExplodingPlugin:
    @hookimpl
    def register_compressors(self, register: Any) -> None:
        register(Exploding)


def test_failed_run_is_recorded_failed_without_steps(slimkit_host: Any, register_plugin: Any,
                                                     tmp_path: Path, catalogue_url: str) -> None:
    register_plugin(ExplodingPlugin(), name="exploding-catalogue")
    url = catalogue_url
    recipe = Recipe.from_data([{"method": "prune.unstructured"}, {"method": "test.exploding_catalogue"}])
    with pytest.raises(PluginError, match="simulated"):
        run_recipe(recipe, "example:stories260K", out=tmp_path / "out", host=slimkit_host, catalogue=url)
    assert not (tmp_path / "out").exists()
    with Catalogue(url) as catalogue:
        (run,) = catalogue.runs()
        assert run.status == "failed" and run.error == (
            "PluginError: compressor 'test.exploding_catalogue' (plugin 'exploding-catalogue') failed in compress_: "
            "RuntimeError: out of memory (simulated)")
        assert run.ended is not None and catalogue.failed_runs == []
    assert counts(url) == {"runs": 1, "models": 0, "steps": 0, "step_parents": 0, "step_uses": 0, "evaluations": 0}


def test_delete_with_descendants_needs_cascade(host: Any, tmp_path: Path, catalogue_url: str) -> None:
    url = catalogue_url
    out = tmp_path / "chain"
    result = run_recipe(prune(0.3, 0.5, evaluate=True), "example:stories260K", out=out, host=host,
                        catalogue=url)
    base_id = result.provenance["base"]["content_id"]
    middle, leaf = (step.child_id for step in result.steps)
    assert leaf == result.provenance["content_id"]
    before = counts(url)
    assert before["models"] == 3 and before["steps"] == 2

    with Catalogue(url) as catalogue:
        with pytest.raises(CatalogueError, match="1 derived model") as refused:
            catalogue.delete(middle)
        assert "\n" not in str(refused.value) and "cascade" in str(refused.value)
        assert counts(url) == before
        with pytest.raises(CatalogueError, match="derived model"):
            catalogue.delete(base_id)
        assert counts(url) == before

        assert catalogue.delete(middle, cascade=True) == [middle, leaf]
        assert [m.id for m in catalogue.models()] == [base_id]
        assert catalogue.steps_from(base_id) == []
        assert {e.model_id for e in catalogue.evaluations(base_id)} == {base_id}
    after = counts(url)
    assert (after["models"], after["steps"], after["step_parents"]) == (1, 0, 0)
    assert after["evaluations"] == len(result.before["size"])  # only the base's metrics remain
    assert (out / "model.safetensors").is_file()  # folders on disk are left to `slimkit gc`
