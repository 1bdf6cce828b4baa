"""Opening a catalogue safely: locate it, lock it, back it up, migrate it, or refuse it.

Alembic is configured in code (the scripts live in the ``slimkit.migrations`` package) and never
touches logging. Upgrading a SQLite file first copies it to ``<file>.backup-<rev>-<time>`` with
SQLite's online backup API, under an exclusive file lock so two processes never migrate at once.
A catalogue whose revision this slimkit does not know (made by a newer slimkit) is refused.
A server catalogue (PostgreSQL) is upgraded only on request: see :mod:`.server`.

A SQLite catalogue's folder must exist (a typo in a path is an error, not a new empty catalogue);
only the default folder in the user data folder is created. Every URL shown in a message has its
password masked, and every failure to open one is a :class:`CatalogueError` of one line.
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

from alembic.command import upgrade as alembic_upgrade
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from slimkit.core.catalogue.server import (
    auto_upgrade, connect_timeout, engine_options, server_migration_lock, setup_engine, upgrade_refusal,
)
from slimkit.core.errors import SlimkitError
from slimkit.core.failures import describe_os_error, first_line, mask_secrets, os_cause

ENV_CATALOGUE = "SLIMKIT_CATALOGUE"
SQLITE_HEADER = b"SQLite format 3\x00"
# pip names of the database drivers SQLAlchemy imports under another name
DRIVER_PACKAGES = {"psycopg2": "psycopg2-binary", "psycopg": "psycopg[binary]", "MySQLdb": "mysqlclient",
                   "pymysql": "PyMySQL", "cx_Oracle": "cx-Oracle", "pyodbc": "pyodbc", "pg8000": "pg8000"}


class CatalogueError(SlimkitError):
    """The catalogue cannot be opened, is not a catalogue, or a reference does not resolve."""


def default_folder() -> Path:
    """The per-user data folder the default catalogue lives in (the only one slimkit creates)."""
    from platformdirs import user_data_dir

    return Path(user_data_dir("slimkit")).expanduser().resolve()


def default_url() -> str:
    """``SLIMKIT_CATALOGUE`` if set, else a SQLite file in the per-user data folder."""
    configured = os.environ.get(ENV_CATALOGUE)
    if configured:
        return to_url(configured)
    return to_url(str(default_folder() / "catalogue.db"))


def shown(url: str) -> str:
    """``url`` as it may be printed: with its password, if any, replaced by ``***``."""
    return mask_secrets(url)


def open_error(url: str, error: BaseException) -> CatalogueError:
    """The one-line error for a catalogue that cannot be opened: the URL (password masked) and
    the database's, the driver's or the system's first line."""
    if isinstance(error, ImportError):
        module = error.name or first_line(error)
        package = DRIVER_PACKAGES.get(module.split(".")[0], module.split(".")[0])
        cause = f"its database driver {module} is not installed (pip install '{package}')"
    elif isinstance(error, OSError):
        cause = describe_os_error(error)
    else:
        cause = first_line(getattr(error, "orig", None) or error)
    return CatalogueError(mask_secrets(f"cannot open catalogue {url}: {cause}"))


def to_url(spec: "str | os.PathLike[str]") -> str:
    """A SQLAlchemy URL from a URL or a plain file path (which means SQLite)."""
    spec = os.fspath(spec)
    if "://" in spec:
        return spec
    # URL.create escapes what a file name may contain but a URL may not ("?", "#", "%").
    path = str(Path(spec).expanduser().resolve())
    return URL.create("sqlite", database=path).render_as_string(hide_password=False)


def sqlite_path(url: str) -> Path | None:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def script_directory() -> ScriptDirectory:
    return ScriptDirectory.from_config(_config())


def head_revision() -> str:
    head = script_directory().get_current_head()
    assert head is not None  # the package always ships its revisions
    return head


def _config(connection: object | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", "slimkit:migrations")
    config.attributes["connection"] = connection
    return config


def make_engine(url: str) -> Engine:
    """An engine set up for concurrent use: SQLite with WAL, a busy timeout and foreign keys; a
    server with a bounded pool, a connect timeout and one writer's lock per transaction.

    Nothing is created here: a SQLite file whose folder is missing is refused (except in the
    default folder, which is made), and a server database is not contacted until first use.
    """
    path = sqlite_path(url)
    if path is not None:
        if path.exists() and path.is_dir():
            raise CatalogueError(f"{path} is a folder, not a catalogue file")
        _check_folder(path)
        try:
            if path.exists() and path.stat().st_size:
                _precheck_sqlite(path)
        except OSError as error:
            raise CatalogueError(f"cannot read catalogue {path}: {os_cause(error)}") from None
    try:
        engine = create_engine(url, connect_args=engine_connect_args(url, path), **engine_options(url))
    except (ArgumentError, ValueError) as error:
        raise CatalogueError(mask_secrets(f"cannot open catalogue {url!r}: {error}")) from None
    except ImportError as error:
        raise open_error(url, error) from None
    if path is not None:
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin_immediate)
    setup_engine(engine)
    return engine


