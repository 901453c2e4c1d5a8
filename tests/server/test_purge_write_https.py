"""An admin's client purge through the team server (both engines), and the check of its receipt.

The admin works from a machine with no database (``RemoteVault``): the purge keyholder finds the
client by its slug's tag, admits the server's draft (every key record verified, the fingerprints
taken from them), signs the receipt the server will store over the commit's request id, and
commits; the server checks the caller, the fingerprints and the signature before anything is
deleted, deletes the client's rows (its server client keys among them), and stores the receipt
with its format-3 ``purge-client`` event in the same unit. The receipt then verifies through the
server (``purge check``) and where the database is. The attacks are raw signed requests by
insiders with valid keys, and a compromised admin's machine whose keyholder signs another receipt
than the one drafted: each is refused with nothing written.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from typing import Any

import pytest
from remote_admin_harness import Stop, caller, post, remote
from served import ADMIN_PASS  # the suite's first admin's passphrase
from server_harness import (
    Keyed,
    database_state,
    events,
    keyid_of,
    server_with,
    signed_headers,
    signing_key,
    without_nonces,
)
from sqlalchemy import func, select, update

from vault.authority.purge_draft_values import PurgeClientCommit, PurgeClientDraftRequest, PurgeDraft
from vault.authority.purge_requests import CLIENT, ReceiptRow, receipt_fields, receipt_fields_v3
from vault.crypto.labels import LABEL_SIG_RECEIPT, LABEL_SIG_RECEIPT_V3
from vault.errors import AccessDenied, NotFound
from vault.server.layer import MasterKey, ServerLayer
from vault.service.remote import RemoteVault
from vault.storage import models as m
from vault.transport.https_purge import HttpsPurgeTransport
from vault.wire import codec

pytestmark = pytest.mark.usefixtures("cli_home")

ADMIN = "root-admin"
NAMES = iter(f"gone{n}" for n in range(100))




def a_client(world: Keyed, admin: RemoteVault) -> str:
    """A new client with a secret (carol granted, adding it through the server): its slug."""
    slug = next(NAMES)
    admin.clients.add(slug, f"{slug} Ltd")
    admin.grants.grant("carol", slug)
    carol = remote(world, world.carol, "carol", "pass of carol")
    carol.secrets.add(f"{slug}/db01", password=f"pw of {slug}/db01")
    carol.close()
    return slug


class _Capturing:
    """The admin's ``HttpsTransport``, except that the commit is kept, not sent."""

    def __init__(self, https: Any) -> None:
        self.https = https
        self.commit: tuple[PurgeClientCommit, bytes] | None = None
        self.draft: PurgeDraft | None = None

    def call(self, name: str, body: object, request_id: bytes | None = None) -> object:
        if name == "purge.client_draft":
            answer = self.https.call(name, body, request_id)
            assert isinstance(answer, PurgeDraft)
            self.draft = answer
            return answer
        if name == "purge.client":
            assert isinstance(body, PurgeClientCommit) and request_id is not None
            self.commit = (body, request_id)
            raise Stop
        return self.https.call(name, body, request_id)


def captured(admin: RemoteVault, client: str) -> tuple[PurgeClientCommit, bytes, ReceiptRow]:
    """The commit ``admin``'s keyholder signs for a real draft of ``purge client`` (not sent), and the
    receipt the server drafted."""
    keyholder = admin.purge.keyholder
    capture = _Capturing(admin.https)
    original = keyholder.transport
    keyholder.transport = HttpsPurgeTransport(capture, admin.purge.lookup.slug_tag)
    try:
        with pytest.raises(Stop):
            admin.purge.client(client, request="DSR-1")
    finally:
        keyholder.transport = original
    assert capture.commit is not None and capture.draft is not None
    return (*capture.commit, capture.draft.receipt)


