"""A credvault backup of a vault served by a team server (its data keys under the server's layer).

A team that moves to the server keeps `credvault backup`: the backup carries the vault as stored
(every data key layered, each client's server client key wrapped under the master key, the
server's certified signing keys, the format-3 events they signed). Restored into an empty
database, the vault verifies (`audit verify` needs the server keys) and a server started on it
with the same key file releases the keys again; so does a server given the master keys opened
from the host's key export, after the key file is lost. Without the master key the restored
layer opens nothing. Both engines.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from served import ADMIN, ADMIN_PASS, ServedTeam, ServedVault, make_test_ca, serving
from sqlalchemy import select

from vault import Vault
from vault.authority.backup_requests import CLIENT, SectionRows, TableRows
from vault.crypto.keyrecord import FLOOR
from vault.errors import StoreUnavailable, UntrustedRecord
from vault.keyholder.backupsections import check_section
from vault.server.layer import MasterKey, ServerLayer
from vault.service.remote import RemoteVault
from vault.service.sessions import MemorySessionStore
from vault.storage import models as m
from vault.storage.engine import Store

PASSWORD = "layered pw 4711"


@dataclass
class Backed:
    """A served team with one secret checked out through the server, then backed up on the host."""

    team: ServedTeam
    engine: str
    backup: Path
    keys: Path
    layer: ServerLayer


@pytest.fixture
def backed(served_vault: ServedVault) -> Backed:
    team, admin, folder = served_vault.team, served_vault.admin, served_vault.folder
    layer = admin.core.host_layer
    assert isinstance(layer, ServerLayer)
    admin.clients.add("acme", "Acme Ltd")
    admin.secrets.add("acme/fw01", password=PASSWORD, kind="equipment")
    bob = team.engineer("bob")
    admin.grants.grant("bob", "acme")
    assert bob.checkouts.checkout("acme/fw01", reason="T-1 before the backup").value == PASSWORD
    bob.checkouts.checkin("acme/fw01")
    admin.backups.export_keys(folder / "vault.keys")
    admin.backups.create(folder / "vault.cvbk")
    return Backed(team, served_vault.engine, folder / "vault.cvbk", folder / "vault.keys", layer)


def restored(backed: Backed, target: str, clock: Callable[[], dt.datetime]) -> Vault:
    vault = Vault.open(target, engineer=ADMIN, sessions=MemorySessionStore(), clock=clock, kdf_params=FLOOR)
    vault.backups.restore(backed.backup, backed.keys, admin=ADMIN, passphrase=ADMIN_PASS)
    return vault


def server_rows(url_or_store: str | Store) -> tuple[list[tuple[int, int, bytes, str]], list[tuple[int, bytes, bytes]]]:
    store = Store(url_or_store) if isinstance(url_or_store, str) else url_or_store
    try:
        with store.read() as s:
            client_keys = [(r.client_id, r.version, r.blob, r.state) for r in s.scalars(select(m.ServerClientKey))]
            signing = [(r.version, r.signing_public, r.certificate) for r in s.scalars(select(m.ServerKey))]
            layered = {v.wrapped_dek[1] for v in s.scalars(select(m.SecretVersion))}
        assert layered == {0x09}  # every stored data key under the server's layer
        return sorted(client_keys), sorted(signing)
    finally:
        if isinstance(url_or_store, str):
            store.close()


def checkout_through(backed: Backed, vault: Vault, layer: ServerLayer, clock: Callable[[], dt.datetime]) -> str:
    """Bob, through a new server over the restored vault, with his key record from before."""
    team, store = backed.team, vault.core.store
    folder = backed.backup.parent / "restored-ca"
    folder.mkdir(exist_ok=True)
    ca = make_test_ca(folder)
    with serving(store, team.server_key, layer, clock, ca) as (_url, pin):
        bob = RemoteVault(pin, engineer="bob", sessions=MemorySessionStore(), clock=clock)
        try:
            bob.engineers.unlock("bob", team.passphrases["bob"])
            value = bob.checkouts.checkout("acme/fw01", reason="T-2 after the restore").value
            bob.checkouts.checkin("acme/fw01")
            return value
        finally:
            bob.close()


def test_a_backup_of_a_layered_vault_restores_what_a_server_with_the_key_file_opens(
    backed: Backed, empty_databases, clock  # type: ignore[no-untyped-def]
) -> None:
    target = empty_databases(backed.engine)
    vault = restored(backed, target, clock)
    try:
        assert server_rows(target) == server_rows(backed.team.server_store)  # layered, with its server keys
        vault.engineers.unlock(ADMIN, ADMIN_PASS)
        assert vault.audit.verify().ok  # the format-3 events verify under the restored server keys
        assert checkout_through(backed, vault, backed.layer, clock) == PASSWORD
        assert vault.audit.verify().ok
    finally:
        vault.close()


def test_after_the_key_file_is_lost_the_key_exports_master_keys_open_the_restored_layer(
    backed: Backed, empty_databases, clock  # type: ignore[no-untyped-def]
) -> None:
    target = empty_databases(backed.engine)
    vault = restored(backed, target, clock)
    try:
        (version, key), *_ = vault.backups.server_master_keys(backed.keys, admin=ADMIN, passphrase=ADMIN_PASS)
        assert checkout_through(backed, vault, ServerLayer(MasterKey(version, key)), clock) == PASSWORD
    finally:
        vault.close()


def test_without_the_master_key_the_restored_layer_opens_nothing(
    backed: Backed, empty_databases, clock  # type: ignore[no-untyped-def]
) -> None:
    """A thief of the backup and an admin's passphrase still needs the server's master key: the
    restored data keys are layered (``server_rows``), and a server with another master key of the
    same version releases nothing and records nothing."""
    target = empty_databases(backed.engine)
    vault = restored(backed, target, clock)
    try:
        vault.engineers.unlock(ADMIN, ADMIN_PASS)
        server_rows(target)
        before = vault.audit.head()
        wrong = ServerLayer(MasterKey(backed.layer.master_keys()[0][0], bytes(32)))
        with pytest.raises(StoreUnavailable, match="master-key-mismatch"):
            checkout_through(backed, vault, wrong, clock)
        assert vault.audit.head() == before
    finally:
        vault.close()


def test_a_client_section_holds_that_clients_server_client_key_only() -> None:
    """The keyholder's section check covers the new table both ways: a DBA who moves a server
    client key row under another client before a backup gets a backup refused, at writing and
    at restoring (the same check)."""
    columns = ("client_id", "version", "blob", "state")

    def section(owner: int) -> SectionRows:
        clients = TableRows("clients", ("id",), ((7,),))
        keys = TableRows("server_client_keys", columns, ((owner, 1, b"\x01" * 60, "active"),))
        return SectionRows(CLIENT, 7, (clients, keys))

    check_section(section(7))
    with pytest.raises(UntrustedRecord, match="server_client_keys of another client"):
        check_section(section(8))
