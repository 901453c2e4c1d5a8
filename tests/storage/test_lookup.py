"""``Store.lookup``: the team server's authentication reads, without a transaction's round trips
on PostgreSQL (autocommit), and the connection back in transactions once it is handed back."""

from __future__ import annotations

import psycopg
import pytest
from sqlalchemy import select

from vault.storage import engine as storage
from vault.storage import models as m


def test_a_lookup_reads_without_begin_and_leaves_no_autocommit_behind(db_url):
    store = storage.Store(db_url)
    try:
        with store.lookup() as s:
            conn = s.info["connection"]
            assert s.scalar(select(m.VaultInfo.id)) is None  # an empty vault: nothing to read
            if store.engine.dialect.name == "sqlite":
                assert conn.in_transaction()  # SQLite: read(), one WAL snapshot
                return
            driver = conn.connection.driver_connection
            pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
            # PostgreSQL: autocommit, so no transaction is open on the server after a statement
            assert driver.autocommit and driver.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        # the same pooled connection, back in transactions: a unit that fails leaves nothing
        with pytest.raises(RuntimeError), store.unit() as s:
            conn = s.info["connection"]
            assert conn.exec_driver_sql("SELECT pg_backend_pid()").scalar() == pid
            conn.exec_driver_sql("INSERT INTO request_nonces (keyid, nonce, created_at) VALUES ('e:1:1', 'n', 1)")
            raise RuntimeError("the unit fails after its write")
        with store.read() as s:
            assert s.scalar(select(m.RequestNonce.nonce)) is None
    finally:
        store.close()
