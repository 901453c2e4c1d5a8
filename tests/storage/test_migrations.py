"""Alembic migrations are the only way a schema is made, and they match the models."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import func, inspect, select

from vault import Vault
from vault.crypto.keyrecord import FLOOR
from vault.storage import engine as storage
from vault.storage import models as m


def _head(store: storage.Store) -> str:
    script = ScriptDirectory.from_config(storage._alembic_config(store.engine))
    heads = script.get_heads()
    assert len(heads) == 1, f"migrations must have one head, found {heads}"
    return heads[0]


def _drift(store: storage.Store) -> list[object]:
    with store.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(context, m.Base.metadata))


def test_a_fresh_database_gets_its_whole_schema_from_the_migrations_and_it_matches_the_models(empty_url):
    store = storage.Store(empty_url)
    try:
        assert set(inspect(store.engine).get_table_names()) == set()
        assert storage.current_revision(store) is None
        storage.upgrade(store)
        assert storage.current_revision(store) == _head(store)
        tables = set(inspect(store.engine).get_table_names())
        assert tables == set(m.Base.metadata.tables) | {"alembic_version"}
        assert _drift(store) == [], "models and migrations disagree"
    finally:
        store.close()


def test_creating_a_vault_on_an_empty_database_runs_the_migrations(empty_url):
    vault, _ = Vault.create(empty_url, admin="root-admin", passphrase="pass", kdf_params=FLOOR)
    try:
        assert vault.schema_revision() == _head(vault.store)
        assert _drift(vault.store) == []
    finally:
        vault.close()


def test_upgrade_is_idempotent_and_keeps_the_data(empty_url):
    vault, _ = Vault.create(empty_url, admin="root-admin", passphrase="pass", kdf_params=FLOOR)
    try:
        head = vault.schema_revision()
        with vault.store.transaction() as s:
            before = {name: s.scalar(select(func.count()).select_from(t)) for name, t in m.Base.metadata.tables.items()}
        assert vault.upgrade_schema() == head
        assert vault.upgrade_schema() == head
        with vault.store.transaction() as s:
            after = {name: s.scalar(select(func.count()).select_from(t)) for name, t in m.Base.metadata.tables.items()}
        assert after == before
        assert before["engineers"] == 1 and before["vault_info"] == 1
        assert _drift(vault.store) == []
    finally:
        vault.close()


def _indexes(store: storage.Store, table: str) -> set[str]:
    return {str(ix["name"]) for ix in inspect(store.engine).get_indexes(table)}


def test_0006_adds_the_checkout_indexes_to_a_vault_in_use_and_down_again(empty_url):
    """A vault made before revision 0006, with data and an open checkout, upgrades in place;
    the downgrade gives back 0005's indexes. Nothing is lost either way."""
    from alembic import command

    vault, _ = Vault.create(empty_url, admin="root-admin", passphrase="pass", kdf_params=FLOOR)
    try:
        vault.unlock("root-admin", "pass")
        vault.add_client("acme", "Acme Ltd")
        vault.add_secret("acme/fw01", password="pw-1")
        vault.checkout("acme/fw01", reason="T-1")
        config = storage._alembic_config(vault.store.engine)
        command.downgrade(config, "0005")
        assert storage.current_revision(vault.store) == "0005"
        assert "ix_checkouts_open" not in _indexes(vault.store, "checkouts")
        assert _indexes(vault.store, "grants") >= {"ix_grants_engineer_id"}
        assert "ix_grants_engineer_client" not in _indexes(vault.store, "grants")

        assert vault.upgrade_schema() == _head(vault.store)
        assert "ix_checkouts_open" in _indexes(vault.store, "checkouts")
        assert "ix_grants_engineer_client" in _indexes(vault.store, "grants")
        assert "ix_grants_engineer_id" not in _indexes(vault.store, "grants")
        assert _drift(vault.store) == []
        assert [c.engineer for c in vault.list_checkouts()] == ["root-admin"]
        assert vault.checkout("acme/fw01", reason="T-2").value == "pw-1"
    finally:
        vault.close()
