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
import json
import os
from typing import Any

import pytest
from remote_admin_harness import Stop, caller, post, remote, stored_state
from server_harness import Keyed, events
from sqlalchemy import select

from vault import Vault
from vault.authority.engineer_requests import RemoveRequest, RotateRequest
from vault.authority.rekey_draft_values import RekeyCommit
from vault.authority.removal_draft_values import RemovalCommit
from vault.authority.removal_draft_values import draft_digest as removal_digest
from vault.authority.rotation_requests import Grantee
from vault.crypto import keyrecord, signing
from vault.crypto.labels import LABEL_SIG_CLIENT_KEY, LABEL_SIG_GRANT_REVOCATION, LABEL_SIG_INVITE
from vault.errors import AccessDenied, InvalidInput, NotFound, UntrustedRecord
from vault.service.remote import RemoteVault
from vault.service.remote_engineers import RemoteEngineerWrites
from vault.storage import models as m
from vault.transport.https_enrolment import enroll_over_https

pytestmark = pytest.mark.usefixtures("cli_home")

ADMIN = "root-admin"
TARGETS = ("lost1", "lost2", "lost3", "gone1", "gone2", "gone3")
CHANGED_IN_PLACE = ("engineers", "engineer_keys", "grants", "client_keys", "client_key_seals", "clients", "rotations")


@pytest.fixture(scope="module")
def second_admin(module_team: Any) -> Vault:
    for name in TARGETS:
        module_team.engineer(name)
    return module_team.engineer("admin2", role="admin")  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def world(second_admin: Vault, module_team: Any, request: pytest.FixtureRequest) -> Keyed:
    keyed: Keyed = request.getfixturevalue("keyed")
    return keyed



class _Capturing:
    """The admin's ``HttpsTransport``, except that the commit named is kept, not sent."""

    def __init__(self, https: Any, commit: str) -> None:
        self.https, self.name = https, commit
        self.commit: Any = None
        self.answers: dict[str, Any] = {}

    def call(self, name: str, body: object, request_id: bytes | None = None) -> object:
        if name == self.name:
            self.commit = body
            raise Stop
        self.answers[name] = self.https.call(name, body, request_id)
        return self.answers[name]


def captured_rekey(admin: RemoteVault, name: str) -> RekeyCommit:
    capture = _Capturing(admin.https, "engineers.rotate")
    writes = RemoteEngineerWrites(admin.keyholder, capture, admin.keyholder.clock)  # type: ignore[arg-type]
    with pytest.raises(Stop):
        writes.rotate(name, valid_for=dt.timedelta(days=1))
    assert isinstance(capture.commit, RekeyCommit)
    return capture.commit  # type: ignore[no-any-return]


def captured_removal(admin: RemoteVault, name: str, drafts: list[Any] | None = None) -> RemovalCommit:
    """The removal ``admin``'s machine would commit (its draft's answer appended to ``drafts``)."""
    capture = _Capturing(admin.https, "engineers.remove")
    writes = RemoteEngineerWrites(admin.keyholder, capture, admin.keyholder.clock)  # type: ignore[arg-type]
    with pytest.raises(Stop):
        writes.remove(name)
    assert isinstance(capture.commit, RemovalCommit)
    if drafts is not None:
        drafts.append(capture.answers["engineers.remove_draft"])
    return capture.commit  # type: ignore[no-any-return]


def state(world: Keyed) -> dict[str, object]:
    """Row counts and every row a re-key or removal changes in place."""
    return stored_state(world.served.db_url, CHANGED_IN_PLACE)


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
    """A changed expiry (409); a commit naming the caller (400), an admin or another engineer (409)."""
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
    assert answer.status_code == 409 and answer.json()["code"] == "stale-draft"  # served (session 16): another draft
    with_certificate = dataclasses.replace(commit, key_certificate=bytes(64))  # the record exists: none to make
    assert post(world, "engineers.rotate", with_certificate, world.served.admin).status_code == 400
    assert state(world) == before
    with pytest.raises(InvalidInput, match="yourself"):
        admin.engineers.rotate(ADMIN)
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


# -- a removal -------------------------------------------------------------------------------------------------


