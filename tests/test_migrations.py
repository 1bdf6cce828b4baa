"""Catalogue migrations: one head, idempotent opens, schema == ORM, old files upgrade losslessly,
newer or foreign files are refused untouched, logging is left alone, downgrades are real, and
``slimkit db current|upgrade|history``. What does not depend on SQLite files runs on PostgreSQL
too (tests/test_catalogue_postgres.py has the server's upgrade policy)."""

from __future__ import annotations

import contextlib
import hashlib
import inspect as pyinspect
import logging
import shutil
import sqlite3
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.command import downgrade, upgrade
from alembic.runtime.migration import MigrationContext
from click.testing import CliRunner
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.pool import NullPool

from slimkit.core.catalogue import Catalogue, CatalogueError
from slimkit.core.catalogue import migrate
from slimkit.core.catalogue.migrate import read_only_sqlite as read_only
from slimkit.core.catalogue.schema import Base
from slimkit.core.cli import make_cli

from backends import query

FIXTURE = Path(__file__).parent / "fixtures" / "catalogue-0001.db"
TABLES_0001 = ("runs", "models", "steps", "step_parents", "evaluations")
ROWS_0001 = {"runs": 1, "models": 3, "steps": 2, "step_parents": 2, "evaluations": 8}
PRUNED_30 = "sha256:765c4da15623359abcff35735f04e7036cb50d6f3aa90494285b3011d964afb7"
PRUNED_50 = "sha256:dd89ec153c9b92c3dca4dce49cde260c835da947ab779c66e3c861f8183039da"


def columns(connection: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in connection.execute(f"PRAGMA table_info({table})")]


def rows(path: Path, table_columns: dict[str, list[str]]) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, restricted to the given columns, in a stable order."""
    with read_only(path) as connection:
        return {
            table: connection.execute(
                f"SELECT {', '.join(cols)} FROM {table} ORDER BY {', '.join(cols)}"
            ).fetchall()
            for table, cols in table_columns.items()
        }


def revision_of(path: Path) -> str | None:
    with read_only(path) as connection:
        found = connection.execute("SELECT version_num FROM alembic_version").fetchall()
    return found[0][0] if found else None


def table_names(path: Path) -> set[str]:
    with read_only(path) as connection:
        return {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def schema_sql(path: Path) -> list[tuple[str, str]]:
    with read_only(path) as connection:
        return connection.execute("SELECT name, sql FROM sqlite_master ORDER BY name").fetchall()


def revision_at(url: str) -> str | None:
    found = query(url, "SELECT version_num FROM alembic_version")
    return found[0][0] if found else None


def tables_at(url: str) -> set[str]:
    if "://" not in url:
        return table_names(Path(url))
    return {row[0] for row in query(url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}


def schema_diff(connection: Any) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True, "compare_server_default": True})
    return compare_metadata(context, Base.metadata)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def old_catalogue(tmp_path: Path) -> Path:
    """A private copy of the checked-in revision-0001 catalogue."""
    copy = tmp_path / "old.db"
    shutil.copyfile(FIXTURE, copy)
    return copy


# -- the revision graph ---------------------------------------------------------------------------

def assert_old_rows_read(catalogue: Catalogue) -> None:
    """The API reads an upgraded 0001 catalogue's rows: names, lineage, metrics, the run."""
    pruned = catalogue.resolve("stories-p30-p50")
    assert pruned.id == PRUNED_50 and pruned.params == 260032
    (step,) = catalogue.steps_into(PRUNED_50)
    assert step.input_id == PRUNED_30 and step.config["data"]["sparsity"] == 0.5
    assert catalogue.metrics(PRUNED_50)["size.sparsity"] == pytest.approx(0.43552331866847156)
    (run,) = catalogue.runs()
    assert (run.status, run.pid, run.recipe_name) == ("done", None, "prune-30-then-50")


def test_single_head_is_the_shipped_head() -> None:
    script = migrate.script_directory()
    assert script.get_heads() == [migrate.head_revision()] == ["0005"]
    assert script.get_bases() == ["0001"]


