"""An admin's client-key rotation through the team server, on a layered vault (both engines).

The admin works from a machine with no database (``RemoteVault``): the rotation's keyholder finds
the client by its slug's tag, verifies the server's start draft and makes the new version on the
admin's machine, then re-wraps the data keys page by page: each page leaves the server without its
layer only once an event naming every version released has committed, and goes back under the
layer in the unit that stores it. The engineer granted the client then checks out every secret
under the new version, and ``audit verify`` accepts the chain.

The attacks are an engineer holding a valid key who asks for the drafts and commits (refused before
anything is read, nothing released), and a compromised admin's machine that commits what was not
drafted: a start for a draft that went stale, a new version signed by another key, a page's rows
for other secrets. Each is refused with nothing written.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import pytest
from served import ADMIN, ADMIN_PASS, ServedTeam, ServedVault
from sqlalchemy import select

from vault.authority.requests import Caller
from vault.authority.rotation_draft_values import BatchCommit, BatchDrafted, StartCommit, StartDrafted
from vault.authority.rotation_requests import BatchRequest, FinishRequest, OpenRequest, Rewrapped, StartRequest
from vault.crypto import signing
from vault.errors import AccessDenied, ConcurrentChange
from vault.server.layer import is_layered
from vault.service import serverjoin
from vault.service.remote import RemoteVault
from vault.storage import models as m
from vault.storage.engine import Store

PASSWORDS = {"acme/fw01": "acme fw pw 1", "acme/sw02": "acme sw pw 2", "acme/db03": "acme db pw 3"}


@dataclass
class Rotating:
    team: ServedTeam
    admin: RemoteVault  # the admin on their own machine: no database, no key file
    bob: RemoteVault  # an engineer granted acme


@pytest.fixture
def rotating(served_vault: ServedVault) -> Rotating:
    team, host = served_vault.team, served_vault.admin
    for slug in ("acme", "globex"):
        host.clients.add(slug, slug.title())
    for ref, password in PASSWORDS.items():
        host.secrets.add(ref, password=password)
    host.secrets.add("globex/mail", password="globex mail pw")
    bob = team.engineer("bob")
    host.grants.grant("bob", "acme")
    serverjoin.join(team.pin, host, ADMIN, ADMIN_PASS)  # the admin's key record, copied once
    team.passphrases[ADMIN] = ADMIN_PASS
    return Rotating(team, team.unlocked(ADMIN), bob)


def stored(team: ServedTeam) -> tuple[list[tuple[int, int, str]], dict[tuple[int, int], tuple[int, int, bytes]]]:
    """The client-key versions (client, version, state), and each data key (client, key version, blob)."""
    with team.server_store.read() as s:
        found = s.scalars(select(m.ClientKey).order_by(m.ClientKey.client_id, m.ClientKey.version))
        keys = [(r.client_id, r.version, r.state) for r in found]
        rows = s.execute(
            select(m.SecretVersion.secret_id, m.SecretVersion.version, m.Secret.client_id, m.SecretVersion.key_version,
                   m.SecretVersion.wrapped_dek).join(m.Secret, m.Secret.id == m.SecretVersion.secret_id)
        ).all()  # fmt: skip
    return keys, {(r[0], r[1]): (r[2], r[3], bytes(r[4])) for r in rows}


def events(store: Store) -> list[m.AuditEvent]:
    with store.read() as s:
        return list(s.scalars(select(m.AuditEvent).order_by(m.AuditEvent.seq)))


def test_an_admin_rotates_a_client_through_the_server(rotating: Rotating) -> None:
    team, admin, bob = rotating.team, rotating.admin, rotating.bob
    acme = admin.keys.lookup.client_id("acme")  # by its slug's tag, verified
    keys_before, data_before = stored(team)
    assert all(is_layered(blob) for _c, _v, blob in data_before.values())
    before = len(events(team.server_store))

    info = admin.keys.rotate_client("acme", batch_size=2)  # two pages: 2 + 1 data keys

    assert (info.client, info.from_version, info.to_version, info.state, info.done) == ("acme", 1, 2, "done", 3)
    keys_after, data_after = stored(team)
    assert [k for k in keys_after if k[0] == acme] == [(acme, 1, "destroyed"), (acme, 2, "active")]
    assert [k for k in keys_after if k[0] != acme] == [k for k in keys_before if k[0] != acme]
    for key, (client, key_version, blob) in data_after.items():
        assert is_layered(blob)  # the layer back on in the unit that stored it
        assert key_version == (2 if client == acme else 1)
        if client != acme:
            assert blob == data_before[key][2]  # another client's rows untouched
    added = events(team.server_store)[before:]
    me = team.admin.keyholder.me().engineer_id
    assert [(e.action, e.engineer_id, e.request_id is not None) for e in added] == [
        ("client-key-rotate", me, True),
        ("client-key-rewrap", me, True),
        ("client-key-rewrap", me, True),
        ("client-key-rotated", me, True),
    ]
    released = [tuple(r) for e in added[1:3] for r in json.loads(e.details_json)["released"]]
    assert sorted(released) == sorted((acme, sid, ver) for (sid, ver), (c, _k, _b) in data_before.items() if c == acme)
    assert json.loads(added[0].details_json) == {"from_version": 1, "to_version": 2, "data_keys": 3}
    for ref, password in PASSWORDS.items():  # bob holds the new version's sealed copy
        assert bob.checkouts.checkout(ref, reason="T-1 after the rotation").value == password
        bob.checkouts.checkin(ref)
    assert [(r.client, r.state) for r in admin.keys.list()] == [("acme", "done")]
    assert admin.keys.versions("acme") == [(1, "destroyed"), (2, "active")]
    assert team.admin.audit.verify().ok


def test_an_engineer_gets_no_draft_and_no_key(rotating: Rotating) -> None:
    team, admin, bob = rotating.team, rotating.admin, rotating.bob
    acme = admin.keys.lookup.client_id("acme")  # by its slug's tag, verified
    started = admin.keys.keyholder.rotate("acme")  # started by the admin; bob then asks for its pages
    rotation = started.rotation.id
    state, count = stored(team), len(events(team.server_store))
    me = bob.keyholder.me()
    caller, pin = Caller(me.engineer_id, me.key_generation), me.org_signing_public
    for name, body in (
        ("keys.start_draft", StartRequest(caller, acme, False, pin)),
        ("keys.open", OpenRequest(caller, rotation, pin)),
        ("keys.rewrap_draft", BatchRequest(caller, rotation, (0, 0), 10, bytes(32))),
        ("keys.finish", FinishRequest(caller, rotation, True)),
    ):
        with pytest.raises(AccessDenied, match="not an admin"):
            bob.https.call(name, body)
    assert stored(team) == state and len(events(team.server_store)) == count  # nothing released, nothing written
    # the admin's own request naming bob as its caller: refused as another caller than the signer
    mine = admin.keyholder.me()
    with pytest.raises(AccessDenied, match="another caller"):
        admin.https.call("keys.rewrap_draft", BatchRequest(caller, rotation, (0, 0), 10, bytes(32)))
    assert len(events(team.server_store)) == count
    assert mine.engineer_id != me.engineer_id


def test_a_commit_not_drafted_is_refused_with_nothing_written(rotating: Rotating) -> None:
    team, admin = rotating.team, rotating.admin
    acme = admin.keys.lookup.client_id("acme")  # by its slug's tag, verified
    keyholder = admin.keys.keyholder
    me = admin.keyholder.me()
    caller, pin = Caller(me.engineer_id, me.key_generation), me.org_signing_public
    request = StartRequest(caller, acme, False, pin)
    keyholder.lookup.open_recovery()
    drafted = admin.https.call("keys.start_draft", request)
    assert isinstance(drafted, StartDrafted)
    made = keyholder.new_key(acme, drafted.draft)  # the admin's keyholder makes the new version
    state, count = stored(team), len(events(team.server_store))

    # another key's signature over the same record: not what this admin signed
    forged = dataclasses.replace(made, signature=signing.SigningKey(bytes(32)).sign(b"x", 1))
    with pytest.raises(AccessDenied, match="did not sign"):
        admin.https.call("keys.start", StartCommit.of(request, drafted.digest, forged))
    # the draft goes stale: a new engineer granted acme since (the new version would miss them)
    carol = team.engineer("carol")
    team.admin.grants.grant("carol", "acme")
    state, count = stored(team), len(events(team.server_store))
    with pytest.raises(ConcurrentChange):
        admin.https.call("keys.start", StartCommit.of(request, drafted.digest, made))
    assert stored(team) == state and len(events(team.server_store)) == count

    # a page's commit whose rows are other secrets' than the page drafted
    started = keyholder.rotate("acme")
    opened = keyholder.open(started.rotation.id)
    batch_request = BatchRequest(caller, started.rotation.id, (0, 0), 2, opened.digest)
    page = admin.https.call("keys.rewrap_draft", batch_request)
    assert isinstance(page, BatchDrafted) and page.batch is not None and len(page.batch.rows) == 2
    rewrapped = keyholder._rewrap(opened, page.batch)
    swapped = (Rewrapped(rewrapped[1].secret_id, rewrapped[1].version, rewrapped[0].wrapped_dek), rewrapped[0])
    state, count = stored(team), len(events(team.server_store))
    with pytest.raises(AccessDenied, match="not the rows"):
        admin.https.call("keys.rewrap", BatchCommit(batch_request, page.digest, swapped))
    assert stored(team) == state and len(events(team.server_store)) == count
    # the genuine commit of the same draft is stored; the rotation then ends through the keyholder
    done = admin.https.call("keys.rewrap", BatchCommit(batch_request, page.digest, rewrapped))
    assert done.count == 2
    info = admin.keys.run(started.rotation.id, 2, None)
    assert (info.state, info.done) == ("done", 3)
    for ref, password in PASSWORDS.items():
        assert carol.checkouts.checkout(ref, reason="T-2").value == password
        carol.checkouts.checkin(ref)
    assert team.admin.audit.verify().ok
