"""An admin's root rotation through the team server, on a layered vault (both engines).

The admin works from a machine with no database (``RemoteVault``): the root rotation's keyholder
verifies the server's draft (its own row, the root bundle sealed to it, every certificate) and each
page of clients (every key version's record and recovery copy), makes the new bundle, the new
organisation key, the certificates and the re-sealed copies on the admin's machine, and commits them
at once. After it, an engineer's checkouts still verify (their certificate re-issued, reached from
their pin by the signed link), the admin rotates a client's key through the server with the new
recovery key, and ``audit verify`` accepts the chain.

The attacks are raw requests with valid keys: an engineer asking for the draft, a page or the commit;
an admin's commit naming another caller; and a commit that is not what was drafted: a certificate
forged or left out, an organisation key not signed by the old one, a draft or a page changed since
(409), a page's row left out or added, a page left out or added, the same commit again (signed anew:
409; its signed bytes again: 401). Each is refused with nothing written.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from served import ADMIN, ADMIN_PASS, ServedTeam, ServedVault
from sqlalchemy import func, select, update

from vault.authority.certificates import certificate_fields
from vault.authority.engineers import engineer_row
from vault.authority.requests import Caller
from vault.authority.root_draft_values import (
    RootCommit,
    RootDrafted,
    RootPageCommit,
    RootPageDrafted,
    RootPageRequest,
)
from vault.authority.root_rotation_requests import Resealed, RootPlan, RootRotated, RootRotateRequest
from vault.crypto import serverkey, signing
from vault.crypto.labels import LABEL_SIG_ENGINEER
from vault.errors import AccessDenied, ConcurrentChange, IntegrityError, VaultError
from vault.keyholder.root_rotation import RootHands
from vault.service import serverjoin
from vault.service.remote import RemoteVault
from vault.service.remote_root import RemoteRootKeys
from vault.service.sessions import MemorySessionStore
from vault.storage import models as m

PASSWORDS = {"acme/fw01": "acme fw pw 1", "acme/sw02": "acme sw pw 2", "globex/mail": "globex mail pw"}


@dataclass
class Rooting:
    team: ServedTeam
    admin: RemoteVault  # the admin on their own machine: no database, no key file
    bob: RemoteVault  # an engineer granted acme


@pytest.fixture
def rooting(served_vault: ServedVault) -> Rooting:
    team, host = served_vault.team, served_vault.admin
    for slug in ("acme", "globex"):
        host.clients.add(slug, slug.title())
    for ref, password in PASSWORDS.items():
        host.secrets.add(ref, password=password)
    bob = team.engineer("bob")
    host.grants.grant("bob", "acme")
    serverjoin.join(team.pin, host, ADMIN, ADMIN_PASS)  # the admin's key record, copied once
    team.passphrases[ADMIN] = ADMIN_PASS
    return Rooting(team, team.unlocked(ADMIN), bob)


def state(team: ServedTeam) -> dict[str, Any]:
    """Every row a root rotation writes or changes, and the number of events."""
    with team.server_store.read() as s:

        def rows(model: Any, *columns: str) -> list[tuple[Any, ...]]:
            return [tuple(getattr(r, c) for c in columns) for r in s.scalars(select(model))]

        return {
            "root_keys": sorted(rows(m.RootKey, "version", "recovery_public", "state")),
            "root_seals": sorted(rows(m.RootSeal, "root_version", "engineer_id", "blob")),
            "org_keys": sorted(rows(m.OrgKey, "version", "public", "signature", "share_signature")),
            "engineers": sorted(rows(m.Engineer, "id", "certificate")),
            "engineer_keys": sorted(rows(m.EngineerKey, "engineer_id", "generation", "certificate")),
            "seals": sorted(rows(m.ClientKeySeal, "client_id", "version", "recipient_kind", "recipient_id", "blob")),
            "clients": sorted(rows(m.Client, "id", "slug_tag")),
            "server_keys": sorted(rows(m.ServerKey, "version", "certificate")),
            "info": rows(m.VaultInfo, "org_signing_public", "backup_key_seal"),
            "events": s.scalar(select(func.count()).select_from(m.AuditEvent)),
        }


@dataclass
class Made:
    """A root rotation made on the admin's machine from raw drafts, not yet committed."""

    request: RootRotateRequest
    drafted: RootDrafted
    plan: RootPlan
    pages: list[tuple[RootPageDrafted, Resealed]]

    def commit(self, **changes: Any) -> RootCommit:
        pages = tuple(RootPageCommit(p.digest, resealed) for p, resealed in self.pages)
        return dataclasses.replace(RootCommit.of(self.request, self.drafted.digest, self.plan, pages), **changes)


