"""An admin's grant and revoke through the team server (both engines).

The admin works from a machine with no database (``RemoteVault``): the grants keyholder gets
its root bundle (sealed to it), the client's context and the server's draft, verifies them,
signs and seals, and commits; the server checks the caller and every signature before it
writes, and appends the format-3 ``grant``/``revoke`` event in the same unit. The attacks are
raw signed requests by insiders with valid keys: each is refused with nothing written.
"""

from __future__ import annotations

import base64
import dataclasses
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from server_harness import Keyed, database_state, events, signed_post, ticking, without_nonces
from sqlalchemy import select, update

from vault import Vault
from vault.authority.client_requests import AddRequest
from vault.authority.grant_draft_requests import GrantCommit, GrantDraftRequest, RevokeCommit, RootSealRequest
from vault.authority.requests import Caller
from vault.errors import AccessDenied, AlreadyExists, LookupMismatch, NotFound, UntrustedRecord
from vault.service import serverjoin
from vault.service.remote import RemoteVault
from vault.service.serverpins import ServerPin
from vault.service.sessions import MemorySessionStore
from vault.storage import models as m
from vault.storage.engine import Store
from vault.transport.https_client_add import HttpsClientAddTransport
from vault.transport.https_grant_writes import HttpsGrantTransport
from vault.wire import codec

pytestmark = pytest.mark.usefixtures("home")

ADMIN = "root-admin"
TAG = b"t" * 32
PASSPHRASES: dict[str, str] = {}  # the module team's (``world``)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CREDVAULT_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture(scope="module")
def second_admin(module_team: Any) -> Vault:
    """Another admin, enrolled before the vault goes to the server (``keyed``)."""
    return module_team.engineer("admin2", role="admin")  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def world(second_admin: Vault, module_team: Any, request: pytest.FixtureRequest) -> Keyed:
    keyed: Keyed = request.getfixturevalue("keyed")
    PASSPHRASES.update(module_team.passphrases)
    return keyed


def pinned(keyed: Keyed) -> ServerPin:
    served = keyed.served
    identity = serverjoin.trust(served.url, str(served.ca.ca_file))
    return serverjoin.pin(served.url, identity, str(served.ca.ca_file))


def remote(keyed: Keyed, vault: Vault, name: str, passphrase: str) -> RemoteVault:
    """``name`` on a machine with no database: their record copied once, then unlocked."""
    pin = pinned(keyed)
    serverjoin.join(pin, vault, name, passphrase)
    mine = RemoteVault(pin, engineer=name, sessions=MemorySessionStore(), clock=ticking(keyed.served.alice.clock))
    mine.engineers.unlock(name, passphrase)
    return mine


def admin_remote(keyed: Keyed) -> RemoteVault:
    return remote(keyed, keyed.served.admin, ADMIN, PASSPHRASES[ADMIN])


class _Stop(Exception):
    pass


class Captured(HttpsGrantTransport):
    """Drafts through the server and signs as the keyholder does, but keeps the commit unsent."""

    commit: tuple[str, Any, bytes] | None = None

    def _answer(self, name: str, commit: object, request_id: bytes) -> Any:
        self.commit = (name, commit, request_id)
        raise _Stop


def captured_commit(admin: RemoteVault, op: str, engineer: str, client: str) -> tuple[str, Any, bytes]:
    """The commit ``admin``'s keyholder signs for a real draft of ``op`` (not sent)."""
    capture = Captured(admin.https)
    keyholder = admin.grants.writes
    keyholder.transport, original = capture, keyholder.transport
    try:
        with pytest.raises(_Stop):
            getattr(keyholder, op)(engineer, client, **({"until": None, "reason": None} if op == "grant" else {}))
    finally:
        keyholder.transport = original
    assert capture.commit is not None
    return capture.commit


def post(keyed: Keyed, name: str, body: object, signer: Vault, request_id: bytes | None = None) -> Any:
    path = "/v1/" + name.replace(".", "/")
    data = codec.envelope(name, body, request_id or os.urandom(codec.REQUEST_ID_BYTES))
    return signed_post(keyed.served, path, data, signer)


