"""The catalogue commands: models, show, lineage, descendants, diff, pareto, delete, and bad input;
on a SQLite file and on a PostgreSQL database."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

import slimkit
from slimkit.core.catalogue import Catalogue
from slimkit.core.cli import make_cli
from slimkit.testing import one_line_error

from backends import database_name, snapshot


def mid(n: int | str) -> str:
    digits = format(n, "x") if isinstance(n, int) else n
    return "sha256:" + digits.ljust(64, "0")


@pytest.fixture(scope="module")
def built(tmp_path_factory, module_catalogue_url):
    """A closed catalogue file holding a real 3-step chain ("chain3") and a branch from its base
    ("half"), plus two hand-recorded models whose ids share the prefix abcd."""
    tmp = tmp_path_factory.mktemp("cli-catalogue")
    host = slimkit.make_host(load_entrypoints=False)
    path = module_catalogue_url
    with Catalogue(path) as cat:
        steps = [{"method": "prune.unstructured", "params": {"sparsity": s}} for s in (0.2, 0.4, 0.6)]
        steps[1]["seed"] = 3
        first = slimkit.run_recipe(slimkit.Recipe.from_data({"steps": steps, "evaluate": [{"metric": "size"}]}),
                                   "example:stories260K", out=tmp / "chain3", host=host, catalogue=cat, name="chain3")
        half = slimkit.run_recipe(
            slimkit.Recipe.from_data({"steps": [{"method": "prune.unstructured", "params": {"sparsity": 0.5}}],
                                      "evaluate": [{"metric": "size"}]}),
            "example:stories260K", out=tmp / "half", host=host, catalogue=cat, name="half")
        cat.record_model(mid("abcd1"), "Toy", size_bytes=10, name="twin-1")
        cat.record_model(mid("abcd2"), "Toy", size_bytes=20, name="twin-2")
        cat.record_evaluations(mid("abcd1"), "perplexity", 1, {"perplexity": 30.0})
        cat.record_evaluations(mid("abcd2"), "perplexity", 1, {"perplexity": 20.0})
    return SimpleNamespace(host=host, path=path, base=first.steps[0].parent_id, first=first,
                           chain_ids=[s.child_id for s in first.steps], half=half.provenance["content_id"])


@pytest.fixture
def db(built, tmp_path, request):
    """A private copy of the built catalogue (tests may change it): a file, or a database made
    from the built one as its template."""
    if "://" not in built.path:
        target = tmp_path / "copy.db"
        shutil.copyfile(built.path, target)
        yield str(target)
        return
    server = request.getfixturevalue("pg_server")
    name = server.create(template=database_name(built.path))
    yield server.url(name)
    server.drop(name)


def invoke(built, db, *args, input=None):
    return CliRunner().invoke(make_cli(built.host), ["--catalogue", db, *args], input=input,
                              catch_exceptions=False)


# -- listings --------------------------------------------------------------------------------
def test_models_table_and_json(built, db):
    result = invoke(built, db, "models")
    assert result.exit_code == 0 and "7 model(s)" in result.output
    for label in ("chain3", "half", "twin-1", built.base[7:19], "(base)"):
        assert label in result.output
    data = json.loads(invoke(built, db, "models", "--json").output)
    assert [m["name"] for m in data][-2:] == ["twin-1", "twin-2"]
    assert {m["id"]: m["made_by"] for m in data}[built.base] == "(base)"


def test_models_filters(built, db):
    data = json.loads(invoke(built, db, "models", "--where", "sparsity>0.4", "--json").output)
    assert [m["name"] for m in data] == ["chain3", "half"]
    assert data[1]["metrics"]["size.sparsity"] > 0.4
    data = json.loads(invoke(built, db, "models", "--where", "perplexity<25", "--where", "size<=20", "--json").output)
    assert [m["name"] for m in data] == ["twin-2"]
    assert [m["name"] for m in json.loads(invoke(built, db, "models", "--architecture", "Toy", "--json").output)] \
        == ["twin-1", "twin-2"]
    by_method = json.loads(invoke(built, db, "models", "--method", "prune.unstructured", "--json").output)
    assert [m["id"] for m in by_method] == [*built.chain_ids, built.half]
    table = invoke(built, db, "models", "--where", "size.sparsity>0.4")
    assert "size.sparsity" in table.output and "2 model(s)" in table.output
    one_line_error(invoke(built, db, "models", "--where", "accuracy>1"), "unknown metric 'accuracy'",
                   "size.sparsity")
    one_line_error(invoke(built, db, "models", "--where", "sparsity is big"), "cannot read the condition")


def test_show(built, db):
    result = invoke(built, db, "show", "chain3")
    assert result.exit_code == 0
    for text in (built.first.provenance["content_id"], "(present)", "produced by", "sparsity=0.6", "size.sparsity"):
        assert text in result.output
    data = json.loads(invoke(built, db, "show", built.base[7:13], "--json").output)
    assert data["model"]["id"] == built.base and data["produced_by"] == []
    assert set(data["derived"]) == {built.chain_ids[0], built.half}
    assert "a base model" in invoke(built, db, "show", built.base[7:13]).output


def test_lineage_formats(built, db):
    table = invoke(built, db, "lineage", "chain3")
    assert table.exit_code == 0 and "sparsity=0.2" in table.output and "sparsity=0.6" in table.output
    data = json.loads(invoke(built, db, "lineage", "chain3", "--format", "json").output)
    assert [s["child_id"] for s in data["steps"]] == built.chain_ids and data["base"]["id"] == built.base
    assert [s["seed"] for s in data["steps"]] == [0, 3, 0]
    mermaid = invoke(built, db, "lineage", "chain3", "--format", "mermaid").output
    assert mermaid.startswith("graph TD\n") and mermaid.count("-->") == 3
    dot = invoke(built, db, "lineage", built.chain_ids[1][7:20], "--format", "dot").output
    assert dot.startswith("digraph lineage {") and dot.rstrip().endswith("}") and dot.count(" -> ") == 2


def test_lineage_from_a_subprocess(built, db, tmp_path):
    unused = tmp_path / "unused.db"
    result = subprocess.run([sys.executable, "-m", "slimkit", "--catalogue", db, "lineage", "chain3",
                             "--format", "json"], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "SLIMKIT_CATALOGUE": str(unused)})
    assert result.returncode == 0, result.stderr
    assert [s["child_id"] for s in json.loads(result.stdout)["steps"]] == built.chain_ids
    assert not unused.exists()  # --catalogue wins over the environment


def test_descendants_tree(built, db):
    text = invoke(built, db, "descendants", built.base[7:15]).output
    assert "chain3" in text and "half" in text and "sparsity=0.5" in text
    assert text.index(built.chain_ids[0][7:19]) < text.index(built.chain_ids[1][7:19]) < text.index("chain3")
    tree = json.loads(invoke(built, db, "descendants", built.base[7:15], "--json").output)
    assert tree["model"]["id"] == built.base and len(tree["children"]) == 2
    assert invoke(built, db, "descendants", "chain3").output.strip() == "chain3"


def test_diff(built, db):
    data = json.loads(invoke(built, db, "diff", "chain3", "half", "--json").output)
    assert data["same_base"] and [r["same"] for r in data["steps"]] == [False, False, False]
    assert data["steps"][0]["b"]["config"]["sparsity"] == 0.5 and data["steps"][2]["b"] is None
    text = invoke(built, db, "diff", "chain3", "half").output
    assert "the same base" in text and "size.sparsity" in text


def test_pareto(built, db):
    data = json.loads(invoke(built, db, "pareto", "--x", "size", "--y", "perplexity", "--json").output)
    assert data["x"] == "size" and data["y"] == "perplexity.perplexity"
    assert [(p["name"], p["front"]) for p in data["points"]] == [("twin-1", True), ("twin-2", True)]
    data = json.loads(invoke(built, db, "pareto", "--y", "perplexity", "--maximize-y", "--json").output)
    assert [p["name"] for p in data["front"]] == ["twin-1"] and not data["minimize_y"]
    text = invoke(built, db, "pareto", "--x", "size", "--y", "size.sparsity", "--maximize-y").output
    assert re.search(r"\*\s+│\s+\w+\s+│\s+chain3", text), text
    one_line_error(invoke(built, db, "pareto", "--x", "size", "--y", "bleu"), "unknown metric 'bleu'")


# -- delete ----------------------------------------------------------------------------------
def test_delete_refuses_descendants_without_cascade(built, db):
    before = snapshot(db)
    line = one_line_error(invoke(built, db, "delete", built.base[7:15], "--yes"), "4 derived model(s)", "--cascade")
    assert "chain3" in line and "half" in line
    assert snapshot(db) == before
    aborted = invoke(built, db, "delete", "chain3", input="n\n")
    assert aborted.exit_code == 1 and "would delete 1 model(s): chain3" in aborted.output
    assert snapshot(db) == before


def test_delete_cascade(built, db):
    result = invoke(built, db, "delete", built.chain_ids[1][7:15], "--cascade", "--yes")
    assert result.exit_code == 0 and "would delete 2 model(s)" in result.output and "deleted 2" in result.output
    names = [m["name"] for m in json.loads(invoke(built, db, "models", "--json").output)]
    assert "chain3" not in names and "half" in names and len(names) == 5
    assert invoke(built, db, "delete", "half", input="y\n").exit_code == 0


# -- bad input -------------------------------------------------------------------------------
@pytest.mark.parametrize("args, fragments", [
    (["show", "deadbeef99"], ["no model with id or name 'deadbeef99'"]),
    (["show", "not-a-model"], ["no model named 'not-a-model'"]),
    (["lineage", "abcd"], ["'abcd' is ambiguous", "abcd10000000 (twin-1)", "abcd20000000 (twin-2)"]),
    (["descendants", "abcd"], ["is ambiguous"]),
    (["diff", "chain3", "abcd"], ["is ambiguous"]),
    (["delete", "abcd", "--cascade", "--yes"], ["is ambiguous"]),
    (["lineage", "zz"], ["no model named 'zz'"]),
])
def test_bad_references_are_one_line_and_change_nothing(built, db, args, fragments):
    before = snapshot(db)
    one_line_error(invoke(built, db, *args), *fragments)
    assert snapshot(db) == before


def catalogue_error(built, url, *fragments):
    return one_line_error(
        CliRunner().invoke(make_cli(built.host), ["--catalogue", url, "models"], catch_exceptions=False), *fragments)


def test_catalogue_that_cannot_be_opened(built, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    catalogue_error(built, str(blocker / "c.db"), f"cannot open catalogue {blocker / 'c.db'}: {blocker} is not a folder")
    assert blocker.read_text() == "not a folder"
    catalogue_error(built, "postgresql://nohost/x", "cannot open catalogue", "postgresql://nohost/x")
    catalogue_error(built, str(tmp_path), "is a folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_random_bytes_are_not_a_catalogue(built, tmp_path):
    junk = tmp_path / "junk.db"
    junk.write_bytes(os.urandom(3000))
    before = junk.read_bytes()
    catalogue_error(built, str(junk), "is not a slimkit catalogue")
    assert junk.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["junk.db"]


def foreign_database(path: Path) -> bytes:
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE notes (body TEXT)")
    connection.execute("INSERT INTO notes VALUES ('mine')")
    connection.commit()
    connection.close()
    return path.read_bytes()


def test_another_sqlite_database_is_refused(built, tmp_path):
    foreign_database(tmp_path / "other.db")
    catalogue_error(built, str(tmp_path / "other.db"), "is not a slimkit catalogue", "other tables: notes")


def test_another_sqlite_database_is_left_untouched(built, tmp_path):
    other = tmp_path / "other.db"
    before = foreign_database(other)
    catalogue_error(built, str(other), "is not a slimkit catalogue")
    assert other.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["other.db"]
