"""The catalogue's database backends in tests: SQLite files, and a throwaway PostgreSQL server on
127.0.0.1 (one per test session, a fresh database per test).

The server is PostgreSQL's own ``initdb``/``pg_ctl`` in a temporary folder, run as the ``postgres``
user when the tests run as root (``initdb`` refuses root), listening on 127.0.0.1 only on a free
port, trusting local connections, and stopped (its folder removed) at the end of the session.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

TABLES = ("runs", "models", "steps", "step_parents", "step_uses", "evaluations", "exports")
REQUIRE_ENV = "SLIMKIT_REQUIRE_POSTGRES"  # CI sets it: a PostgreSQL backend that cannot start fails


def server_binaries() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl``: the PATH, else Debian's layout."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).parent
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if Path(folder, "initdb").is_file() and Path(folder, "pg_ctl").is_file():
            return Path(folder)
    return None


def missing() -> str | None:
    """Why a PostgreSQL backend cannot run here, or ``None`` when it can."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install 'slimkit[postgres]')"
    if server_binaries() is None:
        return "PostgreSQL's server (initdb, pg_ctl) is not installed (apt-get install postgresql)"
    return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """A running throwaway server; :meth:`database` gives a fresh database."""

    def __init__(self) -> None:
        self.bin = server_binaries()
        assert self.bin is not None
        self.folder = Path(tempfile.mkdtemp(prefix="slimkit-pg-"))
        self.port = free_port()
        self.as_postgres = os.geteuid() == 0
        self._names = itertools.count()
        (self.folder / "sock").mkdir()
        if self.as_postgres:  # the server's own user must own its folder
            shutil.chown(self.folder, "postgres", "postgres")
            shutil.chown(self.folder / "sock", "postgres", "postgres")
        data = self.folder / "data"
        self._run("initdb", "-D", str(data), "-U", "slimkit", "--auth=trust", "--encoding=UTF8", "--no-locale")
        self._run("pg_ctl", "-D", str(data), "-l", str(self.folder / "server.log"), "-w", "start",
                  "-o", f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.folder / 'sock'} "
                        "-c max_connections=200 -c fsync=off")
        self.admin = create_engine(self.url("postgres"), poolclass=NullPool, isolation_level="AUTOCOMMIT")

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.bin / tool), *args]
        if self.as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if done.returncode:
            log = self.folder / "server.log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stderr.strip()} {tail}")

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://slimkit@127.0.0.1:{self.port}/{database}"

    def create(self, template: str | None = None) -> str:
        name = f"t{os.getpid()}_{next(self._names)}"
        clause = f" TEMPLATE {template}" if template else ""
        with self.admin.connect() as connection:
            connection.execute(text(f"CREATE DATABASE {name}{clause}"))
        return name

    def drop(self, name: str) -> None:
        with self.admin.connect() as connection:  # FORCE: a killed client's session goes too
            connection.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))

    @contextlib.contextmanager
    def database(self, template: str | None = None) -> Iterator[str]:
        name = self.create(template)
        try:
            yield self.url(name)
        finally:
            self.drop(name)

    def stop(self) -> None:
        self.admin.dispose()
        try:
            self._run("pg_ctl", "-D", str(self.folder / "data"), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)


def snapshot(url: str) -> object:
    """Everything in a catalogue, to compare before and after: a file's bytes, a database's rows."""
    from slimkit.core.catalogue.migrate import sqlite_path, to_url

    path = sqlite_path(to_url(url))
    if path is not None:
        return path.read_bytes()
    return {table: sorted(query(url, f"SELECT * FROM {table}"), key=repr) for table in TABLES}


def database_name(url: str) -> str:
    from sqlalchemy.engine import make_url

    return str(make_url(url).database)


def row_counts(url: str, tables: tuple[str, ...]) -> dict[str, int]:
    """Rows per table, read without slimkit (a SQLite file opened read-only: no WAL switch)."""
    if "://" not in url:
        from slimkit.core.catalogue.migrate import read_only_sqlite

        with read_only_sqlite(Path(url)) as connection:
            return {t: connection.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            return {t: connection.execute(text(f"SELECT count(*) FROM {t}")).scalar_one() for t in tables}
    finally:
        engine.dispose()


def query(url: str, sql: str) -> list[tuple]:
    """Rows of one statement, read without slimkit."""
    if "://" not in url:
        from slimkit.core.catalogue.migrate import read_only_sqlite

        with read_only_sqlite(Path(url)) as connection:
            return connection.execute(sql).fetchall()
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            return [tuple(row) for row in connection.execute(text(sql))]
    finally:
        engine.dispose()