def grant_rows(url: str, engineer: str) -> list[m.Grant]:
    store = Store(url)
    try:
        with store.read() as s:
            who = s.scalars(select(m.Engineer.id).where(m.Engineer.name == engineer)).one()
            return list(s.scalars(select(m.Grant).where(m.Grant.engineer_id == who).order_by(m.Grant.id)))
    finally:
        store.close()


@pytest.fixture(scope="module")
def carol_remote(world: Keyed) -> Iterator[RemoteVault]:
    yield remote(world, world.carol, "carol", "pass of carol")


# -- an admin's grant and revoke ---------------------------------------------------------------------------


def test_an_admin_grants_and_revokes_with_no_database(world: Keyed, carol_remote: RemoteVault) -> None:
    admin = admin_remote(world)
    before = len(events(world.served))
    with pytest.raises(NotFound):
        carol_remote.checkouts.checkout("acme/fw01", reason="T-10 before the grant")
    info = admin.grants.grant("carol", "acme", reason="T-11 on call")
    assert (info.engineer, info.client, info.granted_by, info.state) == ("carol", "acme", ADMIN, "active")
    row = grant_rows(world.served.db_url, "carol")[-1]
    assert row.request_id is not None and row.event_seq is not None and row.signature is not None
    assert carol_remote.checkouts.checkout("acme/fw01", reason="T-12 granted").value == "pw of acme/fw01"
    assert carol_remote.checkouts.checkin("acme/fw01") is None
    # the admin's in-process listing confirms the grant by its format-3 event (its details open)
    listed = [g for g in world.served.admin.grants.list(engineer="carol") if g.client == "acme"]
    assert [g.state for g in listed] == ["active"]
    assert admin.grants.revoke("carol", "acme") == 1
    later = RemoteVault(carol_remote.pin, engineer="carol", sessions=carol_remote.keyholder.sessions,
                        clock=ticking(world.served.alice.clock))  # fmt: skip
    with pytest.raises(NotFound):
        later.checkouts.checkout("acme/fw01", reason="T-13 revoked")
    after = events(world.served)[before:]
    assert [(e.action, e.request_id is not None, e.server_key_version) for e in after] == [
        ("grant", True, 1),
        ("checkout", True, 1),
        ("checkin", True, 1),
        ("revoke", True, 1),
    ]
    assert after[0].request_id == row.request_id and after[0].seq == row.event_seq
    assert world.served.admin.audit.verify().ok
    assert [g.state for g in world.served.admin.grants.list(engineer="carol") if g.client == "acme"] == ["revoked"]


def test_a_grant_again_supersedes_the_last_and_revoke_of_nothing_is_not_found(world: Keyed) -> None:
    admin = admin_remote(world)
    admin.grants.grant("carol", "excl")
    admin.grants.grant("carol", "excl", reason="T-14 renewed")
    excl = admin.checkouts.context("excl").client_id
    rows = [g for g in grant_rows(world.served.db_url, "carol") if g.client_id == excl]
    assert [(g.seq, g.revoked_at is not None) for g in rows] == [(1, True), (2, False)]
    assert rows[0].revocation is not None and rows[1].request_id is not None
    assert admin.grants.revoke("carol", "excl") == 1
    with pytest.raises(NotFound, match="holds no grant"):
        admin.grants.revoke("carol", "excl")
    with pytest.raises(NotFound, match="no engineer"):
        admin.grants.grant("nobody", "excl")
    assert world.served.admin.audit.verify().ok


# -- insiders' attacks, each refused with nothing written ---------------------------------------------------


