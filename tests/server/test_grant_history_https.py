"""An admin's listing of every grant through the team server, confirmed against the chain verified on
their machine (``service/remote_grant_history.py``), on both engines.

The world: acme, bob granted it (live), carol granted it and revoked; the admin (``served.ADMIN``) on
a machine with no database. The listing through the server is the host's, state for state. The
attacks: a DBA clears carol's revocation in the database (both listings say ``unconfirmed``, never
``active``), or also deletes the ``revoke`` event (the chain is cut); a compromised server, re-signing
its answers, drops the ``revoke`` event from a page of the chain, turns it into a ``grant``, or cuts
the chain's tail before it (the head answered consistently, behind a head this machine verified):
none makes carol's grant ``active``. An engineer's listing asks for no chain. And the regression of
session 15's open finding: a client rotated through the server (its format-3 ``client-key-rotate``
event has public details) no longer makes its grants ``unconfirmed`` on the host, so the host's next
rotation seals the new key to the grantee.
"""

from __future__ import annotations

import dataclasses
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import pytest
from served import ADMIN, ADMIN_PASS, ServedTeam, ServedVault
from sqlalchemy import delete, select, update

from vault.authority.audit_requests import EventPage
from vault.authority.audit_verify_requests import ChainPoints
from vault.errors import AccessDenied
from vault.service import serverjoin
from vault.service.remote import RemoteVault
from vault.service.sessions import MemorySessionStore
from vault.storage import models as m
from vault.wire import codec
from vault.wire.httpsig_response import sign_response

POINTS, CHAIN = "/v1/audit/points", "/v1/audit/chain"
Change = Callable[[object], object]


@dataclass
class History:
    team: ServedTeam
    admin: RemoteVault
    bob: RemoteVault


@pytest.fixture
def history(served_vault: ServedVault) -> History:
    team, host = served_vault.team, served_vault.admin
    host.clients.add("acme", "Acme Ltd")
    host.secrets.add("acme/fw01", password="pw of acme/fw01")
    bob, _carol = team.engineer("bob"), team.engineer("carol")
    host.grants.grant("bob", "acme")
    host.grants.grant("carol", "acme")
    host.grants.revoke("carol", "acme")
    serverjoin.join(team.pin, host, ADMIN, ADMIN_PASS)
    team.passphrases[ADMIN] = ADMIN_PASS
    return History(team, team.unlocked(ADMIN), bob)


def listed(grants: list) -> list[tuple[str, str, str, str]]:  # type: ignore[type-arg]
    return [(g.engineer, g.client, g.granted_by, g.state) for g in grants]


def carol(grants: list) -> str:  # type: ignore[type-arg]
    [state] = [g.state for g in grants if g.engineer == "carol"]
    return str(state)


def event_count(team: ServedTeam) -> int:
    with team.server_store.read() as s:
        return len(list(s.scalars(select(m.AuditEvent.seq))))


def revoke_seq(team: ServedTeam) -> int:
    with team.server_store.read() as s:
        seq = s.scalar(select(m.AuditEvent.seq).where(m.AuditEvent.action == "revoke"))
    assert isinstance(seq, int)
    return seq


def clear_revocation(team: ServedTeam) -> None:
    """A DBA's work: carol's revoked row made to read as a live grant (its admin signature, which
    does not cover the revocation, still verifies)."""
    with team.server_store.transaction() as s:
        carol_id = s.scalar(select(m.Engineer.id).where(m.Engineer.name == "carol"))
        s.execute(
            update(m.Grant)
            .where(m.Grant.engineer_id == carol_id)
            .values(revoked_at=None, revoked_by=None, revocation=None)
        )


