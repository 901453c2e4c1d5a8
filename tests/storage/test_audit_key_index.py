"""Revision 0011 (audit key events): the partial index of the audit events that certify and
retire engineer keys (issue 12, item 11), which verification reads first, in order.

A vault in use upgrades to it and down again with its chain intact and verifying; on
SQLite the verifier's query is answered from the index, not by reading the whole log.
"""

from __future__ import annotations

from alembic import command
from sqlalchemy import inspect, select, text

from vault import Vault
from vault.crypto.keyrecord import FLOOR
from vault.storage import engine as storage
from vault.storage import models as m


def _indexes(store: storage.Store) -> set[str]:
    return {str(ix["name"]) for ix in inspect(store.engine).get_indexes("audit_events")}


def test_0011_adds_the_key_event_index_to_a_vault_in_use_and_down_again(empty_url):
    vault, _ = Vault.create(empty_url, admin="root-admin", passphrase="pass", kdf_params=FLOOR)
    try:
        vault.engineers.unlock("root-admin", "pass")
        vault.clients.add("acme", "Acme Ltd")
        assert "ix_audit_events_key" in _indexes(vault.store)
        config = storage._alembic_config(vault.store.engine)
        command.downgrade(config, "0010")
        assert "ix_audit_events_key" not in _indexes(vault.store)
        command.upgrade(config, "0011")
        assert "ix_audit_events_key" in _indexes(vault.store)
        command.upgrade(config, "head")  # the verifier reads 0014's columns (format 3) too
        vault.clients.list()
        assert vault.audit.verify().ok
        with vault.store.engine.begin() as conn:
            conn.execute(text("DROP INDEX ix_audit_events_key"))
        assert vault.audit.verify().ok  # the same answer without the index
    finally:
        vault.close()


def test_the_key_events_are_read_from_the_partial_index(sqlite_url):
    vault, _ = Vault.create(sqlite_url, admin="root-admin", passphrase="pass", kdf_params=FLOOR)
    try:
        query = select(m.AuditEvent.seq).where(m.KEY_EVENTS).order_by(m.AuditEvent.seq)
        sql = str(query.compile(vault.store.engine, compile_kwargs={"literal_binds": True}))
        with vault.store.engine.connect() as conn:
            plan = " ".join(str(row[-1]) for row in conn.execute(text("EXPLAIN QUERY PLAN " + sql)))
        assert "ix_audit_events_key" in plan, plan
    finally:
        vault.close()


def _predicate(store: storage.Store) -> str:
    """The index's WHERE as the engine keeps it (SQLite: its CREATE INDEX text; PostgreSQL: pg_indexes)."""
    with store.engine.connect() as conn:
        if store.engine.dialect.name == "sqlite":
            found = conn.scalar(text("SELECT sql FROM sqlite_master WHERE name = 'ix_audit_events_key'"))
        else:
            found = conn.scalar(text("SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_audit_events_key'"))
    return str(found)


def test_0023_adds_server_key_recover_to_the_index_and_down_again(empty_url):
    """0023: the index also holds the admin's ``server-key-recover`` (format 2, its signer checked as
    the other key events'); down to 0019 it holds the six actions again, the chain verifying."""
    vault, _ = Vault.create(empty_url, admin="root-admin", passphrase="pass", kdf_params=FLOOR)
    try:
        vault.engineers.unlock("root-admin", "pass")
        assert "server-key-recover" in _predicate(vault.store)
        config = storage._alembic_config(vault.store.engine)
        command.downgrade(config, "0019")
        assert "server-key-recover" not in _predicate(vault.store) and "engineer-remove" in _predicate(vault.store)
        command.upgrade(config, "head")
        assert "server-key-recover" in _predicate(vault.store)
        vault.clients.add("acme", "Acme Ltd")
        assert vault.audit.verify().ok
    finally:
        vault.close()