def client_rows(world: Keyed, client_id: int) -> dict[str, int]:
    with world.store.read() as s:
        return {
            table.__tablename__: int(
                s.scalar(select(func.count()).select_from(table).where(table.client_id == client_id)) or 0
            )
            for table in (m.Secret, m.ClientKey, m.ClientKeySeal, m.Grant, m.ServerClientKey)
        } | {"clients": int(s.get(m.Client, client_id) is not None)}


# -- an admin's purge, its receipt checked -------------------------------------------------------------------


def test_an_admin_purges_a_client_with_no_database(world: Keyed, admin: RemoteVault) -> None:
    slug = a_client(world, admin)
    client_id = admin.checkouts.context(slug).client_id
    preview = admin.purge.preview(slug)
    assert (preview.secrets, preview.key_versions, preview.grants) == (1, 1, 1)
    before = len(events(world.served))
    receipt = admin.purge.client(slug, request="DSR-2026-1")
    assert (receipt.kind, receipt.request, receipt.client_id, receipt.admin) == (CLIENT, "DSR-2026-1", client_id, ADMIN)
    assert client_rows(world, client_id) == dict.fromkeys(
        ("secrets", "client_keys", "client_key_seals", "grants", "server_client_keys", "clients"), 0
    )
    after = events(world.served)[before:]
    assert [(e.action, e.client_id, e.request_id is not None, e.server_key_version) for e in after] == [
        ("purge-client", client_id, True, 1)
    ]
    with world.store.read() as s:
        stored = s.get(m.PurgeReceipt, receipt.id)
        assert stored is not None and stored.request_id == after[0].request_id and stored.event_seq == after[0].seq
    assert admin.purge.verify_receipt(receipt.id).ok  # through the server
    assert world.served.admin.purge.verify_receipt(receipt.id).ok  # where the database is
    alice = remote(world, world.served.alice, "alice", "pass of alice")
    assert alice.purge.verify_receipt(receipt.id).ok  # any engineer checks a receipt
    assert [r.id for r in admin.purge.receipts()][-1] == receipt.id
    with pytest.raises(NotFound):
        admin.purge.preview(slug)
    assert world.served.admin.audit.verify().ok


def test_a_purge_through_a_layered_server_destroys_its_layer_of_the_client(
    world: Keyed, admin: RemoteVault, test_ca: Any
) -> None:
    slug = a_client(world, admin)
    client_id = admin.checkouts.context(slug).client_id
    layer = ServerLayer(MasterKey(1, os.urandom(32)))
    layer.layer_on(world.store)
    assert client_rows(world, client_id)["server_client_keys"] == 1
    with server_with(world, test_ca, layer) as layered:
        mine = remote(dataclasses.replace(world, served=layered), world.served.admin, ADMIN, ADMIN_PASS)
        receipt = mine.purge.client(slug, request="DSR-2026-2")
        assert client_rows(world, client_id)["server_client_keys"] == 0
        assert mine.purge.verify_receipt(receipt.id).ok
        mine.close()


def test_a_tampered_receipt_does_not_verify(world: Keyed, admin: RemoteVault) -> None:
    """A DBA moves the receipt's request id, or its event number to another event: `purge check` says so."""
    receipt = admin.purge.client(a_client(world, admin), request="DSR-2026-3")
    with world.store.transaction() as s:
        row = s.get(m.PurgeReceipt, receipt.id)
        assert row is not None
        request_id, event_seq = row.request_id, row.event_seq
        row.request_id = os.urandom(16)
    try:
        check = admin.purge.verify_receipt(receipt.id)
        assert not check.ok and any("signature" in p or "not the request" in p for p in check.problems)
        with world.store.transaction() as s:
            s.execute(update(m.PurgeReceipt).where(m.PurgeReceipt.id == receipt.id)
                      .values(request_id=request_id, event_seq=event_seq - 1))  # fmt: skip
        check = admin.purge.verify_receipt(receipt.id)
        assert not check.ok and "the receipt's audit event is not the request it was signed for" in check.problems
    finally:
        with world.store.transaction() as s:
            s.execute(update(m.PurgeReceipt).where(m.PurgeReceipt.id == receipt.id)
                      .values(request_id=request_id, event_seq=event_seq))  # fmt: skip
    assert admin.purge.verify_receipt(receipt.id).ok