def made(admin: RemoteVault, clock: Callable[[], dt.datetime]) -> Made:
    me = admin.keyholder.me()
    request = RootRotateRequest(Caller(me.engineer_id, me.key_generation), me.org_signing_public, None)
    drafted = admin.https.call("keys.root_draft", request)
    rotation = RootHands(RemoteRootKeys(admin.keyholder), clock, None)  # type: ignore[arg-type]
    plan = rotation.plan(drafted.draft)
    pages, after = [], 0
    while True:
        page = admin.https.call("keys.root_page", RootPageRequest(request.caller, request.org_pin, after))
        if page.page is None:
            return Made(request, drafted, plan, pages)
        pages.append((page, rotation.reseal(page.page)))
        after = page.page.clients[-1][0]


def test_an_admin_rotates_the_root_through_the_server(rooting: Rooting) -> None:
    team, admin, bob = rooting.team, rooting.admin, rooting.bob
    before = state(team)

    result = admin.keys.rotate_root(shares=(2, 3))

    assert (result.root_version, result.org_version, result.clients, result.admins) == (2, 2, 2, (ADMIN,))
    assert len(result.shares) == 3 and result.threshold == 2 and result.refused == ()
    after = state(team)
    assert [(v, st) for v, _p, st in after["root_keys"]] == [(1, "destroyed"), (2, "active")]
    assert {(kind, rid) for _c, _v, kind, rid, _b in after["seals"] if kind == "recovery"} == {("recovery", 2)}
    assert len(after["org_keys"]) == 2 and after["info"][0][0] == after["org_keys"][1][1]
    assert all(a != b for a, b in zip(after["engineers"], before["engineers"], strict=True))  # re-certified
    assert after["server_keys"] != before["server_keys"]  # the server's key re-certified too
    with team.server_store.read() as s:
        event = s.scalars(select(m.AuditEvent).order_by(m.AuditEvent.seq.desc())).first()
        assert event is not None and event.action == "root-key-rotate" and event.request_id is not None
        assert event.engineer_id == admin.keyholder.me().engineer_id
    assert after["events"] == before["events"] + 1
    assert bob.checkouts.checkout("acme/fw01", reason="T-1 after the root rotation").value == "acme fw pw 1"
    bob.checkouts.checkin("acme/fw01")
    rotated = team.unlocked(ADMIN).keys.rotate_client("globex")  # opens the old key with the new recovery key
    assert (rotated.client, rotated.to_version, rotated.state) == ("globex", 2, "done")
    assert team.admin.audit.verify().ok


def test_an_engineer_gets_no_draft_no_page_and_writes_nothing(rooting: Rooting) -> None:
    team, admin, bob = rooting.team, rooting.admin, rooting.bob
    honest = made(admin, team.clock)  # the admin's, for bob to post
    before = state(team)
    me = bob.keyholder.me()
    caller, pin = Caller(me.engineer_id, me.key_generation), me.org_signing_public
    for name, body in (
        ("keys.root_draft", RootRotateRequest(caller, pin, None)),
        ("keys.root_page", RootPageRequest(caller, pin, 0)),
        ("keys.rotate_root", honest.commit(caller=caller)),
    ):
        with pytest.raises(AccessDenied, match="not an admin"):
            bob.https.call(name, body)
    with pytest.raises(AccessDenied, match="not an admin"):  # the admin's commit posted by bob
        bob.https.call("keys.rotate_root", honest.commit())
    with pytest.raises(AccessDenied, match="another caller"):  # the admin's request naming bob
        admin.https.call("keys.rotate_root", honest.commit(caller=caller))
    assert state(team) == before


