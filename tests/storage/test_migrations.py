"""Alembic migrations are the only way a schema is made, and they match the models."""

from __future__ import annotations

import pytest
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
        vault.engineers.unlock("root-admin", "pass")
        vault.clients.add("acme", "Acme Ltd")
        vault.secrets.add("acme/fw01", password="pw-1")
        vault.checkouts.checkout("acme/fw01", reason="T-1")
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
        assert [c.engineer for c in vault.checkouts.list()] == ["root-admin"]
        assert vault.checkouts.checkout("acme/fw01", reason="T-2").value == "pw-1"
    finally:
        vault.close()


def _columns(store: storage.Store, table: str) -> set[str]:
    return {str(c["name"]) for c in inspect(store.engine).get_columns(table)}


def test_an_empty_0006_schema_upgrades_to_head_and_downgrades_back(empty_url):
    from alembic import command

    store = storage.Store(empty_url)
    try:
        config = storage._alembic_config(store.engine)
        command.upgrade(config, "0006")
        assert "org_keys" not in inspect(store.engine).get_table_names()
        storage.upgrade(store)
        assert storage.current_revision(store) == _head(store)
        assert _drift(store) == []
        command.downgrade(config, "0006")
        assert storage.current_revision(store) == "0006"
        assert "org_keys" not in inspect(store.engine).get_table_names()
        assert "seq" not in _columns(store, "grants")
        storage.upgrade(store)
        assert _drift(store) == []
    finally:
        store.close()


def test_0007_to_0012_upgrade_a_vault_with_data_and_down_again(empty_url):
    """A vault in use taken back to 0006 (its rows keep what 0006 has) upgrades through
    0007-0012 in place on both engines: 0009 makes its one organisation key version 1, the
    rows and the audit chain are unchanged (0012 copies two tables on SQLite), and it keeps
    working; the downgrade to 0006 takes the new columns and table away again."""
    from alembic import command

    vault, _ = Vault.create(empty_url, admin="root-admin", passphrase="pass", kdf_params=FLOOR)
    try:
        vault.engineers.unlock("root-admin", "pass")
        vault.clients.add("acme", "Acme Ltd")
        vault.secrets.add("acme/fw01", password="pw-1")
        vault.checkouts.checkout("acme/fw01", reason="T-1")
        config = storage._alembic_config(vault.store.engine)

        def snapshot() -> tuple[list[object], dict[str, int], bytes]:
            with vault.store.transaction() as s:
                events = [tuple(r) for r in s.execute(select(m.AuditEvent.seq, m.AuditEvent.hash).order_by("seq"))]
                counts = {
                    t: s.scalar(select(func.count()).select_from(m.Base.metadata.tables[t]))
                    for t in m.Base.metadata.tables
                    if t != "org_keys"
                }
                public = s.scalar(select(m.VaultInfo.org_signing_public))
            return events, counts, public

        before = snapshot()
        command.downgrade(config, "0006")
        assert storage.current_revision(vault.store) == "0006"
        assert "org_keys" not in inspect(vault.store.engine).get_table_names()
        assert not {"seq", "event_seq", "revoked_by", "revocation"} & _columns(vault.store, "grants")
        assert "signature" not in _columns(vault.store, "client_policies")
        assert "invite_signature" not in _columns(vault.store, "engineers")
        assert "ix_audit_events_key" not in _indexes(vault.store, "audit_events")

        assert vault.upgrade_schema() == _head(vault.store)
        assert _drift(vault.store) == []
        assert "ix_audit_events_key" in _indexes(vault.store, "audit_events")
        if storage.is_sqlite(vault.store.engine):  # still partial after 0012 copied the table
            with vault.store.engine.connect() as conn:
                sql = conn.exec_driver_sql("SELECT sql FROM sqlite_master WHERE name = 'ix_audit_events_key'").scalar()
            assert "WHERE action IN ('vault-init'," in str(sql)
        assert snapshot() == before
        with vault.store.transaction() as s:
            keys = [(k.version, k.public, k.signature) for k in s.scalars(select(m.OrgKey))]
        assert keys == [(1, before[2], None)]
        assert vault.audit.verify().ok
        assert vault.checkouts.checkout("acme/fw01", reason="T-2").value == "pw-1"
        assert vault.audit.verify().ok
    finally:
        vault.close()


def test_upgrading_a_database_a_newer_credvault_upgraded_is_a_clear_error(empty_url):
    from sqlalchemy import text

    from vault.errors import ConfigurationError

    store = storage.Store(empty_url)
    try:
        storage.upgrade(store)
        with store.engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = '0099'"))
        with pytest.raises(ConfigurationError) as caught:  # before the fix: alembic's CommandError
            storage.upgrade(store)
        assert "'0099'" in str(caught.value) and "newer credvault" in str(caught.value)
        assert "credvault" in caught.value.hint
        assert storage.current_revision(store) == "0099"
    finally:
        store.close()


