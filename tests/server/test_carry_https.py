"""Confirming a re-invited engineer through the team server: the carry-over of their grants (both engines).

An admin on a machine with no database (``RemoteVault``) re-keys an engineer, the engineer enrols again
over HTTPS, and the admin confirms: the server drafts the carry-over in the pending rows
(``authority/carry_drafts.py``), the admin's machine verifies it, re-signs each grant over the new key
and seals each live client-key version to it (``keyholder/carry.py``), and the server checks the
commit's signatures and copies before it writes. The attacks: a compromised server's draft (refused on
the admin's machine, nothing committed); raw signed commits by insiders with valid keys — an engineer,
a signature the caller did not make over the new key, copies left out or added, a replay (refused by
the server, nothing written). A DBA's cleared revocation (set aside): ``test_carry_set_aside_https.py``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from typing import Any

import pytest
from carry_harness import NEW_PASS, Tap, captured, grants_of, re_enrolled, state, tapped
from remote_admin_harness import caller, pinned, post
from server_harness import Keyed, events, keyid_of, signed_headers, signing_key, ticking
from sqlalchemy import select

from vault import Vault
from vault.authority.confirm_requests import ConfirmCommit
from vault.authority.engineer_requests import PENDING, ConfirmRequest
from vault.authority.grant_signatures import grant_fields, grant_label
from vault.crypto import keyrecord, sealing, signing
from vault.crypto.labels import LABEL_CLIENT_KEY_SEAL
from vault.errors import UntrustedRecord
from vault.service.remote import RemoteVault
from vault.service.remote_admin2 import RemoteInvitations
from vault.service.serverpins import KeyRecordFile
from vault.service.sessions import MemorySessionStore
from vault.storage import models as m
from vault.storage.rows import GrantRow
from vault.transport.https_enrolment import enroll_over_https
from vault.wire import codec

pytestmark = pytest.mark.usefixtures("cli_home")

TARGETS = ("carry1", "carry3", "carry4", "carry5", "carry6", "carry7")


@pytest.fixture(scope="module")
def world(module_team: Any, request: pytest.FixtureRequest) -> Keyed:
    for name in TARGETS:
        module_team.engineer(name)
    keyed: Keyed = request.getfixturevalue("keyed")
    return keyed


# -- the honest path -------------------------------------------------------------------------------------


def test_a_re_invited_engineer_is_confirmed_with_no_database_and_checks_out_with_the_grants_carried(
    world: Keyed, admin: RemoteVault, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = "carry1"
    record = re_enrolled(world, admin, name, monkeypatch)
    pending = admin.engineers.pending_confirmation(name)
    assert sorted(g.client for g in pending.carried) == ["acme", "excl"] and pending.dropped == []
    before = len(events(world.served))
    info = admin.engineers.confirm(name, record.fingerprint, shown=pending)
    assert (info.status, info.key_generation) == ("active", 2)
    appended = events(world.served)[before:]
    assert [(e.action, e.request_id is not None) for e in appended] == [("engineer-confirm", True)]
    me = world.served.admin.keyholder.me().engineer_id
    with world.store.read() as s:
        row = s.get(m.Engineer, record.engineer_id)
        assert row is not None and row.sealing_public is not None
        admin_public = s.get(m.Engineer, me).signing_public  # type: ignore[union-attr]
        seals = s.scalars(
            select(m.ClientKeySeal).where(
                m.ClientKeySeal.recipient_kind == "engineer", m.ClientKeySeal.recipient_id == row.id
            )
        ).all()
        assert len(seals) == 2  # one live key version of each client carried
        sealing_public = row.sealing_public
    grants = grants_of(world, record.engineer_id)
    assert [(g.granted_by, g.revoked_at) for g in grants] == [(me, None), (me, None)]
    assert admin_public is not None
    for g in grants:  # re-signed by the confirming admin over the new sealing key
        fields = grant_fields(record.vault_id, g, sealing_public)
        signing.verify(admin_public, g.signature, grant_label(g), *fields, what="grant")
    r = record
    KeyRecordFile(r.vault_id, r.engineer_id, r.name, r.key_generation, r.key_record).save()
    engineer = RemoteVault(pinned(world), engineer=name, sessions=MemorySessionStore(),
                           clock=ticking(world.served.alice.clock))  # fmt: skip
    try:
        engineer.engineers.unlock(name, NEW_PASS)
        assert engineer.checkouts.checkout("acme/fw01", reason="T-7 after the new laptop").value == "pw of acme/fw01"
    finally:
        engineer.close()
    assert world.served.admin.audit.verify().ok


# -- a DBA's or a compromised server's draft: refused on the admin's machine ------------------------------


@pytest.mark.parametrize(
    "change",
    [
        "a revoked grant",
        "a changed until",
        "an unsigned row",
        "another engineer's grant",
        "a version's copy swapped",
        "a forged copy",
    ],
)
def test_a_compromised_servers_draft_is_refused_on_the_admins_machine(
    world: Keyed, admin: RemoteVault, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    name = "carry3"
    with world.store.read() as s:
        row = s.scalars(select(m.Engineer).where(m.Engineer.name == name)).one()
        ready = row.status == "enrolled"
    record = None if ready else re_enrolled(world, admin, name, monkeypatch)
    fingerprint = record.fingerprint if record else admin.engineers.pending_confirmation(name).fingerprint
    with world.store.read() as s:
        alice = s.scalars(select(m.Engineer.id).where(m.Engineer.name == "alice")).one()
        first = s.scalars(select(m.Grant).where(m.Grant.engineer_id == alice).order_by(m.Grant.id)).first()
        assert first is not None
        alices = GrantRow(*(getattr(first, f) for f in GrantRow._fields))

    def tampered(pending: Any) -> Any:
        draft = pending.plan.draft
        kept = draft.resign[0]
        grant = kept.grant
        if change == "a revoked grant":
            grant = grant._replace(revoked_at=dt.datetime.now(dt.UTC), revoked_by=grant.granted_by)
        elif change == "a changed until":  # live for ten more days: only its signature says otherwise
            grant = grant._replace(until=int(dt.datetime.now(dt.UTC).timestamp()) + 10 * 86400)
        elif change == "an unsigned row":
            grant = grant._replace(signature=bytes(64))
        elif change == "another engineer's grant":  # alice's acme grant, as stored, her admin's signature
            grant = alices
        if change in ("a version's copy swapped", "a forged copy"):
            client, copy = draft.clients[0], draft.clients[0].keys[0]
            blob = draft.clients[1].keys[0].blob
            if change == "a forged copy":  # a key of the server's own, sealed to the recovery key's public half
                version, root = copy.record.version, pending.root
                context = (LABEL_CLIENT_KEY_SEAL, pending.identity.vault_id, client.client_id, version, "recovery",
                           root.version)  # fmt: skip
                blob = sealing.seal(root.recovery_public, version, os.urandom(32), context)
            forged = dataclasses.replace(copy, blob=blob)
            clients = (dataclasses.replace(client, keys=(forged, *client.keys[1:])), *draft.clients[1:])
            draft = dataclasses.replace(draft, clients=clients)
        else:
            draft = dataclasses.replace(draft, resign=(dataclasses.replace(kept, grant=grant), *draft.resign[1:]))
        return dataclasses.replace(pending, plan=dataclasses.replace(pending.plan, draft=draft))

    before = state(world)
    tap = Tap(admin.https, tampered)
    with pytest.raises(UntrustedRecord):
        tapped(admin, tap).confirm(name, fingerprint, None)
    assert "engineers.confirm" not in tap.sent
    assert state(world) == before


def test_a_grant_expired_by_the_admins_clock_is_not_carried_over(
    world: Keyed, admin: RemoteVault, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server's clock lags (or a compromised server drafts as if it did): a grant whose signed until
    has passed by the admin's clock is drafted as carried. The admin's machine refuses to seal to it."""
    name = "carry6"
    monkeypatch.setattr(keyrecord, "DEFAULT_PARAMS", keyrecord.FLOOR)
    admin.grants.grant(name, "acme", until=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))
    code = admin.engineers.rotate(name)
    served = world.served
    record = enroll_over_https(served.url, ca_file=str(served.ca.ca_file), name=name, code=code,
                               passphrase=NEW_PASS, kdf_params=keyrecord.FLOOR)  # fmt: skip
    tap = Tap(admin.https)
    engineers: Any = admin.engineers
    later = RemoteInvitations(engineers.keys, tap, lambda: engineers.clock() + dt.timedelta(hours=2))  # type: ignore[arg-type]
    before = state(world)
    with pytest.raises(UntrustedRecord):
        later.keyholder.confirm(name, record.fingerprint, None)
    assert "engineers.confirm" not in tap.sent and state(world) == before
    admin.engineers.confirm(name, record.fingerprint)  # by the admin's own clock, the grant is live
    assert [g.granted_by for g in grants_of(world, record.engineer_id)] == [served.admin.keyholder.me().engineer_id]