def test_an_engineer_who_drafts_a_grant_for_themself_is_refused(world: Keyed) -> None:
    alice = world.served.alice
    me = alice.keyholder.me()
    before = without_nonces(database_state(world.served.db_url))
    body = GrantDraftRequest(Caller(me.engineer_id, me.key_generation), "alice", TAG, None, me.org_signing_public)
    answer = post(world, "grants.grant_draft", body, alice)
    assert answer.status_code == 403 and answer.json()["error"] == "AccessDenied"
    seal = RootSealRequest(Caller(me.engineer_id, me.key_generation), me.org_signing_public)
    assert post(world, "engineers.root_seal", seal, alice).status_code == 403
    assert without_nonces(database_state(world.served.db_url)) == before


def test_an_engineer_who_commits_an_admins_grant_is_refused(world: Keyed) -> None:
    """alice sends, signed by her own key, a commit the admin's keyholder signed for her: 403."""
    admin = admin_remote(world)
    name, commit, request_id = captured_commit(admin, "grant", "alice", "excl")
    alice = world.served.alice
    me = alice.keyholder.me()
    as_alice = GrantCommit(**{**vars(commit), "caller": Caller(me.engineer_id, me.key_generation)})
    before = without_nonces(database_state(world.served.db_url))
    answer = post(world, name, as_alice, alice, request_id)
    assert answer.status_code == 403
    assert without_nonces(database_state(world.served.db_url)) == before


def test_a_commit_whose_grant_signature_is_over_another_request_is_refused(world: Keyed) -> None:
    admin = admin_remote(world)
    name, commit, _ = captured_commit(admin, "grant", "carol", "acme")
    before = without_nonces(database_state(world.served.db_url))
    answer = post(world, name, commit, world.served.admin)  # under another request id than the one signed
    assert answer.status_code == 403 and answer.json()["error"] == "AccessDenied"
    assert without_nonces(database_state(world.served.db_url)) == before


def test_a_grant_signed_by_another_admin_is_refused(world: Keyed, second_admin: Vault) -> None:
    """The root admin sends a grant admin2's key signed (a valid admin signature, not the caller's)."""
    admin = admin_remote(world)
    name, commit, request_id = captured_commit(admin, "grant", "carol", "acme")
    from vault.authority.grant_signatures import grant_fields, grant_label

    other = second_admin.keyholder.my_signing_key()
    store = Store(world.served.db_url)
    try:
        with store.read() as s:
            reserved = s.get(m.IdReservation, ("grant", commit.grant_id))
            carol = s.scalars(select(m.Engineer).where(m.Engineer.name == "carol")).one()
            assert reserved is not None
            ledger = s.scalars(select(m.Grant).where(m.Grant.engineer_id == carol.id,
                                                     m.Grant.client_id == commit.client_id)).all()  # fmt: skip
            row = m.Grant(id=commit.grant_id, engineer_id=carol.id, client_id=commit.client_id,
                          granted_by=world.served.admin.keyholder.me().engineer_id,
                          signed_at=int(reserved.reserved_at.timestamp()), until=None,
                          seq=max((g.seq or 0 for g in ledger), default=0) + 1, request_id=request_id)  # fmt: skip
            vault_id = world.served.admin.vault_id()
            forged = other.sign(grant_label(row), *grant_fields(vault_id, row, carol.sealing_public))
    finally:
        store.close()
    before = without_nonces(database_state(world.served.db_url))
    answer = post(world, name, GrantCommit(**{**vars(commit), "signature": forged}), world.served.admin, request_id)
    assert answer.status_code == 403
    assert without_nonces(database_state(world.served.db_url)) == before


def test_a_commit_from_a_removed_admin_is_refused(world: Keyed, second_admin: Vault) -> None:
    """admin2 drafts and signs a grant, then is removed: the commit they sign is not believed."""
    mine = remote(world, second_admin, "admin2", "pass of admin2")
    name, commit, request_id = captured_commit(mine, "grant", "carol", "acme")
    store = Store(world.served.db_url)
    try:
        with store.transaction() as s:
            s.execute(update(m.Engineer).where(m.Engineer.name == "admin2").values(status="removed"))
        before = without_nonces(database_state(world.served.db_url))
        answer = post(world, name, commit, second_admin, request_id)
        assert answer.status_code in (401, 403)
        assert without_nonces(database_state(world.served.db_url)) == before
    finally:
        with store.transaction() as s:
            s.execute(update(m.Engineer).where(m.Engineer.name == "admin2").values(status="active"))
        store.close()


