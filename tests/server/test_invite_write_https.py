"""An admin's invitation through the team server (both engines), and why the code never crosses.

The admin works from a machine with no database (``RemoteVault``): the engineers keyholder gets the
server's draft (the engineer's row as it will be invited, a new engineer's id reserved), verifies
it, makes the invite secret on this machine, seals it to the recovery key, signs the invitation
and commits; the server checks the caller and the signature before it writes, and appends the
format-3 ``engineer-invite`` event in the same unit. The enrolment code is made from the secret on
the admin's machine only: what the server is sent and keeps (the request bodies its events record,
the engineer's row) holds the secret sealed to the recovery key and the public key it derives,
never the secret. The attacks are raw signed requests by insiders with valid keys and a
compromised admin's machine signing another invitation than drafted: each writes nothing.
"""

from __future__ import annotations

import base64
import dataclasses
from typing import Any

import pytest
from remote_admin_harness import Stop, caller, post, remote
from server_harness import Keyed, database_state, events, keyid_of, signed_headers, signing_key, without_nonces
from sqlalchemy import select

from vault import Vault
from vault.authority.engineer_requests import InviteRequest
from vault.authority.invite_draft_values import InviteCommit
from vault.authority.invite_drafts import invite_fields
from vault.crypto import keyrecord, signing
from vault.crypto.labels import LABEL_SIG_INVITE
from vault.errors import AccessDenied, NotFound
from vault.service.remote import RemoteVault
from vault.service.remote_admin2 import RemoteInvitations
from vault.storage import models as m
from vault.transport.https_enrolment import enroll_over_https
from vault.wire import codec

pytestmark = pytest.mark.usefixtures("cli_home")

ADMIN = "root-admin"
NAMES = iter(f"new{n}" for n in range(100))


@pytest.fixture(scope="module")
def second_admin(module_team: Any) -> Vault:
    return module_team.engineer("admin2", role="admin")  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def world(second_admin: Vault, module_team: Any, request: pytest.FixtureRequest) -> Keyed:
    keyed: Keyed = request.getfixturevalue("keyed")
    return keyed



class _Capturing:
    """The admin's ``HttpsTransport``, except that the commit is kept, not sent."""

    def __init__(self, https: Any) -> None:
        self.https = https
        self.commit: InviteCommit | None = None

    def call(self, name: str, body: object, request_id: bytes | None = None) -> object:
        if name == "engineers.invite":
            assert isinstance(body, InviteCommit)
            self.commit = body
            raise Stop
        return self.https.call(name, body, request_id)


def captured(admin: RemoteVault, name: str, role: str = "engineer") -> InviteCommit:
    capture = _Capturing(admin.https)
    invitations = RemoteInvitations(admin.keyholder, capture, admin.keyholder.clock)  # type: ignore[arg-type]
    with pytest.raises(Stop):
        invitations.invite(name, role=role, valid_for=__import__("datetime").timedelta(days=1))
    assert capture.commit is not None
    return capture.commit


def state(world: Keyed) -> dict[str, object]:
    return without_nonces(database_state(world.served.db_url))


# -- an admin's invitation -------------------------------------------------------------------------------------