def test_an_admin_removes_an_engineer_with_no_database(world: Keyed, admin: RemoteVault) -> None:
    """Every grant revoked under the admin's signature, the account disabled (re-certified so), their
    copies gone, a new key for every client sealed to the other grantees; the data keys re-wrapped
    through the server too (``rotate resume``), the chain verifies, and alice (granted both clients)
    still checks out through the server."""
    name = "gone1"
    admin.grants.grant(name, "acme")
    admin.grants.grant(name, "excl")
    with world.store.read() as s:
        engineer_id = s.scalars(select(m.Engineer.id).where(m.Engineer.name == name)).one()
        versions = dict(s.execute(select(m.Client.id, m.Client.current_key_version)).all())
    before = len(events(world.served))
    at_risk, rotations = admin.engineers.remove(name)
    assert at_risk == []  # gone1 revealed nothing (the list itself: test_cli_admin_over_server.py, tests/cli)
    assert sorted((r.from_version, r.state) for r in rotations) == sorted((v, "done") for v in versions.values())
    started = admin.engineers.started
    assert len(started) == len(versions)  # every client: this machine holds no verified audit log
    after = events(world.served)[before:]
    me = world.served.admin.keyholder.me().engineer_id
    assert (after[0].action, after[0].engineer_id, after[0].server_key_version, after[0].client_id) == (
        "engineer-remove", me, 1, None,
    )  # fmt: skip
    # each rotation's end (no layer here: no release), and the client listing that names them on this machine
    rotated = [e.action for e in after[1:] if not e.action.startswith("report-")]  # then the at-risk list's
    assert sorted(rotated) == ["client-key-rotated"] * len(versions) + ["client-list"]
    rotated = json.loads(after[0].details_json or "{}")["rotations"]
    assert sorted((r["client"], r["from_version"], r["to_version"]) for r in rotated) == sorted(
        (client_id, version, version + 1) for client_id, version in versions.items()
    )
    with world.store.read() as s:
        row = s.get(m.Engineer, engineer_id)
        assert row is not None and row.status == "disabled" and row.key_record is None
        grants = s.scalars(select(m.Grant).where(m.Grant.engineer_id == engineer_id)).all()
        assert len(grants) == 2 and all(g.revoked_by == me and g.revocation for g in grants)
        mine = (m.ClientKeySeal.recipient_kind == "engineer", m.ClientKeySeal.recipient_id == engineer_id)
        assert s.scalars(select(m.ClientKeySeal).where(*mine)).first() is None
        assert dict(s.execute(select(m.Client.id, m.Client.current_key_version)).all()) == {
            client_id: version + 1 for client_id, version in versions.items()
        }
        assert {r.state for r in s.scalars(select(m.Rotation).where(m.Rotation.id.in_(started)))} == {"done"}
    assert world.served.admin.audit.verify().ok
    alice = remote(world, world.served.alice, "alice", "pass of alice")
    assert alice.checkouts.reveal("acme/fw01", reason="after the removal") == "pw of acme/fw01"


def test_an_engineer_who_drafts_or_commits_a_removal_is_refused(world: Keyed, admin: RemoteVault) -> None:
    admin.grants.grant("gone2", "acme")
    commit = captured_removal(admin, "gone2")
    alice = world.served.alice
    before = state(world)
    answer = post(world, "engineers.remove_draft", RemoveRequest(caller(alice), "gone2", commit.org_pin, False), alice)
    assert answer.status_code == 403 and "is not an admin" in answer.json()["detail"]
    assert post(world, "engineers.remove", dataclasses.replace(commit, caller=caller(alice)), alice).status_code == 403
    assert post(world, "engineers.remove", commit, alice).status_code == 403  # another caller than the signer
    assert state(world) == before


def test_a_stale_or_retargeted_removal_is_refused(world: Keyed, admin: RemoteVault) -> None:
    """Another digest or revocation time (409); a removal drafted and signed an hour ago, its digest
    matching that time (409: the revocation time is not now); the caller as target (400); another
    engineer, an admin, as target (409: the draft is gone2's; an admin's removal is served since session 17,
    tests/server/test_admin_removal_https.py)."""
    drafts: list[Any] = []
    commit = captured_removal(admin, "gone2", drafts)
    rows = drafts[0].rows
    old = commit.revoked_at - 3600
    old_rows = dataclasses.replace(rows, removal=dataclasses.replace(rows.removal, revoked_at=old))
    an_hour_ago = dataclasses.replace(commit, revoked_at=old, draft_digest=removal_digest(old_rows))
    before = state(world)
    for changed in (dataclasses.replace(commit, draft_digest=os.urandom(32)),
                    dataclasses.replace(commit, revoked_at=commit.revoked_at + 1),
                    an_hour_ago):  # fmt: skip
        answer = post(world, "engineers.remove", changed, world.served.admin)
        assert answer.status_code == 409 and answer.json()["code"] == "stale-draft"
    answer = post(world, "engineers.remove", dataclasses.replace(commit, name=ADMIN), world.served.admin)
    assert answer.status_code == 400 and "yourself" in answer.json()["detail"]
    answer = post(world, "engineers.remove", dataclasses.replace(commit, name="admin2"), world.served.admin)
    assert answer.status_code == 409 and answer.json()["code"] == "stale-draft"
    assert state(world) == before