def test_an_admins_grant_list_through_the_server_is_the_hosts(history: History) -> None:
    team, admin = history.team, history.admin
    before = event_count(team)
    for filters in ({}, {"client": "acme"}, {"engineer": "carol"}, {"engineer": "bob", "client": "acme"}):
        assert listed(admin.grants.list(**filters)) == listed(team.admin.grants.list(**filters)), filters
    assert listed(admin.grants.list()) == [("bob", "acme", ADMIN, "active"), ("carol", "acme", ADMIN, "revoked")]
    assert event_count(team) == before  # a listing appends nothing, as in-process
    team.admin.grants.grant("carol", "acme")  # after the head this session verified: read from there on
    assert listed(admin.grants.list()) == listed(team.admin.grants.list())  # bob still backed: kept from before
    assert [g.state for g in admin.grants.list(engineer="carol")] == ["revoked", "active"]
    fresh = history.team.unlocked(ADMIN)
    measured = []
    for list_grants in (team.admin.grants.list, fresh.grants.list, fresh.grants.list):
        start = time.perf_counter()
        list_grants()
        measured.append((time.perf_counter() - start) * 1000)
    print("grants.list: host {:.1f} ms, through the server {:.1f} ms (whole chain), {:.1f} ms (from the head "
          "verified)".format(*measured))  # fmt: skip