def _forged_certificate(honest: Made) -> RootCommit:
    """Bob's certificate made by a key that is not the new organisation key."""
    forger = signing.SigningKey.generate()
    certificates = tuple(
        (eid, cert if eid == honest.drafted.draft.identity.me.id else forger.sign(LABEL_SIG_ENGINEER, b"x"))
        for eid, cert in honest.plan.certificates
    )
    return honest.commit(plan=dataclasses.replace(honest.plan, certificates=certificates))


def _left_out(honest: Made) -> RootCommit:
    """Bob's certificate left out (he would be locked out under the new key)."""
    me = honest.drafted.draft.identity.me.id
    kept = tuple(c for c in honest.plan.certificates if c[0] == me)
    return honest.commit(plan=dataclasses.replace(honest.plan, certificates=kept))


def _forged_key_certificate(honest: Made) -> RootCommit:
    """A key generation's certificate made by another key (an old generation's signature no longer checks)."""
    forger = signing.SigningKey.generate()
    keys = tuple((e, g, forger.sign(LABEL_SIG_ENGINEER, b"x")) for e, g, _c in honest.plan.key_certificates)
    return honest.commit(plan=dataclasses.replace(honest.plan, key_certificates=keys))


def _forged_server_certificate(honest: Made) -> RootCommit:
    """The server key certified by another key than the new organisation key."""
    forger = signing.SigningKey.generate()
    servers = tuple((v, forger.sign(LABEL_SIG_ENGINEER, b"x")) for v, _c in honest.plan.server_certificates)
    return honest.commit(plan=dataclasses.replace(honest.plan, server_certificates=servers))


def _sealed_to_an_engineer(honest: Made) -> RootCommit:
    """The new bundle sealed to an engineer who is not an admin as well."""
    bob = next(row.id for row in honest.drafted.draft.engineers if row.name == "bob")
    seals = (*honest.plan.root_seals, (bob, honest.plan.root_seals[0][1]))
    return honest.commit(plan=dataclasses.replace(honest.plan, root_seals=seals))


def _forged_share_policy(honest: Made) -> RootCommit:
    """A recovery-share policy the new organisation key did not sign."""
    forger = signing.SigningKey.generate()
    return honest.commit(plan=dataclasses.replace(honest.plan, share_policy=(2, 3, forger.sign(b"credvault/x"))))


def _forged_org_key(honest: Made) -> RootCommit:
    """A new organisation key whose link no old organisation key signed."""
    forger = signing.SigningKey.generate()
    return honest.commit(plan=dataclasses.replace(honest.plan, org_signature=forger.sign(b"credvault/x", b"y")))


def _row_left_out(honest: Made) -> RootCommit:
    page, resealed = honest.pages[0]
    changed = dataclasses.replace(resealed, seals=resealed.seals[1:])
    return honest.commit(pages=(RootPageCommit(page.digest, changed),))


def _row_added(honest: Made) -> RootCommit:
    page, resealed = honest.pages[0]
    client, version, blob = resealed.seals[0]
    changed = dataclasses.replace(resealed, seals=(*resealed.seals, (client, version + 7, blob)))
    return honest.commit(pages=(RootPageCommit(page.digest, changed),))


def _page_left_out(honest: Made) -> RootCommit:
    return honest.commit(pages=())


def _page_added(honest: Made) -> RootCommit:
    page, resealed = honest.pages[0]
    return honest.commit(pages=(RootPageCommit(page.digest, resealed),) * 2)


