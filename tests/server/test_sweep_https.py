"""An admin's sweep of expired grants (``credvault maintain``) through the team server (both engines).

The admin works from a machine with no database (``RemoteVault.grants.maintain``): the server drafts
the grants past their end (nothing written), the admin's machine verifies each ledger and signs the
revocations, and the commit (dated at the draft's time) stores them and deletes the key copies no
live grant backs, with a format-3 ``grants-expired`` event. The attacks: an engineer's sweep (403,
nothing read), a commit whose draft went stale (a grant renewed since, or the draft too old: 409),
and a revocation not signed by the caller (400): each writes nothing.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from dataclasses import dataclass

import pytest
from served import ADMIN, ADMIN_PASS, ServedTeam, ServedVault
from sqlalchemy import delete, select

from vault.authority.grant_requests import SweepRequest, SweepSigned, revocation_fields
from vault.authority.grant_sweep_values import SweepCommit, SweepDrafted
from vault.authority.requests import Caller
from vault.crypto.labels import LABEL_SIG_GRANT_REVOCATION
from vault.errors import AccessDenied, ConcurrentChange, InvalidInput, NotFound
from vault.service import serverjoin
from vault.service.remote import RemoteVault
from vault.storage import models as m


@dataclass
class Sweeping:
    team: ServedTeam
    admin: RemoteVault
    bob: RemoteVault
    clock: object


@pytest.fixture
def sweeping(served_vault: ServedVault, clock) -> Sweeping:  # type: ignore[no-untyped-def]
    team, host = served_vault.team, served_vault.admin
    host.clients.add("acme", "Acme Ltd")
    host.secrets.add("acme/fw01", password="pw of acme/fw01")
    bob, _carol = team.engineer("bob"), team.engineer("carol")
    host.grants.grant("bob", "acme", until=clock() + dt.timedelta(hours=1))
    host.grants.grant("carol", "acme")
    serverjoin.join(team.pin, host, ADMIN, ADMIN_PASS)
    team.passphrases[ADMIN] = ADMIN_PASS
    return Sweeping(team, team.unlocked(ADMIN), bob, clock)


def later(sweeping: Sweeping, **delta: float) -> tuple[RemoteVault, RemoteVault]:
    """The clock moved on by ``delta`` (the sessions expire with it): the admin and bob unlocked again."""
    sweeping.clock.advance(**delta)  # type: ignore[attr-defined]
    team = sweeping.team
    team.admin.engineers.unlock(ADMIN, ADMIN_PASS)  # on the host
    return team.unlocked(ADMIN), team.unlocked("bob")


def state(team: ServedTeam) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]], int]:
    """Every grant row's revocation, every engineer's key copy, and the number of events."""
    with team.server_store.read() as s:
        grants = [(g.id, g.engineer_id, g.revoked_at, g.revoked_by, g.revocation) for g in s.scalars(select(m.Grant))]
        c = m.ClientKeySeal
        copies = list(s.execute(select(c.recipient_id, c.client_id, c.version).where(c.recipient_kind == "engineer")))
        events = len(list(s.scalars(select(m.AuditEvent.seq))))
    return grants, [tuple(r) for r in copies], events


def names(team: ServedTeam) -> dict[str, int]:
    with team.server_store.read() as s:
        return {e.name: e.id for e in s.scalars(select(m.Engineer))}


def test_an_admin_sweeps_expired_grants_through_the_server(sweeping: Sweeping) -> None:
    team = sweeping.team
    ids = names(team)
    admin, bob = later(sweeping, hours=2)
    before = state(team)
    assert {r[0] for r in before[1]} == {ids["bob"], ids["carol"]}
    with pytest.raises(AccessDenied, match="not an admin"):
        bob.grants.maintain()
    assert state(team) == before

    assert admin.grants.maintain() == 1  # bob's copy of acme's key
    grants, copies, events = state(team)
    bobs = [g for g in grants if g[1] == ids["bob"]]
    assert len(bobs) == 1 and bobs[0][3] == ids[ADMIN] and bobs[0][4] is not None  # revoked, signed
    assert [g for g in grants if g[1] != ids["bob"]] == [g for g in before[0] if g[1] != ids["bob"]]
    assert {r[0] for r in copies} == {ids["carol"]}
    assert events == before[2] + 1
    with team.server_store.read() as s:
        event = s.scalars(select(m.AuditEvent).order_by(m.AuditEvent.seq.desc())).first()
        assert event is not None and (event.action, event.engineer_id) == ("grants-expired", ids[ADMIN])
        assert event.request_id is not None and json.loads(event.details_json or "") == {
            "grants": 1, "sealed_copies_deleted": 1,
        }  # fmt: skip
    assert admin.grants.maintain() == 0  # nothing past its end: no event
    assert state(team)[2] == events
    assert team.admin.audit.verify().ok


def signed_commit(admin: RemoteVault, bob_id: int) -> SweepCommit:
    """A real draft from the server, and the commit the admin's key signs for it (not sent)."""
    me = admin.keyholder.me()
    request = SweepRequest(Caller(me.engineer_id, me.key_generation), me.org_signing_public)
    drafted = admin.https.call("grants.sweep_draft", request)
    assert isinstance(drafted, SweepDrafted) and len(drafted.draft.ledgers) == 1
    draft = drafted.draft
    [ledger] = draft.ledgers
    grant = ledger.grants[0]
    row = grant._replace(revoked_at=draft.revoked_at, revoked_by=draft.me.id)
    signature = admin.keyholder.sign(LABEL_SIG_GRANT_REVOCATION, *revocation_fields(draft.vault_id, row))
    signed = SweepSigned(((grant.id, signature),), ((bob_id, ledger.client_id),))
    return SweepCommit(request.caller, request.org_pin, request.action, draft.revoked_at, drafted.digest, signed)


