"""An admin's removal through the team server (issue 14; docs/server.md, session 17, helper I), both engines.

``root-admin`` works from a machine with no database (``RemoteVault``) and removes ``admin2``, who
signed a client's key versions and grants: their records are adopted, their grants revoked, their keys
destroyed, every client's key rotated and the root key (recovery key and organisation key) rotated in
the removal's own unit, the new bundle sealed only to the admins left. The roster of that rotation is
what the audit chain verified on the admin's machine vouches for.

The attacks are raw signed requests by insiders with valid keys, each ending with nothing written
(every row count, every row of the tables a removal changes in place, the audit head): the removed
admin kept in the new root seals, or certified as an active admin under the new key; the root rotation
left out; a certificate in the plan not made by the new organisation key; the commit sent by the
admin removed, or by an engineer; a stale draft (409); the same signed bytes again (401) and the same
body anew (400). And the removed admin's attacks with the organisation seed they still hold, which the
chain verified on the admin's machine does not vouch for: another admin's row given their sealing key,
an engineer raised to admin, a server key of their own, an admin's row rewritten as an engineer's; a
compromised server's root draft showing the removed admin active; a chain that does not verify.
"""

from __future__ import annotations

import dataclasses
import json
import ssl
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from remote_admin_harness import Stop, stored_state
from served import ADMIN, ADMIN_PASS, ServedTeam, ServedVault
from sqlalchemy import select, update

from vault.authority.certificates import certificate_fields
from vault.authority.engineers import engineer_row
from vault.authority.removal_draft_values import RemovalCommit, RemovalRoot
from vault.crypto import sealing, serverkey, signing
from vault.crypto.labels import LABEL_SIG_ENGINEER
from vault.errors import AccessDenied, ConcurrentChange, IntegrityError, InvalidInput, Unauthenticated, UntrustedRecord
from vault.service.remote import RemoteVault
from vault.service.remote_engineers import RemoteEngineerWrites
from vault.service.sessions import MemorySessionStore
from vault.storage import models as m

REASON = "T-1 an admin's removal through the server"
IN_PLACE = (
    "engineers", "engineer_keys", "grants", "client_keys", "client_key_seals", "clients", "rotations",
    "root_keys", "root_seals", "org_keys", "server_keys", "vault_info",
)  # fmt: skip


@dataclass
class Removing:
    team: ServedTeam
    url: str
    admin: RemoteVault  # root-admin on a machine with no database
    admin2: RemoteVault  # the admin removed: signed globex's key, acme's second key and alice's grants
    alice: RemoteVault


@pytest.fixture
def removing(served_vault: ServedVault) -> Removing:
    team = served_vault.team
    admin2 = team.engineer("admin2", role="admin")
    admin2.clients.add("globex", "Globex")
    admin2.secrets.add("globex/x", password="globex-pw")
    team.admin.clients.add("acme", "Acme")
    team.admin.secrets.add("acme/y", password="acme-pw")
    alice = team.engineer("alice")
    admin2.grants.grant("alice", "globex")
    admin2.grants.grant("alice", "acme")
    admin2.keys.rotate_client("acme")
    return Removing(team, served_vault.url, team.remote(ADMIN), admin2, alice)


def state(r: Removing) -> dict[str, object]:
    """Every row count but failed authentications' (a replay's 401 counts one), and every row changed in place."""
    found = stored_state(r.url, IN_PLACE)
    found.pop("auth_failures")
    return found


class _Capturing:
    """The admin's ``HttpsTransport``, the commit kept and not sent."""

    def __init__(self, https: Any) -> None:
        self.https, self.commit = https, None

    def call(self, name: str, body: object, request_id: bytes | None = None) -> object:
        if name == "engineers.remove":
            self.commit = body
            raise Stop
        return self.https.call(name, body, request_id)


