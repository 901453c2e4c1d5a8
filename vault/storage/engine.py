"""Opening a database: engine set-up, SQLite pragmas, transactions, migrations.

SQLite is opened in WAL mode with foreign keys, ``secure_delete`` (freed pages are
zeroed), ``synchronous=FULL`` and a busy timeout. PostgreSQL goes through psycopg 3.
Driver errors about reachability, locking, disk space or permissions become
``StoreUnavailable``, so callers never see a driver traceback.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, exc
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

from vault.errors import ConcurrentChange, ConfigurationError, StoreUnavailable
from vault.storage.prepared import on_driver

BUSY_TIMEOUT_MS = 10_000
INSECURE_DB_ENV = "CREDVAULT_INSECURE_DB"  # "1": allow a remote PostgreSQL URL without verify-full
ALLOW_READABLE_ENV = "CREDVAULT_ALLOW_READABLE"  # "1": open a SQLite vault file others may read
# SQLSTATEs of transactions the server aborted because of a concurrent one: retry-safe.
SERIALIZATION_FAILURE, DEADLOCK_DETECTED, UNIQUE_VIOLATION = "40001", "40P01", "23505"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # The sqlite3 module's implicit transactions are disabled so that SQLAlchemy's
    # BEGIN (IMMEDIATE where we ask for it) is what the database sees.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA secure_delete = ON")
        cursor.execute("PRAGMA synchronous = FULL")
    finally:
        cursor.close()


def _sqlite_begin(conn: Any) -> None:
    # Take the write lock at BEGIN: a read-then-write transaction can then never
    # fail half way with "database is locked" after it has decided what to write.
    on_driver(conn, "BEGIN IMMEDIATE")


def _is_local_host(host: str | None) -> bool:
    """A Unix socket (no host, or a directory) or a loopback address."""
    import ipaddress

    if not host or host.startswith("/") or host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _require_verified_tls(parsed: Any, insecure: bool | None) -> None:
    """A remote PostgreSQL server must be reached over TLS with its certificate and host
    name checked (``sslmode=verify-full``), unless the user opts out explicitly."""
    query_host = parsed.query.get("host")
    host = query_host if isinstance(query_host, str) else parsed.host or os.environ.get("PGHOST")  # as libpq
    if _is_local_host(host):
        return
    if insecure is None:
        insecure = os.environ.get(INSECURE_DB_ENV) == "1"
    sslmode = parsed.query.get("sslmode") or os.environ.get("PGSSLMODE")
    if sslmode == "verify-full" or insecure:
        return
    found = f"sslmode={sslmode}" if isinstance(sslmode, str) else "no sslmode"
    raise ConfigurationError(
        f"the PostgreSQL server {host!r} is remote and the URL has {found}: "
        "passwords and keys would cross the network without a verified server",
        hint="add ?sslmode=verify-full (and sslrootcert=PATH for a private CA) to the URL; "
        f"to accept the risk, pass --insecure-db (or set {INSECURE_DB_ENV}=1)",
    )


def _private_sqlite_file(path: Path, allow_readable: bool | None) -> None:
    """Create a new vault file 0600 in folders created 0700 (SQLite gives its -wal and -shm
    files the database file's mode); refuse an existing one, or its -wal or -shm file,
    that others may read."""
    old = os.umask(0o077)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)  # an empty file is an empty SQLite database
        return
    except FileExistsError:
        pass
    except OSError:
        raise StoreUnavailable("the folder for the SQLite database cannot be created") from None
    finally:
        os.umask(old)
    if allow_readable is None:
        allow_readable = os.environ.get(ALLOW_READABLE_ENV) == "1"
    if allow_readable:
        return
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            mode = file.stat().st_mode
        except OSError:
            continue  # absent (no WAL yet), or SQLite reports what is wrong with it
        if mode & 0o077:
            raise ConfigurationError(
                f"the vault file {file} can be read or written by other users (mode {mode & 0o777:o})",
                hint=f"run `chmod 600 {path}*` (the file and its -wal and -shm files); to open it anyway, "
                f"pass --allow-readable (or set {ALLOW_READABLE_ENV}=1)",
            )


def make_engine(url: str, *, insecure: bool | None = None, allow_readable: bool | None = None) -> Engine:
    """An engine for ``url``. ``insecure`` (default: ``CREDVAULT_INSECURE_DB=1``) allows a
    remote PostgreSQL URL without ``sslmode=verify-full``; ``allow_readable`` (default:
    ``CREDVAULT_ALLOW_READABLE=1``) a SQLite file that other users may read."""
    try:
        parsed = make_url(url)
        parsed.port  # noqa: B018 - a non-numeric port raises ValueError here
    except (exc.ArgumentError, ValueError):
        raise ConfigurationError(
            "the database URL is not valid", hint="use sqlite:///PATH or postgresql+psycopg://USER@HOST/DB"
        ) from None
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:" and not parsed.database.startswith("file:"):
            _private_sqlite_file(Path(parsed.database).expanduser(), allow_readable)
        engine = create_engine(parsed, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000})
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    if parsed.get_backend_name() == "postgresql":
        _require_verified_tls(parsed, insecure)
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        return create_engine(parsed, pool_pre_ping=True, connect_args={"connect_timeout": 10})
    raise ConfigurationError(
        f"unsupported database backend {parsed.get_backend_name()!r}", hint="use SQLite or PostgreSQL"
    )


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


class Store:
    """An open database: the engine, a session factory and the transaction boundary."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Session]:
        """One unit of work: committed durably on success, rolled back on any error."""
        with self._mapped_errors(), self._sessions.begin() as session:
            yield session

    @contextlib.contextmanager
    def unit(self) -> Iterator[Session]:
        """``transaction()`` for a hot path: a Core transaction on one connection, kept in
        ``session.info["connection"]`` for Core statements, with a Session joined to it that
        costs nothing unless the ORM is used (flushed before the same durable commit)."""
        with self._mapped_errors(), self.engine.begin() as conn:
            session = Session(bind=conn, expire_on_commit=False)  # joins conn's transaction
            session.info["connection"] = conn
            try:
                yield session
                session.flush()
            finally:
                session.close()  # leaves conn's transaction to engine.begin(): commit or roll back

    @contextlib.contextmanager
    def _mapped_errors(self) -> Iterator[None]:
        """Driver errors become ConcurrentChange (retry-safe) or StoreUnavailable."""
        try:
            yield
        except (exc.OperationalError, exc.InterfaceError, exc.InternalError) as error:
            if _sqlstate(error) in (SERIALIZATION_FAILURE, DEADLOCK_DETECTED):
                raise ConcurrentChange(
                    "a concurrent change made the database abort this one: nothing was changed"
                ) from None
            raise _unavailable(error, self.engine) from None
        except exc.IntegrityError as error:
            if _sqlstate(error) == UNIQUE_VIOLATION:
                # PostgreSQL, READ COMMITTED: a concurrent transaction committed the same key
                # first (the next version of a secret, a client of the same name). Running the
                # unit of work again reads what it committed and decides afresh.
                raise ConcurrentChange("a concurrent change wrote the same row first: nothing was changed") from None
            raise StoreUnavailable(
                "the database refused the change (another change may have raced it): nothing was changed",
                hint="try again",
            ) from None

    def close(self) -> None:
        self.engine.dispose()


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
    if "no such table" in text or "does not exist" in text:
        return "the database has no credvault schema (run `credvault db upgrade`)"
    if "unable to open" in text:
        return "the database file cannot be opened"
    return "the database is unreachable or failed: nothing was changed"


# -- migrations -------------------------------------------------------------------


def _alembic_config(engine: Engine | None) -> Any:
    from alembic.config import Config

    script_location = str(resources.files("vault.migrations"))
    config = Config()
    config.set_main_option("script_location", script_location)
    if engine is not None:
        config.attributes["engine"] = engine
    return config


def upgrade(store: Store, revision: str = "head") -> None:
    """Bring the schema to ``revision``; Alembic is the only way a schema is made."""
    from alembic import command

    try:
        command.upgrade(_alembic_config(store.engine), revision)
    except exc.OperationalError as error:
        raise _unavailable(error, store.engine) from None


def head_revision() -> str:
    """The newest migration this version of credvault brings (no database needed)."""
    from alembic.script import ScriptDirectory

    config = _alembic_config(None)
    return str(ScriptDirectory.from_config(config).get_current_head())


def current_revision(store: Store) -> str | None:
    from alembic.runtime.migration import MigrationContext

    try:
        with store.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    except exc.OperationalError as error:
        raise _unavailable(error, store.engine) from None
