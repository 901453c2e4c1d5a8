"""The server's request nonces in the database, shared by every server process (docs/server.md §3).

A per-process store would let a request captured on its way to one server process replay
on another behind the same proxy; ``DbNonceStore`` keeps each (keyid, nonce) in
``request_nonces`` instead. A write operation remembers its nonce **inside its own unit of
work** (``remember_in`` / ``within``): no extra commit on the hot path, and if the operation
rolls back its nonce is not spent. A route that writes nothing calls ``remember``, which runs
one short transaction of its own. Either way a second copy of a (keyid, nonce) answers False
(``replayed``), also when the first is still in flight in another transaction: on PostgreSQL
the second insert waits on the key until the first commits (then False) or rolls back (then
True); on SQLite the write lock serialises them. No copy raises a raw database error.

``prune`` deletes the rows of requests created more than ``2 × window`` before ``now``: any
request carrying one is refused as ``stale`` before its nonce is looked at, provided the
server processes' clocks agree within ``window``. ``Pruner`` runs it (and the failure
counts' pruning, vault/wire/authlimits.py) on a minute timer in a thread of each server; the
deletes are idempotent, so every process may run its own.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence

from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from vault.errors import InvalidInput
from vault.storage.engine import Store
from vault.storage.repositories import authentication
from vault.storage.rows import connection
from vault.wire.httpsig import WINDOW, NonceStore

log = logging.getLogger("vault")

COLUMN_LENGTH = 64  # request_nonces.keyid and .nonce
PRUNE_INTERVAL = 60.0


class DbNonceStore:
    """A ``NonceStore`` in the database: ``remember`` in a short transaction of its own,
    ``remember_in`` / ``within`` inside the caller's unit of work."""

    def __init__(self, store: Store, window: int = WINDOW) -> None:
        if window <= 0:
            raise ValueError("the window is a positive number of seconds")
        self._store = store
        self.retention = 2 * window

    def remember(self, keyid: str, nonce: str, created: int) -> bool:
        """Store the pair in a transaction of its own, committed before this returns; False
        if it is already stored (the request is a replay)."""
        _check_lengths(keyid, nonce)
        with self._store.unit() as session:
            return authentication.insert_nonce(connection(session), keyid, nonce, created)

    def remember_in(self, unit: Session | Connection, keyid: str, nonce: str, created: int) -> bool:
        """Store the pair in ``unit``'s transaction (the operation's own write unit): it is
        kept if that unit commits and forgotten if it rolls back. False: a replay. Until the
        unit ends, another transaction inserting the same pair waits for it (PostgreSQL)."""
        _check_lengths(keyid, nonce)
        conn = unit if isinstance(unit, Connection) else connection(unit)
        return authentication.insert_nonce(conn, keyid, nonce, created)

    def within(self, unit: Session | Connection) -> NonceStore:
        """A ``NonceStore`` for ``verify_request`` that remembers inside ``unit``."""
        return _UnitNonces(self, unit)

    def prune(self, now: float) -> int:
        """Delete the nonces of requests created more than ``2 × window`` before ``now``, in
        a transaction of its own; how many went. Running it again deletes nothing more."""
        cutoff = math.ceil(now - self.retention)  # created < now - retention, for integer seconds
        with self._store.unit() as session:
            return authentication.delete_nonces_before(connection(session), cutoff)


class _UnitNonces:
    def __init__(self, nonces: DbNonceStore, unit: Session | Connection) -> None:
        self._nonces = nonces
        self._unit = unit

    def remember(self, keyid: str, nonce: str, created: int) -> bool:
        return self._nonces.remember_in(self._unit, keyid, nonce, created)


def _check_lengths(keyid: str, nonce: str) -> None:
    # The same refusal on both engines (SQLite would store a longer text, PostgreSQL refuse it).
    if len(keyid) > COLUMN_LENGTH or len(nonce) > COLUMN_LENGTH:
        raise InvalidInput(f"a request's keyid and nonce are at most {COLUMN_LENGTH} characters")


class Pruner:
    """Runs each task with the clock's time, once at start and then every ``interval``
    seconds of ``clock``, in a daemon thread of a server (``start``/``stop``). A task that
    fails is logged by its error class only and tried again at the next turn. ``tick``
    runs one turn if it is due: the thread calls it every ``poll`` seconds; tests call it
    with a fake clock."""

    def __init__(
        self,
        tasks: Sequence[Callable[[float], object]],
        *,
        interval: float = PRUNE_INTERVAL,
        clock: Callable[[], float] = time.time,
        poll: float = 1.0,
    ) -> None:
        if interval <= 0 or poll <= 0:
            raise ValueError("the interval and the poll are positive numbers of seconds")
        self._tasks = tuple(tasks)
        self._interval = interval
        self._clock = clock
        self._poll = poll
        self._due: float | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def tick(self) -> bool:
        """Run every task if a turn is due (always at the first call); True if they ran."""
        now = self._clock()
        if self._due is not None and now < self._due:
            return False
        self._due = now + self._interval
        for task in self._tasks:
            try:
                task(now)
            except Exception as error:  # the timer outlives a failed turn
                log.warning("pruning failed (%s); it is tried again in %.0f s", type(error).__name__, self._interval)
        return True

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("the pruner is already running")
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="credvault-pruner", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the thread to end and wait for it (a turn under way finishes first)."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stopping.set()
        thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        self.tick()
        while not self._stopping.wait(self._poll):
            self.tick()