ATTACKS: list[tuple[Callable[[Made], RootCommit], type[VaultError], str]] = [
    (_forged_certificate, AccessDenied, "not made for the rows drafted"),
    (_left_out, AccessDenied, "not made for the rows drafted"),
    (_forged_key_certificate, AccessDenied, "not made for the rows drafted"),
    (_forged_server_certificate, AccessDenied, "not made for the rows drafted"),
    (_sealed_to_an_engineer, AccessDenied, "not made for the rows drafted"),
    (_forged_share_policy, AccessDenied, "not made for the rows drafted"),
    (_forged_org_key, AccessDenied, "not made for the rows drafted"),
    (_row_left_out, AccessDenied, "not the rows of the page"),
    (_row_added, AccessDenied, "not the rows of the page"),
    (_page_left_out, ConcurrentChange, "stale"),
    (_page_added, ConcurrentChange, "stale"),
]


@pytest.mark.parametrize("attack", ATTACKS, ids=lambda a: a[0].__name__.strip("_"))
def test_a_commit_that_is_not_what_was_drafted_writes_nothing(rooting: Rooting, attack: Any) -> None:
    team, admin = rooting.team, rooting.admin
    tamper, error, message = attack
    honest = made(admin, team.clock)
    assert len(honest.pages) == 1 and len(honest.pages[0][1].seals) == 2
    assert honest.plan.key_certificates and honest.plan.server_certificates  # rows the attacks change
    before = state(team)
    with pytest.raises(error, match=message):
        admin.https.call("keys.rotate_root", tamper(honest))
    assert state(team) == before
    assert isinstance(admin.https.call("keys.rotate_root", honest.commit()), RootRotated)  # the honest one commits


@pytest.mark.parametrize("change", ["draft", "page", "client"])
def test_a_draft_changed_before_the_commit_is_409_and_writes_nothing(rooting: Rooting, change: str) -> None:
    """A change between the drafts and the commit: a DBA's that leaves every row's id as it was (the
    vault backup key's sealed copy in the plan's draft, a client key's state in a page), or a client
    added on the host."""
    team, admin = rooting.team, rooting.admin
    honest = made(admin, team.clock)
    if change == "client":
        team.admin.clients.add("initech", "Initech")
    with team.server_store.transaction() as s:
        if change == "draft":
            s.execute(update(m.VaultInfo).values(backup_key_seal=b"\x01" * 90))
        elif change == "page":
            s.execute(update(m.ClientKey).where(m.ClientKey.version == 1).values(state="retired"))
    before = state(team)
    with pytest.raises(ConcurrentChange, match="stale"):
        admin.https.call("keys.rotate_root", honest.commit())
    assert state(team) == before


def test_the_same_commit_again_is_refused_and_writes_nothing(rooting: Rooting) -> None:
    team, admin = rooting.team, rooting.admin
    honest = made(admin, team.clock)
    admin.https.call("keys.rotate_root", honest.commit())
    before = state(team)
    with pytest.raises(ConcurrentChange, match="stale"):  # the root it was drafted for is destroyed
        admin.https.call("keys.rotate_root", honest.commit())
    assert state(team) == before