def test_revision_chain_has_no_branches_and_real_downgrades() -> None:
    revisions = list(reversed(list(migrate.script_directory().walk_revisions())))
    assert [(r.revision, r.down_revision) for r in revisions] == [("0001", None), ("0002", "0001"), ("0003", "0002"),
                                                                     ("0004", "0003"), ("0005", "0004")]
    for revision in revisions:
        assert not revision.is_branch_point and not revision.is_merge_point and not revision.branch_labels
        body = pyinspect.getsource(revision.module.downgrade)
        assert "op." in body, f"revision {revision.revision} has no real downgrade"


# -- opening a fresh catalogue --------------------------------------------------------------------
def test_opening_three_times_is_idempotent(tmp_path: Path, empty_catalogue_url: str) -> None:
    url = empty_catalogue_url
    seen = []
    for _ in range(3):  # upgrade=True: what `slimkit db upgrade` does (a SQLite file is upgraded anyway)
        with Catalogue(url, upgrade=True) as catalogue:
            seen.append((catalogue.previous_revision, catalogue.revision, catalogue.backup))
        seen[-1] += (tables_at(url), revision_at(url))
    head = migrate.head_revision()
    expected_tables = set(Base.metadata.tables) | {"alembic_version"}
    assert seen[0] == (None, head, None, expected_tables, head)
    assert seen[1] == seen[2] == (head, head, None, expected_tables, head)
    assert list(tmp_path.glob("*.backup-*")) == []
    assert query(url, "SELECT count(*) FROM alembic_version") == [(1,)]


def test_migrated_schema_equals_the_orm(catalogue_url: str) -> None:
    with Catalogue(catalogue_url) as catalogue, catalogue.engine.connect() as connection:
        assert schema_diff(connection) == []


def test_schema_comparison_sees_a_missing_column(old_catalogue: Path) -> None:
    """The check above can fail: revision 0001 lacks ``runs.pid``, and the comparison says so."""
    engine = create_engine(f"sqlite:///{old_catalogue}")
    try:
        with engine.connect() as connection:
            diff = schema_diff(connection)
    finally:
        engine.dispose()
    assert [(d[0], d[2], d[3].name) for d in diff if d[0] == "add_column"] == [("add_column", "runs", "pid")]


# -- the checked-in revision-0001 catalogue ---------------------------------------------------------
def test_fixture_is_a_small_0001_catalogue_with_rows() -> None:
    assert FIXTURE.stat().st_size < 100_000
    assert revision_of(FIXTURE) == "0001"
    with read_only(FIXTURE) as connection:
        assert "pid" not in columns(connection, "runs")
        assert {t: connection.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES_0001} == ROWS_0001


def test_old_catalogue_upgrades_with_every_row_kept(old_catalogue: Path) -> None:
    fixture_hash = sha256(FIXTURE)
    with read_only(old_catalogue) as connection:
        old_columns = {table: columns(connection, table) for table in TABLES_0001}
    before = rows(old_catalogue, old_columns)
    assert {table: len(found) for table, found in before.items()} == ROWS_0001
    old_schema = schema_sql(old_catalogue)

    with Catalogue(str(old_catalogue)) as catalogue:
        assert (catalogue.previous_revision, catalogue.revision) == ("0001", migrate.head_revision())
        assert catalogue.failed_runs == []  # the old run had finished: nothing to mark
        with catalogue.engine.connect() as connection:
            assert schema_diff(connection) == []
        assert_old_rows_read(catalogue)

    assert rows(old_catalogue, old_columns) == before
    with read_only(old_catalogue) as connection:
        assert connection.execute("SELECT pid FROM runs").fetchall() == [(None,)]
    assert sha256(FIXTURE) == fixture_hash  # the checked-in file itself is never touched

    (backup,) = old_catalogue.parent.glob("old.db.backup-0001-*")
    assert revision_of(backup) == "0001"
    assert schema_sql(backup) == old_schema
    assert rows(backup, old_columns) == before
    with read_only(backup) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)