# -- insiders' attacks, each refused with nothing written ---------------------------------------------------


def test_an_engineer_who_drafts_or_commits_a_purge_is_refused(world: Keyed, admin: RemoteVault) -> None:
    commit, request_id, _ = captured(admin, a_client(world, admin))
    alice = world.served.alice
    before = without_nonces(database_state(world.served.db_url))
    draft = PurgeClientDraftRequest(caller(alice), commit.slug_tag, commit.client_id, "DSR-9", commit.org_pin)
    answer = post(world, "purge.client_draft", draft, alice)
    assert answer.status_code == 403 and answer.json()["error"] == "AccessDenied"
    as_alice = dataclasses.replace(commit, caller=caller(alice))
    assert post(world, "purge.client", as_alice, alice, request_id).status_code == 403
    assert post(world, "purge.client", commit, alice, request_id).status_code == 403  # another caller than the signer
    assert without_nonces(database_state(world.served.db_url)) == before


def test_an_engineer_through_the_server_cannot_purge(world: Keyed, admin: RemoteVault) -> None:
    slug = a_client(world, admin)
    alice = remote(world, world.served.alice, "alice", "pass of alice")
    before = without_nonces(database_state(world.served.db_url))
    with pytest.raises((AccessDenied, NotFound)):
        alice.purge.client(slug, request="DSR-10")
    assert without_nonces(database_state(world.served.db_url)) == before


def test_a_commit_with_changed_fingerprints_or_another_reference_is_refused(world: Keyed, admin: RemoteVault) -> None:
    commit, request_id, _ = captured(admin, a_client(world, admin))
    before = without_nonces(database_state(world.served.db_url))
    fewer = dataclasses.replace(commit, fingerprints=())
    answer = post(world, "purge.client", fewer, world.served.admin, request_id)
    assert answer.status_code == 403 and answer.json()["error"] == "AccessDenied"
    other_ref = dataclasses.replace(commit, request_ref="DSR-other")
    answer = post(world, "purge.client", other_ref, world.served.admin, request_id)
    assert answer.status_code == 409 and answer.json()["code"] == "stale-draft"
    other_digest = dataclasses.replace(commit, draft_digest=bytes(32))
    assert post(world, "purge.client", other_digest, world.served.admin, request_id).status_code == 409
    assert post(world, "purge.client", commit, world.served.admin).status_code == 403  # signed for another request
    assert without_nonces(database_state(world.served.db_url)) == before


def test_a_receipt_the_keyholder_signed_otherwise_is_refused(world: Keyed, admin: RemoteVault) -> None:
    """A compromised admin's machine: its key signs another receipt than the server drafted (another
    client's, another time, or in format 1 over no event): each refused before anything is deleted."""
    commit, request_id, drafted = captured(admin, a_client(world, admin))
    drafted = dataclasses.replace(drafted, fingerprints=commit.fingerprints)
    key = world.served.admin.keyholder.my_signing_key()
    vault_id = world.served.admin.vault_id()
    before = without_nonces(database_state(world.served.db_url))
    forgeries = []
    for changed in (
        dataclasses.replace(drafted, client_id=commit.client_id + 1),
        dataclasses.replace(drafted, purged_at=drafted.purged_at + 60),
    ):
        signed = dataclasses.replace(changed, request_id=request_id)
        forgeries.append(key.sign(LABEL_SIG_RECEIPT_V3, *receipt_fields_v3(vault_id, signed)))
    forgeries.append(key.sign(LABEL_SIG_RECEIPT, *receipt_fields(vault_id, drafted)))
    for signature in forgeries:
        forged = dataclasses.replace(commit, signature=signature)
        answer = post(world, "purge.client", forged, world.served.admin, request_id)
        assert answer.status_code == 403 and answer.json()["error"] == "AccessDenied"
    # a receipt that hides a destroyed key version, validly signed by the admin's key: not what the records say
    hidden = dataclasses.replace(drafted, fingerprints=commit.fingerprints[1:], request_id=request_id)
    signature = key.sign(LABEL_SIG_RECEIPT_V3, *receipt_fields_v3(vault_id, hidden))
    forged = dataclasses.replace(commit, fingerprints=hidden.fingerprints, signature=signature)
    answer = post(world, "purge.client", forged, world.served.admin, request_id)
    assert answer.status_code == 403 and answer.json()["error"] == "AccessDenied"
    assert without_nonces(database_state(world.served.db_url)) == before
    assert post(world, "purge.client", commit, world.served.admin, request_id).status_code == 200  # as signed