def test_a_commit_naming_another_client_than_its_slug_tag_is_refused(world: Keyed) -> None:
    admin = admin_remote(world)
    name, commit, request_id = captured_commit(admin, "grant", "carol", "acme")
    other = admin.checkouts.context("excl").client_id
    before = without_nonces(database_state(world.served.db_url))
    answer = post(world, name, GrantCommit(**{**vars(commit), "client_id": other}), world.served.admin, request_id)
    assert answer.status_code == 400
    assert without_nonces(database_state(world.served.db_url)) == before


def test_a_commit_for_another_engineer_than_drafted_is_refused(world: Keyed) -> None:
    admin = admin_remote(world)
    name, commit, request_id = captured_commit(admin, "grant", "carol", "acme")
    before = without_nonces(database_state(world.served.db_url))
    answer = post(world, name, GrantCommit(**{**vars(commit), "engineer": "bob"}), world.served.admin, request_id)
    assert answer.status_code == 409 and answer.json()["code"] == "stale-draft"
    changed = GrantCommit(**{**vars(commit), "until": int(time.time()) + 86_400})
    assert post(world, name, changed, world.served.admin, request_id).status_code == 409
    assert without_nonces(database_state(world.served.db_url)) == before


def test_a_replayed_commit_is_refused(world: Keyed) -> None:
    admin = admin_remote(world)
    name, commit, request_id = captured_commit(admin, "grant", "carol", "acme")
    path = "/v1/" + name.replace(".", "/")
    data = codec.envelope(name, commit, request_id)
    from server_harness import keyid_of, signed_headers, signing_key

    headers = signed_headers(world.served, path, data, key=signing_key(world.served.admin),
                             keyid=keyid_of(world.served.admin))  # fmt: skip
    with world.served.client() as client:
        first = client.post(path, content=data, headers=headers)
        assert first.status_code == 200
        after_first = database_state(world.served.db_url)
        again = client.post(path, content=data, headers=headers)  # the same signed request
    assert again.status_code == 401
    resent = post(world, name, commit, world.served.admin, request_id)  # re-signed: its reservation is spent
    assert resent.status_code == 409
    now = without_nonces(database_state(world.served.db_url))
    assert now.pop("auth_failures") == 1  # the replay counts as a failed authentication, and is all it wrote
    assert now == {k: v for k, v in without_nonces(after_first).items() if k != "auth_failures"}
    assert admin.grants.revoke("carol", "acme") == 1
    assert world.served.admin.audit.verify().ok


def test_a_revoke_commit_by_an_engineer_or_with_a_forged_revocation_is_refused(world: Keyed) -> None:
    admin = admin_remote(world)
    admin.grants.grant("carol", "acme")
    name, commit, request_id = captured_commit(admin, "revoke", "carol", "acme")
    assert isinstance(commit, RevokeCommit)
    before = without_nonces(database_state(world.served.db_url))
    alice = world.served.alice
    me = alice.keyholder.me()
    as_alice = RevokeCommit(**{**vars(commit), "caller": Caller(me.engineer_id, me.key_generation)})
    assert post(world, name, as_alice, alice, request_id).status_code == 403
    forged = RevokeCommit(**{**vars(commit), "revocations": (b"\x01" * 64,)})
    assert post(world, name, forged, world.served.admin, request_id).status_code == 403
    assert without_nonces(database_state(world.served.db_url)) == before
    assert post(world, name, commit, world.served.admin, request_id).status_code == 200
    assert grant_rows(world.served.db_url, "carol")[-1].revoked_at is not None
    assert world.served.admin.audit.verify().ok