# -- files that must be refused, unchanged ----------------------------------------------------------
def test_catalogue_from_a_newer_slimkit_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "catalogue.db"
    Catalogue(str(path)).close()
    with contextlib.closing(sqlite3.connect(path)) as connection, connection:
        connection.execute("UPDATE alembic_version SET version_num = 'ffff'")
    content, listing = path.read_bytes(), sorted(tmp_path.iterdir())
    with pytest.raises(CatalogueError) as refused:
        Catalogue(str(path))
    message = str(refused.value)
    assert "\n" not in message and "newer" in message and "ffff" in message
    assert path.read_bytes() == content
    # No backup; a read-only look at a WAL file may leave SQLite's (empty) -wal/-shm companions.
    assert [p for p in sorted(tmp_path.iterdir()) if not p.name.endswith(("-wal", "-shm"))] == listing
    assert all(p.stat().st_size == 0 for p in tmp_path.glob("*-wal"))


def _not_sqlite(tmp_path: Path) -> Path:
    path = tmp_path / "notes.db"
    path.write_text("these are my notes, not a database\n")
    return path


def _foreign_sqlite(tmp_path: Path) -> Path:
    path = tmp_path / "shop.db"
    with contextlib.closing(sqlite3.connect(path)) as connection, connection:
        connection.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT)")
        connection.execute("INSERT INTO orders (item) VALUES ('tea')")
    return path


def _folder(tmp_path: Path) -> Path:
    path = tmp_path / "folder.db"
    path.mkdir()
    (path / "keep.txt").write_text("precious")
    return path


def _parent_is_a_file(tmp_path: Path) -> Path:
    (tmp_path / "plain-file").write_text("x")
    return tmp_path / "plain-file" / "catalogue.db"


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (_not_sqlite, "not an SQLite database"),
        (_foreign_sqlite, "not a slimkit catalogue"),
        (_folder, "is a folder"),
        (_parent_is_a_file, "plain-file is not a folder"),
    ],
    ids=["not-sqlite", "foreign-tables", "folder", "parent-is-a-file"],
)
def test_bad_catalogue_paths_are_refused_in_one_line(tmp_path: Path, make: Any, expected: str) -> None:
    path = make(tmp_path)

    def snapshot() -> dict[str, bytes | None]:
        return {str(p): p.read_bytes() if p.is_file() else None for p in sorted(tmp_path.rglob("*"))}

    before = snapshot()
    with pytest.raises(CatalogueError) as refused:
        Catalogue(str(path))
    assert "\n" not in str(refused.value) and expected in str(refused.value)
    assert snapshot() == before


@pytest.mark.parametrize("url", ["nosuchdialect://somewhere/db", "sqlite+nosuchdriver:///x.db"])
def test_unusable_urls_are_refused_in_one_line(url: str) -> None:
    with pytest.raises(CatalogueError) as refused:
        Catalogue(url)
    assert "\n" not in str(refused.value) and "cannot open catalogue" in str(refused.value)


@pytest.mark.parametrize("name", ["q?x.db", "a%41.db", "hash#1.db"])
def test_paths_with_url_characters_open_that_exact_file(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    Catalogue(str(path)).close()
    Catalogue(str(path)).close()  # the second open checks the existing file first
    assert path.is_file() and revision_of(path) == migrate.head_revision()
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(name)) == []


# -- logging ------------------------------------------------------------------------------------------
def test_opening_never_touches_logging(tmp_path: Path, old_catalogue: Path) -> None:
    root = logging.getLogger()
    host_handler = logging.NullHandler()
    root.addHandler(host_handler)
    previous_level = root.level
    root.setLevel(logging.WARNING + 3)  # the host's own, unusual choices
    app = logging.getLogger("host.application")
    try:
        def state() -> dict[str, Any]:
            loggers = {name: (tuple(lg.handlers), lg.level, lg.propagate, lg.disabled)
                       for name, lg in logging.root.manager.loggerDict.items() if isinstance(lg, logging.Logger)}
            return {"root": (tuple(root.handlers), root.level), "disable": logging.root.manager.disable,
                    "loggers": loggers}

        before = state()
        Catalogue(str(tmp_path / "fresh.db")).close()  # creates every table: migrations 0001 to 0005
        Catalogue(str(old_catalogue)).close()  # upgrades 0001 -> 0005 after a backup
        after = state()
        assert after["root"] == before["root"] and after["disable"] == before["disable"]
        assert not app.disabled
        for name, settings in after["loggers"].items():
            if name in before["loggers"]:
                assert settings == before["loggers"][name], name
            elif name.startswith(("alembic", "sqlalchemy", "slimkit")):
                # new loggers are fine; handlers on them (fileConfig-style) are not
                assert all(isinstance(h, logging.NullHandler) for h in settings[0]), name
    finally:
        root.removeHandler(host_handler)
        root.setLevel(previous_level)