def test_a_sweep_commit_not_drafted_writes_nothing(sweeping: Sweeping) -> None:
    team = sweeping.team
    ids = names(team)
    admin, _bob = later(sweeping, hours=2)
    commit = signed_commit(admin, ids["bob"])
    before = state(team)
    [(grant_id, _signature)] = commit.signed.revocations
    forged = dataclasses.replace(commit, signed=SweepSigned(((grant_id, bytes(64)),), commit.signed.drop))
    with pytest.raises(InvalidInput, match="not the caller's signature"):
        admin.https.call("grants.sweep", forged)
    assert state(team)[:2] == before[:2]
    with team.server_store.transaction() as s:  # a DBA deletes bob's copy since the draft: the ledger changed
        c = m.ClientKeySeal
        s.execute(delete(c).where(c.recipient_kind == "engineer", c.recipient_id == ids["bob"]))
    changed = state(team)
    with pytest.raises(ConcurrentChange):
        admin.https.call("grants.sweep", commit)
    assert state(team) == changed
    commit = signed_commit(admin, ids["bob"])  # drafted afresh, then sent too late
    admin, _bob = later(sweeping, minutes=10)
    with pytest.raises(ConcurrentChange):
        admin.https.call("grants.sweep", commit)
    assert state(team)[:2] == changed[:2]
    assert admin.grants.maintain() == 0  # drafted afresh: bob's grant revoked, no copy left to delete
    revoked = [g for g in state(team)[0] if g[1] == ids["bob"]]
    assert revoked[0][3] == ids[ADMIN] and revoked[0][4] is not None
    assert team.admin.audit.verify().ok


def actions_since(team: ServedTeam, count: int) -> list[str]:
    with team.server_store.read() as s:
        return [e.action for e in s.scalars(select(m.AuditEvent).order_by(m.AuditEvent.seq))][count:]


@pytest.mark.parametrize("write", ["client add", "grant", "revoke", "a grant refused"])
def test_an_admins_write_through_the_server_sweeps_expired_grants_first(sweeping: Sweeping, write: str) -> None:
    """As in-process (``GrantLedger.sweep`` before ``clients.add``, ``grant``, ``revoke``): bob's grant past
    its end is revoked under the admin's signature and his copy deleted, in a unit of its own committed
    before the write, even when the write is refused."""
    team = sweeping.team
    ids = names(team)
    admin, bob = later(sweeping, hours=2)
    before = state(team)
    with pytest.raises(AccessDenied):
        bob.clients.add("beta", "Beta GmbH")  # an engineer: refused at the sweep's draft, nothing written
    assert state(team) == before
    if write == "client add":
        admin.clients.add("beta", "Beta GmbH")
    elif write == "grant":
        admin.grants.grant("bob", "acme")  # bob's expired grant swept, then a new one
    elif write == "revoke":
        admin.grants.revoke("carol", "acme")
    else:
        with pytest.raises(NotFound):
            admin.grants.grant("nobody", "acme")
    done = {"client add": ["client-create"], "grant": ["grant"], "revoke": ["revoke"], "a grant refused": []}
    assert actions_since(team, before[2]) == ["grants-expired", *done[write]]
    revoked = [g for g in state(team)[0] if g[1] == ids["bob"] and g[2] is not None]
    assert len(revoked) == 1 and revoked[0][3] == ids[ADMIN] and revoked[0][4] is not None
    assert team.admin.audit.verify().ok
