"""``RemoteVault``: an engineer with no database, through a pinned team server (both engines).

The engineer's machine holds a pin of the server and their key record (copied once from the
shared database: ``serverjoin.join``); everything else goes through HTTPS, and every row the
server answers is verified here, as in-process.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from server_harness import Keyed, events, ticking

from vault.errors import (
    ConfigurationError,
    DecryptionFailed,
    Locked,
    NotFound,
    UntrustedRecord,
    WrongPassphrase,
)
from vault.service import serverjoin
from vault.service.remote import RemoteVault
from vault.service.serverpins import KeyRecordFile, ServerPin, ServerPins
from vault.service.sessions import MemorySessionStore
from vault.transport import https_identity

pytestmark = pytest.mark.usefixtures("home")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CREDVAULT_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def pinned(keyed: Keyed) -> ServerPin:
    served = keyed.served
    identity = serverjoin.trust(served.url, str(served.ca.ca_file))
    return serverjoin.pin(served.url, identity, str(served.ca.ca_file))


def joined(keyed: Keyed, name: str = "alice") -> tuple[ServerPin, str]:
    pin = pinned(keyed)
    passphrase = f"pass of {name}"
    who = keyed.served.alice if name == "alice" else keyed.served.bob
    serverjoin.join(pin, who, name, passphrase)
    return pin, passphrase


def remote(keyed: Keyed, pin: ServerPin, name: str, sessions: MemorySessionStore | None = None) -> RemoteVault:
    machine = ticking(keyed.served.alice.clock)
    return RemoteVault(pin, engineer=name, sessions=sessions or MemorySessionStore(), clock=machine)


def test_the_identity_is_pinned_with_its_certified_server_key(keyed: Keyed) -> None:
    pin = pinned(keyed)
    assert pin.vault_id == keyed.served.admin.vault_id()
    assert pin.server_key == (keyed.key.version, keyed.key.public)
    assert ServerPins.load().get(keyed.served.url + "/") == pin
    assert pin.ca_file is not None and Path(pin.ca_file).read_bytes() == keyed.served.ca.ca_file.read_bytes()


def test_an_engineer_checks_out_and_in_with_no_database(keyed: Keyed) -> None:
    pin, passphrase = joined(keyed)
    sessions = MemorySessionStore()
    vault = remote(keyed, pin, "alice", sessions)
    before = len(events(keyed.served))
    info = vault.engineers.unlock("alice", passphrase)
    assert (info.engineer, info.role, info.vault_id) == ("alice", "engineer", pin.vault_id.hex())
    revealed = vault.checkouts.checkout("acme/fw01", reason="T-77 remote")
    assert revealed.value == "pw of acme/fw01"
    assert vault.checkouts.reveal("excl/sw01", field="username", reason="T-78") == "netops-4410"
    assert [(c.client, c.secret, c.engineer) for c in vault.checkouts.list()] == [("acme", "fw01", "alice")]
    # the next command of the same engineer: a new object, the session from the store
    again = remote(keyed, pin, "alice", sessions)
    assert again.engineers.whoami().engineer == "alice"
    assert again.checkouts.checkin("acme/fw01") is None
    assert again.checkouts.list() == []
    after = events(keyed.served)[before:]
    # format 3: each with the engineer's signed request; whoami, the grant listing and the
    # checkout listing (no layer here) write none
    assert [(e.action, e.request_id is not None) for e in after] == [
        ("checkout", True),
        ("reveal", True),
        ("checkin", True),
    ]
    assert keyed.served.admin.audit.verify().ok


def test_a_wrong_passphrase_keeps_no_session(keyed: Keyed) -> None:
    pin, _ = joined(keyed)
    sessions = MemorySessionStore()
    vault = remote(keyed, pin, "alice", sessions)
    with pytest.raises(WrongPassphrase):
        vault.engineers.unlock("alice", "not the passphrase")
    assert sessions.get(pin.vault_id, "alice") is None
    with pytest.raises(Locked):
        vault.checkouts.checkout("acme/fw01", reason="T-1")


def test_no_key_record_here_says_how_to_get_one(keyed: Keyed) -> None:
    pin = pinned(keyed)
    with pytest.raises(Locked, match="no key record") as raised:
        remote(keyed, pin, "alice").engineers.unlock("alice", "pass of alice")
    assert "enroll" in (raised.value.hint or "")


def test_a_record_copied_from_another_vault_is_refused(keyed: Keyed, tmp_path: Path) -> None:
    pin, passphrase = joined(keyed)
    other = dataclasses.replace(pin, vault_id=bytes(16))
    with pytest.raises(ConfigurationError, match="another vault"):
        serverjoin.join(other, keyed.served.alice, "alice", passphrase)


def test_a_join_with_a_wrong_passphrase_copies_nothing(keyed: Keyed) -> None:
    pin = pinned(keyed)
    with pytest.raises(WrongPassphrase):
        serverjoin.join(pin, keyed.served.alice, "alice", "wrong")
    assert not KeyRecordFile.path(pin.vault_id, "alice").exists()


def test_a_pin_of_another_vault_unlocks_nothing(keyed: Keyed) -> None:
    """A record file planted under another pin: the server's whoami names another vault."""
    pin, passphrase = joined(keyed)
    record = KeyRecordFile.load(pin.vault_id, "alice")
    forged = dataclasses.replace(pin, vault_id=bytes(16))
    dataclasses.replace(record, vault_id=forged.vault_id).save()
    with pytest.raises(DecryptionFailed):  # the record's associated data names the real vault
        remote(keyed, forged, "alice").engineers.unlock("alice", passphrase)


