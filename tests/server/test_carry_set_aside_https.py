"""A re-invited engineer's confirmation through the team server sets aside a grant the audit log takes
back, as in-process, and the server checks what was set aside (both engines).

In-process the grant ledger drops a carried row whose revocation a DBA cleared and the confirmation
revokes it (``Invitations.carry_grants``); the other grants are carried. Through the server only the
admin's machine can read the audit log's word (``keyholder/carry.py``): it names the row in
``CarryMade.set_aside``, re-signs and re-seals the rest, and the server (``ServedCarry.carry``) requires
the rows set aside and the rows re-signed to be exactly the drafted ones, disjoint, and the copies to
be exactly those of the clients still carried, before it revokes the rows set aside. The attacks are
raw signed commits by the confirming admin's own keys (an insider with a valid admin key and a
patched client), and a compromised server's draft with a client's audit keys left out, or with a live
grant row left out of the plan altogether (refused: ``named_in_plan`` checks the plan against the grants
the whole audit chain, verified on the admin's machine, says the engineer holds).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from carry_harness import Tap, captured, grants_of, re_enrolled, state, tapped
from remote_admin_harness import Stop, post
from server_harness import Keyed, signing_key
from sqlalchemy import select, update

from vault.authority.confirm_requests import ConfirmCommit
from vault.authority.grant_signatures import grant_fields, grant_label
from vault.errors import IntegrityError, UntrustedRecord
from vault.records import AuditVerification
from vault.service.remote import RemoteVault
from vault.storage import models as m
from vault.transport.https_enrolment import EnrolledRecord

pytestmark = pytest.mark.usefixtures("cli_home")

TARGETS = ("aside1", "aside2", "aside3", "aside4")


@pytest.fixture(scope="module")
def world(module_team: Any, request: pytest.FixtureRequest) -> Keyed:
    for name in TARGETS:
        module_team.engineer(name)
    keyed: Keyed = request.getfixturevalue("keyed")
    return keyed


def cleared(world: Keyed, admin: RemoteVault, name: str, monkeypatch: pytest.MonkeyPatch) -> EnrolledRecord:
    """``name`` re-enrolled with acme and excl granted; excl's grant then revoked through the server and
    its revocation's columns cleared by a DBA (the row verifies; the audit log's ``revoke`` says no)."""
    record = re_enrolled(world, admin, name, monkeypatch)
    admin.grants.revoke(name, "excl")
    with world.store.transaction() as s:
        s.execute(
            update(m.Grant)
            .where(m.Grant.engineer_id == record.engineer_id)
            .values(revoked_at=None, revoked_by=None, revocation=None)
        )
    return record


def seals_of(world: Keyed, engineer_id: int) -> set[int]:
    """The clients with a client-key copy sealed to the engineer."""
    with world.store.read() as s:
        found = s.scalars(
            select(m.ClientKeySeal.client_id).where(
                m.ClientKeySeal.recipient_kind == "engineer", m.ClientKeySeal.recipient_id == engineer_id
            )
        )
        return set(found)


def test_a_revocation_cleared_in_the_database_is_set_aside_and_the_other_grants_carried(
    world: Keyed, admin: RemoteVault, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = "aside1"
    record = cleared(world, admin, name, monkeypatch)
    pending = admin.engineers.pending_confirmation(name)
    assert [g.client for g in pending.carried] == ["acme"]
    assert [(d.client, "audit log" in d.reason) for d in pending.dropped] == [("excl", True)]
    info = admin.engineers.confirm(name, record.fingerprint, shown=pending)
    assert info.status == "active"
    me = world.served.admin.keyholder.me().engineer_id
    acme, excl = grants_of(world, record.engineer_id)
    assert (acme.granted_by, acme.revoked_at) == (me, None)  # re-signed by the confirming admin
    assert excl.revoked_at is not None  # set aside: revoked, as in-process
    assert seals_of(world, record.engineer_id) == {acme.client_id}  # nothing sealed for excl
    assert world.served.admin.audit.verify().ok


def test_commits_that_set_aside_other_rows_than_the_drafted_ones_are_refused_with_nothing_written(
    world: Keyed, admin: RemoteVault, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = "aside2"
    record = cleared(world, admin, name, monkeypatch)
    commit = captured(admin, name, record.fingerprint)
    made = commit.carry
    assert made is not None
    acme, excl = grants_of(world, record.engineer_id)
    assert made.set_aside == (excl.id,) and [g for g, _ in made.signatures] == [acme.id]
    assert {c for c, _, _ in made.seals} == {acme.client_id}
    host = world.served.admin
    with world.store.read() as s:
        new_sealing = s.get(m.Engineer, record.engineer_id).sealing_public  # type: ignore[union-attr]
    assert new_sealing is not None
    excl_signed = signing_key(host).sign(grant_label(excl), *grant_fields(record.vault_id, excl, new_sealing))
    copy = made.seals[0]

    def carried(**changes: Any) -> ConfirmCommit:
        return dataclasses.replace(commit, carry=dataclasses.replace(made, **changes))

    for changed in (
        carried(set_aside=(excl.id, excl.id + 1000)),  # a row not drafted set aside as well
        carried(set_aside=(excl.id, excl.id)),  # the same row twice
        carried(signatures=(*made.signatures, (excl.id, excl_signed))),  # set aside and carried at once
        carried(set_aside=()),  # excl left out: neither carried nor set aside
        carried(seals=(*made.seals, (excl.client_id, copy[1], copy[2]))),  # set aside, its client still sealed
    ):
        before = state(world)
        answer = post(world, "engineers.confirm", changed, host)
        assert answer.status_code == 403, answer.text
        assert state(world) == before
    assert post(world, "engineers.confirm", commit, host).status_code == 200
    _, excl_after = grants_of(world, record.engineer_id)
    assert excl_after.revoked_at is not None and seals_of(world, record.engineer_id) == {acme.client_id}


def test_a_client_drafted_without_its_audit_keys_is_set_aside_not_carried(
    world: Keyed, admin: RemoteVault, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A compromised server leaves excl's audit keys out of the draft, so that no event of the log can
    be opened against its grant: the admin's machine no longer skips the check; no event vouches for
    the grant, so it is set aside (nothing sealed for excl) and acme is carried."""
    name = "aside3"
    record = re_enrolled(world, admin, name, monkeypatch)
    excl_id = grants_of(world, record.engineer_id)[1].client_id

    def no_audit_keys(pending: Any) -> Any:
        draft = pending.plan.draft
        clients = tuple(
            dataclasses.replace(c, audit_keys_blob=None) if c.client_id == excl_id else c for c in draft.clients
        )
        return dataclasses.replace(
            pending, plan=dataclasses.replace(pending.plan, draft=dataclasses.replace(draft, clients=clients))
        )

    keyholder = tapped(admin, Tap(admin.https, no_audit_keys))
    shown = keyholder.pending(name)
    assert [g.client for g in shown.carried] == ["acme"] and [d.client for d in shown.dropped] == ["excl"]
    tap = Tap(admin.https, no_audit_keys, keep=True)
    with pytest.raises(Stop):  # the commit kept, not sent
        tapped(admin, tap).confirm(name, record.fingerprint, None)
    made = tap.commit.carry
    assert made.set_aside == (grants_of(world, record.engineer_id)[1].id,)
    assert {c for c, _, _ in made.seals} == {grants_of(world, record.engineer_id)[0].client_id}