def _check_folder(path: Path) -> None:
    """A SQLite file's folder must exist: only the default catalogue's folder is created."""
    folder = path.parent
    if folder.is_dir():
        return
    if folder.exists():
        raise CatalogueError(f"cannot open catalogue {path}: {folder} is not a folder")
    if folder.resolve() != default_folder():
        raise CatalogueError(
            f"cannot open catalogue {path}: the folder {folder} does not exist (create it first; "
            f"slimkit creates only its default folder)"
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CatalogueError(f"cannot create the catalogue folder {folder}: {os_cause(error)}") from None


def engine_connect_args(url: str, path: Path | None) -> dict[str, Any]:
    """What the DBAPI driver is given beyond the URL: a busy timeout; a connect timeout and a lock
    timeout (SQLite's busy timeout: a writer waits at most a minute for the others)."""
    if path is not None:
        return {"timeout": 60}
    parsed = make_url(url)
    arguments: dict[str, Any] = {}
    if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() in {"psycopg2", "psycopg"}:
        # libpq waits for an unreachable host as long as the network lets it (minutes); say so sooner
        if "connect_timeout" not in parsed.query:
            arguments["connect_timeout"] = connect_timeout()
        if "options" not in parsed.query:
            arguments["options"] = "-c lock_timeout=60000"
    return arguments


@contextlib.contextmanager
def read_only_sqlite(path: Path) -> Iterator[sqlite3.Connection]:
    """A plain read-only connection to a SQLite file: no WAL switch, nothing created beside it.
    The path is URI-escaped, so names with ``?``, ``#`` or ``%`` open the file they name."""
    connection = sqlite3.connect(f"file:{urllib.parse.quote(str(path))}?mode=ro", uri=True)
    try:
        yield connection
    finally:
        connection.close()


def _precheck_sqlite(path: Path) -> None:
    """Refuse a file that is not a slimkit catalogue, or one from a newer slimkit, read-only.

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
        raise CatalogueError(f"cannot open catalogue {path}: {error}{_unwritable(path.parent)}") from None
    except sqlite3.DatabaseError as error:
        raise CatalogueError(f"{path} is not a slimkit catalogue ({error})") from None
    if revision is None and tables - {"alembic_version"}:
        listed = ", ".join(sorted(tables)[:5])
        raise CatalogueError(f"{path} is not a slimkit catalogue (it has other tables: {listed})")
    if revision is not None and revision not in {rev.revision for rev in script_directory().walk_revisions()}:
        raise CatalogueError(
            f"catalogue {path} is at revision {revision}, newer than this slimkit knows "
            f"(head {head_revision()}); upgrade slimkit to use it"
        )


def _unwritable(folder: Path) -> str:
    """Why SQLite cannot create its -wal/-shm files in ``folder`` (for a message), if it cannot."""
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return f" ({folder} is on a read-only file system)"
    except OSError:
        return ""
    return "" if os.access(folder, os.W_OK) else f" ({folder} is not writable)"


def _sqlite_pragmas(dbapi_connection: sqlite3.Connection, _record: object) -> None:
    # Let SQLAlchemy, not the sqlite3 module, issue BEGIN (so SAVEPOINTs work, and see below).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=60000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_begin_immediate(connection: Any) -> None:
    """Every transaction takes the write lock up front.

    A deferred transaction that reads and then writes while another process has committed in
    between fails at once with SQLITE_BUSY in WAL mode, whatever the busy timeout; taking the
    lock at BEGIN makes concurrent writers wait for each other instead.
    """
    connection.exec_driver_sql("BEGIN IMMEDIATE")


@contextlib.contextmanager
def migration_lock(engine: Engine, url: str) -> Iterator[None]:
    """An exclusive lock while the revision is read and upgraded: a file beside a SQLite file, an
    advisory lock on a server (other servers: Alembic's transaction is the unit of safety)."""
    path = sqlite_path(url)
    if path is None:
        with server_migration_lock(engine):
            yield
        return
    with open(path.with_name(path.name + ".lock"), "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


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


def ensure_current(engine: Engine, url: str, upgrade: bool | None = None) -> tuple[str | None, str, Path | None]:
    """Bring the catalogue to the head revision; returns (old revision, new revision, backup).

    Refuses a database that has tables but is not a slimkit catalogue, and one whose revision is
    unknown to this slimkit (written by a newer version). ``upgrade``: ``None`` upgrades a SQLite
    file but a server database only with ``SLIMKIT_DB_AUTO_UPGRADE=1``; ``True`` upgrades
    (``slimkit db upgrade``); ``False`` never does.
    """
    head = head_revision()
    path = sqlite_path(url)
    allowed = upgrade if upgrade is not None else (path is not None or auto_upgrade())
    try:
        with migration_lock(engine, url):
            revision = current_revision(engine)
            if revision is None:
                tables = set(inspect(engine).get_table_names())
                if tables:
                    listed = ", ".join(sorted(tables)[:5])
                    raise CatalogueError(f"{shown(url)} is not a slimkit catalogue (it has other tables: {listed})")
            elif revision == head:
                return revision, head, None
            else:
                known = {rev.revision for rev in script_directory().walk_revisions()}
                if revision not in known:
                    raise CatalogueError(
                        f"catalogue {shown(url)} is at revision {revision}, newer than this slimkit knows "
                        f"(head {head}); upgrade slimkit to use it"
                    )
            if not allowed:
                raise CatalogueError(upgrade_refusal(shown(url), revision, head))
            backup = backup_sqlite(path, revision) if path is not None and revision is not None else None
            with engine.begin() as connection:
                alembic_upgrade(_config(connection), "head")
            return revision, head, backup
    except (SQLAlchemyError, sqlite3.Error, OSError) as error:  # OSError: the lock file, the backup
        raise open_error(url, error) from None