# -- downgrades -----------------------------------------------------------------------------------------
def test_downgrades_are_real_and_reversible(catalogue_url: str) -> None:
    url = catalogue_url
    with Catalogue(url) as catalogue:
        run_id = catalogue.start_run("recipe", "kept")
        catalogue.finish_run(run_id, "done")
        with catalogue.engine.begin() as connection:
            downgrade(migrate._config(connection), "0001")
        assert revision_at(url) == "0001"
        assert "pid" not in [c["name"] for c in inspect(catalogue.engine).get_columns("runs")]
        assert query(url, "SELECT id, status FROM runs") == [(run_id, "done")]
        with catalogue.engine.begin() as connection:
            downgrade(migrate._config(connection), "base")
        assert tables_at(url) == {"alembic_version"} and revision_at(url) is None
        if "://" in url:
            indexes = query(url, "SELECT indexname FROM pg_indexes WHERE schemaname = 'public'")
            assert indexes == [("alembic_version_pkc",)]
        else:
            indexes = query(url, "SELECT name FROM sqlite_master WHERE type='index'")
            assert all(name.startswith("sqlite_autoindex_alembic") for (name,) in indexes)
        with catalogue.engine.begin() as connection:
            upgrade(migrate._config(connection), "head")
        with catalogue.engine.connect() as connection:
            assert schema_diff(connection) == []


# -- slimkit db ---------------------------------------------------------------------------------------------
@pytest.fixture
def cli(host: Any) -> Any:
    return make_cli(host)


def invoke(cli: Any, *args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False, env=env)


def test_db_current_history_upgrade(cli: Any, old_catalogue: Path) -> None:
    content = old_catalogue.read_bytes()
    current = invoke(cli, "--catalogue", str(old_catalogue), "db", "current")
    assert current.exit_code == 0
    assert "revision 0001, behind head 0005" in current.output and "ships head revision 0005" in current.output
    history = invoke(cli, "--catalogue", str(old_catalogue), "db", "history").output.splitlines()
    assert history[0].startswith("0004 -> 0005  Sizes, parameter counts") and history[0].endswith("(head)")
    assert history[1].startswith("0003 -> 0004  Record exports")
    assert history[2].startswith("0002 -> 0003  Record the methods each step ran")
    assert history[3].startswith("0001 -> 0002  Record the process id")
    assert history[4].startswith("<base> -> 0001  Baseline") and history[4].endswith("(current)")
    assert old_catalogue.read_bytes() == content  # reading the revision changes nothing
    assert sorted(p.name for p in old_catalogue.parent.iterdir()) == ["old.db"]

    upgraded = invoke(cli, "--catalogue", str(old_catalogue), "db", "upgrade")
    assert upgraded.exit_code == 0 and "upgraded 0001 -> 0005" in upgraded.output
    (backup,) = old_catalogue.parent.glob("old.db.backup-0001-*")
    assert str(backup) in upgraded.output
    assert "revision 0005 (head)" in invoke(cli, "--catalogue", str(old_catalogue), "db", "current").output
    history = invoke(cli, "--catalogue", str(old_catalogue), "db", "history").output.splitlines()
    assert history[0].endswith("(head, current)") and "(current)" not in history[1]
    again = invoke(cli, "--catalogue", str(old_catalogue), "db", "upgrade")
    assert "already at revision 0005" in again.output and "backup" not in again.output


