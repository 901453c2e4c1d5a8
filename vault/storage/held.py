"""One pooled connection for every unit of work of one request (the team server's hot path).

A team server's checkout opened two units of work, each on a connection of its own from the
pool: the authentication's read (``Store.lookup``) and the checkout's write unit
(``Store.unit``), and each checkout from the pool ran its pre-ping (a ``SELECT 1`` round
trip) and the pool's own locking (about 15 µs of CPU saved per request, measured). Inside
``HeldConnection.request()`` (in the thread that opened it) the units of work a request opens
one after another share one connection instead, taken from the pool at the first of them (so
pinged once per request: a connection the database dropped while it sat in the pool is still
found dead and replaced before a statement of the request runs) and given back when the
request ends.

Each unit of work still begins and ends its own transaction on it, as it did on a connection
of its own: nothing of one unit's transaction reaches the next. What a unit set on the
connection (``Store.lookup``'s autocommit, ``Store.read``'s read-only option) is put back when
it ends (``_restored``), so the next unit begins as on a fresh connection. A unit opened while
another holds the connection (nested: a listing's audit unit inside its read), or in another
thread, takes a pooled connection of its own, as before.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Iterator

from sqlalchemy import exc
from sqlalchemy.engine import Connection, Engine

READ_ONLY_OPTION = "credvault_read"  # a Connection execution option: a read unit of work (``Store.read``)


class _Held:
    """The connection one request holds (None until its first unit of work), and whether a unit uses it."""

    __slots__ = ("busy", "conn", "thread")

    def __init__(self, thread: int) -> None:
        self.conn: Connection | None = None
        self.busy = False
        self.thread = thread


class HeldConnection:
    """Lends the connection a request holds to the units of work it opens, one after another."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._held: contextvars.ContextVar[_Held | None] = contextvars.ContextVar(
            f"credvault_held_{id(self)}", default=None
        )

    @contextlib.contextmanager
    def request(self) -> Iterator[None]:
        """Units of work opened inside (in this thread) share one pooled connection, taken at the
        first of them and given back (rolled back if a transaction were left open) at the end.
        Inside another ``request()``: the outer one's."""
        if self._held.get() is not None:
            yield
            return
        held = _Held(threading.get_ident())
        token = self._held.set(held)
        try:
            yield
        finally:
            self._held.reset(token)
            if held.conn is not None:
                held.conn.close()

    def release(self) -> None:
        """Give the request's connection back now if no unit uses it: a unit of work that takes
        its own from the pool (a Session's ``Store.transaction``) then holds no second one, so a
        request never holds more connections than before (a full pool would wait on itself)."""
        held = self._held.get()
        if held is not None and not held.busy and held.conn is not None and held.thread == threading.get_ident():
            held.conn.close()
            held.conn = None

    @contextlib.contextmanager
    def connection(self) -> Iterator[Connection]:
        """The request's connection if one is held here and free, else a pooled one of its own.
        The caller begins and ends its own transaction on it."""
        held = self._held.get()
        if held is None or held.busy or held.thread != threading.get_ident():
            with self.engine.connect() as conn:
                yield conn
            return
        if held.conn is None or held.conn.closed:
            held.conn = self.engine.connect()
        held.busy = True
        try:
            yield held.conn
        finally:
            held.busy = False
            if not _restored(held.conn):
                held.conn.close()
                held.conn = None


def _restored(conn: Connection) -> bool:
    """``conn`` as a fresh connection is: no transaction, the dialect's isolation level, not
    read-only. False if it could not be put back (the caller gives it back to the pool)."""
    if conn.invalidated:
        return False
    options = conn.get_execution_options()
    level = options.get("isolation_level")
    try:
        if conn.in_transaction():
            conn.rollback()  # a lookup's autocommit "transaction": psycopg sends nothing when idle
        if level is not None and level != conn.default_isolation_level:
            conn.execution_options(isolation_level=conn.default_isolation_level)
    except exc.DBAPIError:
        return False
    if options.get(READ_ONLY_OPTION):
        conn.execution_options(**{READ_ONLY_OPTION: False})
    return True
