"""Optuna storages from one URL.

results/NAME/queue.journal, journal:PATH   a journal file (default; many processes, one machine
                                           or a shared file system)
sqlite:///PATH.db                           SQLite (one machine)
postgresql://USER:PASSWORD@HOST:PORT/DB     PostgreSQL (many machines)
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

from harness.errors import UsageError
from harness.redact import redact

if TYPE_CHECKING:
    import optuna
    from optuna.storages import RDBStorage

# Seconds a journal's lock may stay held with the journal unchanged before another process takes
# it over (optuna's grace period): a process killed while it held the lock (kill -9, or a worker
# ending itself after a stop signal went unanswered) must not stop every other process for good.
STALE_LOCK_SECONDS = 30
# The environment variable read when --storage is not given, and through which a launcher hands
# its workers the URL (so that a password never shows in their command lines).
STORAGE_ENV = "POLYSCALE_STORAGE"
_RDB_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql")


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """The Optuna storage for ``url``; a UsageError (with the password hidden) if it can't be opened."""
    from optuna.storages import JournalStorage, RDBStorage
    from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock

    scheme = url.split(":", 1)[0].split("+", 1)[0].lower() if ":" in url else ""
    try:
        if scheme == "sqlite":
            return _immediate_transactions(RDBStorage(url))
        if scheme in _RDB_SCHEMES:
            return RDBStorage(_with_driver(_quote_raw_at(url), scheme), engine_kwargs={"pool_pre_ping": True})
        # Absolute: the lock is a symbolic link to the journal, and optuna reads the age of a
        # stale lock through it, which a relative target (resolved from the link's folder) breaks:
        # the waiting process then spins for ever instead of taking the lock over.
        path = Path(url[len("journal:") :] if scheme == "journal" else url).absolute()
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = JournalFileSymlinkLock(str(path), grace_period=STALE_LOCK_SECONDS)
        return JournalStorage(JournalFileBackend(str(path), lock_obj=lock))
    except UsageError:
        raise
    except Exception as exc:  # connection refused, bad database name, missing driver, ...
        message = redact(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
        raise UsageError(f"--storage {redact(url)}: cannot open ({message})") from None


def _immediate_transactions(storage: RDBStorage) -> RDBStorage:
    """Make SQLite take its write lock when a transaction begins.

    Python's sqlite3 driver only opens a transaction at the first write, so Optuna's claim (read
    that a trial is WAITING, then mark it RUNNING) could interleave between two processes and
    hand one run to both. SQLAlchemy's documented recipe: the driver issues no BEGIN itself and
    every transaction starts with BEGIN IMMEDIATE, which serialises writers.
    """
    from sqlalchemy import event

    engine = storage.engine

    @event.listens_for(engine, "connect")
    def _no_driver_transactions(dbapi_connection, _record):
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections made before the listeners existed are dropped
    return storage


def _quote_raw_at(url: str) -> str:
    """``url`` with a raw "@" in its user name or password percent-encoded.

    The host follows the last "@" of the URL's authority (as Python's urllib reads it), but
    SQLAlchemy splits at the first, so ``user:p@ss@host`` would connect to host ``ss@host`` and
    show the password's tail in the error.
    """
    scheme, _, rest = url.partition("://")
    authority, slash, tail = rest.partition("/")
    userinfo, _, host = authority.rpartition("@")
    if "@" not in userinfo:
        return url
    user, colon, password = userinfo.partition(":")
    return f"{scheme}://{user.replace('@', '%40')}{colon}{password.replace('@', '%40')}@{host}{slash}{tail}"


def _with_driver(url: str, scheme: str) -> str:
    """Name an installed PostgreSQL driver when the URL names none (SQLAlchemy's default, psycopg 3,
    is often missing where psycopg2 is installed)."""
    rest = url.split(":", 1)[1]
    if scheme not in ("postgresql", "postgres") or "+" in url.split(":", 1)[0]:
        return url
    for module, driver in (("psycopg2", "psycopg2"), ("psycopg", "psycopg")):
        if importlib.util.find_spec(module):
            return f"postgresql+{driver}:{rest}"
    raise UsageError("PostgreSQL storage needs a driver: pip install psycopg2-binary")
