"""An engineer's passphrase change through the team server (``RemoteVault.engineers.change_passphrase``).

The engineer's keyholder reads their stored key record (``engineers.passphrase_draft``), opens it
here with the old passphrase, locks it under the new one here, and commits it with the digest of
the record it was made on (``engineers.change_passphrase``, server/passphrase_routes.py). After it,
the old passphrase opens neither the record the server stores nor the one kept on the engineer's
machine, the new one opens both, and the ``passphrase-change`` event is in the chain in format 3,
keeping the request's digest and signature but never the key record.

Attacks, as an insider with a certified key would make them: bob signs a draft or a commit naming
dave (403: the body's caller must be the signer; nothing answered, nothing written); a commit made
on a record that is not the one stored (409 ``stale-draft``, nothing written). No request or answer
body holds a passphrase or a private key.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from server_harness import (
    Keyed,
    caller_of,
    database_state,
    envelope,
    events,
    remote_engineer,
    signed_post,
    ticking,
    without_nonces,
)
from test_body_scan import forms, word
from test_body_scan_remote import recording

from vault import Vault
from vault.authority.engineer_requests import PassphraseRequest
from vault.authority.passphrase_requests import PassphraseCommit, record_digest
from vault.crypto import keyrecord
from vault.errors import Locked, WrongPassphrase
from vault.service.remote import RemoteVault
from vault.service.serverpins import KeyRecordFile
from vault.service.sessions import MemorySessionStore
from vault.storage import models as m

OLD = {"dave": "pass of dave", "erin": "pass of erin"}
NEW = "dave's brand-new passphrase 8812"


@dataclasses.dataclass
class World:
    keyed: Keyed
    dave: Vault  # in-process, on the shared database: only to copy the key record once and sign raw requests
    erin: Vault


@pytest.fixture(scope="module")
def world(keyed_more: tuple[Keyed, dict[str, Vault]]) -> World:
    """``keyed``, with dave and erin enrolled before the vault went to the team server."""
    keyed, more = keyed_more
    return World(keyed, more["dave"], more["erin"])


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("CREDVAULT_HOME", str(tmp_path / "home"))
    yield tmp_path / "home"


def stored_record(world: World, name: str) -> bytes:
    with world.keyed.store.read() as s:
        row = s.query(m.Engineer).filter_by(name=name).one()
        assert row.key_record is not None
        return bytes(row.key_record)


def opens(record: bytes, passphrase: str, vault: Vault) -> bool:
    me = vault.keyholder.me()
    try:
        keyrecord.open_record(record, passphrase, me.vault_id, me.engineer_id, me.key_generation)
    except WrongPassphrase:
        return False
    return True


def remote(world: World, name: str, passphrase: str) -> RemoteVault:
    mine = remote_engineer(world.keyed, getattr(world, name), name, passphrase)
    mine.engineers.kdf_params = keyrecord.FLOOR
    return mine  # type: ignore[no-any-return]


def test_an_engineer_changes_their_passphrase_through_the_server(world: World, home: Path) -> None:
    dave = remote(world, "dave", OLD["dave"])
    before = len(events(world.keyed.served))
    dave.engineers.change_passphrase(OLD["dave"], NEW)
    # the server's copy and this machine's: the new passphrase opens both, the old one neither
    kept = KeyRecordFile.load(dave.pin.vault_id, "dave").record
    assert kept == stored_record(world, "dave")
    assert opens(kept, NEW, world.dave) and not opens(kept, OLD["dave"], world.dave)
    machine = ticking(world.keyed.served.alice.clock)
    again = RemoteVault(dave.pin, engineer="dave", sessions=MemorySessionStore(), clock=machine)
    with pytest.raises(WrongPassphrase):
        again.engineers.unlock("dave", OLD["dave"])
    assert again.engineers.unlock("dave", NEW).engineer == "dave"
    assert again.engineers.whoami().engineer == "dave"  # the server accepts the keys the new record holds
    added = events(world.keyed.served)[before:]
    assert [(e.action, e.engineer_id) for e in added] == [("passphrase-change", world.dave.keyholder.me().engineer_id)]
    event = added[0]
    assert event.server_key_version is not None and event.request_id is not None and event.request_sig
    assert event.request_body is None  # the digest and signature only: the key record is never logged
    assert kept.hex() not in json.dumps([str(getattr(event, c.name)) for c in m.AuditEvent.__table__.columns])
    assert world.keyed.served.admin.audit.verify().ok


def test_a_wrong_old_passphrase_changes_nothing(world: World, home: Path) -> None:
    erin = remote(world, "erin", OLD["erin"])
    record, kept = stored_record(world, "erin"), KeyRecordFile.load(erin.pin.vault_id, "erin").record
    state = without_nonces(database_state(world.keyed.served.db_url))
    with pytest.raises(WrongPassphrase):
        erin.engineers.change_passphrase("not erin's passphrase", NEW)
    assert stored_record(world, "erin") == record
    assert KeyRecordFile.load(erin.pin.vault_id, "erin").record == kept
    assert without_nonces(database_state(world.keyed.served.db_url)) == state


@pytest.mark.parametrize("route", ["passphrase_draft", "change_passphrase"])
def test_another_engineer_cannot_read_or_change_an_engineers_key_record(world: World, route: str) -> None:
    """bob, with his own certified key, signs a request naming erin: refused before anything is read."""
    served, erin = world.keyed.served, world.erin
    record = stored_record(world, "erin")
    state = without_nonces(database_state(served.db_url))
    pin = erin.keyholder.me().org_signing_public
    if route == "passphrase_draft":
        body = PassphraseRequest(caller_of(erin), pin)
    else:
        body = PassphraseCommit(caller_of(erin), pin, keyrecord.lock_record(
            keyrecord.open_record(record, OLD["erin"], *_ids(erin)), "bob's choice", *_ids(erin), keyrecord.FLOOR
        ), record_digest(record))  # fmt: skip
    response = signed_post(served, f"/v1/engineers/{route}", envelope(f"engineers.{route}", body), served.bob)
    assert response.status_code == 403, response.text
    assert record.hex()[:32] not in response.text
    assert stored_record(world, "erin") == record
    assert without_nonces(database_state(served.db_url)) == state


def _ids(vault: Vault) -> tuple[bytes, int, int]:
    me = vault.keyholder.me()
    return me.vault_id, me.engineer_id, me.key_generation


def test_a_commit_made_on_another_record_is_refused(world: World) -> None:
    """A record re-locked from an older copy (or made up): 409 ``stale-draft``, the stored one kept."""
    served, erin = world.keyed.served, world.erin
    record = stored_record(world, "erin")
    state = without_nonces(database_state(served.db_url))
    made = keyrecord.lock_record(
        keyrecord.open_record(record, OLD["erin"], *_ids(erin)), "erin's other", *_ids(erin), keyrecord.FLOOR
    )
    body = PassphraseCommit(caller_of(erin), erin.keyholder.me().org_signing_public, made, record_digest(made))
    sent = envelope("engineers.change_passphrase", body)
    response = signed_post(served, "/v1/engineers/change_passphrase", sent, erin)
    assert response.status_code == 409, response.text
    assert response.json()["code"] == "stale-draft"
    assert stored_record(world, "erin") == record
    assert without_nonces(database_state(served.db_url)) == state


def test_no_body_of_a_passphrase_change_holds_a_passphrase_or_a_key(world: World, home: Path) -> None:
    served, seen = world.keyed.served, []
    changing = remote(world, "erin", OLD["erin"])
    erin = RemoteVault(
        changing.pin, engineer="erin", sessions=MemorySessionStore(), clock=ticking(served.alice.clock),
        transport=recording(world.keyed, seen),
    )  # fmt: skip
    erin.engineers.kdf_params = keyrecord.FLOOR
    erin.engineers.unlock("erin", OLD["erin"])
    new = "erin's new passphrase 5521"
    erin.engineers.change_passphrase(OLD["erin"], new)
    assert len(seen) >= 2 * 3  # whoami, the draft, the commit: each request and its answer
    session = erin.keyholder.me()
    keys = [session.signing_seed, session.sealing_private]
    found = [w for body in seen for w in (OLD["erin"], new) if word(w).search(body)]
    found += [key[:4].hex() for body in seen for key in keys for form in forms(key) if form in body]
    assert found == []
    erin.engineers.change_passphrase(new, OLD["erin"])  # back, for the other tests of this module


def test_another_machines_old_copy_no_longer_unlocks_with_the_old_passphrase(world: World, home: Path) -> None:
    """erin changes her passphrase on one machine; her other machine still holds the old copy of
    the record: the old passphrase unlocks nothing there, the new one does and replaces the copy."""
    erin = remote(world, "erin", OLD["erin"])
    other_copy = KeyRecordFile.load(erin.pin.vault_id, "erin")  # the other machine's, as it was
    new = "erin's passphrase from the laptop 2718"
    erin.engineers.change_passphrase(OLD["erin"], new)
    other_copy.save()  # this machine is now the other one, with its old copy
    machine = ticking(world.keyed.served.alice.clock)
    other = RemoteVault(erin.pin, engineer="erin", sessions=MemorySessionStore(), clock=machine)
    sessions_before = other.keyholder.sessions
    with pytest.raises(WrongPassphrase) as refused:
        other.engineers.unlock("erin", OLD["erin"])
    assert "another machine" in (refused.value.hint or "")
    assert sessions_before.get(erin.pin.vault_id, "erin") is None  # no session kept
    with pytest.raises(Locked):
        other.checkouts.list()
    assert KeyRecordFile.load(erin.pin.vault_id, "erin").record == stored_record(world, "erin")  # replaced
    with pytest.raises(WrongPassphrase):
        other.engineers.unlock("erin", OLD["erin"])
    assert other.engineers.unlock("erin", new).engineer == "erin"
    erin.engineers.change_passphrase(new, OLD["erin"])  # back, for the other tests of this module