class Kept(httpx.BaseTransport):
    """An httpx transport that keeps each request and notes its read timeout, by path."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner, self.read, self.sent = inner, dict[str, float](), dict[str, httpx.Request]()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.read[request.url.path] = request.extensions["timeout"]["read"]
        self.sent[request.url.path] = request
        return self.inner.handle_request(request)


def test_the_commit_is_awaited_longer_and_its_replay_is_refused(rooting: Rooting, served_vault: ServedVault) -> None:
    """The commit's one unit re-seals every client: its answer is awaited up to 600 s, not the client's
    10 s. Its signed bytes posted again are refused as replayed (401), nothing written."""
    team = rooting.team
    verify = ssl.create_default_context(cafile=str(served_vault.ca.ca_file))
    kept = Kept(httpx.HTTPTransport(verify=verify))
    admin = RemoteVault(team.pin, engineer=ADMIN, sessions=MemorySessionStore(), clock=team.clock, transport=kept)
    admin.engineers.unlock(ADMIN, ADMIN_PASS)
    assert admin.keys.rotate_root().root_version == 2
    assert kept.read["/v1/keys/rotate_root"] == 600.0
    assert kept.read["/v1/keys/root_draft"] == kept.read["/v1/keys/root_page"] == 10.0
    before = state(team)
    commit = kept.sent["/v1/keys/rotate_root"]
    with httpx.Client(verify=verify) as client:
        again = client.post(commit.url, content=commit.content, headers=dict(commit.headers))
    assert again.status_code == 401 and again.json()["code"] == "replayed"
    assert state(team) == before
    admin.close()


# -- C82: the roster is what the audit chain, verified on the admin's machine, vouches for -------------


def _seed(team: ServedTeam) -> signing.SigningKey:
    """The current organisation seed, as a holder of it who is not an admin has it (a demoted admin, a
    copy of a bundle): the host's copy is the same."""
    with team.admin.store.transaction() as s:
        return signing.SigningKey(team.admin.keyholder.root_bundle(s).org.seed)


def _id(team: ServedTeam, name: str) -> int:
    with team.server_store.read() as s:
        return int(s.scalars(select(m.Engineer.id).where(m.Engineer.name == name)).one())


def test_an_engineer_raised_to_admin_with_the_seed_gets_no_new_root(rooting: Rooting) -> None:
    """A holder of the organisation seed raises bob to admin and signs his row again (one UPDATE by a DBA
    ally): the server's roster has only signatures to go by and shows him as an admin. The chain never
    made him one, so the admin's machine leaves his row out, names it, and seals the new bundle to no
    one but the admin; the row keeps the old key's certificate, which the new key does not vouch for."""
    team, admin = rooting.team, rooting.admin
    bob_id, vault_id, seed = _id(team, "bob"), admin.keyholder.me().vault_id, _seed(team)
    with team.server_store.transaction() as s:
        row = s.get(m.Engineer, bob_id)
        assert row is not None
        raised = engineer_row(row)._replace(role="admin")
        planted = seed.sign(LABEL_SIG_ENGINEER, *certificate_fields(vault_id, raised))
        s.execute(update(m.Engineer).where(m.Engineer.id == bob_id).values(role="admin", certificate=planted))
    drafted = admin.https.call("keys.root_draft", RootRotateRequest(_caller(admin), _pin(admin), None))
    assert any(e.id == bob_id and e.role == "admin" for e in drafted.draft.engineers)  # the server would carry it

    result = admin.keys.rotate_root()

    assert result.admins == (ADMIN,) and any("'bob'" in entry and "vouch" in entry for entry in result.refused)
    with team.server_store.read() as s:
        assert [x.engineer_id for x in s.scalars(select(m.RootSeal))] == [_id(team, ADMIN)]
        bob = s.get(m.Engineer, bob_id)
        assert bob is not None and bob.certificate == planted  # not re-issued under the new key
        event = s.scalars(select(m.AuditEvent).order_by(m.AuditEvent.seq.desc())).first()
        assert event is not None and event.action == "root-key-rotate"
        assert json.loads(event.details_json or "{}").get("refused") == 1  # the row left out, on record
    assert team.admin.audit.verify().ok