def test_an_admin_invites_with_no_database_and_the_engineer_enrols(
    world: Keyed, admin: RemoteVault, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(keyrecord, "DEFAULT_PARAMS", keyrecord.FLOOR)
    name = next(NAMES)
    before = len(events(world.served))
    code = admin.engineers.invite(name)
    assert code.startswith("CV1-")
    after = events(world.served)[before:]
    me = world.served.admin.keyholder.me().engineer_id
    assert [(e.action, e.engineer_id, e.request_id is not None, e.server_key_version) for e in after] == [
        ("engineer-invite", me, True, 1)
    ]
    # what the server was sent and keeps holds no invite secret, in any spelling
    secret, _ = signing.parse_enrolment_code(code)
    spellings = (secret, secret.hex().encode(), base64.urlsafe_b64encode(secret).rstrip(b"=")[:20])
    with world.store.read() as s:
        row = s.scalars(select(m.Engineer).where(m.Engineer.name == name)).one()
        kept = [e.request_body or b"" for e in s.scalars(select(m.AuditEvent).where(m.AuditEvent.seq > before))]
        values = [getattr(row, column.key) for column in m.Engineer.__table__.columns]
        stored = b"".join(v for v in values if isinstance(v, bytes))
        assert row.invite_auth_public == signing.invite_auth_key(secret).public
    assert all(spelling not in blob for spelling in spellings for blob in (*kept, stored))
    served = world.served
    enrolled = enroll_over_https(served.url, ca_file=str(served.ca.ca_file), name=name, code=code,
                                 passphrase=f"pass of {name}", kdf_params=keyrecord.FLOOR)  # fmt: skip
    assert enrolled.name == name
    host = world.served.admin
    host.core.server_key = world.key  # the confirmation on the server's host (--server-key)
    try:
        host.engineers.confirm(name, enrolled.fingerprint)
    finally:
        host.core.server_key = None
    assert world.served.admin.audit.verify().ok


def test_a_renewed_invitation_of_an_invited_engineer_keeps_its_id(world: Keyed, admin: RemoteVault) -> None:
    name = next(NAMES)
    first = admin.engineers.invite(name)
    with world.store.read() as s:
        engineer_id = s.scalars(select(m.Engineer.id).where(m.Engineer.name == name)).one()
    second = admin.engineers.invite(name, role="admin")
    assert first != second
    with world.store.read() as s:
        row = s.scalars(select(m.Engineer).where(m.Engineer.name == name)).one()
        assert (row.id, row.role, row.status) == (engineer_id, "admin", "invited")
    with pytest.raises(Exception, match="already exists"):
        admin.engineers.invite(ADMIN)


# -- insiders' attacks, each refused with nothing written ---------------------------------------------------


def test_an_engineer_who_drafts_or_commits_an_invitation_is_refused(world: Keyed, admin: RemoteVault) -> None:
    commit = captured(admin, next(NAMES))
    alice = world.served.alice
    before = state(world)
    draft = InviteRequest(caller(alice), "mallory", "admin", commit.expires_at, commit.org_pin)
    answer = post(world, "engineers.invite_draft", draft, alice)
    assert answer.status_code == 403 and "is not an admin" in answer.json()["detail"]  # before her root copy
    as_alice = dataclasses.replace(commit, caller=caller(alice))
    assert post(world, "engineers.invite", as_alice, alice).status_code == 403
    assert post(world, "engineers.invite", commit, alice).status_code == 403  # another caller than the signer
    assert state(world) == before


def test_an_engineer_through_the_server_cannot_invite(world: Keyed) -> None:
    alice = remote(world, world.served.alice, "alice", "pass of alice")
    before = state(world)
    with pytest.raises((AccessDenied, NotFound)):
        alice.engineers.invite("mallory", role="admin")
    assert state(world) == before


def test_a_commit_with_a_raised_role_or_another_expiry_is_refused(world: Keyed, admin: RemoteVault) -> None:
    commit = captured(admin, next(NAMES))
    before = state(world)
    for changed in (dataclasses.replace(commit, role="admin"), dataclasses.replace(commit, expires_at=2**39)):
        answer = post(world, "engineers.invite", changed, world.served.admin)
        assert answer.status_code == 409 and answer.json()["code"] == "stale-draft"
    assert state(world) == before


def test_an_invitation_signed_otherwise_is_refused(world: Keyed, admin: RemoteVault, second_admin: Vault) -> None:
    """A changed sealed secret; a compromised admin's machine signing for another engineer id; a
    signature by another admin's key: each 403 before anything is written."""
    commit = captured(admin, next(NAMES))
    vault_id = world.served.admin.vault_id()
    key = world.served.admin.keyholder.my_signing_key()
    with world.store.read() as s:
        root_version = s.scalars(select(m.RootKey.version).where(m.RootKey.state == "active")).one()

    def signature(by: Any, engineer_id: int) -> bytes:
        fields = (vault_id, engineer_id, commit.name, commit.role, commit.signed.prev_generation, root_version,
                  commit.expires_at, commit.signed.seal)  # fmt: skip
        return bytes(by.sign(LABEL_SIG_INVITE, *fields))

    assert signature(key, commit.engineer_id) != b""  # the fields are what the keyholder signs (format.md §5)
    other = second_admin.keyholder.my_signing_key()
    before = state(world)
    forged = [
        dataclasses.replace(commit.signed, seal=commit.signed.seal[:-1] + bytes([commit.signed.seal[-1] ^ 1])),
        dataclasses.replace(commit.signed, signature=signature(key, commit.engineer_id + 1)),
        dataclasses.replace(commit.signed, signature=signature(other, commit.engineer_id)),
        dataclasses.replace(commit.signed, signed_by=second_admin.keyholder.me().engineer_id),
    ]
    for signed in forged:
        answer = post(world, "engineers.invite", dataclasses.replace(commit, signed=signed), world.served.admin)
        assert answer.status_code == 403 and answer.json()["error"] == "AccessDenied"
    assert state(world) == before
    assert post(world, "engineers.invite", commit, world.served.admin).status_code == 200  # as signed
    assert invite_fields  # the server's copy of the fields (authority/invite_drafts.py) is exercised above


def test_a_replayed_commit_is_refused(world: Keyed, admin: RemoteVault, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(keyrecord, "DEFAULT_PARAMS", keyrecord.FLOOR)
    commit = captured(admin, next(NAMES))
    name, path = "engineers.invite", "/v1/engineers/invite"
    data = codec.envelope(name, commit, __import__("os").urandom(codec.REQUEST_ID_BYTES))
    served = world.served
    headers = signed_headers(served, path, data, key=signing_key(served.admin), keyid=keyid_of(served.admin))
    with served.client() as client:
        assert client.post(path, content=data, headers=headers).status_code == 200
        after_first = state(world)
        again = client.post(path, content=data, headers=headers)  # the same signed request
    assert again.status_code == 401
    now = state(world)
    assert now.pop("auth_failures") == 1
    assert now == {k: v for k, v in after_first.items() if k != "auth_failures"}
