"""``slimkit export``, ``slimkit show FILE`` and the exports of ``slimkit show MODEL``, with the toy
exporters of tests/export_toys.py: in process (click's runner) and as a user runs them (the toys
installed as a distribution with an entry point, ``python -m slimkit`` in a subprocess)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from slimkit.core.catalogue import Catalogue
from slimkit.testing import write_distributions
from slimkit.testing import one_line_error

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def m1(tmp_path, stories):
    return Path(shutil.copytree(stories, tmp_path / "models" / "m1"))


def test_export_prints_what_it_wrote_and_show_finds_a_copy(toy_cli, m1, tmp_path):
    result = toy_cli("export", str(m1), "--format", "toy.st", "-p", "dtype=float16", "--no-progress")
    assert result.exit_code == 0, result.output
    written = m1.parent / "m1.st"
    with Catalogue(str(toy_cli.db)) as cat:
        (entry,) = cat.exports()
    for fragment in (str(written), entry.sha256, "48 tensors as float16", "toy.st v2 (plugin acme-toys 0.3.1)",
                     f"{entry.model_id.split(':')[1][:12]} in the catalogue"):
        assert fragment in result.output

    copy = tmp_path / "elsewhere" / "model-copy.bin"
    copy.parent.mkdir()
    shutil.copyfile(written, copy)
    shown = toy_cli("show", str(copy))
    assert shown.exit_code == 0, shown.output
    for fragment in (f"exported file {copy}", "the model id it carries", f"export #{entry.id} of",
                     f"at {written}", entry.model_id, "produced by: nothing recorded (a base model)"):
        assert fragment in shown.output
    data = json.loads(toy_cli("show", str(copy), "--json").stdout)
    assert data["file"]["found_by"] == "embedded id" and data["file"]["export"]["path"] == str(written)
    assert data["model"]["id"] == entry.model_id and data["exports"][0]["present"] is True

    model = json.loads(toy_cli("show", entry.model_id[7:19], "--json").stdout)
    assert "file" not in model and [(e["format"], e["path"], e["present"]) for e in model["exports"]] == \
        [("toy.st", str(written), True)]
    written.unlink()
    text = toy_cli("show", entry.model_id[7:19]).output
    assert "exports" in text and "missing" in text and entry.sha256[7:19] in text and "acme-toys 0.3.1" in text


def test_export_json_and_params_file(toy_cli, m1, tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("dtype: float16\nrefuse: null\n")
    out = tmp_path / "x.st"
    result = toy_cli("export", str(m1), "-f", "toy.st", "-o", str(out), "--params-file", str(params),
                    "-p", "dtype=float32", "--json")
    data = json.loads(result.stdout)
    assert data["config"]["dtype"] == "float32"  # -p wins over the file
    assert data["path"] == str(out) and data["recorded"] and data["model"]["id"] == data["content_id"]
    params.write_text("- a list\n")
    one_line_error(toy_cli("export", str(m1), "-f", "toy.st", "-o", str(tmp_path / "y.st"), "--params-file",
                          str(params)), "must hold a mapping")


def test_show_of_a_derived_model_export_shows_its_lineage(toy_cli, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("steps: [{method: prune.unstructured, params: {sparsity: 0.3}}, "
                      "{method: prune.unstructured, params: {sparsity: 0.6}}]\n")
    assert toy_cli("run", str(recipe), "-m", "example:stories260K", "-o", str(tmp_path / "p"), "--name", "p36",
                  "--no-progress").exit_code == 0
    assert toy_cli("export", "p36", "-f", "toy.dir", "--no-progress").exit_code == 0  # by catalogue name
    shown = toy_cli("show", str(tmp_path / "p-toy.dir"))
    assert "lineage of p36" in shown.output and shown.output.count("prune.unstructured") == 2
    data = json.loads(toy_cli("show", str(tmp_path / "p-toy.dir"), "--json").stdout)
    assert [s["method"] for s in data["lineage"]["steps"]] == ["prune.unstructured"] * 2
    assert json.loads(toy_cli("show", str(tmp_path / "p"), "--json").stdout)["model"]["name"] == "p36"


def test_show_of_an_unknown_file_is_one_line(toy_cli, tmp_path):
    stranger = tmp_path / "notes.txt"
    stranger.write_text("hello")
    one_line_error(toy_cli("show", str(stranger)), f"{stranger} is not an export slimkit knows")


@pytest.mark.parametrize("args, fragment", [
    (["-f", "toy.onnx"], "unknown exporter 'toy.onnx'; installed exporters: "),
    (["-f", "toy.st", "-p", "bits=4"], "exporter 'toy.st': bits: unknown parameter (got 4); exporter 'toy.st' takes:"),
    (["-f", "toy.st", "-p", "nonsense"], "--param takes FIELD=VALUE, got 'nonsense'"),
    (["-f", "toy.st", "-o", "{taken}"], "taken.st already exists (use --overwrite to replace it)"),
    (["-f", "toy.st", "-p", "fail=error"], "exporter 'toy.st' (plugin 'acme-toys' 0.3.1) failed in export: ValueError: "
                                           "the toy exporter broke (--debug shows the traceback)"),
], ids=["format", "param", "param-syntax", "exists", "plugin-raises"])
def test_bad_exports_are_one_line_and_write_nothing(toy_cli, m1, tmp_path, args, fragment):
    taken = tmp_path / "taken.st"
    taken.write_bytes(b"mine")
    before = sorted(p.name for p in m1.parent.iterdir()) + sorted(p.name for p in tmp_path.iterdir())
    args = [a.format(taken=taken) for a in args]
    one_line_error(toy_cli("export", str(m1), *args, "--no-progress"), fragment)
    after = sorted(p.name for p in m1.parent.iterdir()) + sorted(p.name for p in tmp_path.iterdir())
    assert [n for n in after if "catalogue" not in n] == [n for n in before if "catalogue" not in n]
    assert taken.read_bytes() == b"mine"


def test_check_refusals_are_listed_together(toy_cli, m1):
    result = toy_cli("export", str(m1), "-f", "toy.st", "-p", "refuse=layers.1.self_attn", "--no-progress")
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert lines[0] == f"Error: cannot export {m1} as toy.st: 4 problems:"
    assert [line.split(":")[0] for line in lines[1:]] == [
        f"  - tensor model.layers.1.self_attn.{p}_proj.weight" for p in "koqv"]
    assert not (m1.parent / "m1.st").exists()


def test_ctrl_c_during_an_export_writes_nothing(toy_cli, m1):
    assert toy_cli("export", str(m1), "-f", "toy.st", "--no-progress").exit_code == 0
    before = (m1.parent / "m1.st").read_bytes()
    result = toy_cli("export", str(m1), "-f", "toy.st", "-p", "fail=interrupt", "--overwrite", "--no-progress")
    assert result.exit_code == 130 and "Interrupted: nothing was written." in result.stderr
    assert (m1.parent / "m1.st").read_bytes() == before
    assert sorted(p.name for p in m1.parent.iterdir()) == ["m1", "m1.st"]


def test_methods_lists_exporters(toy_cli):
    listed = json.loads(toy_cli("methods", "--family", "exporter", "--json").stdout)
    assert {m["name"] for m in listed} >= {"toy.st", "toy.dir", "toy.anon"}
    assert {m["family"] for m in listed} == {"exporter"}
    toy = next(m for m in listed if m["name"] == "toy.st")
    assert toy["plugin"] == "acme-toys" and set(toy["config_schema"]["properties"]) == {"dtype", "refuse", "fail",
                                                                                       "size_hint"}


# -- as a user runs it: an installed distribution, the real console entry point ----------------------------
@pytest.fixture(scope="module")
def site(tmp_path_factory):
    source = (Path(__file__).with_name("export_toys.py")).read_text()
    return write_distributions(tmp_path_factory.mktemp("site"), {"acme-toys": ("toys", source)}, "1.4")


def slimkit(site: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("SLIMKIT_LOAD_PLUGINS", "SLIMKIT_BLOCK_PLUGINS")}
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(ROOT)])
    return subprocess.run([sys.executable, "-m", "slimkit", *args], capture_output=True, text=True, env=env,
                          timeout=300)


@pytest.mark.slow
def test_an_installed_exporter_from_export_to_show(site, m1, tmp_path):
    db = str(tmp_path / "catalogue.db")
    exported = slimkit(site, "--catalogue", db, "export", str(m1), "-f", "toy.anon", "--json")
    assert exported.returncode == 0, exported.stderr
    data = json.loads(exported.stdout)
    assert (data["plugin"], data["plugin_version"]) == ("toys", "1.4")
    copy = tmp_path / "copy.anon"
    shutil.copyfile(data["path"], copy)
    shown = slimkit(site, "--catalogue", db, "show", str(copy))  # no id inside: found by its sha256
    assert shown.returncode == 0, shown.stderr
    assert "its sha256, recorded at export" in shown.stdout and data["content_id"] in shown.stdout
    failed = slimkit(site, "--catalogue", db, "export", str(m1), "-f", "toy.anon", "-p", "fail=error", "-o",
                     str(tmp_path / "z.anon"))
    assert failed.returncode == 1 and not (tmp_path / "z.anon").exists()
    assert failed.stderr.strip().splitlines() == [
        "Error: exporter 'toy.anon' (plugin 'toys' 1.4) failed in export: ValueError: the toy exporter broke "
        "(--debug shows the traceback)"]
