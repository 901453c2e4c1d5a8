"""An admin's re-key (a lost laptop) and removal of an engineer through the team server (both engines).

The admin works from a machine with no database (``RemoteVault``): the engineers keyholder gets the
server's draft (the engineer's row and certificate, the invitation to sign), verifies it, makes the
invite secret on this machine and signs; the server checks the caller, the target, the draft's digest
and every signature before it writes, and appends the format-3 events in the same unit. The attacks
are raw signed requests by insiders with valid keys: each is refused with nothing written (row counts,
and the rows a re-key or removal changes in place).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from typing import Any

import pytest
from remote_admin_harness import Stop, caller, post, remote, row_values
from server_harness import Keyed, database_state, events, without_nonces
from sqlalchemy import select

from vault import Vault
from vault.authority.engineer_requests import RotateRequest
from vault.authority.rekey_draft_values import RekeyCommit
from vault.crypto import keyrecord, signing
from vault.crypto.labels import LABEL_SIG_INVITE
from vault.errors import AccessDenied, InvalidInput, NotFound
from vault.service.remote import RemoteVault
from vault.service.remote_engineers import RemoteEngineerWrites
from vault.storage import models as m
from vault.transport.https_enrolment import enroll_over_https

pytestmark = pytest.mark.usefixtures("cli_home")

ADMIN = "root-admin"
PASSPHRASES: dict[str, str] = {}
TARGETS = ("lost1", "lost2", "lost3", "lost4")
CHANGED_IN_PLACE = ("engineers", "engineer_keys", "grants", "client_keys", "clients", "rotations")


@pytest.fixture(scope="module")
def second_admin(module_team: Any) -> Vault:
    for name in TARGETS:
        module_team.engineer(name)
    return module_team.engineer("admin2", role="admin")  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def world(second_admin: Vault, module_team: Any, request: pytest.FixtureRequest) -> Keyed:
    keyed: Keyed = request.getfixturevalue("keyed")
    PASSPHRASES.update(module_team.passphrases)
    return keyed


@pytest.fixture
def admin(world: Keyed) -> Any:
    mine = remote(world, world.served.admin, ADMIN, PASSPHRASES[ADMIN])
    yield mine
    mine.close()


class _Capturing:
    """The admin's ``HttpsTransport``, except that the commit named is kept, not sent."""

    def __init__(self, https: Any, commit: str) -> None:
        self.https, self.name = https, commit
        self.commit: Any = None

    def call(self, name: str, body: object, request_id: bytes | None = None) -> object:
        if name == self.name:
            self.commit = body
            raise Stop
        return self.https.call(name, body, request_id)


def captured_rekey(admin: RemoteVault, name: str) -> RekeyCommit:
    capture = _Capturing(admin.https, "engineers.rotate")
    writes = RemoteEngineerWrites(admin.keyholder, capture, admin.keyholder.clock)  # type: ignore[arg-type]
    with pytest.raises(Stop):
        writes.rotate(name, valid_for=dt.timedelta(days=1))
    assert isinstance(capture.commit, RekeyCommit)
    return capture.commit  # type: ignore[no-any-return]


def state(world: Keyed) -> dict[str, object]:
    """Row counts and every row a re-key or removal changes in place."""
    url = world.served.db_url
    return without_nonces(database_state(url)) | {f"{t} rows": row_values(url, t) for t in CHANGED_IN_PLACE}


# -- a re-key (lost laptop) ----------------------------------------------------------------------------------


