"""The server's master keys in a key export made on its host (docs/server.md §5, docs/format.md §11).

On the server's host (``--server-key``) ``backup export-keys`` carries every master key of the
key file, sealed to the recovery key and to each admin under ``LABEL_BACKUP_SERVER_KEYS``, and its
``backup-keys-export`` event names their versions. Opened with an admin's passphrase or the
recovery shares, they open the server layer of a database copy again with no key file. An export
made elsewhere carries none; an altered or moved sealed set opens nothing; an engineer exports
nothing. Both engines.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select

from vault import Vault
from vault.crypto.keyrecord import FLOOR
from vault.errors import AccessDenied, DecryptionFailed, InvalidInput, UntrustedRecord
from vault.server import keyfile_rotation
from vault.server.keyfile import ServerKeyFile, new_key_file, read_server_keys
from vault.server.layer import MasterKey, ServerLayer
from vault.service.serverkeys import certify_server_key
from vault.storage import models as m
from vault.storage.engine import Store

PASS = "admin passphrase ✓"


@dataclass
class Host:
    """A vault gone to the team server, its admin on the server's host with the key file."""

    admin: Vault
    url: str
    store: Store
    key_file: Path
    shares: tuple[str, ...]

    def keys(self) -> ServerKeyFile:
        return read_server_keys(self.key_file)

    def on_the_host(self) -> None:
        keys = self.keys()
        assert keys.master is not None
        self.admin.core.server_key = keys.signing_keys
        self.admin.core.host_layer = ServerLayer(keys.master, keys.previous)

    def exported(self, tmp_path: Path, name: str = "keys.json") -> dict[str, object]:
        path = tmp_path / name
        self.admin.backups.export_keys(path)
        return dict(json.loads(path.read_text()))

    def last_event(self) -> m.AuditEvent:
        with self.store.read() as s:
            event = s.scalars(select(m.AuditEvent).order_by(m.AuditEvent.seq.desc()).limit(1)).one()
            s.expunge(event)
        return event


@pytest.fixture
def host(db_url: str, clock, tmp_path: Path) -> Iterator[Host]:  # type: ignore[no-untyped-def]
    admin, made = Vault.create(db_url, admin="root-admin", passphrase=PASS, shares=(2, 3), clock=clock,
                               kdf_params=FLOOR)  # fmt: skip
    admin.engineers.unlock("root-admin", PASS)
    admin.clients.add("acme", "Acme Ltd")
    admin.secrets.add("acme/fw01", password="pw of acme/fw01")
    key_file = tmp_path / "server-key.json"
    keys = new_key_file(key_file)
    certify_server_key(admin, 1, keys.signing.public)
    store = Store(db_url)
    assert keys.master is not None
    ServerLayer(keys.master).layer_on(store)  # as `credvault serve` does at start
    world = Host(admin, db_url, store, key_file, made.shares)
    world.on_the_host()
    try:
        yield world
    finally:
        store.close()
        admin.core.server_key = admin.core.host_layer = None
        admin.close()


def opens_the_layer(store: Store, masters: tuple[tuple[int, bytes], ...]) -> bool:
    """Whether a layer made of ``masters`` alone opens every stored server client key (a database
    copy served with no other key file)."""
    current, *older = sorted(masters, reverse=True)
    layer = ServerLayer(MasterKey(*current), tuple(MasterKey(*k) for k in sorted(older)))
    with store.read() as s:
        vault_id = bytes(s.get(m.VaultInfo, 1).vault_id)  # type: ignore[union-attr]
        clients = list(s.scalars(select(m.ServerClientKey.client_id)))
        for client_id in clients:
            layer.client_key(s, vault_id, client_id)
    return bool(clients)


