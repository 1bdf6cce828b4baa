"""The catalogue recognises repeated steps, replays chains exactly, and cleans its artifacts."""

from __future__ import annotations

import shutil

import pytest

from slimkit import Recipe, run_recipe
from slimkit.core.catalogue import Catalogue
from slimkit.core.catalogue.artifacts import artifact_dir, collect_garbage
from slimkit.core.errors import SlimkitError
from slimkit.core.model_io import examples
from slimkit.core.reproduce import ReproduceError, reproduce

from backends import snapshot

CHAIN = [
    {"method": "prune.unstructured", "params": {"sparsity": 0.2}},
    {"method": "prune.unstructured", "params": {"sparsity": 0.4, "scope": "row"}},
    {"method": "prune.unstructured", "params": {"sparsity": 0.6, "roles": ["up", "gate", "down"]}},
]


@pytest.fixture
def cat(catalogue_url):
    """A catalogue on each backend (SQLite, PostgreSQL)."""
    with Catalogue(catalogue_url) as catalogue:
        yield catalogue


def test_identical_steps_are_reused_unless_forced(cat, host, tmp_path):
    recipe = Recipe.from_data({"seed": 1, "steps": CHAIN})
    first = run_recipe(recipe, "example:stories260K", out=tmp_path / "a", host=host, catalogue=cat)
    assert first.reused == [False, False, False]
    again = run_recipe(recipe, "example:stories260K", out=tmp_path / "b", host=host, catalogue=cat)
    assert again.reused == [True, True, True]
    assert again.provenance["content_id"] == first.provenance["content_id"]
    assert [s.step_id for s in again.steps] == [s.step_id for s in first.steps]
    # a longer recipe reuses the prefix it shares and computes only the rest
    longer = Recipe.from_data({"seed": 1, "steps": CHAIN + [{"method": "prune.unstructured", "params": {"sparsity": 0.7}}]})
    extended = run_recipe(longer, "example:stories260K", out=tmp_path / "c", host=host, catalogue=cat)
    assert extended.reused == [True, True, True, False]
    forced = run_recipe(recipe, "example:stories260K", out=tmp_path / "d", host=host, catalogue=cat, force=True)
    assert forced.reused == [False, False, False]
    assert forced.provenance["content_id"] == first.provenance["content_id"]  # deterministic methods
    # a different seed or config is a different step
    other = run_recipe(Recipe.from_data({"seed": 2, "steps": CHAIN[:1]}), "example:stories260K", host=host, catalogue=cat)
    assert other.reused == [False]


def test_reuse_needs_the_result_on_disk(cat, host, tmp_path):
    recipe = Recipe.from_data({"steps": CHAIN[:1]})
    run_recipe(recipe, "example:stories260K", out=tmp_path / "a", host=host, catalogue=cat)
    shutil.rmtree(tmp_path / "a")
    again = run_recipe(recipe, "example:stories260K", out=tmp_path / "b", host=host, catalogue=cat)
    assert again.reused == [False]


def test_reproduce_replays_a_chain_to_identical_weights(cat, host, tmp_path):
    recipe = Recipe.from_data({"seed": 3, "calibration": {"n_samples": 2, "seq_len": 32}, "steps": CHAIN})
    result = run_recipe(recipe, "example:stories260K", out=tmp_path / "m", host=host, catalogue=cat, name="chain")
    report = reproduce(cat, "chain", host=host)
    assert report.identical and len(report.steps) == 3
    assert report.steps[-1].got == result.provenance["content_id"]
    with pytest.raises(ReproduceError, match="is a base model"):
        reproduce(cat, report.base_id[7:19], host=host)


def test_reproduce_says_when_the_base_is_missing(cat, host, tmp_path):
    base_dir = tmp_path / "base"
    shutil.copytree(examples()["stories260K"], base_dir)
    run_recipe(Recipe.from_data({"steps": CHAIN[:1]}), str(base_dir), out=tmp_path / "child", host=host,
               catalogue=cat, name="child")
    shutil.rmtree(base_dir)
    before = snapshot(cat.url)
    with pytest.raises(ReproduceError, match="the base model .* is missing: tried .*base"):
        reproduce(cat, "child", host=host)
    assert snapshot(cat.url) == before


def test_gc_removes_only_unreferenced_artifacts(cat, host, tmp_path):
    root = artifact_dir(cat)
    kept = root / "kept"
    run_recipe(Recipe.from_data({"steps": CHAIN[:1]}), "example:stories260K", out=kept, host=host, catalogue=cat)
    orphan = root / "orphan"
    orphan.mkdir()
    (orphan / "model.safetensors").write_bytes(b"left by a killed run")
    staging = root / ".x.partial-1234"
    staging.mkdir()
    dry = collect_garbage(cat, dry_run=True)
    assert sorted(p.name for p in dry.removed) == [".x.partial-1234", "orphan"] and orphan.exists()
    report = collect_garbage(cat)
    assert report.kept == 1 and not orphan.exists() and not staging.exists() and kept.is_dir()


def test_unknown_references_are_clear(cat):
    with pytest.raises(SlimkitError, match="no model with id or name 'beef'"):
        reproduce(cat, "beef")


def test_a_no_op_step_does_not_rename_the_model_it_reproduces(cat, host, tmp_path):
    half = Recipe.from_data([{"method": "prune.unstructured", "params": {"sparsity": 0.5}}])
    first = run_recipe(half, "example:stories260K", out=tmp_path / "half", host=host, catalogue=cat, name="half")
    # 30% of the smallest weights of an already 50%-zero layer are all zeros: nothing changes
    again = run_recipe(Recipe.from_data([{"method": "prune.unstructured", "params": {"sparsity": 0.3}}]),
                       tmp_path / "half", out=tmp_path / "same", host=host, catalogue=cat, name="other")
    assert again.provenance["content_id"] == first.provenance["content_id"]
    assert cat.resolve("half").id == first.provenance["content_id"]
    assert cat.model(first.provenance["content_id"]).name == "half"


def test_a_second_copy_does_not_orphan_the_first(cat, host, tmp_path):
    recipe = Recipe.from_data([{"method": "prune.unstructured", "params": {"sparsity": 0.5}}])
    managed = artifact_dir(cat) / "first"
    result = run_recipe(recipe, "example:stories260K", out=managed, host=host, catalogue=cat)
    run_recipe(recipe, "example:stories260K", out=tmp_path / "copy", host=host, catalogue=cat)
    model_id = result.provenance["content_id"]
    assert cat.model(model_id).location == str(managed.resolve())
    assert collect_garbage(cat).removed == [] and managed.is_dir()
    shutil.rmtree(managed)  # once the first folder is gone, the next save is where the model lives
    run_recipe(recipe, "example:stories260K", out=tmp_path / "third", host=host, catalogue=cat)
    assert cat.model(model_id).location == str((tmp_path / "third").resolve())