def test_clients_without_a_grant_are_not_found(keyed: Keyed) -> None:
    pin, passphrase = joined(keyed, "bob")
    vault = remote(keyed, pin, "bob")
    vault.engineers.unlock("bob", passphrase)
    before = len(events(keyed.served))
    with pytest.raises(NotFound, match="acme"):
        vault.checkouts.checkout("acme/fw01", reason="T-2 not mine")
    with pytest.raises(NotFound, match="nosuch"):
        vault.checkouts.reveal("nosuch/x")
    assert len(events(keyed.served)) == before  # nothing revealed, nothing on record


def test_a_noun_not_served_says_so(keyed: Keyed) -> None:
    pin, _ = joined(keyed)
    vault = remote(keyed, pin, "alice")
    with pytest.raises(Locked):  # served since session 16 (tests/server/test_backup_https.py): a session first
        vault.backups.create("vault.backup")
    with pytest.raises(ConfigurationError, match="host operation"):  # a restore writes a whole database
        vault.backups.restore("vault.backup", "keys.json")
    with pytest.raises(Locked):  # served now (an admin's, tests/server/test_grants_write_https.py): a session first
        vault.clients.add("new", "New Ltd")
    with pytest.raises(Locked):  # served since session 13 (tests/server/test_invite_write_https.py)
        vault.engineers.invite("dave")
    with pytest.raises(Locked):  # served since session 14 (tests/server/test_engineer_writes_https.py)
        vault.engineers.remove("dave")
    with pytest.raises(ConfigurationError, match=r"engineers\.pending"):
        vault.engineers.pending("dave")


def test_a_forged_server_key_certificate_is_refused(keyed: Keyed) -> None:
    with keyed.served.client() as client:
        document = client.get("/v1/identity").json()
    assert https_identity.parse_identity(document).server_key == (keyed.key.version, keyed.key.public)
    forged = dict(document, server_key=dict(document["server_key"], public=document["org_key"]["public"]))
    with pytest.raises(UntrustedRecord):
        https_identity.parse_identity(forged)
    unsigned = dict(document, server_key={k: v for k, v in document["server_key"].items() if k != "certificate"})
    with pytest.raises(UntrustedRecord):
        https_identity.parse_identity(unsigned)


def test_a_changed_identity_is_not_pinned_over_the_old_one(keyed: Keyed) -> None:
    pin = pinned(keyed)
    identity = serverjoin.trust(keyed.served.url, str(keyed.served.ca.ca_file))
    changed = dataclasses.replace(identity, server_key=(2, bytes(32)))
    with pytest.raises(ConfigurationError, match="another identity"):
        serverjoin.pin(keyed.served.url, changed, str(keyed.served.ca.ca_file))
    assert ServerPins.load().get(keyed.served.url) == pin


