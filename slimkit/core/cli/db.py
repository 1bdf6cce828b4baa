"""``slimkit db upgrade|current|history``: the catalogue's schema revision.

Every command that opens a SQLite catalogue upgrades it already (after a backup); ``db upgrade``
does only that and says what happened. A server catalogue (PostgreSQL) is shared: ``db upgrade``
is the only thing that upgrades it (unless ``SLIMKIT_DB_AUTO_UPGRADE=1``). ``db current`` and
``db history`` only read: they never create, migrate or otherwise change the catalogue.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import click

from slimkit.core.catalogue.migrate import (
    SQLITE_HEADER,
    CatalogueError,
    default_url,
    head_revision,
    open_error,
    script_directory,
    shown,
    sqlite_path,
    to_url,
)
from slimkit.core.cli.state import CliState


@dataclass(frozen=True)
class _Found:
    """What is at a catalogue URL: whether it exists and its Alembic revision (None: none yet)."""

    url: str
    exists: bool
    revision: str | None

    @property
    def shown(self) -> str:
        return shown(self.url)


def _chosen_url(ctx: click.Context) -> str:
    state = ctx.find_object(CliState)
    configured = state.catalogue_url if state is not None else None
    return to_url(configured) if configured else default_url()


def _header(path: Path) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(len(SQLITE_HEADER))


def read_revision(url: str) -> _Found:
    """The revision of the catalogue at ``url``, read without creating or changing anything.

    :raises CatalogueError: the URL cannot be opened or does not hold a slimkit catalogue.
    """
    from sqlalchemy import create_engine, inspect
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError

    from slimkit.core.catalogue.migrate import current_revision, default_folder, engine_connect_args

    path = sqlite_path(url)
    try:
        if path is None:
            engine = create_engine(url, connect_args=engine_connect_args(url, None))
        elif path.is_dir():
            raise CatalogueError(f"{path} is a folder, not a catalogue file")
        elif not path.exists():
            if not path.parent.is_dir() and path.parent.resolve() != default_folder():
                raise CatalogueError(f"no catalogue at {path}: its folder {path.parent} does not exist")
            return _Found(url, False, None)
        elif path.stat().st_size and _header(path) != SQLITE_HEADER:
            raise CatalogueError(f"{path} is not a slimkit catalogue (not an SQLite database)")
        else:  # read-only: no journal-mode switch, nothing created
            uri = f"file:{quote(str(path))}?mode=ro"
            engine = create_engine("sqlite://", creator=lambda: sqlite3.connect(uri, uri=True))
    except (ArgumentError, ValueError) as error:  # ValueError: a bad SLIMKIT_DB_CONNECT_TIMEOUT
        raise CatalogueError(shown(f"cannot open catalogue {url!r}: {error}")) from None
    except (ImportError, OSError) as error:
        raise open_error(url, error) from None
    try:
        revision = current_revision(engine)
        if revision is None and inspect(engine).get_table_names():
            raise CatalogueError(f"{shown(url)} is not a slimkit catalogue (it has tables but no slimkit revision)")
    except SQLAlchemyError as error:
        raise open_error(url, error) from None
    finally:
        engine.dispose()
    return _Found(url, True, revision)


@click.group()
def db() -> None:
    """The catalogue's schema revision: show it, list the shipped ones, upgrade."""


@db.command()
@click.argument("url", required=False)
@click.pass_context
def upgrade(ctx: click.Context, url: str | None) -> None:
    """Upgrade the catalogue to this slimkit's revision (a SQLite file is backed up first).

    The catalogue is URL, else --catalogue / SLIMKIT_CATALOGUE; an empty database gets its tables.
    A server catalogue (postgresql://) is upgraded only by this command (or SLIMKIT_DB_AUTO_UPGRADE=1)."""
    from slimkit.core.catalogue import Catalogue

    catalogue = Catalogue(to_url(url) if url else _chosen_url(ctx), upgrade=True)
    old, new, url = catalogue.previous_revision, catalogue.revision, shown(catalogue.url)
    if old == new:
        click.echo(f"{url}: already at revision {new} (head)")
    elif old is None:
        click.echo(f"{url}: new catalogue created at revision {new}")
    else:
        click.echo(f"{url}: upgraded {old} -> {new}")
    if catalogue.backup is not None:
        click.echo(f"backup of the revision {old} file: {catalogue.backup}")
    if catalogue.failed_runs:
        click.echo(f"marked {len(catalogue.failed_runs)} interrupted run(s) failed")
    catalogue.close()  # checkpoints the WAL


@db.command()
@click.pass_context
def current(ctx: click.Context) -> None:
    """Show the catalogue's revision and this slimkit's head (changes nothing)."""
    found = read_revision(_chosen_url(ctx))
    head = head_revision()
    if not found.exists:
        click.echo(f"{found.shown}: no catalogue yet (it is created on first use)")
    elif found.revision == head:
        click.echo(f"{found.shown}: revision {found.revision} (head)")
    elif found.revision is None:
        click.echo(f"{found.shown}: empty database, no revision yet (slimkit db upgrade creates the tables)")
    elif found.revision in {script.revision for script in script_directory().walk_revisions()}:
        click.echo(f"{found.shown}: revision {found.revision}, behind head {head} (slimkit db upgrade)")
    else:
        click.echo(f"{found.shown}: revision {found.revision}, newer than this slimkit knows (upgrade slimkit)")
    click.echo(f"this slimkit ships head revision {head}")


@db.command()
@click.pass_context
def history(ctx: click.Context) -> None:
    """List the revisions this slimkit ships, newest first; marks the current one."""
    try:
        revision = read_revision(_chosen_url(ctx)).revision
    except CatalogueError as error:
        click.echo(f"Warning: {error}", err=True)
        revision = None
    head = head_revision()
    for script in script_directory().walk_revisions():
        marks = [mark for mark, present in (("head", script.revision == head),
                                            ("current", script.revision == revision)) if present]
        message = next(iter((script.doc or "").strip().splitlines()), "")
        suffix = f"  ({', '.join(marks)})" if marks else ""
        click.echo(f"{script.down_revision or '<base>'} -> {script.revision}  {message}{suffix}")


COMMANDS = (db,)
