"""A team catalogue on a PostgreSQL server: never upgraded silently (an empty or older database is
refused until ``slimkit db upgrade``, a newer one always), the pool settings, an unreachable server
(one line, fast, one connection attempt) and no password ever printed."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from slimkit.core.catalogue import Catalogue, CatalogueError
from slimkit.core.catalogue import migrate
from slimkit.core.cli import make_cli
from slimkit.testing import one_line_error

from backends import free_port, query

SECRET = "s3cret-Pa55"


def with_password(url: str) -> str:
    """The same database, with a password in the URL (the test server trusts 127.0.0.1, so any works)."""
    return make_url(url).set(password=SECRET).render_as_string(hide_password=False)


def alembic_to(url: str, revision: str) -> None:
    """Bring a database to ``revision`` with Alembic directly (what an older slimkit did)."""
    from alembic.command import upgrade

    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.begin() as connection:
            upgrade(migrate._config(connection), revision)
    finally:
        engine.dispose()


def tables(url: str) -> set[str]:
    return {row[0] for row in query(url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}


@pytest.fixture
def psycopg_driver() -> None:
    """The driver alone (no server): skipped without it, as the server tests are, except in CI."""
    import os

    from backends import REQUIRE_ENV

    try:
        import psycopg  # noqa: F401
    except ImportError:
        if os.environ.get(REQUIRE_ENV):
            pytest.fail(f"{REQUIRE_ENV} is set but psycopg is not installed")
        pytest.skip("psycopg is not installed (pip install 'slimkit[postgres]')")


@pytest.fixture
def cli(host: Any) -> Any:
    cli = make_cli(host)
    return lambda *args: CliRunner().invoke(cli, list(args))


# -- the upgrade policy --------------------------------------------------------------------------------
def test_an_empty_server_database_is_created_only_on_request(pg_database: str, monkeypatch: Any, cli: Any) -> None:
    monkeypatch.delenv("SLIMKIT_DB_AUTO_UPGRADE", raising=False)
    with pytest.raises(CatalogueError) as refused:
        Catalogue(pg_database)
    message = str(refused.value)
    assert "\n" not in message and "has no slimkit tables yet" in message and "slimkit db upgrade" in message
    assert tables(pg_database) == set()  # nothing created

    created = cli("db", "upgrade", pg_database)
    assert created.exit_code == 0, created.output
    assert "new catalogue created at revision 0005" in created.output
    with Catalogue(pg_database) as catalogue:  # now anyone opens it
        assert (catalogue.previous_revision, catalogue.revision, catalogue.backup) == ("0005", "0005", None)


def test_an_older_server_catalogue_is_refused_until_db_upgrade(pg_database: str, monkeypatch: Any,
                                                               cli: Any) -> None:
    monkeypatch.delenv("SLIMKIT_DB_AUTO_UPGRADE", raising=False)
    alembic_to(pg_database, "0003")
    engine = create_engine(pg_database, poolclass=NullPool)
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO runs (id, kind, status, host, pid, started) "
                                "VALUES ('r1', 'recipe', 'done', 'elsewhere', 7, now())"))
    engine.dispose()

    for attempt in (lambda: Catalogue(pg_database), lambda: Catalogue(pg_database, upgrade=False)):
        with pytest.raises(CatalogueError) as refused:
            attempt()
        assert str(refused.value) == (
            f"catalogue {pg_database} is at revision 0003, behind this slimkit's 0005: a server catalogue is "
            "shared and is upgraded only on request (run `slimkit db upgrade URL` once, or set "
            "SLIMKIT_DB_AUTO_UPGRADE=1)")
    assert query(pg_database, "SELECT version_num FROM alembic_version") == [("0003",)]
    assert "exports" not in tables(pg_database)
    one_line_error(cli("--catalogue", pg_database, "models"), "behind this slimkit's 0005", "slimkit db upgrade")
    current = cli("--catalogue", pg_database, "db", "current")
    assert current.exit_code == 0 and "revision 0003, behind head 0005" in current.output

    upgraded = cli("--catalogue", pg_database, "db", "upgrade")
    assert upgraded.exit_code == 0 and "upgraded 0003 -> 0005" in upgraded.output
    assert "backup" not in upgraded.output  # a server's backups are its administrator's
    with Catalogue(pg_database) as catalogue:
        (run,) = catalogue.runs()
        assert (run.id, run.status, run.pid) == ("r1", "done", 7)
        assert catalogue.exports() == []


def test_the_documented_setting_upgrades_on_open(pg_database: str, monkeypatch: Any) -> None:
    alembic_to(pg_database, "0002")
    monkeypatch.setenv("SLIMKIT_DB_AUTO_UPGRADE", "1")
    with Catalogue(pg_database) as catalogue:
        assert (catalogue.previous_revision, catalogue.revision) == ("0002", "0005")
    monkeypatch.setenv("SLIMKIT_DB_AUTO_UPGRADE", "0")
    Catalogue(pg_database).close()  # current: nothing to refuse


def test_a_newer_server_catalogue_is_refused_even_when_upgrading(catalogue_url: str, monkeypatch: Any,
                                                                 cli: Any) -> None:
    if "://" not in catalogue_url:
        pytest.skip("SQLite files: tests/test_migrations.py")
    engine = create_engine(catalogue_url, poolclass=NullPool)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = 'ffff'"))
    engine.dispose()
    monkeypatch.setenv("SLIMKIT_DB_AUTO_UPGRADE", "1")
    for upgrade in (None, True):
        with pytest.raises(CatalogueError) as refused:
            Catalogue(catalogue_url, upgrade=upgrade)
        assert str(refused.value) == (f"catalogue {catalogue_url} is at revision ffff, newer than this slimkit "
                                      "knows (head 0005); upgrade slimkit to use it")
    one_line_error(cli("db", "upgrade", catalogue_url), "revision ffff", "head 0005")
    assert query(catalogue_url, "SELECT version_num FROM alembic_version") == [("ffff",)]


def test_concurrent_first_opens_with_the_setting_migrate_once(pg_database: str, monkeypatch: Any) -> None:
    """Eight clients opening an empty database at once with SLIMKIT_DB_AUTO_UPGRADE=1: the
    migration lock lets one create the tables; the others wait and find them current."""
    monkeypatch.setenv("SLIMKIT_DB_AUTO_UPGRADE", "1")
    seen: list[Any] = []

    def open_one() -> None:
        try:
            with Catalogue(pg_database) as catalogue:
                seen.append(catalogue.previous_revision)
        except BaseException as error:  # reported by the assertion below
            seen.append(error)

    threads = [threading.Thread(target=open_one) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(seen, key=str) == ["0005"] * 7 + [None]


# -- pooling and an unreachable server -----------------------------------------------------------------
def test_pool_settings_come_from_the_environment(catalogue_url: str, monkeypatch: Any) -> None:
    if "://" not in catalogue_url:
        pytest.skip("SQLite files have no connection pool settings")
    monkeypatch.setenv("SLIMKIT_DB_POOL_SIZE", "3")
    monkeypatch.setenv("SLIMKIT_DB_MAX_OVERFLOW", "1")
    monkeypatch.setenv("SLIMKIT_DB_POOL_TIMEOUT", "7")
    with Catalogue(catalogue_url) as catalogue:
        pool: Any = catalogue.engine.pool
        assert (pool.size(), pool._max_overflow, pool._timeout, pool._pre_ping) == (3, 1, 7, True)
    monkeypatch.setenv("SLIMKIT_DB_POOL_SIZE", "lots")
    with pytest.raises(CatalogueError) as refused:
        Catalogue(catalogue_url)
    assert str(refused.value) == f"cannot open catalogue {catalogue_url!r}: SLIMKIT_DB_POOL_SIZE='lots' is not a whole number"


def test_a_closed_port_fails_fast_in_one_line_without_the_password(cli: Any, psycopg_driver: None) -> None:
    url = f"postgresql+psycopg://slimkit:{SECRET}@127.0.0.1:{free_port()}/catalogue"
    started = time.monotonic()
    with pytest.raises(CatalogueError) as refused:
        Catalogue(url)
    assert time.monotonic() - started < 3
    message = str(refused.value)
    assert "\n" not in message and SECRET not in message
    assert message.startswith("cannot open catalogue postgresql+psycopg://slimkit:***@127.0.0.1:")
    assert "Connection refused" in message
    result = cli("--catalogue", url, "models")
    assert SECRET not in result.output + result.stderr
    one_line_error(result, "cannot open catalogue", "slimkit:***@127.0.0.1")


def test_a_server_that_never_answers_is_given_up_once_after_the_timeout(monkeypatch: Any,
                                                                        psycopg_driver: None) -> None:
    """A listener that accepts and then says nothing (a hung server, a firewall that swallows): the
    opening fails after the connect timeout, having connected once: no retry storm."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept)
    thread.start()
    monkeypatch.setenv("SLIMKIT_DB_CONNECT_TIMEOUT", "2")
    url = f"postgresql+psycopg://slimkit:{SECRET}@127.0.0.1:{listener.getsockname()[1]}/catalogue"
    try:
        started = time.monotonic()
        with pytest.raises(CatalogueError) as refused:
            Catalogue(url)
        elapsed = time.monotonic() - started
    finally:
        stop.set()
        thread.join()
        for connection in accepted:
            connection.close()
        listener.close()
    message = str(refused.value)
    assert "\n" not in message and SECRET not in message and "timeout" in message.lower()
    assert 1.5 < elapsed < 6
    assert len(accepted) == 1


# -- no password printed ---------------------------------------------------------------------------------
def test_db_commands_never_print_the_password(pg_database: str, cli: Any) -> None:
    url = with_password(pg_database)
    outputs = [cli("db", "upgrade", url), cli("--catalogue", url, "db", "current"),
               cli("--catalogue", url, "db", "history"), cli("--catalogue", url, "db", "upgrade")]
    assert [result.exit_code for result in outputs] == [0, 0, 0, 0]
    assert "new catalogue created" in outputs[0].output and "already at revision 0005" in outputs[3].output
    for result in outputs:
        assert SECRET not in result.output + result.stderr
    assert "slimkit:***@127.0.0.1" in outputs[0].output


@pytest.mark.parametrize("command", [("models",), ("db", "current"), ("db", "upgrade")])
def test_a_bad_connect_timeout_is_one_line(pg_database: str, cli: Any, monkeypatch: Any,
                                           command: tuple[str, ...]) -> None:
    monkeypatch.setenv("SLIMKIT_DB_CONNECT_TIMEOUT", "soon")
    one_line_error(cli("--catalogue", pg_database, *command), "SLIMKIT_DB_CONNECT_TIMEOUT='soon' is not a whole number")
