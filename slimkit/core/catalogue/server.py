"""A catalogue on a database server (PostgreSQL): pooling, locking and the upgrade policy.

SQLite serializes writers with ``BEGIN IMMEDIATE`` and migrations with a lock file; on a server,
every transaction first takes one transaction-scoped advisory lock (``pg_advisory_xact_lock``),
so catalogue transactions (all short) run one after another exactly as they do on SQLite, and an
opening or an upgrade holds a session-scoped advisory lock while it reads and changes the schema.

Pooling (environment, read when a catalogue is opened): ``SLIMKIT_DB_POOL_SIZE`` (default 5),
``SLIMKIT_DB_MAX_OVERFLOW`` (5), ``SLIMKIT_DB_POOL_TIMEOUT`` (30 s waiting for a pooled connection),
``SLIMKIT_DB_POOL_RECYCLE`` (1800 s), ``SLIMKIT_DB_CONNECT_TIMEOUT`` (5 s to reach the server);
connections are checked before use (``pool_pre_ping``). A server that cannot be reached fails
the opening once, after at most the connect timeout: nothing retries.

A server catalogue is shared, so it is never upgraded by whoever opens it first: an older (or
empty) database is refused with a line naming ``slimkit db upgrade``, unless
``SLIMKIT_DB_AUTO_UPGRADE=1`` says otherwise; a newer one is always refused.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator

from sqlalchemy import Engine, event
from sqlalchemy.engine import make_url

ENV_AUTO_UPGRADE = "SLIMKIT_DB_AUTO_UPGRADE"
ENV_CONNECT_TIMEOUT = "SLIMKIT_DB_CONNECT_TIMEOUT"
POOL_SETTINGS = {  # engine argument: (environment variable, default)
    "pool_size": ("SLIMKIT_DB_POOL_SIZE", 5),
    "max_overflow": ("SLIMKIT_DB_MAX_OVERFLOW", 5),
    "pool_timeout": ("SLIMKIT_DB_POOL_TIMEOUT", 30),
    "pool_recycle": ("SLIMKIT_DB_POOL_RECYCLE", 1800),
}
CONNECT_TIMEOUT_S = 5
# Advisory lock keys (64-bit): "slimkit" writers, and "slimkit" migrations.
WRITE_LOCK = 0x736C696D6B697401
MIGRATION_LOCK = 0x736C696D6B697402
_TRUE = {"1", "true", "yes", "on"}


def is_postgres(url: str) -> bool:
    return make_url(url).get_backend_name() == "postgresql"


def _setting(variable: str, default: int) -> int:
    raw = os.environ.get(variable, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{variable}={raw!r} is not a whole number") from None
    if value < 0:
        raise ValueError(f"{variable}={raw!r} is negative")
    return value


def engine_options(url: str) -> dict[str, Any]:
    """Pool settings for a server URL (none for SQLite, whose pool SQLAlchemy chooses)."""
    if make_url(url).get_backend_name() == "sqlite":
        return {}
    options: dict[str, Any] = {"pool_pre_ping": True}
    for argument, (variable, default) in POOL_SETTINGS.items():
        options[argument] = _setting(variable, default)
    return options


def connect_timeout() -> int:
    """Seconds libpq waits to reach the server (it waits as long as the network lets it, minutes,
    without one); at least 2, libpq's smallest."""
    return max(2, _setting(ENV_CONNECT_TIMEOUT, CONNECT_TIMEOUT_S))


def auto_upgrade() -> bool:
    """Whether ``SLIMKIT_DB_AUTO_UPGRADE`` lets opening a server catalogue upgrade it."""
    return os.environ.get(ENV_AUTO_UPGRADE, "").strip().lower() in _TRUE


def setup_engine(engine: Engine) -> None:
    """Every transaction on a PostgreSQL catalogue takes the writers' lock first (see above)."""
    if engine.dialect.name == "postgresql":
        event.listen(engine, "begin", _lock_transaction)


def _lock_transaction(connection: Any) -> None:
    # Released by PostgreSQL itself at COMMIT or ROLLBACK, also when the client dies (kill -9).
    connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({WRITE_LOCK})")


@contextlib.contextmanager
def server_migration_lock(engine: Engine) -> Iterator[None]:
    """One process at a time reads and upgrades a PostgreSQL catalogue's schema (the others wait,
    then find it current). A session lock on a driver connection of its own, outside SQLAlchemy's
    transactions: taken through one, it would hold the writers' lock while waiting for this one,
    the reverse order of the process holding this lock (a deadlock)."""
    if engine.dialect.name != "postgresql":
        yield
        return
    with engine.connect() as connection:  # connecting, not beginning: SQLAlchemy reports its errors
        driver = connection.connection
        _execute(driver, f"SELECT pg_advisory_lock({MIGRATION_LOCK})")
        try:
            yield
        finally:
            _execute(driver, f"SELECT pg_advisory_unlock({MIGRATION_LOCK})")


def _execute(connection: Any, statement: str) -> None:
    cursor = connection.cursor()
    try:
        cursor.execute(statement)
    finally:
        cursor.close()
    connection.commit()


def upgrade_refusal(shown_url: str, revision: str | None, head: str) -> str:
    """The one line refusing to upgrade a server catalogue that ``slimkit db upgrade`` has not."""
    state = "has no slimkit tables yet" if revision is None else f"is at revision {revision}, behind this slimkit's {head}"
    return (f"catalogue {shown_url} {state}: a server catalogue is shared and is upgraded only on request "
            f"(run `slimkit db upgrade URL` once, or set {ENV_AUTO_UPGRADE}=1)")