def test_0014_adds_server_keys_and_the_format_3_columns_and_down_again_unless_format_3_events_exist(empty_url):
    """A vault in use upgrades to 0014 with its rows and chain unchanged (the new columns NULL)
    and goes back to 0013 the same; once the server has appended a format-3 event, the
    downgrade is refused and changes nothing."""
    from alembic import command

    from vault.crypto.serverkey import ServerSigningKey
    from vault.service.serverkeys import certify_server_key

    vault, _ = Vault.create(empty_url, admin="root-admin", passphrase="pass", kdf_params=FLOOR)
    try:
        vault.engineers.unlock("root-admin", "pass")
        vault.clients.add("acme", "Acme Ltd")
        vault.secrets.add("acme/fw01", password="pw-1")
        config = storage._alembic_config(vault.store.engine)

        def events() -> list[object]:
            with vault.store.transaction() as s:
                return [tuple(r) for r in s.execute(select(m.AuditEvent.seq, m.AuditEvent.hash).order_by("seq"))]

        before = events()
        command.downgrade(config, "0013")
        assert "server_keys" not in inspect(vault.store.engine).get_table_names()
        assert "request_sig" not in _columns(vault.store, "audit_events")
        assert vault.upgrade_schema() == _head(vault.store) and _drift(vault.store) == []
        assert events() == before and vault.audit.verify().ok

        certify_server_key(vault, 1, ServerSigningKey.generate(1).public)
        with vault.store.transaction() as s:  # a format-3 event, as the server would append it
            last = s.get(m.AuditEvent, s.scalar(select(func.max(m.AuditEvent.seq))))
            last.server_key_version = 1
        command.downgrade(config, "0014")  # the revisions after 0014 first (nothing layered: they go)
        with pytest.raises(RuntimeError, match="format 3"):
            command.downgrade(config, "0013")
        assert storage.current_revision(vault.store) == "0014"
        assert "server_keys" in inspect(vault.store.engine).get_table_names()
        assert vault.upgrade_schema() == _head(vault.store) and _drift(vault.store) == []
    finally:
        vault.close()


def test_0015_adds_server_client_keys_and_down_again_unless_a_data_key_is_layered(empty_url):
    """0015 adds ``server_client_keys`` and goes back to 0014; once a client has a server
    client key (its data keys under the layer) the downgrade is refused and changes nothing:
    without that row the layered keys would be lost for good."""
    from alembic import command

    vault, _ = Vault.create(empty_url, admin="root-admin", passphrase="pass", kdf_params=FLOOR)
    try:
        vault.engineers.unlock("root-admin", "pass")
        vault.clients.add("acme", "Acme Ltd")
        config = storage._alembic_config(vault.store.engine)
        command.downgrade(config, "0014")
        assert "server_client_keys" not in inspect(vault.store.engine).get_table_names()
        assert vault.upgrade_schema() == _head(vault.store) and _drift(vault.store) == []
        with vault.store.transaction() as s:
            client = s.scalar(select(m.Client.id))
            s.add(m.ServerClientKey(client_id=client, version=1, blob=b"\x01\x08wrapped", state="active"))
        command.downgrade(config, "0015")  # the revisions after 0015 first (nothing in them that is lost)
        with pytest.raises(RuntimeError, match="server's layer"):
            command.downgrade(config, "0014")
        assert storage.current_revision(vault.store) == "0015"  # the later revisions went first
        assert "server_client_keys" in inspect(vault.store.engine).get_table_names()
        assert vault.upgrade_schema() == _head(vault.store) and _drift(vault.store) == []
    finally:
        vault.close()


def test_0017_adds_id_reservations_and_down_again(empty_url):
    """0017 adds ``id_reservations`` (a draft's reserved ids, five minutes each) and goes back to
    0016; a reservation still held is dropped with it (its commit is then refused as a stale
    draft and the keyholder drafts again), the vault's rows unchanged."""
    from alembic import command

    vault, _ = Vault.create(empty_url, admin="root-admin", passphrase="pass", kdf_params=FLOOR)
    try:
        config = storage._alembic_config(vault.store.engine)
        with vault.store.transaction() as s:
            now = vault.core.clock()
            s.add(m.IdReservation(kind="secret", id=7, engineer_id=1, reserved_at=now, expires_at=now))
            before = s.scalar(select(func.count()).select_from(m.Engineer))
        command.downgrade(config, "0016")
        assert "id_reservations" not in inspect(vault.store.engine).get_table_names()
        assert vault.upgrade_schema() == _head(vault.store) and _drift(vault.store) == []
        with vault.store.transaction() as s:
            assert s.scalar(select(func.count()).select_from(m.IdReservation)) == 0
            assert s.scalar(select(func.count()).select_from(m.Engineer)) == before
    finally:
        vault.close()