@pytest.mark.parametrize("left_out", ["excl's row", "every row"])
def test_a_plan_that_leaves_out_a_live_grant_is_refused_on_the_admins_machine(
    world: Keyed, admin: RemoteVault, monkeypatch: pytest.MonkeyPatch, left_out: str
) -> None:
    """A compromised server drafts the plan without excl's grant (consistently: not carried, not dropped,
    not in the draft), or with no row at all (no draft: a first enrolment's plan). The row would stay
    unrevoked and never be carried over; the chain verified on the admin's machine says the grant is live,
    so the pending read and the confirmation are refused, and no commit is sent."""
    name = "aside4"
    with world.store.read() as s:
        ready = s.scalars(select(m.Engineer.status).where(m.Engineer.name == name)).one() == "enrolled"
    record = None if ready else re_enrolled(world, admin, name, monkeypatch)
    fingerprint = record.fingerprint if record else admin.engineers.pending_confirmation(name).fingerprint
    with world.store.read() as s:
        engineer_id = s.scalars(select(m.Engineer.id).where(m.Engineer.name == name)).one()
    excl = grants_of(world, engineer_id)[1]

    def without(pending: Any) -> Any:
        plan, draft = pending.plan, pending.plan.draft
        if left_out == "every row":
            return dataclasses.replace(pending, plan=dataclasses.replace(plan, carried=(), dropped=(), draft=None))
        draft = dataclasses.replace(
            draft,
            resign=tuple(k for k in draft.resign if k.grant.id != excl.id),
            clients=tuple(c for c in draft.clients if c.client_id != excl.client_id),
        )
        carried = tuple(c for c in plan.carried if c.grant_id != excl.id)
        return dataclasses.replace(pending, plan=dataclasses.replace(plan, carried=carried, draft=draft))

    before = state(world)
    for step in ("pending", "confirm"):
        tap = Tap(admin.https, without)
        with pytest.raises(UntrustedRecord, match="leaves out a grant"):
            if step == "pending":
                tapped(admin, tap).pending(name)
            else:
                tapped(admin, tap).confirm(name, fingerprint, None)
        assert "engineers.confirm" not in tap.sent
    assert state(world) == before


def test_a_chain_that_does_not_verify_refuses_the_confirmation(
    world: Keyed, admin: RemoteVault, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The admin's machine cannot tell which grants are live when the chain it reads does not verify (a
    server cutting or rewriting it): the confirmation is refused with the break named, no commit sent."""
    name = "aside4"  # still waiting: every confirmation above was refused
    fingerprint = admin.engineers.pending_confirmation(name).fingerprint
    broken = AuditVerification(False, 3, 1, 3, "00" * 32, 2, "the hash does not match")
    audit: Any = admin.engineers.history.audit
    monkeypatch.setattr(audit, "verify_whole", lambda observe, since=None: broken)
    before = state(world)
    tap = Tap(admin.https)
    with pytest.raises(IntegrityError, match="does not verify at event 2") as refused:
        tapped(admin, tap).confirm(name, fingerprint, None)
    assert "audit verify" in (refused.value.hint or "")
    assert "engineers.confirm" not in tap.sent and state(world) == before
