"""A recipe's ``export:`` section: validated with the rest before any work, written after the model
is saved, evaluated and recorded (under the run), and a refused export that fails the run but
keeps the model. Through ``slimkit run`` and ``run_recipe``, with the toy exporters."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import export_toys
import slimkit
from slimkit import ExportError, RecipeError
from slimkit.core.catalogue import Catalogue

PRUNE = "steps: [{method: prune.unstructured, params: {sparsity: 0.5}}]\n"


def recipe(folder: Path, text: str) -> Path:
    path = folder / "recipes" / "r.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return path


def test_slimkit_run_exports_the_saved_model_and_records_it_under_the_run(toy_cli, tmp_path):
    path = recipe(tmp_path, "name: p50\n" + PRUNE + "evaluate: [{metric: size}]\nexport:\n"
                  "  - {format: toy.st}\n  - {format: toy.dir, params: {dtype: float16}, out: ../shipped/p50}\n")
    result = toy_cli("run", str(path), "-m", "example:stories260K", "-o", str(tmp_path / "p50"), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    model_id = data["content_id"]
    first, second = data["exports"]
    assert first["path"] == str((tmp_path / "p50.st").resolve())  # beside the output folder
    assert second["path"] == str((tmp_path / "shipped" / "p50").resolve())  # relative to the recipe's folder
    assert export_toys.ToyFile.identify(Path(first["path"])) == model_id
    assert export_toys.ToyFolder.identify(Path(second["path"])) == model_id
    with Catalogue(str(toy_cli.db)) as cat:
        recorded = cat.exports(model_id)
        (run,) = cat.runs()
        assert [(e.format, e.path, e.run_id) for e in recorded] == \
            [("toy.st", first["path"], run.id), ("toy.dir", second["path"], run.id)]
        assert run.status == "done" and data["run_id"] == run.id and recorded[1].config["dtype"] == "float16"
        assert "export:" in (run.recipe_text or "")
        assert cat.model(model_id).location == str((tmp_path / "p50").resolve())
    text = toy_cli("run", str(path), "-m", "example:stories260K", "-o", str(tmp_path / "p50"), "--overwrite",
                  "--no-progress")
    assert text.exit_code == 0, text.output
    assert f"exported toy.st to {first['path']}" in text.output and f"exported toy.dir to {second['path']}" in text.output


@pytest.mark.parametrize("section, fragments", [
    ("  - {format: toy.onnx}\n  - {format: toy.st, params: {dtype: int3}}\n",
     ["export 1 (toy.onnx): unknown exporter 'toy.onnx'; installed exporters: ",
      "export 2 (toy.st): dtype: Input should be 'float32' or 'float16' (got 'int3')"]),
    ("  - {format: toy.st, out: ../taken.st}\n", ["export 1 (toy.st): export: ", "taken.st already exists"]),
    ("  - {format: toy.st}\n  - {format: toy.st, params: {dtype: float16}}\n",
     ["export 2 (toy.st): writes", "p.st, as export 1 (toy.st) does; give each export its own 'out'"]),
    ("  - {format: toy.st, out: ../p/inside.st}\n", ["export 1 (toy.st): export: ", "inside.st is inside the model folder"]),
    ("  - {format: toy.st, unknown: 1}\n", ["r.yaml: export 1: unknown: unknown parameter (got 1)"]),
], ids=["format-and-params", "exists", "two-to-one-path", "inside-output", "malformed"])
def test_export_problems_are_refused_before_any_work(toy_cli, tmp_path, section, fragments):
    (tmp_path / "taken.st").write_bytes(b"mine")
    path = recipe(tmp_path, PRUNE + "export:\n" + section)
    before = sorted(p.name for p in tmp_path.iterdir())
    result = toy_cli("run", str(path), "-m", "example:stories260K", "-o", str(tmp_path / "p"), "--no-progress")
    assert result.exit_code == 1, result.output
    created = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("catalogue.db"))
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ")
    for fragment in fragments:
        assert fragment in lines[0]
    assert created == before  # no model folder, no export (the catalogue was opened: it checks names and folders)
    with Catalogue(str(toy_cli.db)) as cat:
        assert cat.runs() == [] and cat.models() == []


def test_validate_checks_the_export_section(toy_cli, tmp_path):
    path = recipe(tmp_path, PRUNE + "export: [{format: toy.onnx}]\n")
    failed = toy_cli("validate", str(path))
    assert failed.exit_code == 1 and "export 1 (toy.onnx): unknown exporter 'toy.onnx'" in failed.stderr


def test_exports_need_an_output_folder_or_a_catalogue(toys, tmp_path):
    parsed = slimkit.Recipe.from_data({"steps": [{"method": "prune.unstructured", "params": {"sparsity": 0.5}}],
                                       "export": [{"format": "toy.st", "out": str(tmp_path / "x.st")}]})
    with pytest.raises(RecipeError, match="the run has no output folder and no catalogue"):
        slimkit.run_recipe(parsed, "example:stories260K", host=toys, catalogue=False)
    assert list(tmp_path.iterdir()) == []


def test_without_an_output_folder_exports_go_to_the_catalogues_artifacts(toys, tmp_path):
    parsed = slimkit.Recipe.from_data({"name": "p", "steps": [{"method": "prune.unstructured",
                                                               "params": {"sparsity": 0.5}}],
                                       "export": [{"format": "toy.st"}]})
    with Catalogue(str(tmp_path / "c.db")) as cat:
        result = slimkit.run_recipe(parsed, "example:stories260K", host=toys, catalogue=cat)
        (export,) = result.exports
        assert export.path.parent == (tmp_path / "artifacts").resolve() and export.path.name.startswith("p-")
        assert export.path.suffix == ".st" and cat.exports(result.provenance["content_id"])[0].path == str(export.path)
        assert result.output is None and cat.model(result.provenance["content_id"]).location is None


def test_a_refused_export_fails_the_run_but_keeps_the_model(toy_cli, tmp_path):
    path = recipe(tmp_path, PRUNE + "export:\n  - {format: toy.dir}\n  - {format: toy.st, params: {refuse: layers.0.mlp}}\n")
    result = toy_cli("run", str(path), "-m", "example:stories260K", "-o", str(tmp_path / "p"), "--no-progress")
    assert result.exit_code == 1
    assert f"saved {tmp_path / 'p'} (" in result.output  # the run's report comes first
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("Error: the model ") and lines[0].endswith(
        f"was saved to {tmp_path / 'p'}, but exporting it failed: 3 problems:")
    assert all(line.startswith("  - export 2 (toy.st): tensor model.layers.0.mlp.") for line in lines[1:])
    assert (tmp_path / "p" / "slimkit.json").is_file()
    assert not (tmp_path / "p-toy.dir").exists() and not (tmp_path / "p.st").exists()  # neither export was written
    with Catalogue(str(toy_cli.db)) as cat:
        (run,) = cat.runs()
        model_id = json.loads((tmp_path / "p" / "slimkit.json").read_text())["content_id"]
        assert run.status == "failed" and "exporting it failed" in (run.error or "")
        assert cat.model(model_id).location == str((tmp_path / "p").resolve()) and cat.exports() == []


def test_run_recipe_hands_back_the_result_with_a_failed_export(toys, tmp_path):
    parsed = slimkit.Recipe.from_data({"steps": [{"method": "prune.unstructured", "params": {"sparsity": 0.5}}],
                                       "export": [{"format": "toy.st"}, {"format": "toy.dir",
                                                                         "params": {"fail": "error"}}]})
    with Catalogue(str(tmp_path / "c.db")) as cat:
        with pytest.raises(ExportError) as failed:
            slimkit.run_recipe(parsed, "example:stories260K", out=tmp_path / "p", host=toys, catalogue=cat)
        result = failed.value.result
        assert "failed in export: ValueError: the toy exporter broke" in str(failed.value)
        assert result.output == tmp_path / "p" and [e.format for e in result.exports] == ["toy.st"]
        assert [e.path for e in cat.exports()] == [str((tmp_path / "p.st").resolve())]  # the first one stays
        assert not (tmp_path / "p-toy.dir").exists()