def test_a_removal_signed_otherwise_is_refused(world: Keyed, admin: RemoteVault, second_admin: Vault) -> None:
    """A revocation list missing a grant; a revocation or a new client key signed by another admin; a
    client's new key left out; the whole commit by another admin than its signatures': each 403 with
    nothing written; the commit as signed then passes."""
    admin.grants.grant("gone2", "excl")
    commit = captured_removal(admin, "gone2")
    removal = commit.removal
    assert len(removal.revocations) == 2 and len(commit.new_keys) >= 2
    other = second_admin.keyholder.my_signing_key()
    grant_id, _ = removal.revocations[0]
    client_id, key = commit.new_keys[0]
    vault_id = world.served.admin.vault_id()
    key_fields = (vault_id, client_id, key.version, key.fingerprint, key.signed_at)
    mine = world.served.admin.keyholder.my_signing_key()
    assert mine.sign(LABEL_SIG_CLIENT_KEY, *key_fields) == key.signature  # the fields are what is signed
    forged_key = dataclasses.replace(key, signature=other.sign(LABEL_SIG_CLIENT_KEY, *key_fields))
    forged_revocation = other.sign(LABEL_SIG_GRANT_REVOCATION, b"anything")
    before = state(world)
    forged = [
        dataclasses.replace(commit, removal=dataclasses.replace(removal, revocations=removal.revocations[1:])),
        dataclasses.replace(commit, removal=dataclasses.replace(
            removal, revocations=((grant_id, forged_revocation), *removal.revocations[1:]))),
        dataclasses.replace(commit, new_keys=((client_id, forged_key), *commit.new_keys[1:])),
        dataclasses.replace(commit, new_keys=commit.new_keys[1:]),
    ]  # fmt: skip
    for bad in forged:
        answer = post(world, "engineers.remove", bad, world.served.admin)
        assert answer.status_code == 403 and answer.json()["error"] == "AccessDenied"
    as_other = dataclasses.replace(commit, caller=caller(second_admin))
    answer = post(world, "engineers.remove", as_other, second_admin)  # admin2 commits what root-admin signed
    assert answer.status_code in (403, 409)
    assert state(world) == before
    assert post(world, "engineers.remove", commit, world.served.admin).status_code == 200
    with world.store.read() as s:
        assert s.scalars(select(m.Engineer.status).where(m.Engineer.name == "gone2")).one() == "disabled"


class _SealingToTheLeaver:
    """A compromised server's draft: the first client's new key to be sealed to the engineer removed too
    (one of their live grants as the ledger head); a commit would be kept, not sent."""

    def __init__(self, https: Any) -> None:
        self.https = https
        self.committed = False

    def call(self, name: str, body: object, request_id: bytes | None = None) -> object:
        if name == "engineers.remove":
            self.committed = True
            raise Stop
        answer = self.https.call(name, body, request_id)
        if name == "engineers.remove_draft":
            rows = answer.rows  # type: ignore[attr-defined]
            leaver, grant = rows.removal.engineer, rows.removal.grants[0]
            signer = rows.removal.identity.me
            first = rows.starts[0]
            tampered = dataclasses.replace(first, grantees=(*first.grantees, Grantee(leaver, grant, signer)))
            rows = dataclasses.replace(rows, starts=(tampered, *rows.starts[1:]))
            answer = dataclasses.replace(answer, rows=rows)
        return answer


def test_a_draft_sealing_a_new_key_to_the_engineer_removed_is_refused_on_the_admins_machine(
    world: Keyed, admin: RemoteVault
) -> None:
    admin.grants.grant("gone3", "acme")
    tampering = _SealingToTheLeaver(admin.https)
    writes = RemoteEngineerWrites(admin.keyholder, tampering, admin.keyholder.clock)  # type: ignore[arg-type]
    before = state(world)
    with pytest.raises(UntrustedRecord, match="sealed to the engineer removed"):
        writes.remove("gone3")
    assert not tampering.committed and state(world) == before