def test_db_commands_follow_the_environment_and_create_nothing(cli: Any, tmp_path: Path) -> None:
    path = tmp_path / "new" / "catalogue.db"
    for command in ("current", "upgrade"):  # a missing folder is a typo, never a new catalogue
        missing = CliRunner().invoke(cli, ["db", command], env={"SLIMKIT_CATALOGUE": str(path)})
        assert missing.exit_code == 1 and f"{path.parent} does not exist" in missing.stderr
        assert not path.parent.exists()
    path.parent.mkdir()
    current = invoke(cli, "db", "current", env={"SLIMKIT_CATALOGUE": str(path)})
    assert current.exit_code == 0 and "no catalogue yet" in current.output
    assert list(path.parent.iterdir()) == []
    created = invoke(cli, "db", "upgrade", env={"SLIMKIT_CATALOGUE": str(path)})
    assert "new catalogue created at revision 0005" in created.output and revision_of(path) == "0005"


def test_db_commands_on_a_newer_catalogue(cli: Any, tmp_path: Path) -> None:
    path = tmp_path / "catalogue.db"
    Catalogue(str(path)).close()
    with contextlib.closing(sqlite3.connect(path)) as connection, connection:
        connection.execute("UPDATE alembic_version SET version_num = 'ffff'")
    content = path.read_bytes()
    current = invoke(cli, "--catalogue", str(path), "db", "current")
    assert current.exit_code == 0 and "revision ffff, newer than this slimkit knows" in current.output
    history = invoke(cli, "--catalogue", str(path), "db", "history").output
    assert "(current)" not in history
    refused = CliRunner().invoke(cli, ["--catalogue", str(path), "db", "upgrade"])
    assert refused.exit_code == 1 and "newer than this slimkit knows" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    assert path.read_bytes() == content


@pytest.mark.parametrize("command", ["current", "upgrade"])
def test_db_commands_refuse_a_foreign_file_in_one_line(cli: Any, tmp_path: Path, command: str) -> None:
    path = _foreign_sqlite(tmp_path)
    content = path.read_bytes()
    result = CliRunner().invoke(cli, ["--catalogue", str(path), "db", command])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "not a slimkit catalogue" in lines[0]
    assert path.read_bytes() == content


def test_0004_adds_an_empty_exports_table_that_records_and_downgrades(old_catalogue: Path) -> None:
    """An old catalogue gains ``exports`` (no rows), records an export of an old model, and the
    downgrade to 0003 drops the table and nothing else."""
    with read_only(old_catalogue) as connection:
        old_columns = {table: columns(connection, table) for table in TABLES_0001}
    before = rows(old_catalogue, old_columns)
    with Catalogue(str(old_catalogue)) as catalogue:
        assert catalogue.exports() == []
        recorded = catalogue.record_export(
            PRUNED_50, "toy", exporter_version=2, plugin="acme", plugin_version="1.0", config={"bits": 4},
            path=str(old_catalogue.parent / "m.toy"), size_bytes=3 * 2**31, sha256="sha256:" + "ab" * 32)
        assert catalogue.exports(PRUNED_50) == [recorded]
        assert recorded.size_bytes == 3 * 2**31  # more than a 32-bit integer holds
        assert catalogue.find_export(sha256="sha256:" + "ab" * 32) == recorded
        with catalogue.engine.begin() as connection:
            downgrade(migrate._config(connection), "0003")
        assert "exports" not in table_names(old_catalogue)
        assert rows(old_catalogue, old_columns) == before
        with catalogue.engine.begin() as connection:
            upgrade(migrate._config(connection), "head")
        with catalogue.engine.connect() as connection:
            assert schema_diff(connection) == []


# -- an old catalogue on a PostgreSQL server ----------------------------------------------------------
TIMES = {"started", "ended", "created"}


def _normal(column: str, value: Any) -> Any:
    """A value as read from SQLite (times are text, naive UTC) or PostgreSQL (aware datetimes)."""
    if column in TIMES and isinstance(value, str):
        return datetime.fromisoformat(value).replace(tzinfo=timezone.utc)
    return value


