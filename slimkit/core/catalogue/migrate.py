"""Opening a catalogue safely: locate it, lock it, back it up, migrate it, or refuse it.

Alembic is configured in code (the scripts live in the ``slimkit.migrations`` package) and never
touches logging. Upgrading a SQLite file first copies it to ``<file>.backup-<rev>-<time>`` with
SQLite's online backup API, under an exclusive file lock so two processes never migrate at once
(the file's handling: :mod:`.sqlite_file`). A server catalogue (PostgreSQL) is upgraded only on
request, under an advisory lock (:mod:`.server`). A catalogue whose revision this slimkit does not
know (made by a newer slimkit) is refused.

A SQLite catalogue's folder must exist (a typo in a path is an error, not a new empty catalogue);
only the default folder in the user data folder is created. Every URL shown in a message has its
password masked, and every failure to open one is a :class:`CatalogueError` of one line.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path
from typing import Any, Iterator

from alembic.command import upgrade as alembic_upgrade
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, inspect
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from slimkit.core.catalogue.server import (
    auto_upgrade, connect_timeout, engine_options, server_migration_lock, setup_engine, upgrade_refusal,
)
from slimkit.core.catalogue.errors import CatalogueError
from slimkit.core.catalogue.sqlite_file import (  # noqa: F401  (read_only_sqlite, SQLITE_HEADER: used by importers)
    SQLITE_HEADER, backup_sqlite, file_lock, precheck_sqlite, read_only_sqlite, setup_sqlite_engine,
)
from slimkit.core.failures import describe_os_error, first_line, mask_secrets, os_cause

ENV_CATALOGUE = "SLIMKIT_CATALOGUE"
# pip names of the database drivers SQLAlchemy imports under another name
DRIVER_PACKAGES = {"psycopg2": "psycopg2-binary", "psycopg": "psycopg[binary]", "MySQLdb": "mysqlclient",
                   "pymysql": "PyMySQL", "cx_Oracle": "cx-Oracle", "pyodbc": "pyodbc", "pg8000": "pg8000"}


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


def _refuse_newer(shown_url: str, revision: str | None) -> None:
    """Refuse a catalogue at a revision this slimkit does not ship (a newer slimkit wrote it)."""
    if revision is not None and revision not in {rev.revision for rev in script_directory().walk_revisions()}:
        raise CatalogueError(f"catalogue {shown_url} is at revision {revision}, newer than this slimkit knows "
                             f"(head {head_revision()}); upgrade slimkit to use it")


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
                _refuse_newer(str(path), precheck_sqlite(path))
        except OSError as error:
            raise CatalogueError(f"cannot read catalogue {path}: {os_cause(error)}") from None
    try:
        engine = create_engine(url, connect_args=engine_connect_args(url, path), **engine_options(url))
    except (ArgumentError, ValueError) as error:
        raise CatalogueError(mask_secrets(f"cannot open catalogue {url!r}: {error}")) from None
    except ImportError as error:
        raise open_error(url, error) from None
    if path is not None:
        setup_sqlite_engine(engine)
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
def migration_lock(engine: Engine, url: str) -> Iterator[None]:
    """An exclusive lock while the revision is read and upgraded: a file beside a SQLite file, an
    advisory lock on a server (other servers: Alembic's transaction is the unit of safety)."""
    path = sqlite_path(url)
    if path is None:
        with server_migration_lock(engine):
            yield
        return
    with file_lock(path):
        yield


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


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
                _refuse_newer(shown(url), revision)
            if not allowed:
                raise CatalogueError(upgrade_refusal(shown(url), revision, head))
            backup = backup_sqlite(path, revision) if path is not None and revision is not None else None
            with engine.begin() as connection:
                alembic_upgrade(_config(connection), "head")
            return revision, head, backup
    except (SQLAlchemyError, sqlite3.Error, OSError) as error:  # OSError: the lock file, the backup
        raise open_error(url, error) from None
