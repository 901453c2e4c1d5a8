"""Opening a database: engine set-up, SQLite pragmas, transactions, migrations.

SQLite is opened in WAL mode with foreign keys, ``secure_delete`` (freed pages are
zeroed), ``synchronous=FULL`` and a busy timeout. PostgreSQL goes through psycopg 3,
each session with a lock, a statement and an idle-in-transaction time-out (``Timeouts``:
a lock held by another session fails a change with ``StoreBusy`` instead of hanging it).
Every driver error becomes an error of ``vault.errors`` (``_mapped_errors``), so callers
never see a driver traceback.

Before its first unit of work (and again when SQLite's schema cookie changes, or every
``SCHEMA_RECHECK_SECONDS`` on PostgreSQL), a guarded ``Store`` reads the catalog once and
refuses to work (``TamperedSchema``) on a database that holds an object its migrations
did not create: a trigger, a rule, a view, a row-level security policy, a table, a
function or a schema of someone else's, an event trigger or a publication. Any of them
could rewrite, hide or copy what credvault writes
(delete reveal events at commit, archive the key copies a purge deletes).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, exc
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

from vault.errors import (
    ConcurrentChange,
    ConfigurationError,
    InvalidInput,
    StoreUnavailable,
    TamperedSchema,
)
from vault.storage.catalog import foreign_objects, listed
from vault.storage.failures import (  # noqa: F401  (re-exported: tests name them here)
    BUSY_MESSAGE,
    DEADLOCK_DETECTED,
    DISK_FULL,
    IDLE_IN_TRANSACTION_TIMEOUT,
    INSUFFICIENT_PRIVILEGE,
    LOCK_NOT_AVAILABLE,
    NEARLY_FULL_BYTES,
    QUERY_CANCELED,
    READ_ONLY_HINT,
    SERIALIZATION_FAILURE,
    UNDEFINED_TABLE,
    UNIQUE_VIOLATION,
    _describe,
    _sqlite_busy,
    _sqlite_filesystem,
    _sqlstate,
    _unavailable,
)
from vault.storage.failures import (
    is_sqlite as is_sqlite,
)
from vault.storage.held import READ_ONLY_OPTION, HeldConnection
from vault.storage.prepared import on_driver
from vault.storage.reach import (  # noqa: F401  (re-exported: the CLI and tests name them here)
    ALLOW_READABLE_ENV,
    INSECURE_DB_ENV,
    private_sqlite_file,
    require_verified_tls,
)

BUSY_TIMEOUT_MS = 10_000
# SQLSTATEs of transactions the server aborted because of a concurrent one: retry-safe.
TIMEOUT_VARIABLES = {
    "lock": "CREDVAULT_LOCK_TIMEOUT",
    "statement": "CREDVAULT_STATEMENT_TIMEOUT",
    "idle": "CREDVAULT_IDLE_TIMEOUT",
}


# -- time-outs ---------------------------------------------------------------------


@dataclass(frozen=True)
class Timeouts:
    """How long a session of ours waits, in seconds (0: no limit, for ``statement`` and ``idle``).

    ``lock``: for a lock another session holds (PostgreSQL ``lock_timeout``, SQLite's busy
    time-out); ``statement``: for one statement (PostgreSQL ``statement_timeout``);
    ``idle``: a transaction of ours left idle (a suspended laptop holding the audit head)
    is ended by the server (PostgreSQL ``idle_in_transaction_session_timeout``). Each
    comes from ``CREDVAULT_LOCK_TIMEOUT`` / ``CREDVAULT_STATEMENT_TIMEOUT`` /
    ``CREDVAULT_IDLE_TIMEOUT`` when set.
    """

    lock: float = BUSY_TIMEOUT_MS / 1000
    statement: float = 600.0
    idle: float = 600.0

    @classmethod
    def from_environment(cls) -> Timeouts:
        values: dict[str, float] = {"lock": BUSY_TIMEOUT_MS / 1000}  # read now: tests may lower it
        for name, variable in TIMEOUT_VARIABLES.items():
            raw = os.environ.get(variable)
            if raw is None or not raw.strip():
                continue
            try:
                value = float(raw)
            except ValueError:
                value = -1.0
            if not (0 < value <= 86_400 if name == "lock" else 0 <= value <= 86_400):
                raise ConfigurationError(
                    f"{variable} is not a number of seconds",
                    hint=f"set {variable} to seconds between {'0.001' if name == 'lock' else '0'} and 86400",
                )
            values[name] = value
        return cls(**values)

    def milliseconds(self, name: str) -> int:
        return max(0, round(float(getattr(self, name)) * 1000))


def _sqlite_pragmas(busy_ms: int, dbapi_connection: Any, _record: Any) -> None:
    # The sqlite3 module's implicit transactions are disabled so that SQLAlchemy's
    # BEGIN (IMMEDIATE where we ask for it) is what the database sees.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {int(busy_ms)}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA secure_delete = ON")
        cursor.execute("PRAGMA synchronous = FULL")
    finally:
        cursor.close()


def _sqlite_begin(conn: Any) -> None:
    # Take the write lock at BEGIN: a read-then-write transaction can then never
    # fail half way with "database is locked" after it has decided what to write.
    # A read unit of work (``Store.read``) begins deferred: it takes only WAL's read
    # snapshot at its first statement, and never blocks a writer.
    if conn.get_execution_options().get(READ_ONLY_OPTION):
        on_driver(conn, "BEGIN")
    else:
        on_driver(conn, "BEGIN IMMEDIATE")


def _postgres_timeouts(timeouts: Timeouts, dbapi_connection: Any, _record: Any) -> None:
    """Session settings, once per new connection (committed, so a rollback keeps them)."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(
            "SELECT set_config('lock_timeout', %s, false), set_config('statement_timeout', %s, false), "
            "set_config('idle_in_transaction_session_timeout', %s, false)",
            tuple(f"{timeouts.milliseconds(name)}ms" for name in ("lock", "statement", "idle")),
        )
    finally:
        cursor.close()
    dbapi_connection.commit()