def test_old_catalogue_on_a_server_upgrades_with_every_row_kept(pg_database: str, cli: Any,
                                                                 monkeypatch: Any) -> None:
    """The revision-0001 fixture's rows in a PostgreSQL database at 0001 (what an older slimkit left
    on a team server): refused as it is, then ``slimkit db upgrade`` brings it to head, every row kept."""
    monkeypatch.delenv("SLIMKIT_DB_AUTO_UPGRADE", raising=False)
    with read_only(FIXTURE) as source:
        # evaluations.id is left to the server's sequence, so new evaluations get fresh ids
        old_columns = {t: [c for c in columns(source, t) if (t, c) != ("evaluations", "id")] for t in TABLES_0001}
        before = {t: sorted(tuple(_normal(c, v) for c, v in zip(cols, row))
                            for row in source.execute(f"SELECT {', '.join(cols)} FROM {t}"))
                  for t, cols in old_columns.items()}
    engine = create_engine(pg_database, poolclass=NullPool)
    try:
        with engine.begin() as connection:
            upgrade(migrate._config(connection), "0001")
            for table, cols in old_columns.items():  # in foreign-key order
                connection.execute(text(f"INSERT INTO {table} ({', '.join(cols)}) VALUES "
                                        f"({', '.join(':' + c for c in cols)})"),
                                   [dict(zip(cols, row)) for row in before[table]])
    finally:
        engine.dispose()

    with pytest.raises(CatalogueError, match="behind this slimkit's 0005"):
        Catalogue(pg_database)
    upgraded = invoke(cli, "db", "upgrade", pg_database)
    assert "upgraded 0001 -> 0005" in upgraded.output
    after = {t: sorted(query(pg_database, f"SELECT {', '.join(cols)} FROM {t}")) for t, cols in old_columns.items()}
    assert after == before
    with Catalogue(pg_database) as catalogue:
        with catalogue.engine.connect() as connection:
            assert schema_diff(connection) == []
        assert_old_rows_read(catalogue)
        catalogue.record_evaluations(PRUNED_50, "perplexity", 1, {"perplexity": 12.5})  # a fresh id
        assert catalogue.metrics(PRUNED_50)["perplexity.perplexity"] == 12.5


def test_0005_big_integers_record_on_every_backend(empty_catalogue_url: str) -> None:
    """A model of 6 GiB and 9e9 parameters, a step that peaked at 5 GiB with a 2**40 seed: beyond
    PostgreSQL's 32-bit INTEGER before 0005. On a server, the catalogue is first made at 0004 (an
    older slimkit's) and upgraded; the downgrade back to 0004 is real there."""
    from slimkit.core.catalogue import StepEntry

    url = empty_catalogue_url
    server = "://" in url
    if server:
        engine = create_engine(url, poolclass=NullPool)
        with engine.begin() as connection:
            upgrade(migrate._config(connection), "0004")
        engine.dispose()
    big, parent = "sha256:" + "b1" * 32, "sha256:" + "a0" * 32
    with Catalogue(url, upgrade=True) as catalogue:
        assert catalogue.revision == "0005" and catalogue.previous_revision == ("0004" if server else None)
        catalogue.record_model(parent, "Big", params=9_000_000_000, size_bytes=6 * 2**30)
        catalogue.record_model(big, "Big", params=8_999_999_999, size_bytes=6 * 2**30 - 1)
        with catalogue.session() as session, session.begin():
            catalogue.record_step(StepEntry(
                id="sha256:" + "5e" * 32, child_id=big, parents=((parent, "input"),), method="prune.unstructured",
                family="compressor", config={"type": "prune.unstructured", "version": 1, "data": {}}, plugin="t",
                plugin_version=None, versions={}, seed=2**40, peak_rss_bytes=5 * 2**30), None, session)
        entry = catalogue.model(big)
        assert (entry.params, entry.size_bytes) == (8_999_999_999, 6 * 2**30 - 1)
        (step,) = catalogue.steps_into(big)
        assert (step.seed, step.peak_rss_bytes) == (2**40, 5 * 2**30)
        if server:
            with pytest.raises(Exception, match="out of range"), catalogue.engine.begin() as connection:
                downgrade(migrate._config(connection), "0004")  # the values no longer fit: refused
            assert revision_at(url) == "0005"
            catalogue.delete(parent, cascade=True)
            with catalogue.engine.begin() as connection:
                downgrade(migrate._config(connection), "0004")
            assert query(url, "SELECT data_type FROM information_schema.columns WHERE table_name = 'models' "
                              "AND column_name = 'size_bytes'") == [("integer",)]