def captured(r: Removing) -> tuple[RemovalCommit, Any]:
    """The commit of admin2's removal as root-admin's machine makes it, and its hands (the new bundle)."""
    capture = _Capturing(r.admin.https)
    writes = RemoteEngineerWrites(r.admin.keyholder, capture, r.admin.keyholder.clock, r.admin.audit)  # type: ignore[arg-type]
    with pytest.raises(Stop):
        writes.remove("admin2")
    assert isinstance(capture.commit, RemovalCommit) and isinstance(capture.commit.root, RemovalRoot)
    return capture.commit, writes.transport.admin_hands


def with_root(commit: RemovalCommit, **changes: Any) -> RemovalCommit:
    """``commit`` with its root rotation changed."""
    assert commit.root is not None
    return dataclasses.replace(commit, root=dataclasses.replace(commit.root, **changes))


def _id(r: Removing, name: str) -> int:
    with r.team.server_store.read() as s:
        return int(s.scalars(select(m.Engineer.id).where(m.Engineer.name == name)).one())


def test_an_admin_removes_an_admin_through_the_server(removing: Removing) -> None:
    r = removing
    admin2_id = _id(r, "admin2")

    at_risk, rotations = r.admin.engineers.remove("admin2")

    assert at_risk == []
    assert sorted((x.client, x.to_version, x.state) for x in rotations) == [("acme", 3, "done"), ("globex", 2, "done")]
    root = r.admin.last_root_rotation
    assert root is not None and (root.root_version, root.org_version, root.admins) == (2, 2, (ADMIN,))
    with r.team.server_store.read() as s:
        assert [(k.version, k.state) for k in s.scalars(select(m.RootKey).order_by(m.RootKey.version))] == [
            (1, "destroyed"), (2, "active"),
        ]  # fmt: skip
        assert [x.engineer_id for x in s.scalars(select(m.RootSeal))] == [_id(r, ADMIN)]
        row = s.get(m.Engineer, admin2_id)
        assert row is not None and row.status == "disabled" and row.key_record is None
        live = s.scalars(select(m.Grant).where(m.Grant.revoked_at.is_(None))).all()
        assert live and admin2_id not in {g.granted_by for g in live}
        keys = s.scalars(select(m.ClientKey).where(m.ClientKey.state != "destroyed"))
        assert admin2_id not in {k.signed_by for k in keys}
        events = s.scalars(select(m.AuditEvent).order_by(m.AuditEvent.seq.desc()).limit(8)).all()
        removal = [e for e in events if e.action in ("root-key-rotate", "engineer-remove")]
        assert [e.action for e in removal] == ["engineer-remove", "root-key-rotate"]
        assert len({e.request_id for e in removal}) == 1 and removal[0].request_id is not None  # one request
    for vault in (r.alice, r.team.unlocked("alice")):
        assert vault.checkouts.reveal("globex/x", reason=REASON) == "globex-pw"
        assert vault.checkouts.reveal("acme/y", reason=REASON) == "acme-pw"
    with pytest.raises(Unauthenticated):
        r.admin2.clients.list()
    assert r.admin.audit.verify().ok and r.team.admin.audit.verify().ok
    assert r.admin.keys.rotate_client("acme").to_version == 4  # the new recovery key opens acme's key


def test_the_removed_admin_kept_in_the_new_root_or_roster_is_refused(removing: Removing) -> None:
    r = removing
    commit, hands = captured(r)
    root, admin2_id = commit.root, _id(r, "admin2")
    assert root is not None
    new = hands.rotation.new
    plan = root.plan
    drafted = {row.id: row for row in hands_draft(r, commit).engineers}
    active = drafted[admin2_id]._replace(status="active")
    vault_id = r.admin.keyholder.me().vault_id
    as_active = new.org.sign(LABEL_SIG_ENGINEER, *certificate_fields(vault_id, active))
    sealed = next(blob for eid, blob in plan.root_seals if eid == _id(r, ADMIN))
    before = state(r)
    for changed in (
        dataclasses.replace(plan, root_seals=(*plan.root_seals, (admin2_id, sealed))),
        dataclasses.replace(
            plan, certificates=tuple((e, as_active if e == admin2_id else c) for e, c in plan.certificates)
        ),
    ):
        with pytest.raises(AccessDenied, match="not made for the rows drafted"):
            r.admin.https.call("engineers.remove", with_root(commit, plan=changed))
    assert state(r) == before


