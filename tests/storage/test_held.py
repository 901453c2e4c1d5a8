"""``Store.request``: a team server's request takes one pooled connection for all its units of
work (one pool checkout, one pre-ping), each unit still in a transaction of its own, and what a
unit set on the connection (a lookup's autocommit, a read's read-only option) put back."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import event, select, text

from vault.errors import StoreUnavailable
from vault.storage import engine as storage
from vault.storage import models as m

NONCE = "INSERT INTO request_nonces (keyid, nonce, created_at) VALUES ('e:1:1', :nonce, 1)"


def _checkouts(store: storage.Store) -> list[int]:
    """A list that grows by one with every connection taken from ``store``'s pool."""
    taken: list[int] = []
    event.listen(store.engine, "checkout", lambda *_: taken.append(1))
    return taken


def _units(store: storage.Store) -> list[object]:
    """A lookup, a unit that fails after its write, a read, a unit that writes: the DBAPI connection of each."""
    used = []
    with store.lookup() as s:
        used.append(s.info["connection"].connection.dbapi_connection)
        assert s.scalar(select(m.RequestNonce.nonce)) is None
    with pytest.raises(RuntimeError), store.unit() as s:
        used.append(s.info["connection"].connection.dbapi_connection)
        s.info["connection"].execute(text(NONCE), {"nonce": "rolled-back"})
        raise RuntimeError("the unit fails after its write")
    with store.read() as s:
        used.append(s.info["connection"].connection.dbapi_connection)
        assert s.scalar(select(m.RequestNonce.nonce)) is None  # the failed unit left nothing
    with store.unit() as s:
        conn = s.info["connection"]
        used.append(conn.connection.dbapi_connection)
        assert not conn.get_execution_options().get(storage.READ_ONLY_OPTION)  # SQLite: BEGIN IMMEDIATE
        if store.engine.dialect.name == "postgresql":  # the lookup's autocommit is not left behind
            assert not conn.connection.driver_connection.autocommit
        conn.execute(text(NONCE), {"nonce": "kept"})
    return used


def test_a_requests_units_share_one_connection_each_in_a_transaction_of_its_own(db_store):
    taken = _checkouts(db_store)
    with db_store.request():
        used = _units(db_store)
    assert len(taken) == 1 and len({id(c) for c in used}) == 1  # one pool checkout, one pre-ping
    with db_store.read() as s:
        assert s.scalars(select(m.RequestNonce.nonce)).all() == ["kept"]


def test_without_a_request_each_unit_takes_a_connection_from_the_pool(db_store):
    taken = _checkouts(db_store)
    _units(db_store)
    assert len(taken) == 4


def test_a_unit_opened_inside_another_or_in_another_thread_takes_a_connection_of_its_own(db_store):
    seen: list[object] = []
    with db_store.request(), db_store.read() as outer:
        with db_store.read() as inner:  # nested: the request's connection is in use
            seen.append(inner.info["connection"])
        thread = threading.Thread(target=lambda: seen.append(_read_connection(db_store)))
        thread.start()
        thread.join()
        assert all(conn is not outer.info["connection"] for conn in seen) and len(seen) == 2


def _read_connection(store: storage.Store) -> object:
    with store.read() as s:
        return s.info["connection"]


def _terminate(store: storage.Store, pid: int) -> None:
    """Ends backend ``pid`` from a connection of another store (its own connection sits where it was)."""
    killer = storage.Store(store.url, guarded=False)
    try:
        with killer.unit() as s:
            assert s.info["connection"].execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar()
    finally:
        killer.close()


def _pid(store: storage.Store) -> int:
    with store.unit() as s:
        return int(s.info["connection"].exec_driver_sql("SELECT pg_backend_pid()").scalar())


@pytest.mark.postgres
def test_a_connection_the_database_dropped_is_replaced(db_store):
    if db_store.engine.dialect.name != "postgresql":
        pytest.skip("a server that drops connections is PostgreSQL's")
    with db_store.request():
        pid = _pid(db_store)
    _terminate(db_store, pid)  # while the connection sits in the pool
    with db_store.request():  # found dead by the request's one pre-ping, replaced before a statement
        pid = _pid(db_store)
        _terminate(db_store, pid)  # while the request holds it: that unit fails, the next takes another
        with pytest.raises(StoreUnavailable), db_store.unit() as s:
            s.info["connection"].exec_driver_sql("SELECT 1")
        assert _pid(db_store) != pid


def test_a_session_unit_in_a_request_takes_its_connection_after_the_request_gave_its_own_back(db_store):
    """``transaction()`` (a Session's unit) takes a connection of its own: the request's idle one goes
    back to the pool first, so a request never holds two (a full pool would wait on itself)."""
    pool = db_store.engine.pool
    with db_store.request():
        with db_store.lookup() as s:
            s.scalar(select(m.RequestNonce.nonce))
        assert pool.checkedout() == 1  # held between units
        with db_store.transaction() as s:
            s.scalar(select(m.RequestNonce.nonce))
            assert pool.checkedout() == 1
        with db_store.unit() as s:  # the next unit takes one again
            s.scalar(select(m.RequestNonce.nonce))
            assert pool.checkedout() == 1
    assert pool.checkedout() == 0
