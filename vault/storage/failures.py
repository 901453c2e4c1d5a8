"""How a driver error reads to a person: ``StoreUnavailable`` or ``StoreBusy`` with what
happened and what to do (a full disk, a read-only file, a lost connection), never the
driver's text with a statement or its parameters in it. Used by ``engine.Store``.
"""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import exc
from sqlalchemy.engine import Engine

from vault.errors import StoreBusy, StoreUnavailable

BUSY_MESSAGE = "the database is locked by another session: nothing was changed"
# PostgreSQL SQLSTATEs credvault tells apart
SERIALIZATION_FAILURE, DEADLOCK_DETECTED, UNIQUE_VIOLATION = "40001", "40P01", "23505"
LOCK_NOT_AVAILABLE, QUERY_CANCELED, IDLE_IN_TRANSACTION_TIMEOUT = "55P03", "57014", "25P03"
INSUFFICIENT_PRIVILEGE, UNDEFINED_TABLE = "42501", "42P01"


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def _sqlstate(error: exc.DBAPIError) -> str | None:
    state = getattr(error.orig, "sqlstate", None)  # psycopg; sqlite3 errors have none
    return state if isinstance(state, str) else None


DISK_FULL = "53100"  # PostgreSQL's disk_full
NEARLY_FULL_BYTES = 1 << 20
READ_ONLY_HINT = "to read it anyway, open it read-only: --db 'sqlite:///file:PATH?mode=ro&immutable=1&uri=true'"


def _unavailable(error: exc.DBAPIError, engine: Engine) -> StoreUnavailable:
    """The clear error for a driver failure: from its text, and for SQLite also from the
    state of the file system that holds the database, because SQLite reports a full or
    read-only disk under several names ("disk I/O error" when the WAL index cannot grow,
    "unable to open" when the WAL cannot be created)."""
    state = _sqlstate(error)
    if state == LOCK_NOT_AVAILABLE or (is_sqlite(engine) and _sqlite_busy(error)):
        return StoreBusy(BUSY_MESSAGE)
    if state == QUERY_CANCELED:
        return StoreBusy(
            "a statement ran past the statement time-out (the database may be locked by another session): "
            "nothing was changed",
            hint="try again; if it keeps happening, raise CREDVAULT_STATEMENT_TIMEOUT or ask the database's "
            "administrator what holds the database",
        )
    if state == IDLE_IN_TRANSACTION_TIMEOUT:
        return StoreUnavailable(
            "the server ended this session: it stayed idle in a transaction past the time-out; nothing was changed",
            hint="try again; raise CREDVAULT_IDLE_TIMEOUT if a long operation needs it",
        )
    if state == INSUFFICIENT_PRIVILEGE:
        return StoreUnavailable(
            "the database user may not do this (permission denied): nothing was changed",
            hint="connect as the user that owns credvault's tables",
        )
    message = _describe(error)
    if is_sqlite(engine) and message.endswith(("failed: nothing was changed", "cannot be opened")):
        state = _sqlite_filesystem(engine)
        if state == "read-only":
            return StoreUnavailable(
                "the database is on a read-only file system: nothing was changed", hint=READ_ONLY_HINT
            )
        if state == "full":
            return StoreUnavailable("the disk is full: nothing was changed", hint="free some space and try again")
    if message.startswith("the disk is full"):
        return StoreUnavailable(message, hint="free some space and try again")
    return StoreUnavailable(message)


def _sqlite_busy(error: exc.DBAPIError) -> bool:
    text = str(error.orig).lower() if error.orig is not None else ""
    return "database is locked" in text or "database table is locked" in text or "busy" in text


def _sqlite_filesystem(engine: Engine) -> str | None:
    """ "read-only" or "full" for the file system of a SQLite database file, else None."""
    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    try:
        stats = os.statvfs(Path(database).expanduser().resolve().parent)
    except OSError:
        return None
    if stats.f_flag & os.ST_RDONLY:
        return "read-only"
    if stats.f_bavail * stats.f_frsize < NEARLY_FULL_BYTES:
        return "full"
    return None


def _describe(error: exc.DBAPIError) -> str:
    text = str(error.orig).lower() if error.orig is not None else ""
    if "readonly" in text or "read-only" in text or "read only" in text or "read_only" in text:
        return "the database is read-only: nothing was changed"
    if ("disk" in text and "full" in text) or "no space left" in text or _sqlstate(error) == DISK_FULL:
        return "the disk is full: nothing was changed"
    if "locked" in text or "busy" in text:
        return "the database is busy (locked by another process): nothing was changed"
    if "no such table" in text or "does not exist" in text or _sqlstate(error) == UNDEFINED_TABLE:
        return "the database has no credvault schema (run `credvault db upgrade`)"
    if "unable to open" in text:
        return "the database file cannot be opened"
    return "the database is unreachable or failed: nothing was changed"