def hands_draft(r: Removing, commit: RemovalCommit) -> Any:
    """The root draft the server answers for ``commit`` (the removal's writes made and rolled back)."""
    return r.admin.https.call("engineers.remove_root_draft", dataclasses.replace(commit, root=None)).root.draft


def test_the_root_rotation_left_out_or_forged_is_refused(removing: Removing) -> None:
    r = removing
    commit, _hands = captured(r)
    root = commit.root
    assert root is not None
    forger = signing.SigningKey.generate()
    forged = tuple((e, forger.sign(LABEL_SIG_ENGINEER, b"x")) for e, _c in root.plan.certificates)
    before = state(r)
    with pytest.raises(AccessDenied):  # no root rotation
        r.admin.https.call("engineers.remove", dataclasses.replace(commit, root=None))
    with pytest.raises(AccessDenied, match="not made for the rows drafted"):  # a certificate not the new key's
        forged_plan = dataclasses.replace(root.plan, certificates=forged)
        r.admin.https.call("engineers.remove", with_root(commit, plan=forged_plan))
    with pytest.raises(ConcurrentChange, match="stale"):  # another root draft
        r.admin.https.call("engineers.remove", with_root(commit, digest=bytes(32)))
    with pytest.raises(ConcurrentChange, match="stale"):  # a page left out
        r.admin.https.call("engineers.remove", with_root(commit, pages=()))
    assert state(r) == before
    r.admin.https.call("engineers.remove", commit)  # the honest commit still commits
    assert state(r) != before


def test_the_removed_admin_or_an_engineer_sending_the_commit_is_refused(removing: Removing) -> None:
    r = removing
    commit, _hands = captured(r)
    me = r.admin2.keyholder.me()
    before = state(r)
    for sender in (r.admin2, r.alice):
        with pytest.raises(AccessDenied):  # root-admin's commit, signed by another
            sender.https.call("engineers.remove", commit)
        with pytest.raises(AccessDenied):
            sender.https.call("engineers.remove_root_draft", dataclasses.replace(commit, root=None))
    own = dataclasses.replace(commit, caller=dataclasses.replace(commit.caller, engineer_id=me.engineer_id,
                                                                 key_generation=me.key_generation))  # fmt: skip
    with pytest.raises(InvalidInput, match="yourself"):  # admin2's own request removing admin2
        r.admin2.https.call("engineers.remove", own)
    with pytest.raises(AccessDenied, match="not an admin"):
        r.alice.https.call("engineers.remove", dataclasses.replace(own, caller=dataclasses.replace(
            commit.caller, engineer_id=r.alice.keyholder.me().engineer_id)))  # fmt: skip
    assert state(r) == before


def test_a_stale_removal_is_refused(removing: Removing) -> None:
    r = removing
    commit, _hands = captured(r)
    r.team.admin.clients.add("initech", "Initech")  # a client added since: its key is in no start, no page
    before = state(r)
    with pytest.raises(ConcurrentChange, match="stale"):
        r.admin.https.call("engineers.remove", commit)
    assert state(r) == before
    r.admin.engineers.remove("admin2")  # drafted again, it commits
    with r.team.server_store.read() as s:
        assert [x.engineer_id for x in s.scalars(select(m.RootSeal))] == [_id(r, ADMIN)]