def test_an_engineer_lists_their_own_grants(keyed: Keyed) -> None:
    pin, passphrase = joined(keyed)
    vault = remote(keyed, pin, "alice")
    vault.engineers.unlock("alice", passphrase)
    listed = vault.grants.list()
    assert sorted((g.engineer, g.client, g.state) for g in listed) == [
        ("alice", "acme", "active"),
        ("alice", "excl", "active"),
    ]
    assert [g.client for g in vault.grants.list(client="excl")] == ["excl"]
    in_process = keyed.served.alice.grants.list()
    assert sorted((g.engineer, g.client, g.granted_by) for g in listed) == sorted(
        (g.engineer, g.client, g.granted_by) for g in in_process
    )


def test_an_engineer_adds_and_updates_a_secret_through_the_server(keyed: Keyed) -> None:
    pin, passphrase = joined(keyed)
    vault = remote(keyed, pin, "alice")
    vault.engineers.unlock("alice", passphrase)
    before = len(events(keyed.served))
    info = vault.secrets.add("acme/remote-added", password="pw remote 1", kind="equipment", host="10.9.9.9")
    assert (info.client, info.name, info.kind, info.version, info.host) == (
        "acme",
        "remote-added",
        "equipment",
        1,
        "10.9.9.9",
    )
    updated = vault.secrets.update("acme/remote-added", password="pw remote 2", note="moved")
    assert (updated.version, updated.host, updated.note) == (2, "10.9.9.9", "moved")
    kept = vault.secrets.update("acme/remote-added", note="only metadata")  # the password kept: its view on record
    assert (kept.version, kept.note) == (3, "only metadata")
    assert vault.checkouts.reveal("acme/remote-added", reason="T-3 check") == "pw remote 2"
    after = events(keyed.served)[before:]
    assert [e.action for e in after[:5]] == ["secret-create", *["secret-view", "secret-update"] * 2]
    shown = [json.loads(e.details_json or "{}").get("fields") for e in (after[1], after[3])]
    assert shown == ["public-only", "password-kept"]
    assert keyed.served.admin.audit.verify().ok


def test_an_engineer_reads_clients_and_secrets_through_the_server(keyed: Keyed) -> None:
    pin, passphrase = joined(keyed)
    vault = remote(keyed, pin, "alice")
    vault.engineers.unlock("alice", passphrase)
    before = len(events(keyed.served))
    assert sorted(c.slug for c in vault.clients.list()) == ["acme", "excl"]
    assert vault.clients.show("excl").name == "Exclusive Ltd"
    listed = vault.secrets.list("excl")
    assert [s.name for s in listed][:2] == ["sw01", "sw02"] and all(s.client == "excl" for s in listed)
    assert {s.client for s in vault.secrets.list()} == {"acme", "excl"}
    shown = vault.secrets.show("excl/sw01")
    assert (shown.host, shown.username) == ("sw01.excl-lan.example", "netops-4410")
    assert [v.version for v in vault.secrets.history("acme/fw01")][:1] == [1]
    actions = [e.action for e in events(keyed.served)[before:]]
    assert actions == ["client-list", "client-view", "secret-list", "secret-list", "secret-view", "secret-history"]
    assert keyed.served.admin.audit.verify().ok


def test_a_refused_re_pin_leaves_the_pinned_ca_copy_as_it_was(keyed: Keyed) -> None:
    """Another CA file for the same URL (the server's own certificate here, other bytes): refused
    without --replace, and the CA copy TLS is checked against is not touched."""
    first = pinned(keyed)
    assert first.ca_file is not None
    kept = Path(first.ca_file).read_bytes()
    identity = serverjoin.trust(keyed.served.url, str(keyed.served.ca.ca_file))
    with pytest.raises(ConfigurationError, match="another identity"):
        serverjoin.pin(keyed.served.url, identity, str(keyed.served.ca.cert_file))
    assert Path(first.ca_file).read_bytes() == kept
    assert ServerPins.load().get(keyed.served.url) == first
    assert serverjoin.pin(keyed.served.url, identity, str(keyed.served.ca.ca_file)) == first  # the same: kept