def test_a_key_export_on_the_host_carries_the_master_key_and_says_so(host: Host, tmp_path: Path) -> None:
    document = host.exported(tmp_path)
    carried = document["server_master_keys"]
    assert isinstance(carried, dict) and carried["versions"] == [1]
    master = host.keys().master
    assert master is not None and master.key.hex() not in json.dumps(document)  # sealed, never in clear
    event = host.last_event()
    assert event.action == "backup-keys-export" and json.loads(event.details_json or "{}")["server_master_keys"] == [1]
    opened = host.admin.backups.server_master_keys(tmp_path / "keys.json", admin="root-admin", passphrase=PASS)
    assert opened == ((1, master.key),)
    assert host.admin.backups.server_master_keys(tmp_path / "keys.json", shares=list(host.shares[:2])) == opened
    assert opens_the_layer(host.store, opened)  # the key file lost: the export opens the layer again
    assert host.admin.audit.verify().ok


def test_a_rotation_under_way_exports_every_live_master_key(host: Host, tmp_path: Path) -> None:
    keyfile_rotation.rotate(host.key_file)
    host.on_the_host()
    host.exported(tmp_path)
    opened = host.admin.backups.server_master_keys(tmp_path / "keys.json", admin="root-admin", passphrase=PASS)
    keys = host.keys()
    assert keys.master is not None
    assert opened == ((1, keys.previous[0].key), (2, keys.master.key))
    assert json.loads(host.last_event().details_json or "{}")["server_master_keys"] == [1, 2]
    assert opens_the_layer(host.store, opened)


def test_an_export_made_off_the_host_carries_none_and_says_where_to_make_one(host: Host, tmp_path: Path) -> None:
    host.admin.core.host_layer = None  # --server-key given for the signature only: no master key here
    document = host.exported(tmp_path)
    assert "server_master_keys" not in document
    assert "server_master_keys" not in json.loads(host.last_event().details_json or "{}")
    with pytest.raises(InvalidInput, match="carries no server master key") as raised:
        host.admin.backups.server_master_keys(tmp_path / "keys.json", admin="root-admin", passphrase=PASS)
    assert "--server-key" in (raised.value.hint or "")


def test_a_sealed_set_moved_from_another_export_or_altered_opens_nothing(host: Host, tmp_path: Path) -> None:
    document = host.exported(tmp_path)
    carried = dict(document["server_master_keys"])  # type: ignore[call-overload]
    forged = tmp_path / "forged.json"
    # the backup keys' seal in place of the master keys' (another label): refused
    moved = {**document, "server_master_keys": {**carried, "recovery": document["recovery"]}}
    forged.write_text(json.dumps(moved))
    with pytest.raises(DecryptionFailed):
        host.admin.backups.server_master_keys(forged, shares=list(host.shares[:2]))
    # the versions named changed: what is opened does not match them
    renamed = {**document, "server_master_keys": {**carried, "versions": [7]}}
    forged.write_text(json.dumps(renamed))
    with pytest.raises(UntrustedRecord, match="not the versions it names"):
        host.admin.backups.server_master_keys(forged, admin="root-admin", passphrase=PASS)


def test_an_engineer_cannot_export_the_master_key(host: Host, tmp_path: Path) -> None:
    """An insider with a valid engineer key, on the host with the key file, asks for a key export."""

    code = host.admin.engineers.invite("mallory")
    mallory = Vault.open(host.url, engineer="mallory", clock=host.admin.clock, kdf_params=FLOOR)
    mallory.core.server_key, mallory.core.host_layer = host.admin.core.server_key, host.admin.core.host_layer
    try:
        host.admin.engineers.confirm("mallory", mallory.engineers.enroll("mallory", code, "pass of mallory"))
        mallory.engineers.unlock("mallory", "pass of mallory")
        before = host.last_event().seq
        with pytest.raises(AccessDenied):
            mallory.backups.export_keys(tmp_path / "mallory.json")
        assert not (tmp_path / "mallory.json").exists()
        with host.store.read() as s:  # nothing on record but her unlock
            added = [e.action for e in s.scalars(select(m.AuditEvent).where(m.AuditEvent.seq > before))]
        assert "backup-keys-export" not in added
    finally:
        mallory.close()