class Kept(httpx.BaseTransport):
    """An httpx transport that keeps each request and its read timeout, by path."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner, self.read, self.sent = inner, dict[str, float](), dict[str, httpx.Request]()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.read[request.url.path] = request.extensions["timeout"]["read"]
        self.sent[request.url.path] = request
        return self.inner.handle_request(request)


def test_the_commit_replayed_is_refused(removing: Removing, served_vault: ServedVault) -> None:
    """Its signed bytes again: 401 replayed; the same body in a new request: 400 (removed already)."""
    r = removing
    verify = ssl.create_default_context(cafile=str(served_vault.ca.ca_file))
    kept = Kept(httpx.HTTPTransport(verify=verify))
    admin = RemoteVault(r.team.pin, engineer=ADMIN, sessions=MemorySessionStore(), clock=r.team.clock, transport=kept)
    admin.engineers.unlock(ADMIN, ADMIN_PASS)
    capture = _Capturing(admin.https)
    writes = RemoteEngineerWrites(admin.keyholder, capture, admin.keyholder.clock, admin.audit)  # type: ignore[arg-type]
    with pytest.raises(Stop):
        writes.remove("admin2")
    admin.https.call("engineers.remove", capture.commit)
    assert kept.read["/v1/engineers/remove"] == kept.read["/v1/engineers/remove_root_draft"] == 600.0
    before = state(r)
    sent = kept.sent["/v1/engineers/remove"]
    with httpx.Client(verify=verify) as client:
        again = client.post(sent.url, content=sent.content, headers=dict(sent.headers))
    assert again.status_code == 401 and again.json()["code"] == "replayed"
    with pytest.raises(InvalidInput, match="already removed"):
        admin.https.call("engineers.remove", capture.commit)
    assert state(r) == before
    admin.close()


def test_a_row_the_removed_admin_recertified_with_the_seed_gets_no_new_root(removing: Removing) -> None:
    """admin2, holding the organisation seed, gives admin3's row his own sealing key and signs it again
    (one UPDATE by a DBA ally); the removal through the server must not seal the new bundle to it: the
    confirmation event the chain verified on the admin's machine names admin3's real keys."""
    r = removing
    r.team.engineer("admin3", role="admin")
    admin3_id, seed = _id(r, "admin3"), _seed(r)
    vault_id = r.admin.keyholder.me().vault_id
    with r.team.server_store.transaction() as s:
        row = s.get(m.Engineer, admin3_id)
        assert row is not None
        swapped = sealing.KeyPair.generate().public
        fields = (vault_id, row.id, row.name, "admin", "active", row.key_generation, swapped, row.signing_public)
        s.execute(update(m.Engineer).where(m.Engineer.id == admin3_id).values(
            sealing_public=swapped, certificate=seed.sign(LABEL_SIG_ENGINEER, *fields, row.certified_at)))  # fmt: skip

    r.admin.engineers.remove("admin2")

    root = r.admin.last_root_rotation
    assert root is not None and root.admins == (ADMIN,)
    assert any("admin3" in entry and "vouch" in entry for entry in root.refused)
    with r.team.server_store.read() as s:
        assert [x.engineer_id for x in s.scalars(select(m.RootSeal))] == [_id(r, ADMIN)]


def test_an_adoption_left_out_or_a_page_added_is_refused(removing: Removing) -> None:
    r = removing
    commit, _hands = captured(r)
    root = commit.root
    assert root is not None
    before = state(r)
    with pytest.raises(AccessDenied, match="adoption"):  # admin2's records left as theirs
        r.admin.https.call("engineers.remove", dataclasses.replace(commit, adopted=None))
    with pytest.raises(ConcurrentChange, match="stale"):  # a page the walk never reaches
        r.admin.https.call("engineers.remove", with_root(commit, pages=root.pages * 2))
    assert state(r) == before


class _Lying:
    """A compromised server: the root draft shows the admin removed as the active admin they were."""

    def __init__(self, https: Any, row: Any) -> None:
        self.https, self.row, self.sent = https, row, list[str]()

    def call(self, name: str, body: object, request_id: bytes | None = None) -> object:
        self.sent.append(name)
        answer = self.https.call(name, body, request_id)
        if name == "engineers.remove_root_draft":
            draft = answer.root.draft
            engineers = tuple(self.row if e.id == self.row.id else e for e in draft.engineers)
            root = dataclasses.replace(answer.root, draft=dataclasses.replace(draft, engineers=engineers))
            answer = dataclasses.replace(answer, root=root)
        return answer


def test_a_server_showing_the_removed_admin_active_gets_no_root_plan(removing: Removing) -> None:
    """Refused on the admin's machine before anything is committed: no seal of the new bundle is made for them."""
    r = removing
    with r.team.server_store.read() as s:
        row = s.get(m.Engineer, _id(r, "admin2"))
        assert row is not None
        active = engineer_row(row)  # as certified while an admin: the certificate verifies
    lying = _Lying(r.admin.https, active)
    writes = RemoteEngineerWrites(r.admin.keyholder, lying, r.admin.keyholder.clock, r.admin.audit)  # type: ignore[arg-type]
    before = state(r)
    with pytest.raises(UntrustedRecord, match="removed as disabled"):
        writes.remove("admin2")
    assert "engineers.remove" not in lying.sent and state(r) == before


