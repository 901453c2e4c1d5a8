"""An admin's re-key through the team server, and the adoption of the records they signed (both engines).

``adm2`` (an admin) adds a client through the server (its key version's record is theirs), a secret, a
grant and a policy; a DBA plants a grant naming ``adm2`` as its signer. The suite's first admin, on a
machine with no database, re-keys ``adm2``: the server drafts what ``adm2`` signed
(``authority/adoption_drafts.py``), the admin's machine re-signs what verifies and sets aside the rest
(``keyholder/adoption.py``), the server checks the answer in full before it writes. ``adm2``'s records
stay trusted after their key is destroyed: the grantee checks out, ``audit verify`` passes. The attacks:
a compromised server's draft (a record ``adm2`` did not sign, a revoked grant, another grantee) and raw
commits by insiders with valid keys, each refused with nothing written.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from pathlib import Path
from typing import Any

import pytest
from remote_admin_harness import Stop, caller, post, remote, stored_state
from server_harness import Keyed, events
from sqlalchemy import insert, select
from test_cli_admin_over_server import admin_joined
from test_cli_over_server import ok, run

from vault import Vault
from vault.authority.adoption_draft_values import AdoptionDraft
from vault.authority.engineer_requests import RotateRequest
from vault.authority.grant_signatures import grant_fields, grant_label
from vault.authority.record_signatures import client_key_fields
from vault.authority.rekey_draft_values import RekeyCommit, RekeyDraftAnswer
from vault.crypto import keyrecord, signing
from vault.crypto.labels import LABEL_SIG_CLIENT_KEY
from vault.errors import UntrustedRecord
from vault.service.remote import RemoteVault
from vault.service.remote_engineers import RemoteEngineerWrites
from vault.storage import models as m
from vault.transport.https_enrolment import enroll_over_https

pytestmark = pytest.mark.usefixtures("cli_home")

SECOND, THIRD, FOURTH, GRANTEE, PLANTED, REMOVED = "adm2", "adm3", "adm4", "eng9", "eng8", "eng7"
CHANGED_IN_PLACE = ("engineers", "engineer_keys", "grants", "client_keys", "client_key_seals", "client_policies",
                    "clients", "vault_info", "root_seals")  # fmt: skip


VAULTS: dict[str, Vault] = {}


@pytest.fixture(scope="module")
def world(module_team: Any, request: pytest.FixtureRequest) -> Keyed:
    VAULTS.clear()
    VAULTS[SECOND] = module_team.engineer(SECOND, role="admin")
    VAULTS[THIRD] = module_team.engineer(THIRD, role="admin")
    VAULTS[FOURTH] = module_team.engineer(FOURTH, role="admin")
    VAULTS[GRANTEE] = module_team.engineer(GRANTEE)
    VAULTS[PLANTED] = module_team.engineer(PLANTED)
    VAULTS[REMOVED] = module_team.engineer(REMOVED)
    keyed: Keyed = request.getfixturevalue("keyed")
    return keyed


def state(world: Keyed) -> dict[str, object]:
    return stored_state(world.served.db_url, CHANGED_IN_PLACE)


def signed_by(world: Keyed, module_team: Any, name: str, slug: str) -> RemoteVault:
    """``name`` (an admin) adds ``slug`` with a secret, grants it to ``GRANTEE``, sets its policy: records
    of theirs; a DBA plants a grant naming them as signer. ``name``'s remote session is returned."""
    theirs = remote(world, VAULTS[name], name, module_team.passphrases[name])
    theirs.clients.add(slug, f"{slug} Ltd")
    theirs.secrets.add(f"{slug}/sw1", password=f"pw of {slug}/sw1")
    theirs.grants.grant(GRANTEE, slug)
    theirs.policies.set(slug, reason_required=True)
    with world.store.transaction() as s:
        me = s.scalars(select(m.Engineer.id).where(m.Engineer.name == name)).one()
        carol = s.scalars(select(m.Engineer.id).where(m.Engineer.name == "carol")).one()
        client = s.scalars(select(m.ClientKey.client_id).where(m.ClientKey.signed_by == me)).first()
        s.execute(insert(m.Grant).values(engineer_id=carol, client_id=client, granted_by=me, signed_at=1,
                                         signature=bytes(64), created_at=dt.datetime.now(dt.UTC)))  # fmt: skip
    return theirs


class _Tap:
    """The admin's transport: ``change`` applied to the re-key's draft; the commit kept, not sent, if ``keep``."""

    def __init__(self, https: Any, change: Any = None, keep: bool = False) -> None:
        self.https, self.change, self.keep = https, change, keep
        self.commit: Any = None
        self.sent: list[str] = []

    def call(self, name: str, body: object, request_id: bytes | None = None) -> object:
        self.sent.append(name)
        if name == "engineers.rotate" and self.keep:
            self.commit = body
            raise Stop
        answer = self.https.call(name, body, request_id)
        if name == "engineers.rotate_draft" and self.change is not None:
            assert isinstance(answer, RekeyDraftAnswer) and answer.rows.adoption is not None
            rows = dataclasses.replace(answer.rows, adoption=self.change(answer.rows.adoption))
            answer = dataclasses.replace(answer, rows=rows)
        return answer