def test_an_admin_rekeys_an_engineer_with_no_database_and_they_enrol_again(
    world: Keyed, admin: RemoteVault, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(keyrecord, "DEFAULT_PARAMS", keyrecord.FLOOR)
    name = "lost1"
    with world.store.read() as s:
        before_row = s.scalars(select(m.Engineer).where(m.Engineer.name == name)).one()
        engineer_id, generation = before_row.id, before_row.key_generation
    before = len(events(world.served))
    code = admin.engineers.rotate(name)
    assert code.startswith("CV1-")
    after = events(world.served)[before:]
    me = world.served.admin.keyholder.me().engineer_id
    assert [(e.action, e.engineer_id, e.request_id is not None, e.server_key_version) for e in after] == [
        ("engineer-invite", me, True, 1),
        ("engineer-key-rotate", me, True, 1),
    ]
    assert after[0].request_id == after[1].request_id  # one signed request, two events
    secret, _ = signing.parse_enrolment_code(code)
    with world.store.read() as s:
        row = s.get(m.Engineer, engineer_id)
        assert row is not None
        assert (row.status, row.key_record, row.signing_public, row.certificate) == ("invited", None, None, None)
        assert row.invite_auth_public == signing.invite_auth_key(secret).public
        key = s.get(m.EngineerKey, (engineer_id, generation))
        assert key is not None and key.state == "destroyed"
        mine = (m.ClientKeySeal.recipient_kind == "engineer", m.ClientKeySeal.recipient_id == engineer_id)
        assert s.scalars(select(m.ClientKeySeal).where(*mine)).first() is None
        kept = b"".join(e.request_body or b"" for e in s.scalars(select(m.AuditEvent).where(m.AuditEvent.seq > before)))
    assert secret not in kept and secret.hex().encode() not in kept
    served = world.served
    enrolled = enroll_over_https(served.url, ca_file=str(served.ca.ca_file), name=name, code=code,
                                 passphrase="new pass", kdf_params=keyrecord.FLOOR)  # fmt: skip
    assert enrolled.name == name
    host = world.served.admin
    host.core.server_key = world.key  # the confirmation on the server's host (--server-key)
    try:
        host.engineers.confirm(name, enrolled.fingerprint)
    finally:
        host.core.server_key = None
    assert world.served.admin.audit.verify().ok


def test_an_engineer_who_drafts_or_commits_a_rekey_is_refused(world: Keyed, admin: RemoteVault) -> None:
    commit = captured_rekey(admin, "lost2")
    alice = world.served.alice
    before = state(world)
    draft = RotateRequest(caller(alice), "lost2", commit.expires_at, commit.org_pin)
    answer = post(world, "engineers.rotate_draft", draft, alice)
    assert answer.status_code == 403 and "is not an admin" in answer.json()["detail"]
    assert post(world, "engineers.rotate", dataclasses.replace(commit, caller=caller(alice)), alice).status_code == 403
    assert post(world, "engineers.rotate", commit, alice).status_code == 403  # another caller than the signer
    remote_alice = remote(world, alice, "alice", "pass of alice")
    with pytest.raises((AccessDenied, NotFound)):
        remote_alice.engineers.rotate("lost2")
    assert state(world) == before


def test_a_stale_or_retargeted_rekey_is_refused(world: Keyed, admin: RemoteVault) -> None:
    """A changed expiry (409); a commit naming the caller, an admin, or another engineer (400/409)."""
    commit = captured_rekey(admin, "lost2")
    with world.store.read() as s:
        other = s.scalars(select(m.Engineer.id).where(m.Engineer.name == "lost3")).one()
    before = state(world)
    for changed in (dataclasses.replace(commit, expires_at=commit.expires_at + 60),
                    dataclasses.replace(commit, draft_digest=os.urandom(32)),
                    dataclasses.replace(commit, name="lost3", engineer_id=other)):  # fmt: skip
        answer = post(world, "engineers.rotate", changed, world.served.admin)
        assert answer.status_code == 409 and answer.json()["code"] == "stale-draft"
    answer = post(world, "engineers.rotate", dataclasses.replace(commit, name=ADMIN), world.served.admin)
    assert answer.status_code == 400 and "yourself" in answer.json()["detail"]
    answer = post(world, "engineers.rotate", dataclasses.replace(commit, name="admin2"), world.served.admin)
    assert answer.status_code == 400 and "server-key FILE rotate engineer admin2" in answer.json()["hint"]
    with_certificate = dataclasses.replace(commit, key_certificate=bytes(64))  # the record exists: none to make
    assert post(world, "engineers.rotate", with_certificate, world.served.admin).status_code == 400
    assert state(world) == before
    with pytest.raises(InvalidInput, match="yourself"):
        admin.engineers.rotate(ADMIN)
    with pytest.raises(InvalidInput, match="not served through a team server"):
        admin.engineers.rotate("admin2")
    assert state(world) == before


def test_a_rekey_signed_otherwise_is_refused(world: Keyed, admin: RemoteVault, second_admin: Vault) -> None:
    """An invitation signed by another admin (as themselves, or passed off as the caller's), or over
    another sealed secret: each 403 before anything is written; the commit as signed then passes."""
    commit = captured_rekey(admin, "lost2")
    vault_id = world.served.admin.vault_id()
    with world.store.read() as s:
        root_version = s.scalars(select(m.RootKey.version).where(m.RootKey.state == "active")).one()
        role = s.scalars(select(m.Engineer.role).where(m.Engineer.id == commit.engineer_id)).one()
    signed = commit.signed
    fields = (vault_id, commit.engineer_id, commit.name, role, signed.prev_generation, root_version,
              commit.expires_at, signed.seal)  # fmt: skip
    key = world.served.admin.keyholder.my_signing_key()
    assert key.sign(LABEL_SIG_INVITE, *fields) == signed.signature  # the fields are what is signed (format.md §5)
    other = second_admin.keyholder.my_signing_key()
    before = state(world)
    forged = [
        dataclasses.replace(signed, signature=other.sign(LABEL_SIG_INVITE, *fields)),
        dataclasses.replace(
            signed, signature=other.sign(LABEL_SIG_INVITE, *fields), signed_by=second_admin.keyholder.me().engineer_id
        ),
        dataclasses.replace(signed, seal=signed.seal[:-1] + bytes([signed.seal[-1] ^ 1])),
    ]
    for bad in forged:
        answer = post(world, "engineers.rotate", dataclasses.replace(commit, signed=bad), world.served.admin)
        assert answer.status_code == 403 and answer.json()["error"] == "AccessDenied"
    assert state(world) == before
    assert post(world, "engineers.rotate", commit, world.served.admin).status_code == 200