def test_a_replayed_commit_is_refused(world: Keyed, admin: RemoteVault) -> None:
    commit, request_id, _ = captured(admin, a_client(world, admin))
    name, path = "purge.client", "/v1/purge/client"
    data = codec.envelope(name, commit, request_id)
    served = world.served
    headers = signed_headers(served, path, data, key=signing_key(served.admin), keyid=keyid_of(served.admin))
    with served.client() as client:
        first = client.post(path, content=data, headers=headers)
        assert first.status_code == 200
        after_first = without_nonces(database_state(served.db_url))
        again = client.post(path, content=data, headers=headers)  # the same signed request
    assert again.status_code == 401
    resent = post(world, name, commit, served.admin, request_id)  # re-signed: its reservation is spent
    assert resent.status_code == 409 and resent.json()["code"] == "stale-draft"
    now = without_nonces(database_state(served.db_url))
    assert now.pop("auth_failures") == 1  # the replay counts as a failed authentication, and is all it wrote
    assert now == {k: v for k, v in after_first.items() if k != "auth_failures"}
    assert served.admin.audit.verify().ok


def test_a_purge_of_another_client_than_its_slug_tag_is_refused(world: Keyed, admin: RemoteVault) -> None:
    commit, request_id, _ = captured(admin, a_client(world, admin))
    other = admin.checkouts.context("acme").client_id
    before = without_nonces(database_state(world.served.db_url))
    moved = dataclasses.replace(commit, client_id=other)
    assert post(world, "purge.client", moved, world.served.admin, request_id).status_code == 400
    draft = PurgeClientDraftRequest(commit.caller, commit.slug_tag, other, "DSR-11", commit.org_pin)
    assert post(world, "purge.client_draft", draft, world.served.admin).status_code == 400
    assert without_nonces(database_state(world.served.db_url)) == before


def test_a_commit_on_a_lapsed_or_another_engineers_reservation_is_refused(world: Keyed, admin: RemoteVault) -> None:
    commit, request_id, _ = captured(admin, a_client(world, admin))
    key = ("purge-receipt", commit.receipt_id)
    alice_id = world.served.alice.keyholder.me().engineer_id
    for change in ({"expires_at": dt.datetime(2000, 1, 1, tzinfo=dt.UTC)}, {"engineer_id": alice_id}):
        with world.store.transaction() as s:
            held = s.get(m.IdReservation, key)
            assert held is not None
            kept = {name: getattr(held, name) for name in change}
            for name, value in change.items():
                setattr(held, name, value)
        before = without_nonces(database_state(world.served.db_url))
        answer = post(world, "purge.client", commit, world.served.admin, request_id)
        assert answer.status_code == 409 and answer.json()["code"] == "stale-draft"
        assert without_nonces(database_state(world.served.db_url)) == before
        with world.store.transaction() as s:
            held = s.get(m.IdReservation, key)
            assert held is not None
            for name, value in kept.items():
                setattr(held, name, value)
    assert post(world, "purge.client", commit, world.served.admin, request_id).status_code == 200
