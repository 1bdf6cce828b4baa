"""The export flow around any exporter (slimkit.export_model), with tiny third-party exporters
(tests/export_toys.py) registered through the register_exporters hook: the catalogue record,
lineage lookup of exported files (by the id they carry, by sha256), the refusals and their order,
and nothing partial after an interrupt or a failure. Real SQLite catalogues, real files."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

import export_toys
import slimkit
from slimkit import ConfigError, ExportError, OutputExistsError, PluginError, UnknownMethodError
from slimkit.core.catalogue import Catalogue
from slimkit.core.catalogue.artifacts import artifact_dir, collect_garbage
from slimkit.core.export.lookup import identify_export, trace_export
from slimkit.core.failures import FileSystemError
from slimkit.core.preflight import OutputError
from slimkit.core.provenance import content_id


@pytest.fixture
def cat(catalogue_url):
    """A catalogue on each backend (SQLite, PostgreSQL)."""
    with Catalogue(catalogue_url) as opened:
        yield opened


@pytest.fixture
def m1(tmp_path, stories):
    """A user's model folder (a copy of stories260K), so exports can go beside it."""
    return Path(shutil.copytree(stories, tmp_path / "models" / "m1"))


def sha256(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def listing(folder: Path) -> list[str]:
    """Every entry under ``folder``, hidden ones included (a staging path would show here)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# -- what an export writes and records ----------------------------------------------------------------
def test_export_beside_the_model_is_recorded_with_its_model(toys, cat, m1):
    events = []
    result = slimkit.export_model(str(m1), format="toy.st", host=toys, catalogue=cat, progress=events.append)
    target = m1.parent / "m1.st"  # beside the folder, named after it, with the format's suffix
    assert result.path == target.resolve() and target.is_file()
    assert result.sha256 == sha256(target) and result.size_bytes == target.stat().st_size
    expected_id = content_id(slimkit.load_model(m1).model)
    assert result.content_id == expected_id and export_toys.ToyFile.identify(target) == expected_id
    assert (result.format, result.exporter_version, result.plugin, result.plugin_version) == \
        ("toy.st", 2, "acme-toys", "0.3.1")
    assert result.summary.description == "48 tensors as float32" and result.details == {"tensors": 48}

    (entry,) = cat.exports(expected_id)
    assert (entry.format, entry.exporter_version, entry.plugin, entry.plugin_version) == ("toy.st", 2, "acme-toys",
                                                                                          "0.3.1")
    assert entry.config == {"dtype": "float32", "refuse": None, "fail": "none", "size_hint": None}
    assert (entry.path, entry.size_bytes, entry.sha256) == (str(target.resolve()), target.stat().st_size,
                                                            sha256(target))
    (run,) = cat.runs()
    assert (run.kind, run.status, run.id) == ("export", "done", entry.run_id) and result.run_id == run.id
    model = cat.model(expected_id)  # unknown before: recorded as a base model, at its folder
    assert model.location == str(m1.resolve()) and cat.steps_into(expected_id) == []
    assert [e.stage for e in events if e.stage == "tensors"][-1:] == ["tensors"]
    assert events[-1].stage == "sha256 (MiB)"


def test_a_derived_model_is_recorded_with_its_chain(toys, cat, tmp_path):
    recipe = slimkit.Recipe.from_data({"steps": [{"method": "prune.unstructured", "params": {"sparsity": 0.5}}]})
    run = slimkit.run_recipe(recipe, "example:stories260K", out=tmp_path / "pruned", host=toys, catalogue=False)
    result = slimkit.export_model(tmp_path / "pruned", tmp_path / "out" / "p.st", format="toy.st", host=toys,
                                  catalogue=cat)
    derived = run.provenance["content_id"]
    assert result.content_id == derived
    (step,) = cat.steps_into(derived)  # the chain from slimkit.json, recorded before the export
    assert step.method == "prune.unstructured" and step.input_id == run.steps[0].parent_id
    assert cat.model(derived).location == str((tmp_path / "pruned").resolve())
    assert [e.path for e in cat.exports(derived)] == [str((tmp_path / "out" / "p.st").resolve())]


def test_a_path_holds_one_export(toys, cat, m1, tmp_path):
    out = tmp_path / "m.st"
    first = slimkit.export_model(str(m1), out, format="toy.st", host=toys, catalogue=cat)
    again = slimkit.export_model(str(m1), out, format="toy.st", host=toys, catalogue=cat, overwrite=True)
    assert [e.sha256 for e in cat.exports(first.content_id)] == [again.sha256] == [first.sha256]
    half = slimkit.export_model(str(m1), out, format="toy.st", params={"dtype": "float16"}, host=toys,
                                catalogue=cat, overwrite=True)
    (entry,) = cat.exports(first.content_id)
    assert entry.config["dtype"] == "float16" and entry.sha256 == half.sha256 == sha256(out) != first.sha256
    other = slimkit.export_model(str(m1), tmp_path / "other.st", format="toy.st", host=toys, catalogue=cat)
    assert len(cat.exports(first.content_id)) == 2 and other.sha256 == first.sha256


def test_folder_exports_and_default_names(toys, cat, m1):
    result = slimkit.export_model(str(m1), format="toy.dir", host=toys, catalogue=cat)
    assert result.path == (m1.parent / "m1-toy.dir").resolve()  # no suffix: named after the format
    assert sorted(p.name for p in result.path.iterdir()) == ["model.safetensors", "slimkit.json"]
    names = sorted(f"{p.relative_to(result.path)}" for p in result.path.rglob("*"))
    digest = hashlib.sha256()
    for name in names:  # a folder's digest: each file's relative path, then its bytes
        digest.update(name.encode() + b"\0" + (result.path / name).read_bytes())
    assert result.sha256 == "sha256:" + digest.hexdigest() == cat.exports(result.content_id)[0].sha256
    assert result.size_bytes == sum((result.path / name).stat().st_size for name in names)


def test_an_example_model_has_no_folder_to_write_beside(toys, cat, tmp_path):
    before = listing(tmp_path)
    with pytest.raises(ExportError) as refused:
        slimkit.export_model("example:stories260K", format="toy.st", host=toys, catalogue=cat)
    assert str(refused.value) == ("export as toy.st: example:stories260K has no folder of its own to write the "
                                  "export beside; pass out (--out PATH)")
    assert listing(tmp_path) == before and cat.runs() == []


# -- refusals before the model loads -------------------------------------------------------------------
def _existing(tmp_path):
    (tmp_path / "taken.st").write_bytes(b"mine")
    return {"out": tmp_path / "taken.st"}


def _folder_for_a_file(tmp_path):
    (tmp_path / "dir.st").mkdir()
    return {"out": tmp_path / "dir.st", "overwrite": True}


def _parent_is_a_file(tmp_path):
    (tmp_path / "plain").write_text("x")
    return {"out": tmp_path / "plain" / "m.st"}


def _inside_the_model(tmp_path):
    return {"out": tmp_path / "notmodel" / "m.st"}


REFUSALS = [
    ({"format": "toy.onnx"}, UnknownMethodError,
     "unknown exporter 'toy.onnx'; installed exporters: "),
    ({"params": {"dtype": "int3", "bits": 4}}, ConfigError, "exporter 'toy.st': dtype: Input should be 'float32' or "
     "'float16' (got 'int3'); bits: unknown parameter (got 4); exporter 'toy.st' takes: dtype, refuse, fail, size_hint"),
    (_existing, OutputExistsError, "taken.st already exists (use --overwrite to replace it)"),
    (_folder_for_a_file, OutputExistsError, "dir.st is a folder, and this format is written as a file"),
    (_parent_is_a_file, OutputError, "cannot write the export {tmp}/plain/m.st: {tmp}/plain is a file, not a folder"),
    (_inside_the_model, OutputError, "export: {tmp}/notmodel/m.st is inside the model folder {tmp}/notmodel"),
]


@pytest.mark.parametrize("make, error, message", REFUSALS, ids=["format", "params", "exists", "folder-for-file",
                                                                "parent-is-file", "inside-model"])
def test_cheap_refusals_come_before_the_model_loads(toys, cat, tmp_path, make, error, message):
    (tmp_path / "notmodel").mkdir()  # not a model at all: loading it would fail, so it must never be loaded
    kwargs = {"format": "toy.st", "out": tmp_path / "out.st", **(make(tmp_path) if callable(make) else make)}
    before = {p: p.read_bytes() if p.is_file() else None for p in tmp_path.rglob("*") if "catalogue" not in p.name}
    with pytest.raises(error) as refused:
        slimkit.export_model(str(tmp_path / "notmodel"), host=toys, catalogue=cat, **kwargs)
    assert message.format(tmp=tmp_path) in str(refused.value) and "\n" not in str(refused.value)
    after = {p: p.read_bytes() if p.is_file() else None for p in tmp_path.rglob("*") if "catalogue" not in p.name}
    assert after == before and cat.runs() == []


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes to read-only folders")
def test_a_read_only_folder_is_refused_before_the_model_loads(toys, cat, m1, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        with pytest.raises(OutputError, match=r"cannot write the export .*locked/m.st: Permission denied"):
            slimkit.export_model(str(m1), locked / "m.st", format="toy.st", host=toys,
                                 catalogue=cat)
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)


def test_a_read_only_mount_is_refused_before_the_model_loads(toys, cat, m1, mount_tmpfs):
    mounted = mount_tmpfs("ro", "ro,size=4m")  # refuses root too, unlike chmod
    with pytest.raises(OutputError, match=r"cannot write the export .*ro/m.st: Read-only file system"):
        slimkit.export_model(str(m1), mounted / "m.st", format="toy.st", host=toys,
                             catalogue=cat)
    assert list(mounted.iterdir()) == [] and cat.runs() == []


def test_a_full_disk_is_refused_before_writing(toys, cat, m1, mount_tmpfs):
    small = mount_tmpfs("small", "size=1m")
    with pytest.raises(OutputError, match=r"not enough free space for the result .*small/m.st: about .* MiB needed"):
        slimkit.export_model(str(m1), small / "m.st", format="toy.st", host=toys, catalogue=cat)
    assert list(small.iterdir()) == [] and cat.exports() == []


def test_a_missing_model_path_is_named_before_the_default_target(toys, cat, tmp_path):
    with pytest.raises(slimkit.ModelLoadError, match="no such model folder or file: ./nowhere"):
        slimkit.export_model("./nowhere", format="toy.st", host=toys, catalogue=cat)


# -- refusals after the model loads ----------------------------------------------------------------------
def test_every_check_problem_is_listed_and_nothing_is_written(toys, cat, m1, tmp_path):
    before = listing(tmp_path)
    with pytest.raises(ExportError) as refused:
        slimkit.export_model(str(m1), tmp_path / "m.st", format="toy.st", params={"refuse": "layers.1.mlp"},
                             host=toys, catalogue=cat)
    assert refused.value.problems == [
        f"tensor model.layers.1.mlp.{name}_proj.weight: the toy format cannot hold it; drop refuse= or choose "
        "another format" for name in ("down", "gate", "up")]
    assert str(refused.value).startswith(f"cannot export {m1} as toy.st: 3 problems:\n  - tensor model.layers.1")
    assert [p for p in listing(tmp_path) if "catalogue" not in p] == [p for p in before if "catalogue" not in p]
    assert [r.status for r in cat.runs()] == ["failed"] and cat.exports() == []


def test_too_little_free_space_is_refused_before_writing(toys, cat, m1, tmp_path):
    with pytest.raises(OutputError, match=r"not enough free space for the result .*m.st: about .* MiB needed"):
        slimkit.export_model(str(m1), tmp_path / "m.st", format="toy.st", params={"size_hint": 2**60}, host=toys,
                             catalogue=cat)
    assert not (tmp_path / "m.st").exists() and cat.exports() == []


@pytest.mark.parametrize("format", ["toy.st", "toy.dir"])
def test_an_interrupted_export_leaves_nothing_and_the_old_target_intact(toys, cat, m1, tmp_path, format):
    out = tmp_path / "exports" / "m"
    first = slimkit.export_model(str(m1), out, format=format, host=toys, catalogue=cat)
    before = {p: p.read_bytes() for p in out.parent.rglob("*") if p.is_file()}
    with pytest.raises(KeyboardInterrupt):
        slimkit.export_model(str(m1), out, format=format, params={"fail": "interrupt", "dtype": "float16"},
                             host=toys, catalogue=cat, overwrite=True)
    assert {p: p.read_bytes() for p in out.parent.rglob("*") if p.is_file()} == before  # no partial, old intact
    assert [e.sha256 for e in cat.exports(first.content_id)] == [first.sha256]
    assert [r.status for r in cat.runs()] == ["done", "failed"]


def test_a_plugins_exception_names_the_plugin_and_leaves_nothing(toys, cat, m1, tmp_path):
    before = listing(tmp_path)
    with pytest.raises(PluginError) as failed:
        slimkit.export_model(str(m1), tmp_path / "m.st", format="toy.st", params={"fail": "error"}, host=toys,
                             catalogue=cat)
    assert str(failed.value) == ("exporter 'toy.st' (plugin 'acme-toys' 0.3.1) failed in export: "
                                 "ValueError: the toy exporter broke")
    assert isinstance(failed.value.__cause__, ValueError)
    assert [p for p in listing(tmp_path) if "catalogue" not in p] == [p for p in before if "catalogue" not in p]


def test_a_check_that_raises_names_the_plugin(toys, cat, m1, tmp_path):
    with pytest.raises(PluginError, match=r"^exporter 'toy.dir' \(plugin 'acme-toys' 0.3.1\) failed in check: "
                                          r"RuntimeError: check exploded$"):
        slimkit.export_model(str(m1), tmp_path / "m", format="toy.dir", params={"fail": "check"}, host=toys,
                             catalogue=cat)
    assert not (tmp_path / "m").exists() and cat.exports() == []


def test_a_system_failure_names_the_target(toys, cat, m1, tmp_path):
    with pytest.raises(FileSystemError) as failed:
        slimkit.export_model(str(m1), tmp_path / "m.st", format="toy.st", params={"fail": "oserror"}, host=toys,
                             catalogue=cat)
    assert str(failed.value) == f"cannot write the export {tmp_path / 'm.st'}: No space left on device (ENOSPC)"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == [] and not (tmp_path / "m.st").exists()


def test_without_a_catalogue_nothing_is_recorded(toys, m1, tmp_path):
    result = slimkit.export_model(str(m1), tmp_path / "m.st", format="toy.st", host=toys, catalogue=False)
    assert (result.recorded, result.run_id) == (False, None) and result.sha256 == sha256(tmp_path / "m.st")


# -- finding the model of an exported file ------------------------------------------------------------------
def test_a_copied_export_is_found_by_the_id_it_carries(toys, cat, m1, tmp_path):
    result = slimkit.export_model(str(m1), format="toy.st", host=toys, catalogue=cat)
    (tmp_path / "elsewhere").mkdir()
    copy = Path(shutil.copyfile(result.path, tmp_path / "elsewhere" / "renamed.bin"))
    assert identify_export(copy, toys) == (result.content_id, "toy.st")
    found = trace_export(copy, toys, cat)
    assert (found.found_by, found.content_id, found.model.id, found.changed) == \
        ("embedded id", result.content_id, result.content_id, False)
    assert found.export.path == str(result.path) and found.sha256 == result.sha256

    # One byte of the weights changed: still that model's file by its id, but not the recorded bytes.
    data = bytearray(copy.read_bytes())
    data[-1] ^= 0xFF
    copy.write_bytes(bytes(data))
    changed = trace_export(copy, toys, cat)
    assert (changed.found_by, changed.model.id, changed.export, changed.changed) == \
        ("embedded id", result.content_id, None, True)


def test_an_export_without_an_id_is_found_by_its_sha256(toys, cat, m1, tmp_path):
    result = slimkit.export_model(str(m1), format="toy.anon", host=toys, catalogue=cat)
    copy = Path(shutil.copyfile(result.path, tmp_path / "copy.anon"))
    assert identify_export(copy, toys) is None  # the file itself says nothing
    assert identify_export(copy, toys, catalogue=cat) == (result.content_id, "toy.anon")
    found = trace_export(copy, toys, cat)
    assert (found.found_by, found.model.id, found.export.path) == ("sha256", result.content_id, str(result.path))
    copy.write_bytes(copy.read_bytes() + b"\0")
    assert trace_export(copy, toys, cat) is None and identify_export(copy, toys, catalogue=cat) is None


def test_an_identify_that_raises_does_not_hide_the_others(register_plugin, cat, m1):
    class Broken(slimkit.BaseExporter):
        """Raises in identify, against the contract."""

        name = "broken"
        writes = "file"

        def export(self, model, out, config, ctx):
            raise NotImplementedError

        @classmethod
        def identify(cls, path):
            raise RuntimeError("cannot read anything")

    class BrokenPlugin:
        @slimkit.hookimpl
        def register_exporters(self, register):
            register(Broken)

    register_plugin(BrokenPlugin(), name="broken")
    host = register_plugin(export_toys, name="acme-toys")  # after the broken one: asked after it
    names = host.exporters.names()
    assert names.index("broken") < names.index("toy.st")
    result = slimkit.export_model(str(m1), format="toy.st", host=host, catalogue=cat)
    assert identify_export(result.path, host) == (result.content_id, "toy.st")


# -- the catalogue keeps exports tidy -----------------------------------------------------------------------
def test_gc_keeps_export_folders_and_delete_forgets_exports(toys, cat, m1):
    folder = artifact_dir(cat) / "m1-export"
    result = slimkit.export_model(str(m1), folder, format="toy.dir", host=toys, catalogue=cat)
    stray = artifact_dir(cat) / "stray"
    stray.mkdir()
    report = collect_garbage(cat)
    assert report.removed == [stray] and folder.is_dir()
    assert cat.delete(result.content_id) == [result.content_id]
    assert cat.exports() == [] and folder.is_dir()  # the files stay, as model folders do


def test_exported_and_saved_files_get_the_usual_mode_not_safetensors_private_one(toys, m1, tmp_path):
    # safetensors writes through a 0600 temporary file; a shared folder's users could not read it
    old = os.umask(0o022)
    try:
        result = slimkit.export_model(str(m1), tmp_path / "shared" / "m.st", format="toy.st", host=toys,
                                      catalogue=False)
        folder = slimkit.export_model(str(m1), tmp_path / "shared" / "m-dir", format="toy.dir", host=toys,
                                      catalogue=False)
    finally:
        os.umask(old)
    assert result.path.stat().st_mode & 0o777 == 0o644
    assert {p.name: p.stat().st_mode & 0o777 for p in folder.path.iterdir()} == {
        "model.safetensors": 0o644, "slimkit.json": 0o644}