# -- raw signed commits by insiders: refused by the server ------------------------------------------------


def _refused(world: Keyed, commit: ConfirmCommit, signer: Vault, status: int) -> None:
    before = state(world)
    answer = post(world, "engineers.confirm", commit, signer)
    assert answer.status_code == status, answer.text
    assert state(world) == before


def test_commits_the_admin_did_not_make_or_an_engineer_posts_are_refused_with_nothing_written(
    world: Keyed, admin: RemoteVault, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = "carry4"
    record = re_enrolled(world, admin, name, monkeypatch)
    commit = captured(admin, name, record.fingerprint)
    made = commit.carry
    assert made is not None and len(made.signatures) == 2 and len(made.seals) == 2
    host, alice = world.served.admin, world.served.alice
    (a, sig_a), (b, sig_b) = made.signatures
    with world.store.read() as s:
        old = s.get(m.Grant, a)
        assert old is not None
        old_signature = old.signature
    forged = signing_key(alice)
    vault_id = record.vault_id
    grant_a = grants_of(world, record.engineer_id)[0]
    assert grant_a.id == a
    with world.store.read() as s:
        new_sealing = s.get(m.Engineer, record.engineer_id).sealing_public  # type: ignore[union-attr]
    by_alice = forged.sign(grant_label(grant_a), *grant_fields(vault_id, grant_a, new_sealing))

    def carried(**changes: Any) -> ConfirmCommit:
        return dataclasses.replace(commit, carry=dataclasses.replace(made, **changes))

    for changed in (
        carried(signatures=((a, sig_a),)),  # a re-signed grant left out
        carried(signatures=((a, sig_b), (b, sig_b))),  # another grant's signature
        carried(signatures=((a, old_signature), (b, sig_b))),  # the old signature, over the previous key
        carried(signatures=((a, by_alice), (b, sig_b))),  # made by another engineer
        carried(signatures=((a, sig_a), (b, sig_b), (a + 1000, sig_a))),  # a grant not drafted
        carried(seals=made.seals[:1]),  # a client's copy left out
        carried(seals=(*made.seals, (made.seals[0][0], 99, made.seals[0][2]))),  # a version not drafted
        dataclasses.replace(commit, carry=None),  # no carry-over at all
    ):
        _refused(world, changed, host, 403)
    _refused(world, dataclasses.replace(commit, caller=caller(alice)), alice, 403)  # an engineer's commit
    _refused(world, commit, alice, 403)  # another caller than the signer
    # the honest commit, then its signed bytes again, then the same body in a new request
    path, data = "/v1/engineers/confirm", codec.envelope("engineers.confirm", commit, os.urandom(16))
    headers = signed_headers(world.served, path, data, key=signing_key(host), keyid=keyid_of(host))
    with world.served.client() as client:
        assert client.post(path, content=data, headers=headers).status_code == 200
        after = state(world)
        again = client.post(path, content=data, headers=headers)
    # the nonce is kept with the event, in the unit, after the authority's checks: the engineer is
    # no longer waiting, so the replay is refused there (403), before the nonce is looked at
    assert again.status_code == 403 and "not waiting for confirmation" in again.json()["detail"], again.text
    assert state(world) == after
    answer = post(world, "engineers.confirm", commit, host)
    assert answer.status_code == 403 and "not waiting for confirmation" in answer.json()["detail"]
    assert state(world) == after
    with world.store.read() as s:
        assert s.get(m.Engineer, record.engineer_id).status == "active"  # type: ignore[union-attr]


def test_an_engineer_may_not_read_a_re_invited_engineers_pending_carry_over(
    world: Keyed, admin: RemoteVault, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = "carry5"
    re_enrolled(world, admin, name, monkeypatch)
    alice = world.served.alice
    request = ConfirmRequest(caller(alice), name, None, False, alice.keyholder.me().org_signing_public, PENDING)
    before = state(world)
    answer = post(world, "engineers.pending_confirmation", request, alice)
    assert answer.status_code == 403 and "is not an admin" in answer.json()["detail"]
    assert "slug_blob" not in answer.text and state(world) == before


class _Sized:
    """The admin's transport, keeping each answer's canonical size by operation."""

    def __init__(self, https: Any) -> None:
        self.https, self.sizes = https, dict[str, int]()

    def call(self, name: str, body: object, request_id: bytes | None = None) -> object:
        answer = self.https.call(name, body, request_id)
        self.sizes[name] = len(codec.encode(answer))
        return answer


def test_a_carry_over_of_many_clients_crosses(
    world: Keyed, admin: RemoteVault, monkeypatch: pytest.MonkeyPatch
) -> None:
    """30 clients carried: the pending rows (every client's grant events) pass the codec's default 64 KiB
    answer limit, and the confirmation's answer does not echo them back (it failed so before)."""
    monkeypatch.setattr(keyrecord, "DEFAULT_PARAMS", keyrecord.FLOOR)
    name = "carry7"
    for i in range(30):
        admin.clients.add(f"many{i}", f"Many {i}")
        admin.grants.grant(name, f"many{i}")
    code = admin.engineers.rotate(name)
    served = world.served
    record = enroll_over_https(served.url, ca_file=str(served.ca.ca_file), name=name, code=code,
                               passphrase=NEW_PASS, kdf_params=keyrecord.FLOOR)  # fmt: skip
    engineers: Any = admin.engineers
    tap = _Sized(admin.https)
    info = RemoteInvitations(engineers.keys, tap, engineers.clock).keyholder.confirm(name, record.fingerprint, None)
    assert info.status == "active"
    assert tap.sizes["engineers.pending_confirmation"] > codec.MAX_BYTES > tap.sizes["engineers.confirm"]
    me = served.admin.keyholder.me().engineer_id
    assert {g.granted_by for g in grants_of(world, record.engineer_id)} == {me}
