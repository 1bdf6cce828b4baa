"""A catalogue in a SQLite file: read-only looks, WAL and the write lock, the migration lock, backups.

Concurrent processes share one file: WAL mode, a 60 s busy timeout, foreign keys on, and every
transaction takes the write lock at BEGIN (``BEGIN IMMEDIATE``). A file is checked read-only
before anything could change it, and backed up (SQLite's online backup API) before a migration.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import time
import urllib.parse
from pathlib import Path
from typing import Any, Iterator

from sqlalchemy import Engine, event

from slimkit.core.catalogue.errors import CatalogueError

SQLITE_HEADER = b"SQLite format 3\x00"


def setup_sqlite_engine(engine: Engine) -> None:
    event.listen(engine, "connect", sqlite_pragmas)
    event.listen(engine, "begin", sqlite_begin_immediate)


@contextlib.contextmanager
def read_only_sqlite(path: Path) -> Iterator[sqlite3.Connection]:
    """A plain read-only connection to a SQLite file: no WAL switch, nothing created beside it.
    The path is URI-escaped, so names with ``?``, ``#`` or ``%`` open the file they name."""
    connection = sqlite3.connect(f"file:{urllib.parse.quote(str(path))}?mode=ro", uri=True)
    try:
        yield connection
    finally:
        connection.close()


def precheck_sqlite(path: Path) -> str | None:
    """Refuse a file that is not a slimkit catalogue, read-only; returns its revision (``None``:
    none yet) for the caller to judge.

    This runs before any connection that could change the file (WAL mode is written into the
    file's header), so a refused file is left byte for byte as it was.
    """
    with open(path, "rb") as handle:
        if handle.read(16) != SQLITE_HEADER:
            raise CatalogueError(f"{path} is not a slimkit catalogue (not an SQLite database)")
    try:
        with read_only_sqlite(path) as connection:
            tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            revision = None
            if "alembic_version" in tables:
                row = connection.execute("SELECT version_num FROM alembic_version").fetchone()
                revision = row[0] if row else None
    except sqlite3.OperationalError as error:  # could not open it: not a verdict on the contents
        raise CatalogueError(f"cannot open catalogue {path}: {error}{unwritable(path.parent)}") from None
    except sqlite3.DatabaseError as error:
        raise CatalogueError(f"{path} is not a slimkit catalogue ({error})") from None
    if revision is None and tables - {"alembic_version"}:
        listed = ", ".join(sorted(tables)[:5])
        raise CatalogueError(f"{path} is not a slimkit catalogue (it has other tables: {listed})")
    return revision


def unwritable(folder: Path) -> str:
    """Why SQLite cannot create its -wal/-shm files in ``folder`` (for a message), if it cannot."""
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return f" ({folder} is on a read-only file system)"
    except OSError:
        return ""
    return "" if os.access(folder, os.W_OK) else f" ({folder} is not writable)"


def sqlite_pragmas(dbapi_connection: sqlite3.Connection, _record: object) -> None:
    # Let SQLAlchemy, not the sqlite3 module, issue BEGIN (so SAVEPOINTs work, and see below).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=60000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def sqlite_begin_immediate(connection: Any) -> None:
    """Every transaction takes the write lock up front.

    A deferred transaction that reads and then writes while another process has committed in
    between fails at once with SQLITE_BUSY in WAL mode, whatever the busy timeout; taking the
    lock at BEGIN makes concurrent writers wait for each other instead.
    """
    connection.exec_driver_sql("BEGIN IMMEDIATE")


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on ``<file>.lock`` beside a SQLite file (its migrations, one at a time)."""
    with open(path.with_name(path.name + ".lock"), "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def backup_sqlite(path: Path, revision: str | None) -> Path:
    """Copy a SQLite catalogue consistently (online backup API) before it is migrated."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = path.with_name(f"{path.name}.backup-{revision or 'none'}-{stamp}")
    source = sqlite3.connect(path)
    try:
        copy = sqlite3.connect(target)
        with copy:
            source.backup(copy)
        copy.close()
    finally:
        source.close()
    return target