def test_an_engineer_through_the_server_cannot_grant(world: Keyed) -> None:
    alice = remote(world, world.served.alice, "alice", "pass of alice")
    before = without_nonces(database_state(world.served.db_url))
    with pytest.raises((AccessDenied, NotFound)):
        alice.grants.grant("alice", "excl")
    assert without_nonces(database_state(world.served.db_url)) == before


# -- an admin's new client ----------------------------------------------------------------------------------


def test_an_admin_adds_a_client_with_no_database(world: Keyed, carol_remote: RemoteVault) -> None:
    admin = admin_remote(world)
    before = len(events(world.served))
    info = admin.clients.add("newco", "NewCo Ltd")
    assert (info.slug, info.name) == ("newco", "NewCo Ltd")
    admin.grants.grant("carol", "newco")
    carol_remote.secrets.add("newco/rtr01", password="pw of newco/rtr01")
    assert carol_remote.checkouts.checkout("newco/rtr01", reason="T-20").value == "pw of newco/rtr01"
    assert carol_remote.checkouts.checkin("newco/rtr01") is None
    after = [(e.action, e.request_id is not None) for e in events(world.served)[before:]]
    assert after == [("client-create", True), ("grant", True), ("secret-create", True), ("checkout", True),
                     ("checkin", True)]  # fmt: skip
    assert world.served.admin.audit.verify().ok
    with pytest.raises(AlreadyExists):
        admin.clients.add("newco", "Again")
    assert admin.grants.revoke("carol", "newco") == 1


def test_an_engineer_who_adds_a_client_is_refused(world: Keyed) -> None:
    alice = world.served.alice
    me = alice.keyholder.me()
    before = without_nonces(database_state(world.served.db_url))
    body = AddRequest(Caller(me.engineer_id, me.key_generation), TAG, me.org_signing_public)
    answer = post(world, "clients.add_draft", body, alice)
    assert answer.status_code == 403 and answer.json()["error"] == "AccessDenied"
    assert without_nonces(database_state(world.served.db_url)) == before


def test_a_client_commit_with_a_changed_record_or_another_id_is_refused(world: Keyed) -> None:
    admin = admin_remote(world)
    capture = CapturedClient(admin.https)
    adding = admin.clients.adding
    adding.transport, original = capture, adding.transport
    try:
        with pytest.raises(_Stop):
            adding.add("otherco", "Other Co")
    finally:
        adding.transport = original
    assert capture.commit is not None
    commit, request_id = capture.commit
    before = without_nonces(database_state(world.served.db_url))
    forged_made = dataclasses.replace(commit.made, key_signature=bytes(64))
    forged = dataclasses.replace(commit, made=forged_made)
    assert post(world, "clients.add", forged, world.served.admin, request_id).status_code == 403
    moved = dataclasses.replace(commit, client_id=commit.client_id + 1000)
    answer = post(world, "clients.add", moved, world.served.admin, request_id)
    assert answer.status_code == 409 and answer.json()["code"] == "stale-draft"
    assert without_nonces(database_state(world.served.db_url)) == before
    assert post(world, "clients.add", commit, world.served.admin, request_id).status_code == 200
    assert world.served.admin.audit.verify().ok


class CapturedClient(HttpsClientAddTransport):
    """Drafts a new client through the server, lets the keyholder make it, keeps the commit unsent."""

    commit: tuple[Any, bytes] | None = None

    def add(self, request: Any, seal: Any) -> Any:
        https, self.https = self.https, _Keeping(self.https, self)
        try:
            return super().add(request, seal)
        finally:
            self.https = https


class _Keeping:
    def __init__(self, https: Any, owner: CapturedClient) -> None:
        self.https, self.owner = https, owner

    def call(self, name: str, body: object, request_id: bytes | None = None) -> object:
        if name == "clients.add":
            assert request_id is not None
            self.owner.commit = (body, request_id)
            raise _Stop
        return self.https.call(name, body, request_id)