def rekey_through(admin: RemoteVault, tap: _Tap, name: str) -> str:
    writes = RemoteEngineerWrites(admin.keyholder, tap, admin.keyholder.clock)  # type: ignore[arg-type]
    return writes.rotate(name, valid_for=dt.timedelta(days=1))


def test_an_admin_is_re_keyed_through_the_server_and_the_records_they_signed_stay_trusted(
    world: Keyed, admin: RemoteVault, module_team: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(keyrecord, "DEFAULT_PARAMS", keyrecord.FLOOR)
    signed_by(world, module_team, SECOND, "globex").close()
    me = world.served.admin.keyholder.me().engineer_id
    with world.store.read() as s:
        second = s.scalars(select(m.Engineer).where(m.Engineer.name == SECOND)).one()
        planted = s.scalars(select(m.Grant.id).where(m.Grant.granted_by == second.id, m.Grant.signed_at == 1)).one()
    before = len(events(world.served))
    code = admin.engineers.rotate(SECOND)
    appended = events(world.served)[before:]
    assert [e.action for e in appended] == ["engineer-invite", "adoption-refused", "engineer-key-rotate"]
    assert len({e.request_id for e in appended}) == 1
    with world.store.read() as s:
        assert s.scalars(select(m.ClientKey).where(m.ClientKey.signed_by == second.id)).first() is None
        assert s.scalars(select(m.ClientPolicy).where(m.ClientPolicy.signed_by == second.id)).first() is None
        live = s.scalars(select(m.Grant).where(m.Grant.granted_by == second.id, m.Grant.revoked_at.is_(None))).all()
        assert live == []
        assert s.get(m.Grant, planted).revoked_at is not None  # type: ignore[union-attr]  # set aside: revoked
        adopted = s.scalars(select(m.ClientKey).where(m.ClientKey.signed_by == me)).all()
        vault_id = s.scalars(select(m.VaultInfo.vault_id)).one()
        public = s.get(m.Engineer, me).signing_public  # type: ignore[union-attr]
        for ck in adopted:  # the adopted records verify under the acting admin's key
            signing.verify(public, ck.signature, LABEL_SIG_CLIENT_KEY, *client_key_fields(vault_id, ck), what="ck")
        grantee = s.scalars(select(m.Engineer).where(m.Engineer.name == GRANTEE)).one()
        grant = s.scalars(select(m.Grant).where(m.Grant.engineer_id == grantee.id)).one()
        assert grant.granted_by == me
        signing.verify(public, grant.signature, grant_label(grant),
                       *grant_fields(vault_id, grant, grantee.sealing_public), what="grant")  # fmt: skip
    engineer = remote(world, VAULTS[GRANTEE], GRANTEE, module_team.passphrases[GRANTEE])
    try:
        assert engineer.checkouts.checkout("globex/sw1", reason="T-9 after adm2's laptop").value == "pw of globex/sw1"
    finally:
        engineer.close()
    served = world.served  # adm2 enrols again and is confirmed through the server, still an admin
    enrolled = enroll_over_https(served.url, ca_file=str(served.ca.ca_file), name=SECOND, code=code,
                                 passphrase="adm2 again", kdf_params=keyrecord.FLOOR)  # fmt: skip
    info = admin.engineers.confirm(SECOND, enrolled.fingerprint)
    assert (info.role, info.status, info.key_generation) == ("admin", "active", 2)
    assert world.served.admin.audit.verify().ok


@pytest.mark.parametrize("change", ["relabelled", "another signer", "a revoked grant", "another grantee"])
def test_a_compromised_servers_adoption_draft_signs_nothing_it_should_not(
    world: Keyed, admin: RemoteVault, module_team: Any, change: str
) -> None:
    """A record another admin signed passed off as ``adm3``'s is set aside, never re-signed; a record
    naming another signer, a revoked grant, a grant shown with another grantee refuse the whole re-key."""
    third_records(world, module_team)
    with world.store.read() as s:
        root = s.scalars(select(m.ClientKey).where(m.ClientKey.client_id == 1)).first()  # acme: not adm3's
        assert root is not None
        recovery = s.scalars(select(m.ClientKeySeal.blob).where(
            m.ClientKeySeal.client_id == root.client_id, m.ClientKeySeal.version == root.version,
            m.ClientKeySeal.recipient_kind == "recovery")).one()  # fmt: skip

    def tampered(draft: AdoptionDraft) -> AdoptionDraft:
        copy = draft.client_keys[0]
        if change == "relabelled":  # acme's record, its signer named as adm3
            record = dataclasses.replace(copy.record, client_id=root.client_id, version=root.version,
                                         fingerprint=root.fingerprint, signature=root.signature)  # fmt: skip
            relabelled = dataclasses.replace(copy, record=record, blob=recovery)  # its genuine recovery copy
            return dataclasses.replace(draft, client_keys=(*draft.client_keys, relabelled))
        if change == "another signer":
            record = dataclasses.replace(copy.record, signed_by=root.signed_by)
            return dataclasses.replace(draft, client_keys=(dataclasses.replace(copy, record=record),))
        grant = draft.grants[0]
        if change == "a revoked grant":
            row = grant.grant._replace(revoked_at=dt.datetime.now(dt.UTC))
            return dataclasses.replace(draft, grants=(dataclasses.replace(grant, grant=row), *draft.grants[1:]))
        other = grant.engineer._replace(sealing_public=os.urandom(32))
        return dataclasses.replace(draft, grants=(dataclasses.replace(grant, engineer=other), *draft.grants[1:]))

    before = state(world)
    tap = _Tap(admin.https, tampered, keep=True)
    if change == "relabelled":
        with pytest.raises(Stop):
            rekey_through(admin, tap, THIRD)
        made = tap.commit.adopted
        assert (root.client_id, root.version) in made.skipped_keys
        assert (root.client_id, root.version) not in {(c, v) for c, v, _ in made.client_keys}
        assert post(world, "engineers.rotate", tap.commit, world.served.admin).status_code in (403, 409)
    else:
        with pytest.raises(UntrustedRecord):
            rekey_through(admin, tap, THIRD)
        assert "engineers.rotate" not in tap.sent
    assert state(world) == before


def third_records(world: Keyed, module_team: Any) -> None:
    """``adm3``'s records (once per module): initech, its secret, a grant, a policy, a planted grant."""
    with world.store.read() as s:
        third = s.scalars(select(m.Engineer.id).where(m.Engineer.name == THIRD)).one()
        done = s.scalars(select(m.ClientPolicy).where(m.ClientPolicy.signed_by == third)).first() is not None
    if not done:
        signed_by(world, module_team, THIRD, "initech").close()


def test_commits_the_admin_did_not_make_or_an_engineer_posts_are_refused_with_nothing_written(
    world: Keyed, admin: RemoteVault, module_team: Any
) -> None:
    third_records(world, module_team)
    tap = _Tap(admin.https, keep=True)
    with pytest.raises(Stop):
        rekey_through(admin, tap, THIRD)
    commit: RekeyCommit = tap.commit
    made = commit.adopted
    assert made is not None and made.client_keys and made.grants and made.skipped_grants
    host, alice = world.served.admin, world.served.alice
    (c, v, sig), *rest = made.client_keys
    g, gsig = made.grants[0]
    by_alice = alice.keyholder.my_signing_key().sign(LABEL_SIG_CLIENT_KEY, b"not this record")

    def adopted(**changes: Any) -> RekeyCommit:
        return dataclasses.replace(commit, adopted=dataclasses.replace(made, **changes))

    before = state(world)
    for changed in (
        adopted(client_keys=tuple(rest)),  # a version left out
        adopted(client_keys=((c, v, by_alice), *rest)),  # a signature the caller did not make
        adopted(client_keys=((c, v, gsig), *rest)),  # another record's signature
        adopted(skipped_keys=(*made.skipped_keys, (c, v))),  # adopted and set aside at once
        adopted(skipped_grants=(*made.skipped_grants, g)),  # a grant adopted and set aside at once
        adopted(grants=((g, sig),)),  # a grant under a client key's signature
        adopted(grants=((g, gsig), (g + 1000, gsig))),  # a grant not drafted
        dataclasses.replace(commit, adopted=None),  # no adoption at all
    ):
        answer = post(world, "engineers.rotate", changed, host)
        assert answer.status_code == 403, answer.text
        assert state(world) == before
    draft = RotateRequest(caller(alice), THIRD, commit.expires_at, commit.org_pin)
    assert post(world, "engineers.rotate_draft", draft, alice).status_code == 403
    assert post(world, "engineers.rotate", dataclasses.replace(commit, caller=caller(alice)), alice).status_code == 403
    assert post(world, "engineers.rotate", commit, alice).status_code == 403  # another caller than the signer
    assert state(world) == before
    assert post(world, "engineers.rotate", commit, host).status_code == 200  # the honest commit
    after = state(world)
    again = post(world, "engineers.rotate", commit, host)  # the same commit again: the draft is gone
    assert again.status_code in (400, 409) and state(world) == after


def test_an_admins_re_key_by_cli_through_the_server(world: Keyed, module_team: Any, tmp_path: Path) -> None:
    """``credvault --server URL rotate engineer ADMIN``: the code shown, the admin's records adopted
    (checked through the library), the planted grant named in ``adoption-refused``."""
    signed_by(world, module_team, FOURTH, "umbrella").close()
    admin_joined(world, tmp_path)
    before = len(events(world.served))
    shown = ok(run("rotate", "engineer", FOURTH)).output
    assert "CV1-" in shown
    appended = events(world.served)[before:]
    assert [e.action for e in appended] == ["engineer-invite", "adoption-refused", "engineer-key-rotate"]
    with world.store.read() as s:
        fourth = s.scalars(select(m.Engineer).where(m.Engineer.name == FOURTH)).one()
        assert fourth.status == "invited" and fourth.role == "admin"
        assert s.scalars(select(m.ClientKey).where(m.ClientKey.signed_by == fourth.id)).first() is None
        assert s.scalars(select(m.ClientPolicy).where(m.ClientPolicy.signed_by == fourth.id)).first() is None
    assert world.served.admin.audit.verify().ok


def test_an_engineer_named_as_a_records_signer_is_re_keyed_through_the_server_and_nothing_of_theirs_is_adopted(
    world: Keyed, admin: RemoteVault
) -> None:
    """A DBA names ``eng8`` (no admin) as the signer of a client-key version and of a grant to carol: the
    re-key through the server sets both aside (a non-admin signs none), as in-process; nothing is re-signed."""
    with world.store.transaction() as s:
        eng8 = s.scalars(select(m.Engineer.id).where(m.Engineer.name == PLANTED)).one()
        carol = s.scalars(select(m.Engineer.id).where(m.Engineer.name == "carol")).one()
        now = dt.datetime.now(dt.UTC)
        s.add(m.ClientKey(client_id=1, version=99, state="active", fingerprint=os.urandom(16), signed_by=eng8,
                          signature=bytes(64), signed_at=1, encryptions=0, created_at=now))  # fmt: skip
        grant = m.Grant(engineer_id=carol, client_id=1, granted_by=eng8, signed_at=1, signature=bytes(64),
                        created_at=now)  # fmt: skip
        s.add(grant)
        s.flush()
        planted = grant.id
    before = len(events(world.served))
    assert admin.engineers.rotate(PLANTED).startswith("CV1-")
    appended = events(world.served)[before:]
    assert [e.action for e in appended] == ["engineer-invite", "adoption-refused", "engineer-key-rotate"]
    with world.store.read() as s:
        assert s.get(m.Grant, planted).revoked_at is not None  # type: ignore[union-attr]
        assert s.get(m.ClientKey, (1, 99)).signed_by == eng8  # type: ignore[union-attr]  # never re-signed
        assert s.get(m.Client, 1).current_key_version != 99  # type: ignore[union-attr]
    assert world.served.admin.audit.verify().ok


def test_an_engineer_named_as_a_records_signer_is_removed_through_the_server_their_records_set_aside(
    world: Keyed, admin: RemoteVault
) -> None:
    """The same plant on ``eng7``, removed through the server: the server sets both records aside in the
    removal's unit (no signature needed: it only takes access away), before the removal's rotations."""
    with world.store.transaction() as s:
        eng7 = s.scalars(select(m.Engineer.id).where(m.Engineer.name == REMOVED)).one()
        carol = s.scalars(select(m.Engineer.id).where(m.Engineer.name == "carol")).one()
        now = dt.datetime.now(dt.UTC)
        s.add(m.ClientKey(client_id=2, version=98, state="active", fingerprint=os.urandom(16), signed_by=eng7,
                          signature=bytes(64), signed_at=1, encryptions=0, created_at=now))  # fmt: skip
        s.flush()
        s.add(m.ClientKeySeal(client_id=2, version=98, recipient_kind="engineer", recipient_id=carol,
                              blob=os.urandom(80)))  # fmt: skip
        grant = m.Grant(engineer_id=carol, client_id=2, granted_by=eng7, signed_at=1, signature=bytes(64),
                        created_at=now)  # fmt: skip
        s.add(grant)
        s.flush()
        planted = grant.id
    before = len(events(world.served))
    admin.engineers.remove(REMOVED)
    actions = [e.action for e in events(world.served)[before:]]
    assert actions[:2] == ["adoption-refused", "engineer-remove"]
    with world.store.read() as s:
        assert s.get(m.Engineer, eng7).status == "disabled"  # type: ignore[union-attr]
        assert s.get(m.Grant, planted).revoked_at is not None  # type: ignore[union-attr]
        copies = select(m.ClientKeySeal).where(m.ClientKeySeal.client_id == 2, m.ClientKeySeal.version == 98)
        assert s.scalars(copies).all() == []
    assert world.served.admin.audit.verify().ok