def test_0018_adds_the_invitations_code_key_and_down_again(empty_url):
    """0018 adds ``engineers.invite_auth_public`` (the public key an invitation's code derives, for
    enrolment over HTTPS) and goes back to 0017 without it, the engineers' rows unchanged; an
    invitation made after the upgrade stores the key."""
    from alembic import command

    vault, _ = Vault.create(empty_url, admin="root-admin", passphrase="pass", kdf_params=FLOOR)
    try:
        config = storage._alembic_config(vault.store.engine)
        vault.engineers.unlock("root-admin", "pass")
        with vault.store.read() as s:
            before = s.scalar(select(func.count()).select_from(m.Engineer))
        command.downgrade(config, "0017")
        columns = {c["name"] for c in inspect(vault.store.engine).get_columns("engineers")}
        assert "invite_auth_public" not in columns and "invite_signature" in columns
        assert vault.upgrade_schema() == _head(vault.store) and _drift(vault.store) == []
        vault.engineers.invite("newcomer")
        with vault.store.read() as s:
            assert s.scalar(select(func.count()).select_from(m.Engineer)) == before + 1
            row = s.scalars(select(m.Engineer).where(m.Engineer.name == "newcomer")).one()
            assert row.invite_auth_public is not None and len(row.invite_auth_public) == 32
    finally:
        vault.close()


def test_0016_makes_an_engineers_request_id_unique_per_action_and_goes_down_again(empty_url):
    """Two format-3 events of one engineer's request with the same action cannot both exist
    (docs/server.md §3: a retry is answered from the first); another action of it, another
    engineer's same id, and events without a request id are not constrained."""
    from alembic import command
    from sqlalchemy.exc import IntegrityError

    vault, _ = Vault.create(empty_url, admin="root-admin", passphrase="pass", kdf_params=FLOOR)
    try:
        config = storage._alembic_config(vault.store.engine)
        command.downgrade(config, "0015")
        assert "ux_audit_events_request" not in {
            i["name"] for i in inspect(vault.store.engine).get_indexes("audit_events")
        }
        assert vault.upgrade_schema() == _head(vault.store) and _drift(vault.store) == []
        with vault.store.engine.connect() as conn:
            row = dict(conn.execute(select(m.AuditEvent.__table__)).mappings().first() or {})
        assert row["request_id"] is None

        def add(seq: int, engineer_id: int, request_id: bytes | None, action: str) -> None:
            values = row | {"seq": seq, "engineer_id": engineer_id, "request_id": request_id, "action": action}
            with vault.store.engine.begin() as conn:
                conn.execute(m.AuditEvent.__table__.insert().values(**values))

        add(100, 1, b"r" * 16, "checkout")
        add(101, 1, b"r" * 16, "reveal")  # another action of the same request
        add(102, 2, b"r" * 16, "checkout")  # another engineer's
        add(103, 1, None, "checkout")
        add(104, 1, None, "checkout")  # no request id: not in the index
        with pytest.raises(IntegrityError):
            add(105, 1, b"r" * 16, "checkout")
    finally:
        vault.close()


def test_0019_adds_the_grants_request_id_and_down_again(empty_url):
    """0019 adds ``grants.request_id`` (what a grant through the team server's signature binds) and
    goes back to 0018 without it, the grant rows unchanged; an in-process grant leaves it NULL."""
    from alembic import command

    vault, _ = Vault.create(empty_url, admin="root-admin", passphrase="pass", kdf_params=FLOOR)
    try:
        config = storage._alembic_config(vault.store.engine)
        vault.engineers.unlock("root-admin", "pass")
        command.downgrade(config, "0018")
        assert "request_id" not in {c["name"] for c in inspect(vault.store.engine).get_columns("grants")}
        assert vault.upgrade_schema() == _head(vault.store) and _drift(vault.store) == []
        assert "request_id" in {c["name"] for c in inspect(vault.store.engine).get_columns("grants")}
        vault.clients.add("acme", "Acme Ltd")
        code = vault.engineers.invite("bob")
        bob = Vault.open(empty_url, engineer="bob", kdf_params=FLOOR)
        try:
            vault.engineers.confirm("bob", bob.engineers.enroll("bob", code, "pass of bob"))
        finally:
            bob.close()
        vault.grants.grant("bob", "acme")
        with vault.store.read() as s:
            rows = s.scalars(select(m.Grant)).all()
            assert len(rows) == 1 and rows[0].request_id is None and rows[0].signature is not None
        command.downgrade(config, "0018")
        with vault.store.read() as s:
            assert s.scalar(select(func.count()).select_from(m.Grant)) == 1
    finally:
        vault.close()