def test_a_chain_that_does_not_verify_refuses_the_removal(removing: Removing) -> None:
    """The roster cannot be checked against a chain that does not verify: refused before the commit."""
    r = removing
    with r.team.server_store.transaction() as s:
        s.execute(update(m.AuditEvent).where(m.AuditEvent.seq == 2).values(at_us=m.AuditEvent.at_us + 1))
    before = state(r)
    with pytest.raises(IntegrityError, match="does not verify"):
        r.admin.engineers.remove("admin2")
    assert state(r) == before


def _seed(r: Removing) -> signing.SigningKey:
    """The organisation seed admin2 could copy while an admin (the host's copy is the same)."""
    with r.team.admin.store.transaction() as s:
        return signing.SigningKey(r.team.admin.keyholder.root_bundle(s).org.seed)


def test_an_engineer_the_removed_admin_raised_to_admin_gets_no_new_root(removing: Removing) -> None:
    """admin2 re-certifies alice's row as an admin with the seed (one UPDATE): the chain never made her an
    admin, so the new bundle is not sealed to her and her certificate is not carried over as an admin's."""
    r = removing
    alice_id, vault_id, seed = _id(r, "alice"), r.admin.keyholder.me().vault_id, _seed(r)
    with r.team.server_store.transaction() as s:
        row = s.get(m.Engineer, alice_id)
        assert row is not None
        raised = engineer_row(row)._replace(role="admin")
        certificate = seed.sign(LABEL_SIG_ENGINEER, *certificate_fields(vault_id, raised))
        s.execute(update(m.Engineer).where(m.Engineer.id == alice_id).values(role="admin", certificate=certificate))

    r.admin.engineers.remove("admin2")

    root = r.admin.last_root_rotation
    assert root is not None and root.admins == (ADMIN,) and any("alice" in entry for entry in root.refused)
    with r.team.server_store.read() as s:
        assert [x.engineer_id for x in s.scalars(select(m.RootSeal))] == [_id(r, ADMIN)]


def test_a_server_key_the_removed_admin_certified_with_the_seed_is_not_carried_over(removing: Removing) -> None:
    """admin2 plants a server key of his own, certified with the seed: no ``server-key-certify`` event of
    the chain names it, so the new organisation key does not certify it (it could sign the server's answers)."""
    r = removing
    vault_id, planted, seed = r.admin.keyholder.me().vault_id, signing.SigningKey.generate(), _seed(r)
    at = int(r.team.clock().timestamp())
    certificate = serverkey.certify(seed, vault_id, 7, planted.public, at)
    with r.team.server_store.transaction() as s:
        s.add(m.ServerKey(version=7, signing_public=planted.public, certified_at=at, state="retired",
                          certificate=certificate))  # fmt: skip
    with r.team.server_store.read() as s:
        before = {k.version: k.certificate for k in s.scalars(select(m.ServerKey))}

    r.admin.engineers.remove("admin2")

    root = r.admin.last_root_rotation
    assert root is not None and any("server key 7" in entry for entry in root.refused)
    with r.team.server_store.read() as s:
        after = {k.version: k.certificate for k in s.scalars(select(m.ServerKey))}
    assert after[7] == before[7] and after[1] != before[1]  # the real key re-certified, the planted one not