def test_a_server_key_planted_with_the_seed_is_not_carried_over(rooting: Rooting) -> None:
    """A server key of the seed holder's own, certified with the seed: no ``server-key-certify`` event of
    the chain names it, so the new organisation key does not certify it (it could sign the server's
    answers); the real server key is re-certified."""
    team, admin = rooting.team, rooting.admin
    vault_id, planted, at = admin.keyholder.me().vault_id, signing.SigningKey.generate(), int(team.clock().timestamp())
    certificate = serverkey.certify(_seed(team), vault_id, 7, planted.public, at)
    with team.server_store.transaction() as s:
        s.add(m.ServerKey(version=7, signing_public=planted.public, certified_at=at, state="retired",
                          certificate=certificate))  # fmt: skip
    before = state(team)["server_keys"]

    result = admin.keys.rotate_root()

    assert any("server key 7" in entry for entry in result.refused)
    after = dict(state(team)["server_keys"])
    assert after[7] == dict(before)[7] and after[1] != dict(before)[1]


def test_a_chain_that_does_not_verify_refuses_the_root_rotation_before_any_draft(rooting: Rooting) -> None:
    team, admin = rooting.team, rooting.admin
    with team.server_store.transaction() as s:
        s.execute(update(m.AuditEvent).where(m.AuditEvent.seq == 2).values(at_us=m.AuditEvent.at_us + 1))
    sent: list[str] = []
    admin.https.client.event_hooks["request"].append(lambda request: sent.append(request.url.path))
    before = state(team)
    with pytest.raises(IntegrityError, match="does not verify"):
        admin.keys.rotate_root()
    assert state(team) == before and "/v1/keys/root_draft" not in sent


def test_a_row_left_out_must_be_named_and_one_named_is_accepted(rooting: Rooting) -> None:
    """The server cannot tell which rows the chain vouches for, so it takes a plan that certifies some
    of the drafted rows, but only with a refusal for each left out: the event counts them."""
    team, admin = rooting.team, rooting.admin
    honest = made(admin, team.clock)
    me = honest.drafted.draft.identity.me.id
    kept = tuple(c for c in honest.plan.certificates if c[0] == me)
    unnamed = dataclasses.replace(honest.plan, certificates=kept)
    before = state(team)
    with pytest.raises(AccessDenied, match="not made for the rows drafted"):
        admin.https.call("keys.rotate_root", honest.commit(plan=unnamed))
    assert state(team) == before
    named = dataclasses.replace(unnamed, refused=(*honest.plan.refused, "the certificate of engineer 'bob'"))
    answer = admin.https.call("keys.rotate_root", honest.commit(plan=named))
    assert isinstance(answer, RootRotated) and "the certificate of engineer 'bob'" in answer.refused


def _caller(admin: RemoteVault) -> Caller:
    me = admin.keyholder.me()
    return Caller(me.engineer_id, me.key_generation)


def _pin(admin: RemoteVault) -> bytes:
    return bytes(admin.keyholder.me().org_signing_public)


class _Counting:
    """``RemoteAudit.verify_whole`` with what each call started from and how many events it checked."""

    def __init__(self, audit: Any) -> None:
        self.audit, self.calls = audit, list[tuple[Any, int]]()

    def verify_whole(self, observe: Any, *, since: Any = None) -> Any:
        check = self.audit.verify_whole(observe, since=since)
        self.calls.append((since, check.checked))
        return check


def test_the_chain_is_verified_whole_once_a_session_and_a_cut_tail_is_refused(rooting: Rooting) -> None:
    """A second root rotation on the same ``RemoteVault`` (an agent's session) verifies only the events
    since the head it verified; a DBA who then deletes the chain's last event gets the next refused."""
    team, admin = rooting.team, rooting.admin
    counting = _Counting(admin.audit)
    admin.keys.root.chain.chain = counting
    admin.keys.rotate_root()
    admin.keys.rotate_root()
    (first, whole), (since, checked) = counting.calls
    assert first is None and whole > 10 and since is not None and checked <= 3
    with team.server_store.transaction() as s:
        last = s.scalars(select(m.AuditEvent).order_by(m.AuditEvent.seq.desc())).first()
        assert last is not None and last.action == "root-key-rotate"
        s.delete(last)
    before = state(team)
    with pytest.raises(IntegrityError, match="does not verify"):
        admin.keys.rotate_root()
    assert state(team) == before