def make_engine(
    url: str,
    timeouts: Timeouts | None = None,
    *,
    insecure: bool | None = None,
    allow_readable: bool | None = None,
    pool_size: int | None = None,
) -> Engine:
    """An engine for ``url`` with ``timeouts`` (default: from the environment); ``pool_size``: at
    most that many connections, none beyond (``credvault serve --db-pool``; default SQLAlchemy's
    pool, 5 kept and 10 more on demand). ``insecure``
    (default: ``CREDVAULT_INSECURE_DB=1``) allows a remote PostgreSQL URL without
    ``sslmode=verify-full``; ``allow_readable`` (default: ``CREDVAULT_ALLOW_READABLE=1``) a
    SQLite file that other users may read."""
    try:
        parsed = make_url(url)
        parsed.port  # noqa: B018 - a non-numeric port raises ValueError here
    except (exc.ArgumentError, ValueError):
        raise ConfigurationError(
            "the database URL is not valid", hint="use sqlite:///PATH or postgresql+psycopg://USER@HOST/DB"
        ) from None
    timeouts = timeouts or Timeouts.from_environment()
    pool: dict[str, Any] = {"pool_size": pool_size, "max_overflow": 0} if pool_size is not None else {}
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:" and not parsed.database.startswith("file:"):
            private_sqlite_file(Path(parsed.database).expanduser(), allow_readable)
        engine = create_engine(parsed, connect_args={"timeout": timeouts.lock}, **pool)
        event.listen(engine, "connect", functools.partial(_sqlite_pragmas, timeouts.milliseconds("lock")))
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    if parsed.get_backend_name() == "postgresql":
        require_verified_tls(parsed, insecure)
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        engine = create_engine(parsed, pool_pre_ping=True, connect_args={"connect_timeout": 10}, **pool)
        event.listen(engine, "connect", functools.partial(_postgres_timeouts, timeouts))
        return engine
    raise ConfigurationError(
        f"unsupported database backend {parsed.get_backend_name()!r}", hint="use SQLite or PostgreSQL"
    )