@pytest.mark.usefixtures("cli_home")
def test_the_cli_removes_an_admin_through_the_server(removing: Removing, served_vault: ServedVault) -> None:
    """``credvault --server URL engineer remove admin2 --json`` on a machine with no database; the stored
    state then checked through the library."""
    from test_cli_over_server import ok, refused, run

    r = removing
    ok(run("server", "trust", r.team.pin.url, "--ca-file", str(served_vault.ca.ca_file), "--yes"))
    secret = served_vault.folder / "admin.pass"
    secret.write_text(ADMIN_PASS + "\n", encoding="utf-8")
    secret.chmod(0o600)
    ok(run("unlock", ADMIN, "--keyring", "--passphrase-file", str(secret)))
    removed = json.loads(ok(run("engineer", "remove", "admin2", "--yes", "--json")).output)
    assert sorted(x["client"] for x in removed["rotations"]) == ["acme", "globex"]
    assert removed["root_rotation"]["admins"] == [ADMIN] and removed["not_adopted"] == []
    refused(run("engineer", "remove", "admin2", "--yes"), "already removed")
    with r.team.server_store.read() as s:
        assert [x.engineer_id for x in s.scalars(select(m.RootSeal))] == [_id(r, ADMIN)]
        assert [k.state for k in s.scalars(select(m.RootKey).order_by(m.RootKey.version))] == ["destroyed", "active"]
    assert r.alice.checkouts.reveal("globex/x", reason=REASON) == "globex-pw"
    assert r.team.admin.audit.verify().ok


def test_an_admin_lists_more_than_a_hundred_clients_through_the_server(removing: Removing) -> None:
    """The listing a removal's re-wraps name their clients by (``RemoteKeyRotation.slugs``): past 64 KiB
    at some 90 clients, it was refused on the admin's machine before the re-wraps of a removal ran."""
    r = removing
    for i in range(110):
        r.team.admin.clients.add(f"c{i:03d}", f"Client {i}")
    assert len(r.admin.clients.list()) == 112


def test_an_admin_rewritten_as_an_engineer_is_not_removed_without_the_root(removing: Removing) -> None:
    """admin3's row rewritten as an engineer's and re-certified with the seed (admin2, or a DBA with his
    copy): removed as an engineer, admin3 would keep a current root key. The chain verified on the admin's
    machine made admin3 an admin: refused there before anything is written (as in-process: ``chain_admins``)."""
    r = removing
    r.team.engineer("admin3", role="admin")  # signed nothing: the server's own checks see nothing amiss
    admin3_id, vault_id, seed = _id(r, "admin3"), r.admin.keyholder.me().vault_id, _seed(r)
    with r.team.server_store.transaction() as s:
        row = s.get(m.Engineer, admin3_id)
        assert row is not None
        lowered = engineer_row(row)._replace(role="engineer")
        certificate = seed.sign(LABEL_SIG_ENGINEER, *certificate_fields(vault_id, lowered))
        s.execute(update(m.Engineer).where(m.Engineer.id == admin3_id).values(role="engineer", certificate=certificate))
    before = state(r)
    with pytest.raises(UntrustedRecord, match="made them an admin"):
        r.admin.engineers.remove("admin3")
    assert state(r) == before


def test_after_a_removal_the_same_admin_s_purge_and_policy_find_their_clients(removing: Removing) -> None:
    """A removal learns its clients by id (their slug hints); an admin's later write naming a client by
    slug on the same ``RemoteVault`` still finds it by its slug tag (it was refused: "the client's
    context has no slug tag")."""
    r = removing
    r.admin.engineers.remove("alice")
    assert r.admin.policies.set("acme", exclusive=True).exclusive
    receipt = r.admin.purge.client("globex", request="DSR-17")
    assert receipt.request == "DSR-17" and [c.slug for c in r.admin.clients.list()] == ["acme"]