def test_an_engineers_grant_list_asks_for_no_chain(history: History) -> None:
    """bob lists his own grants (no history: the state is his grant's); the chain's routes are never
    asked; the history's whole-chain read is refused to him on his machine as by the server (403)."""
    sent: list[str] = []
    inner = httpx.HTTPTransport(verify=ssl.create_default_context(cafile=str(history.team.pin.ca_file)))

    class Recording(httpx.BaseTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            sent.append(request.url.path)
            return inner.handle_request(request)

    bob = RemoteVault(history.team.pin, engineer="bob", sessions=MemorySessionStore(), clock=history.team.clock,
                      transport=Recording())  # fmt: skip
    bob.engineers.unlock("bob", history.team.passphrases["bob"])
    assert listed(bob.grants.list()) == [("bob", "acme", ADMIN, "active")]
    assert POINTS not in sent and CHAIN not in sent
    with pytest.raises(AccessDenied, match="not an admin"):
        bob.grants.history.confirmations({1})
    assert CHAIN not in sent


def test_a_revocation_cleared_by_a_dba_leaves_the_grant_unconfirmed(history: History) -> None:
    """The row says live; the verified chain's last word about carol and acme is the revoke."""
    team, admin = history.team, history.admin
    clear_revocation(team)
    assert carol(team.admin.grants.list()) == "unconfirmed"
    assert carol(admin.grants.list()) == "unconfirmed"
    assert carol(admin.grants.list(client="acme")) == "unconfirmed"
    assert [g.state for g in admin.grants.list(engineer="bob")] == ["active"]  # the chain backs bob's


def test_the_revoke_event_deleted_too_cuts_the_chain_and_confirms_nothing(history: History) -> None:
    team, admin = history.team, history.admin
    clear_revocation(team)
    with team.server_store.transaction() as s:
        s.execute(delete(m.AuditEvent).where(m.AuditEvent.seq == revoke_seq(team)))
    assert carol(team.admin.grants.list()) == "unconfirmed"
    assert {g.state for g in admin.grants.list()} == {"unconfirmed"}  # nothing after a break is placed
    assert not admin.audit.verify().ok


# --- a compromised server ------------------------------------------------------------------------------


class Rewriting(httpx.BaseTransport):
    """Every request to the server; the answers to the paths in ``changes`` changed and signed again
    with the server key (a compromised server), while ``changes`` holds them."""

    def __init__(self, team: ServedTeam) -> None:
        self.team = team
        self.inner = httpx.HTTPTransport(verify=ssl.create_default_context(cafile=str(team.pin.ca_file)))
        self.changes: dict[str, tuple[str, Change]] = {}

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if request.url.path not in self.changes or response.status_code != 200:
            return response
        operation, change = self.changes[request.url.path]
        response.read()
        opened = codec.open_envelope(response.content, f"{operation}.response", max_bytes=1 << 22)
        content = codec.envelope(f"{operation}.response", change(opened.body), opened.request_id)
        signed = sign_response(200, content, request.headers["signature"].removeprefix("cv="), self.team.server_key)
        return httpx.Response(200, headers={"content-type": "application/json", **signed}, content=content)


def _without(seq: int) -> Change:
    def change(page: object) -> object:
        assert isinstance(page, EventPage)
        return dataclasses.replace(page, events=tuple(e for e in page.events if e.seq != seq))

    return change


def _granted(seq: int) -> Change:
    def change(page: object) -> object:
        assert isinstance(page, EventPage)
        return dataclasses.replace(
            page, events=tuple(e._replace(action="grant") if e.seq == seq else e for e in page.events)
        )

    return change


def _head_before(team: ServedTeam, seq: int) -> Change:
    """The chain's points answered as if its head were the event before ``seq`` (a tail cut consistently)."""
    with team.server_store.read() as s:
        before = s.get(m.AuditEvent, seq - 1)
        assert before is not None
        head_hash = before.hash

    def change(points: object) -> object:
        assert isinstance(points, ChainPoints)
        kept = tuple(e for e in points.events if e.seq < seq)
        return dataclasses.replace(points, head_seq=seq - 1, head_hash=head_hash, newest=seq - 1, events=kept)

    return change


def _until_before(seq: int) -> Change:
    def change(page: object) -> object:
        assert isinstance(page, EventPage)
        return dataclasses.replace(page, events=tuple(e for e in page.events if e.seq < seq), more=False)

    return change


@pytest.mark.parametrize("attack", ["the revoke dropped", "the revoke turned into a grant", "the tail cut"])
def test_a_chain_changed_by_the_server_confirms_no_revoked_grant(history: History, attack: str) -> None:
    """The DBA clears carol's revocation and the server rewrites the chain it answers (the session's
    first listing, so the whole chain is read): carol's grant is never ``active`` on the admin's
    machine. The tail cut is consistent (points and pages alike); the head this session verified
    before (the next listing's anchor) is what it cannot hide."""
    team = history.team
    rewriting = Rewriting(team)
    admin = RemoteVault(team.pin, engineer=ADMIN, sessions=MemorySessionStore(), clock=team.clock,
                        transport=rewriting)  # fmt: skip
    admin.engineers.unlock(ADMIN, ADMIN_PASS)
    if attack == "the tail cut":
        assert carol(admin.grants.list()) == "revoked"  # honest: this session verifies the head once
    clear_revocation(team)
    seq = revoke_seq(team)
    if attack == "the revoke dropped":
        rewriting.changes[CHAIN] = ("audit.chain", _without(seq))
    elif attack == "the revoke turned into a grant":
        rewriting.changes[CHAIN] = ("audit.chain", _granted(seq))
    else:
        rewriting.changes[POINTS] = ("audit.points", _head_before(team, seq))
        rewriting.changes[CHAIN] = ("audit.chain", _until_before(seq))
    assert carol(admin.grants.list()) == "unconfirmed"
    assert [g.state for g in admin.grants.list(engineer="bob")] == ["unconfirmed"]  # nothing placed after a break
    rewriting.changes.clear()
    assert carol(admin.grants.list()) == "unconfirmed"  # the honest chain: the revoke is the last word


# --- the open finding of session 15 ------------------------------------------------------------------


def test_a_client_rotated_through_the_server_keeps_its_grants_confirmed(history: History) -> None:
    """The admin's session began before the host added ``late``; through the server the admin grants
    bob ``late`` and rotates its key (a format-3 ``client-key-rotate`` event, public details). Before
    the fix the host's grant ledger took that event for a doubt: bob's grant ``unconfirmed`` on the
    host, and the host's next rotation sealed bob no copy (``grant-refused``; his reveal NotFound)."""
    team, admin, bob = history.team, history.admin, history.bob
    admin.grants.list()  # the session has begun, and learned what there was
    team.admin.clients.add("late", "Late Ltd")
    team.admin.secrets.add("late/sw01", password="pw of late/sw01")
    admin.grants.grant("bob", "late")
    admin.keys.rotate_client("late")
    assert [g.state for g in team.admin.grants.list(client="late")] == ["active"]
    assert [g.state for g in admin.grants.list(client="late")] == ["active"]
    team.admin.keys.rotate_client("late")  # on the host: sealed to every grantee the verified log backs
    with team.server_store.read() as s:
        refused = s.scalars(select(m.AuditEvent.action).where(m.AuditEvent.action == "grant-refused")).all()
    assert refused == []
    assert team.unlocked("bob").checkouts.reveal("late/sw01", reason="T-5100 after the rotations") == "pw of late/sw01"
    assert bob.checkouts.reveal("late/sw01", reason="T-5101") == "pw of late/sw01"