def test_no_request_or_answer_of_an_admins_writes_holds_a_slug_name_or_reason(world: Keyed) -> None:
    """A grant's reason, a new client's slug and name reach the server only encrypted or sealed."""
    admin = admin_remote(world)
    bodies: list[bytes] = []

    def keep_request(request: Any) -> None:
        bodies.append(request.content)

    def keep_response(response: Any) -> None:
        bodies.append(response.read())

    hooks = admin.https.client.event_hooks
    hooks["request"].append(keep_request)
    hooks["response"].append(keep_response)
    admin.clients.add("zebra-slug-77", "Zebra Secret Name Ltd")
    admin.grants.grant("carol", "zebra-slug-77", reason="reason-text-4411 for the record")
    assert admin.grants.revoke("carol", "zebra-slug-77") == 1
    names = [b"zebra-slug-77", b"Zebra Secret Name", b"reason-text-4411"]
    assert len(bodies) >= 10 and all(body for body in bodies)
    for body in bodies:
        for name in names:
            assert name not in body
            assert base64.urlsafe_b64encode(name).rstrip(b"=")[:12] not in body


def test_a_rotation_on_the_host_keeps_a_grant_made_through_the_server(world: Keyed, carol_remote: RemoteVault) -> None:
    """The host's rotation verifies the format-3 grant and its event (details sealed by the admin's
    keyholder) and seals the new client key to carol, who then checks out through the server."""
    admin = admin_remote(world)
    admin.grants.grant("carol", "excl", reason="T-30 rotation")
    host = world.served.admin
    host.core.server_key = world.key
    try:
        host.keys.rotate_client("excl")
    finally:
        host.core.server_key = None
    fresh = RemoteVault(carol_remote.pin, engineer="carol", sessions=carol_remote.keyholder.sessions,
                        clock=ticking(world.served.alice.clock))  # fmt: skip
    assert fresh.checkouts.checkout("excl/sw05", reason="T-31 after rotation").value == "pw of excl/sw05"
    assert fresh.checkouts.checkin("excl/sw05") is None
    assert admin.grants.revoke("carol", "excl") == 1
    assert world.served.admin.audit.verify().ok


class _Tampering:
    """The admin's HTTPS calls, with the server's grant draft altered on the way (a compromised
    server): what was sent is kept."""

    def __init__(self, https: Any, change: Any) -> None:
        self.https, self.change, self.sent = https, change, []  # type: ignore[var-annotated]

    def call(self, name: str, body: object, request_id: bytes | None = None) -> object:
        self.sent.append(name)
        answer = self.https.call(name, body, request_id)
        return self.change(answer) if name == "grants.grant_draft" else answer


@pytest.mark.parametrize(
    "change",
    [
        lambda rows: dataclasses.replace(rows, new_grant=rows.new_grant._replace(until=4_000_000_000)),
        lambda rows: dataclasses.replace(rows, new_grant=rows.new_grant._replace(granted_by=rows.engineer.id)),
        lambda rows: dataclasses.replace(rows, engineer=rows.engineer._replace(name="bob")),
        lambda rows: dataclasses.replace(rows, client_id=rows.client_id + 1000),
    ],
    ids=["another-end", "another-signer", "another-engineer", "another-client"],
)
def test_a_draft_a_compromised_server_altered_is_signed_for_nothing(world: Keyed, change: Any) -> None:
    admin = admin_remote(world)
    keyholder = admin.grants.writes
    tampering = _Tampering(admin.https, lambda d: dataclasses.replace(d, rows=change(d.rows)))
    keyholder.transport = HttpsGrantTransport(tampering)  # type: ignore[arg-type]
    before = without_nonces(database_state(world.served.db_url))
    with pytest.raises((UntrustedRecord, LookupMismatch)):
        keyholder.grant("carol", "acme", until=None, reason=None)
    assert "grants.grant" not in tampering.sent  # refused before anything was signed or sent
    after = without_nonces(database_state(world.served.db_url))
    assert {k: v for k, v in after.items() if k != "id_reservations"} == {
        k: v for k, v in before.items() if k != "id_reservations"
    }  # only the draft's reservation, which lapses