class Store:
    """An open database: the engine, a session factory and the transaction boundary.

    A guarded store (the default) checks the catalog for objects credvault did not create
    before its first unit of work, and after that: on SQLite whenever the schema cookie
    changed (checked in every unit of work), on PostgreSQL every ``SCHEMA_RECHECK_SECONDS``.
    """

    def __init__(
        self, url: str, *, timeouts: Timeouts | None = None, guarded: bool = True, pool_size: int | None = None
    ) -> None:
        self.url = url
        self.engine = make_engine(url, timeouts, pool_size=pool_size)
        self.guarded = guarded
        self._checked_at: float | None = None  # time.monotonic() of the last check that found nothing
        self._schema_cookie: object = None  # SQLite's schema_version at that check
        self._sqlite = is_sqlite(self.engine)
        # Inside this store's inspecting() (in this thread): the foreign objects it found. One
        # variable per store: inspecting one database does not unguard another.
        self._inspecting: contextvars.ContextVar[tuple[str, ...] | None] = contextvars.ContextVar(
            f"credvault_inspecting_{id(self)}", default=None
        )
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._held = HeldConnection(self.engine)  # a request's one connection (``request``)
        # Checked when a session first takes its connection (and so, on SQLite, the write lock):
        # a unit of work that opens another one before its first statement must not wait for itself.
        event.listen(self._sessions, "after_begin", self._session_began)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Session]:
        """One unit of work: committed durably on success, rolled back on any error."""
        self._held.release()  # a request's idle connection, given back before this one is taken
        with self._mapped_errors(), self._sessions.begin() as session:
            yield session

    def request(self) -> contextlib.AbstractContextManager[None]:
        """The units of work (``unit``, ``read``, ``lookup``) opened inside, one after another in
        this thread, share one pooled connection: a team server's request (``storage/held.py``)."""
        return self._held.request()

    def _session_began(self, _session: Session, _transaction: Any, conn: Connection) -> None:
        if self._check_due():
            self._guard(conn)

    @contextlib.contextmanager
    def unit(self) -> Iterator[Session]:
        """``transaction()`` for a hot path: a Core transaction on one connection, kept in
        ``session.info["connection"]`` for Core statements, with a Session joined to it that
        costs nothing unless the ORM is used (flushed before the same durable commit)."""
        with self._mapped_errors(), self._held.connection() as conn, conn.begin():
            if self._check_due():
                self._guard(conn)
            session = Session(bind=conn, expire_on_commit=False)  # joins conn's transaction
            session.info["connection"] = conn
            try:
                yield session
                session.flush()
            finally:
                session.close()  # leaves conn's transaction to conn.begin(): commit or roll back

    @contextlib.contextmanager
    def read(self) -> Iterator[Session]:
        """A read unit of work for listings and reports: it never takes the write lock.

        On SQLite it begins deferred (``BEGIN``), so it reads one WAL snapshot and a writer
        in another connection (a checkout) is not blocked while it runs; on PostgreSQL it is
        an ordinary transaction that locks no row. Nothing is written: whatever the unit
        changed through the ORM is discarded (rolled back), never flushed. A listing that
        must be audited appends its event afterwards, in a short ``transaction()`` of its own,
        and returns what it read only once that event is committed. The Core connection is
        kept in ``session.info["connection"]`` (``rows.connection``) for set-based queries.
        """
        with self._mapped_errors(), self._held.connection() as conn:
            conn.execution_options(**{READ_ONLY_OPTION: True})
            with conn.begin() as transaction:
                if self._check_due():
                    self._guard(conn)
                session = Session(bind=conn, expire_on_commit=False, autoflush=False)
                session.info["connection"] = conn
                session.info["read_only"] = True
                try:
                    yield session
                finally:
                    session.close()
                    transaction.rollback()

    @contextlib.contextmanager
    def lookup(self) -> Iterator[Session]:
        """``read()`` for a hot path's few independent reads (the team server's authentication):
        on PostgreSQL in autocommit, so no ``BEGIN`` and no ``ROLLBACK`` travel (under read
        committed each statement of a read transaction takes its own snapshot anyway, so nothing
        is lost); a statement that wrote would commit, so a lookup runs SELECTs only. On SQLite
        it is ``read()`` (one WAL snapshot)."""
        if self.engine.dialect.name == "sqlite":
            with self.read() as session:
                yield session
            return
        with self._mapped_errors(), self._held.connection() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT", **{READ_ONLY_OPTION: True})
            if self._check_due():
                self._guard(conn)
            session = Session(bind=conn, expire_on_commit=False, autoflush=False)
            session.info["connection"] = conn
            session.info["read_only"] = True
            try:
                yield session
            finally:
                session.close()

    # -- objects credvault did not create ---------------------------------------------------

    def foreign_objects(self) -> list[str]:
        """Every object in the database that credvault's migrations did not create, described
        for a person ("trigger 'x' on audit_events"); read now, on a connection of its own."""
        self._held.release()
        with self._mapped_errors(), self.engine.connect() as conn:
            found = foreign_objects(conn)
            conn.rollback()
            return found

    @contextlib.contextmanager
    def inspecting(self) -> Iterator[list[str]]:
        """Units of work opened inside (in this thread) are not refused for foreign objects:
        for the reports that name them (``audit verify``, ``receipts verify``, ``status``).
        Yields the objects found now (inside another ``inspecting()``: those it found, not
        read again)."""
        outer = self._inspecting.get()
        found = list(outer) if outer is not None else self.foreign_objects()
        token = self._inspecting.set(tuple(found))
        try:
            yield found
        finally:
            self._inspecting.reset(token)

    def _check_due(self) -> bool:
        if not self.guarded or self._inspecting.get() is not None:
            return False
        if self._sqlite:
            return True  # _guard reads SQLite's schema cookie: a few microseconds per unit of work
        return self._checked_at is None or time.monotonic() - self._checked_at > SCHEMA_RECHECK_SECONDS

    def _guard(self, conn: Connection) -> None:
        cookie = None
        if self._sqlite:
            # PRAGMA schema_version changes with every change of the schema (a trigger, a view, a
            # table): the catalog is read again only then, in the transaction that holds the lock.
            cookie = on_driver(conn, "PRAGMA schema_version").fetchone()[0]
            if cookie == self._schema_cookie and self._checked_at is not None:
                return
        found = foreign_objects(conn)
        if found:
            raise TamperedSchema(
                "the database holds " + listed(found) + " that credvault did not create: credvault refuses to work "
                "on it (nothing was read or changed)"
            )
        self._checked_at, self._schema_cookie = time.monotonic(), cookie

    @contextlib.contextmanager
    def _mapped_errors(self) -> Iterator[None]:
        """Every driver error becomes an error of the tree: ConcurrentChange (retry-safe),
        StoreBusy (a lock held elsewhere), InvalidInput (a value the column cannot hold),
        or StoreUnavailable. The driver's own exceptions, raised on a DB-API cursor below
        SQLAlchemy (``keyholder.auditchain.check_range``), are wrapped first and mapped alike."""
        raw = self.engine.dialect.loaded_dbapi.Error
        try:
            try:
                yield
            except raw as error:
                raise exc.DBAPIError.instance(None, None, error, raw) from None
        except exc.DataError:
            raise InvalidInput(
                "a value does not fit its database column (too long, out of range, or not valid text): "
                "nothing was changed"
            ) from None
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
        except exc.DBAPIError as error:  # Operational, Interface, Internal, Programming, NotSupported, …
            state = _sqlstate(error)
            if state in (SERIALIZATION_FAILURE, DEADLOCK_DETECTED):
                raise ConcurrentChange(
                    "a concurrent change made the database abort this one: nothing was changed"
                ) from None
            raise _unavailable(error, self.engine) from None
        except OverflowError as error:
            if "sqlite" not in str(error).lower():  # not the driver's: a bug, reported as one
                raise
            raise InvalidInput("a number is out of range for the database: nothing was changed") from None

    def close(self) -> None:
        self.engine.dispose()


SCHEMA_RECHECK_SECONDS = 60.0


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
    from alembic.util import CommandError

    try:
        command.upgrade(_alembic_config(store.engine), revision)
    except exc.DBAPIError as error:
        raise _unavailable(error, store.engine) from None
    except CommandError:
        current = current_revision(store)
        if current is None or _known_revision(current):
            raise  # not the database's doing: a bug, reported as one
        raise ConfigurationError(
            f"the database schema is at revision {current[:32]!r}, which this version of credvault does not "
            "know: a newer credvault upgraded it (nothing was changed)",
            hint="use the credvault version that upgraded this database, or a newer one",
        ) from None


def _known_revision(revision: str) -> bool:
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    try:
        return ScriptDirectory.from_config(_alembic_config(None)).get_revision(revision) is not None
    except CommandError:
        return False


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
    except exc.DBAPIError as error:
        raise _unavailable(error, store.engine) from None
