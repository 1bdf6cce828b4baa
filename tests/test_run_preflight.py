"""One pass through a run: what is checked before any work, and identical runs sharing one folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from slimkit import Recipe, load_model, load_recipe, run_recipe
from slimkit.core.catalogue import Catalogue
from slimkit.core.catalogue.artifacts import artifact_dir, collect_garbage, new_artifact_path
from slimkit.core.catalogue.entities import StepEntry
from slimkit.core.cli import make_cli
from slimkit.core.errors import OutputExistsError
from slimkit.core.preflight import OutputError, check_disk_space

from backends import row_counts

PRUNE = [{"method": "prune.unstructured", "params": {"sparsity": 0.5}}]


def recipe() -> Recipe:
    return Recipe.from_data(PRUNE)


def count_rows(db: Path) -> tuple[int, int]:
    with Catalogue(str(db)) as cat:
        return len(cat.models()), len(cat.runs())


def test_output_inside_or_equal_to_the_input_model_is_refused(host, tmp_path):
    model = load_model("example:stories260K")
    source = tmp_path / "source"
    run_recipe(recipe(), model, out=source, host=host, catalogue=False)
    for out in (source, source / "nested"):
        with pytest.raises(OutputError, match="the input model's folder; choose another --out"):
            run_recipe(recipe(), str(source), out=out, overwrite=True, host=host, catalogue=False)
    assert not (source / "nested").exists()


def test_catalogued_folders_are_protected(host, tmp_path):
    db = tmp_path / "cat.db"
    first = run_recipe(recipe(), "example:stories260K", out=tmp_path / "a", host=host, catalogue=str(db))
    with pytest.raises(OutputError, match="inside the folder of catalogued model"):
        run_recipe(recipe(), "example:stories260K", out=tmp_path / "a" / "x", host=host, catalogue=str(db))
    with pytest.raises(OutputExistsError, match="holds a catalogued model"):
        run_recipe(recipe(), "example:stories260K", out=tmp_path / "a", host=host, catalogue=str(db))
    # With --overwrite the folder is replaced and the catalogue forgets where the old model was:
    # it never points at weights that are not the model's.
    other = Recipe.from_data([{"method": "prune.unstructured", "params": {"sparsity": 0.3}}])
    second = run_recipe(other, "example:stories260K", out=tmp_path / "a", overwrite=True, host=host,
                        catalogue=str(db))
    with Catalogue(str(db)) as cat:
        assert cat.model(first.provenance["content_id"]).location is None
        assert cat.model(second.provenance["content_id"]).location == str((tmp_path / "a").resolve())


def test_a_taken_name_is_refused_before_the_model_loads(host, tmp_path):
    db = tmp_path / "cat.db"
    run_recipe(recipe(), "example:stories260K", out=tmp_path / "a", host=host, catalogue=str(db), name="mine")
    before = count_rows(db)
    with pytest.raises(OutputError, match="the name 'mine' is already used by model"):
        run_recipe(recipe(), str(tmp_path / "no-such-model"), out=tmp_path / "b", host=host, catalogue=str(db),
                   name="mine")  # a missing model would fail later: the name is checked first
    assert not (tmp_path / "b").exists()
    assert count_rows(db) == before


def test_unwritable_output_parent_is_refused_before_work(host, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(OutputError, match=r"cannot write the output folder .*file/out: .* is a file, not a folder"):
        run_recipe(recipe(), "example:stories260K", out=blocker / "out", host=host, catalogue=False)


def test_too_little_disk_is_refused():
    with pytest.raises(OutputError, match=r"not enough free space for the result /tmp/slimkit-result: about .* MiB needed, .* MiB free in /tmp$"):
        check_disk_space(Path("/tmp/slimkit-result"), 2**62)
    check_disk_space(Path("/tmp/slimkit-result"), 1)


def test_cli_checks_output_and_name_before_loading_the_model(host, tmp_path):
    db = tmp_path / "cat.db"
    cli = make_cli(host)
    ok = CliRunner().invoke(cli, ["--catalogue", str(db), "run", "example:prune-50", "-m", "example:stories260K",
                                  "--out", str(tmp_path / "a"), "--name", "n1", "--no-progress"])
    assert ok.exit_code == 0, ok.output
    taken = CliRunner().invoke(cli, ["--catalogue", str(db), "run", "example:prune-50", "-m", "nowhere/model",
                                     "--out", str(tmp_path / "b"), "--name", "n1"])
    assert taken.exit_code == 1 and "the name 'n1' is already used" in taken.output
    assert "no such" not in taken.output  # refused before the (missing) model was looked at


@pytest.mark.slow
def test_identical_runs_share_one_managed_folder(tmp_path, catalogue_url):
    """Two identical `slimkit run`s started together (real processes computing the same step, one
    catalogue on SQLite or PostgreSQL, no --out): both report the one folder the catalogue keeps,
    which has one row for the step and the model; no reported folder is left for gc."""
    db = catalogue_url
    Catalogue(db).close()
    recipe_file = tmp_path / "prune.yaml"
    recipe_file.write_text("name: same\nsteps:\n  - method: prune.unstructured\n    params: {sparsity: 0.5}\n")
    command = [sys.executable, "-m", "slimkit", "--catalogue", str(db), "run", str(recipe_file),
               "-m", "example:stories260K", "--json", "--force"]
    env = {**os.environ, "SLIMKIT_LOAD_PLUGINS": ""}
    processes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
                 for _ in range(2)]
    outputs, reused = [], []
    for process in processes:
        stdout, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr
        outputs.append(json.loads(stdout)["output"])
        reused.append(json.loads(stdout)["reused"])
    assert outputs[0] == outputs[1] and reused == [[False], [False]]  # both computed the step
    assert row_counts(db, ("runs", "models", "steps", "step_parents")) == {
        "runs": 2, "models": 2, "steps": 1, "step_parents": 1}
    with Catalogue(db) as cat:
        (model,) = [m for m in cat.models() if m.location and "artifacts" in m.location]
        assert model.location == str(Path(outputs[0]).resolve())
        assert [p for p in artifact_dir(cat).iterdir() if not p.name.startswith(".")] == [Path(outputs[0])]
        assert collect_garbage(cat, dry_run=True).removed == []
        # and a third identical run, later, in this process, does not save a second copy either
        third = run_recipe(load_recipe(recipe_file), "example:stories260K",
                           out=new_artifact_path(cat, "same"), catalogue=cat, force=True)
        assert str(third.output) == outputs[0]


def test_one_step_type_from_runner_to_file_to_catalogue(host, tmp_path):
    db = tmp_path / "cat.db"
    steps = [*PRUNE, {"method": "prune.unstructured", "params": {"sparsity": 0.6, "scorer": "wanda"}}]
    result = run_recipe(Recipe.from_data({"steps": steps, "calibration": {"n_samples": 2, "seq_len": 32}}),
                        "example:stories260K", out=tmp_path / "m", host=host, catalogue=str(db))
    on_disk = json.loads((tmp_path / "m" / "slimkit.json").read_text())["steps"]
    assert on_disk == [step.to_json() for step in result.steps]
    assert [StepEntry.from_json(data).to_json() for data in on_disk] == on_disk
    with Catalogue(str(db)) as cat:
        stored = [cat.step(data["step_id"]) for data in on_disk]
    assert [s.to_json() | {"started": ""} for s in stored] == [d | {"started": ""} for d in on_disk]
    assert stored[1].uses[0]["config"]["type"] == "wanda"


def test_rerunning_into_a_named_folder_with_overwrite_replaces_the_model_name_and_all(host, tmp_path):
    """`make demo` twice: `--out X --overwrite --name N` again (same or other weights) must work."""
    db = tmp_path / "cat.db"
    out = tmp_path / "named"
    first = run_recipe(recipe(), "example:stories260K", out=out, host=host, catalogue=str(db), name="demo")
    again = run_recipe(recipe(), "example:stories260K", out=out, overwrite=True, host=host, catalogue=str(db),
                       name="demo")
    assert again.provenance["content_id"] == first.provenance["content_id"]
    other = Recipe.from_data([{"method": "prune.unstructured", "params": {"sparsity": 0.3}}])
    replaced = run_recipe(other, "example:stories260K", out=out, overwrite=True, host=host, catalogue=str(db),
                          name="demo")
    with Catalogue(str(db)) as cat:
        assert cat.resolve("demo").id == replaced.provenance["content_id"]
        old = cat.model(first.provenance["content_id"])
        assert (old.name, old.location) == (None, None)  # its folder and name went to the new model
    # elsewhere, the name is still taken
    with pytest.raises(OutputError, match="the name 'demo' is already used"):
        run_recipe(other, "example:stories260K", out=tmp_path / "elsewhere", host=host, catalogue=str(db),
                   name="demo")
