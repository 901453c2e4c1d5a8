"""An admin's purge of one secret through the team server (both engines), and the check of its receipt;
their change of the vault settings and their list of unsigned policies (one served vault for both).

The admin works from a machine with no database (``RemoteVault``): the secret is named to the server
by its name tag; the server's draft is on record (``purge-secret-draft``) before it answers the
secret's wrapped data keys; the admin's machine checks the secret's name in its current metadata,
fingerprints every data key, signs the receipt over the commit's request id and commits; the server
checks the caller, the reservation, the draft, the fingerprints' number and the signature before
anything is deleted, and stores the receipt with its format-3 ``purge-secret`` event in the same
unit. The attacks are raw signed requests by insiders with valid keys, a DBA who moves a name tag,
and a server whose answer is not what was signed: each refused, nothing of the secret deleted.

Settings: the admin's keyholder reads the row as stored (``settings.get``), signs the change over it
and sends it (``settings.set``); the server checks the caller, that the stored row is still the one
read, the bounds, the time and the signature under the caller's certified key before it stores the
row with its format-3 ``settings`` event. ``policies.unsigned``: the slugs of the clients whose stored
policy does not verify are opened on the admin's machine (their contexts read by id).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import pytest
from remote_admin_harness import Stop, caller, post, remote
from served import ADMIN_PASS  # the suite's first admin's passphrase
from server_harness import Keyed, database_state, events, server_with, without_nonces
from sqlalchemy import select, update

from vault import Vault
from vault.authority.purge_requests import SECRET, PurgeRows
from vault.authority.purge_secret_values import PurgeSecretCommit, PurgeSecretDraftRequest
from vault.authority.settings_requests import SET, SettingsRequest, SettingsRow, settings_fields
from vault.crypto import signing
from vault.crypto.labels import LABEL_SIG_RECEIPT_V3, LABEL_SIG_SETTINGS
from vault.errors import AccessDenied, IntegrityError, InvalidInput, LookupMismatch, NotFound, UntrustedRecord
from vault.server.layer import MasterKey, ServerLayer
from vault.service.remote import RemoteVault
from vault.storage import models as m

pytestmark = pytest.mark.usefixtures("cli_home")

ADMIN = "root-admin"
NAMES = iter(f"sp{n}" for n in range(100))


def a_client(world: Keyed, admin: RemoteVault) -> str:
    """A new client with db01 (two versions) and db02, added by carol through the server: its slug."""
    slug = next(NAMES)
    admin.clients.add(slug, f"{slug} Ltd")
    admin.grants.grant("carol", slug)
    carol = remote(world, world.carol, "carol", "pass of carol")
    carol.secrets.add(f"{slug}/db01", password="first of db01")
    carol.secrets.update(f"{slug}/db01", password="second of db01")
    carol.secrets.add(f"{slug}/db02", password="pw of db02")
    carol.close()
    return slug


def secret_ids(world: Keyed, client_id: int) -> list[int]:
    with world.store.read() as s:
        return sorted(s.scalars(select(m.Secret.id).where(m.Secret.client_id == client_id)))


def versions_of(world: Keyed, secret_id: int) -> int:
    with world.store.read() as s:
        return len(list(s.scalars(select(m.SecretVersion).where(m.SecretVersion.secret_id == secret_id))))


class _Capturing:
    """The admin's ``HttpsTransport``, except that the commit is kept, not sent (or its answer changed)."""

    def __init__(self, https: Any, answer: Any = None) -> None:
        self.https, self.answer = https, answer
        self.commit: tuple[PurgeSecretCommit, bytes] | None = None

    def call(self, name: str, body: object, request_id: bytes | None = None) -> object:
        if name == "purge.secret" and self.answer is None:
            assert isinstance(body, PurgeSecretCommit) and request_id is not None
            self.commit = (body, request_id)
            raise Stop
        found = self.https.call(name, body, request_id)
        return self.answer(found) if name == "purge.secret" else found


def captured(admin: RemoteVault, ref: str) -> tuple[PurgeSecretCommit, bytes]:
    """The commit ``admin``'s keyholder signs for a real draft of ``purge secret`` (not sent)."""
    transport = admin.purge.transport
    capture = _Capturing(transport.https)
    original, transport.https = transport.https, capture
    try:
        with pytest.raises(Stop):
            admin.purge.secret(ref, request="DSR-S1")
    finally:
        transport.https = original
    assert capture.commit is not None
    return capture.commit


# -- an admin's purge of a secret, its receipt checked ---------------------------------------------------


def test_an_admin_purges_a_secret_with_no_database(world: Keyed, admin: RemoteVault) -> None:
    slug = a_client(world, admin)
    client_id = admin.checkouts.context(slug).client_id
    db01, db02 = secret_ids(world, client_id)
    before = len(events(world.served))
    receipt = admin.purge.secret(f"{slug}/db01", request="DSR-2026-S1")
    assert (receipt.kind, receipt.request, receipt.client_id, receipt.secret_ids) == (SECRET, "DSR-2026-S1", client_id,
                                                                                   [db01])  # fmt: skip
    assert receipt.counts == {"checkouts": 0, "secrets": 1, "versions": 2} and len(receipt.fingerprints) == 2
    assert secret_ids(world, client_id) == [db02] and versions_of(world, db01) == 0
    after = events(world.served)[before:]
    assert [(e.action, e.client_id, e.secret_id, e.request_id is not None) for e in after] == [
        ("purge-secret-draft", client_id, db01, True),
        ("purge-secret", client_id, db01, True),
    ]
    with world.store.read() as s:
        stored = s.get(m.PurgeReceipt, receipt.id)
        assert stored is not None and stored.request_id == after[1].request_id and stored.event_seq == after[1].seq
    assert admin.purge.verify_receipt(receipt.id).ok  # through the server
    assert world.served.admin.purge.verify_receipt(receipt.id).ok  # where the database is
    carol = remote(world, world.carol, "carol", "pass of carol")
    assert carol.checkouts.checkout(f"{slug}/db02", reason="T-1").value == "pw of db02"  # the other one lives
    with pytest.raises(NotFound):
        carol.secrets.show(f"{slug}/db01")
    carol.close()
    with pytest.raises(NotFound):
        admin.purge.secret(f"{slug}/db01", request="DSR-2026-S2")
    assert world.served.admin.audit.verify().ok


# -- insiders' attacks, each refused with nothing deleted ---------------------------------------------------


def test_insiders_drafts_and_commits_are_refused_with_nothing_written(world: Keyed, admin: RemoteVault) -> None:
    """An engineer's draft or commit; a commit not signed by its caller's key, with fewer or reordered
    fingerprints, for another request or reference; a secret of another client than the draft named."""
    slug = a_client(world, admin)
    commit, request_id = captured(admin, f"{slug}/db01")
    served, alice = world.served, world.served.alice
    before = without_nonces(database_state(served.db_url))
    draft = PurgeSecretDraftRequest(
        caller(alice), commit.slug_tag, commit.client_id, bytes(32), "DSR-9", commit.org_pin
    )
    answer = post(world, "purge.secret_draft", draft, alice)
    assert answer.status_code == 403 and answer.json()["error"] == "AccessDenied"
    as_alice = dataclasses.replace(commit, caller=caller(alice))
    assert post(world, "purge.secret", as_alice, alice, request_id).status_code == 403
    assert post(world, "purge.secret", commit, alice, request_id).status_code == 403  # another caller than the signer
    # the receipt signed by another key than the caller's (an engineer's certified key)
    other = dataclasses.replace(commit, signature=alice.keyholder.my_signing_key().sign(LABEL_SIG_RECEIPT_V3, b"x"))
    answer = post(world, "purge.secret", other, served.admin, request_id)
    assert answer.status_code == 403 and answer.json()["error"] == "AccessDenied"
    fewer = dataclasses.replace(commit, fingerprints=commit.fingerprints[1:])
    assert post(world, "purge.secret", fewer, served.admin, request_id).status_code == 403
    swapped = dataclasses.replace(commit, fingerprints=commit.fingerprints[::-1])
    assert post(world, "purge.secret", swapped, served.admin, request_id).status_code == 403
    assert post(world, "purge.secret", commit, served.admin).status_code == 403  # signed for another request
    other_ref = dataclasses.replace(commit, request_ref="DSR-other")
    answer = post(world, "purge.secret", other_ref, served.admin, request_id)
    assert answer.status_code == 409 and answer.json()["code"] == "stale-draft"
    acme = admin.checkouts.context("acme").client_id
    acme_secret = secret_ids(world, acme)[0]
    elsewhere = dataclasses.replace(commit, secret_id=acme_secret)  # the drafted client, acme's secret
    assert post(world, "purge.secret", elsewhere, served.admin, request_id).status_code == 404
    moved = dataclasses.replace(commit, client_id=acme, secret_id=acme_secret)  # the slug tag is the drafted client's
    assert post(world, "purge.secret", moved, served.admin, request_id).status_code == 400
    carol = remote(world, world.carol, "carol", "pass of carol")
    with pytest.raises((AccessDenied, NotFound)):
        carol.purge.secret(f"{slug}/db01", request="DSR-S5")
    carol.close()
    assert without_nonces(database_state(served.db_url)) == before
    assert post(world, "purge.secret", commit, served.admin, request_id).status_code == 200  # as signed


def test_a_stale_draft_is_refused(world: Keyed, admin: RemoteVault) -> None:
    """A new version of the secret between the draft and the commit: 409, nothing deleted."""
    slug = a_client(world, admin)
    commit, request_id = captured(admin, f"{slug}/db01")
    carol = remote(world, world.carol, "carol", "pass of carol")
    carol.secrets.update(f"{slug}/db01", password="third of db01")
    carol.close()
    before = without_nonces(database_state(world.served.db_url))
    answer = post(world, "purge.secret", commit, world.served.admin, request_id)
    assert answer.status_code == 409 and answer.json()["code"] == "stale-draft"
    assert without_nonces(database_state(world.served.db_url)) == before


def test_a_moved_name_tag_is_refused_on_the_admins_machine(world: Keyed, admin: RemoteVault) -> None:
    """A DBA swaps the name tags of db01 and db02: the draft for db01 finds db02, whose metadata the
    admin's machine opens and refuses before anything is signed; neither secret is deleted."""
    slug = a_client(world, admin)
    client_id = admin.checkouts.context(slug).client_id
    db01, db02 = secret_ids(world, client_id)
    with world.store.transaction() as s:
        tags = {i: s.scalar(select(m.Secret.name_tag).where(m.Secret.id == i)) for i in (db01, db02)}
        for secret_id, name_tag in ((db01, os.urandom(32)), (db02, tags[db01]), (db01, tags[db02])):
            s.execute(update(m.Secret).where(m.Secret.id == secret_id).values(name_tag=name_tag))
    with pytest.raises(LookupMismatch):
        admin.purge.secret(f"{slug}/db01", request="DSR-S3")
    assert secret_ids(world, client_id) == [db01, db02] and versions_of(world, db01) == 2
    with world.store.read() as s:
        assert s.scalar(select(m.PurgeReceipt.id).where(m.PurgeReceipt.client_id == client_id)) is None


def test_an_answer_that_is_not_the_receipt_signed_is_refused(world: Keyed, admin: RemoteVault) -> None:
    """A server that answers another receipt than the one the admin signed: refused on their machine."""
    slug = a_client(world, admin)

    def tampered(answer: object) -> object:
        assert isinstance(answer, PurgeRows)
        receipt = dataclasses.replace(answer.receipts[0], fingerprints=answer.receipts[0].fingerprints[1:])
        return dataclasses.replace(answer, receipts=(receipt,))

    transport = admin.purge.transport
    original, transport.https = transport.https, _Capturing(transport.https, tampered)
    try:
        with pytest.raises(UntrustedRecord):
            admin.purge.secret(f"{slug}/db01", request="DSR-S4")
    finally:
        transport.https = original


# -- the vault settings and the unsigned policies ------------------------------------------------------


def stored(world: Keyed) -> SettingsRow:
    with world.store.read() as s:
        info = s.get(m.VaultInfo, 1)
        assert info is not None
        return SettingsRow(info.retention_versions, info.cryptoperiod_days, info.settings_signed_by,
                           info.settings_signed_at, info.settings_signature)  # fmt: skip


def signed_by(world: Keyed, vault: Vault, row: SettingsRow) -> SettingsRow:
    """``row`` signed by ``vault``'s engineer's key (``signed_by`` as it says)."""
    key = vault.keyholder.my_signing_key()
    return row._replace(signature=key.sign(LABEL_SIG_SETTINGS, *settings_fields(world.served.admin.vault_id(), row)))


def test_an_admin_changes_the_settings_with_no_database(world: Keyed, admin: RemoteVault) -> None:
    before = len(events(world.served))
    admin.keys.set_retention(5)
    admin.keys.set_cryptoperiod(200)
    row = stored(world)
    me = world.served.admin.keyholder.me()
    assert (row.retention_versions, row.cryptoperiod_days, row.signed_by) == (5, 200, me.engineer_id)
    assert row.signature is not None
    public = world.served.admin.keyholder.my_signing_key().public
    fields = settings_fields(world.served.admin.vault_id(), row)
    signing.verify(public, row.signature, LABEL_SIG_SETTINGS, *fields, what="the settings")
    assert admin.keys.settings.keyholder.get().signed  # read back through the server, verified on this machine
    added = [(e.action, e.engineer_id, e.request_id is not None) for e in events(world.served)[before:]]
    assert added == [("settings", me.engineer_id, True)] * 2
    with pytest.raises(InvalidInput):
        admin.keys.set_retention(0)  # refused on the admin's machine: out of bounds
    assert world.served.admin.audit.verify().ok


def test_insiders_changes_are_refused_with_nothing_written(world: Keyed, admin: RemoteVault) -> None:
    served = world.served
    alice = served.alice
    current = stored(world)
    me = caller(served.admin)
    now = int(served.alice.clock().timestamp())
    wanted = SettingsRow(7, current.cryptoperiod_days, me.engineer_id, now, None)
    good = SettingsRequest(SET, me, served.admin.keyholder.me().org_signing_public, signed_by(world, served.admin,
                           wanted), current, "retention_versions")  # fmt: skip
    before = without_nonces(database_state(served.db_url))
    # an engineer: their own change, and the admin's request signed by them
    own = signed_by(world, alice, wanted._replace(signed_by=caller(alice).engineer_id))
    theirs = dataclasses.replace(good, caller=caller(alice), signed=own)
    answer = post(world, "settings.set", theirs, alice)
    assert answer.status_code == 403 and answer.json()["error"] == "AccessDenied"
    assert post(world, "settings.set", good, alice).status_code == 403
    # the admin's request with a row signed by another key (an engineer's) in the admin's name
    forged = dataclasses.replace(good, signed=signed_by(world, alice, wanted))
    answer = post(world, "settings.set", forged, served.admin)
    assert answer.status_code == 403 and answer.json()["error"] == "AccessDenied"
    # a row the admin signed, then changed
    changed = dataclasses.replace(good, signed=good.signed._replace(retention_versions=1))  # type: ignore[union-attr]
    assert post(world, "settings.set", changed, served.admin).status_code == 403
    # over another row than the one stored: stale
    stale = dataclasses.replace(good, replaces=current._replace(retention_versions=current.retention_versions + 1))
    answer = post(world, "settings.set", stale, served.admin)
    assert answer.status_code == 409 and answer.json()["code"] == "stale-draft"
    # signed by the admin, but out of bounds or dated away from now
    for row in (wanted._replace(retention_versions=0), wanted._replace(signed_at=now - 3600)):
        odd = dataclasses.replace(good, signed=signed_by(world, served.admin, row))
        assert post(world, "settings.set", odd, served.admin).status_code == 400
    assert without_nonces(database_state(served.db_url)) == before
    assert post(world, "settings.set", good, served.admin).status_code == 200
    assert stored(world).retention_versions == 7


def test_an_engineer_through_the_server_cannot_change_the_settings(world: Keyed, module_team: Any) -> None:
    alice = remote(world, world.served.alice, "alice", "pass of alice")
    before = without_nonces(database_state(world.served.db_url))
    with pytest.raises(AccessDenied):
        alice.keys.set_retention(3)
    alice.close()
    assert without_nonces(database_state(world.served.db_url)) == before


def test_an_admin_lists_the_unsigned_policies_with_no_database(world: Keyed, admin: RemoteVault) -> None:
    """A DBA loosens excl's policy: the admin's machine lists it as stored, named by its slug."""
    before = {p.client for p in admin.policies.unsigned()}  # acme's default row was never signed
    assert "excl" not in before
    excl = m.ClientPolicy.client_id == admin.checkouts.context("excl").client_id
    with world.store.transaction() as s:
        s.execute(update(m.ClientPolicy).where(excl).values(exclusive=False))
    try:
        shown = {p.client: p for p in admin.policies.unsigned()}
        assert set(shown) == before | {"excl"}
        assert (shown["excl"].exclusive, shown["excl"].signed) == (False, False)
        alice = remote(world, world.served.alice, "alice", "pass of alice")
        with pytest.raises(AccessDenied):
            alice.policies.unsigned()
        alice.close()
        with pytest.raises(IntegrityError):  # not the unsigned policies: nothing signed (test_policy_adopt_https.py)
            admin.policies.adopt([])
    finally:
        with world.store.transaction() as s:
            s.execute(update(m.ClientPolicy).where(excl).values(exclusive=True))
    assert {p.client for p in admin.policies.unsigned()} == before


# -- last: the module's vault goes under a server layer ---------------------------------------------------


def test_a_purge_through_a_layered_server_opens_and_destroys_the_layered_keys(
    world: Keyed, admin: RemoteVault, test_ca: Any
) -> None:
    slug = a_client(world, admin)
    client_id = admin.checkouts.context(slug).client_id
    db01, _ = secret_ids(world, client_id)
    plain = admin.purge.secret(f"{slug}/db02", request="DSR-S6").fingerprints  # before the layer: as stored
    layer = ServerLayer(MasterKey(1, os.urandom(32)))
    layer.layer_on(world.store)
    with server_with(world, test_ca, layer) as layered:
        mine = remote(dataclasses.replace(world, served=layered), world.served.admin, ADMIN, ADMIN_PASS)
        receipt = mine.purge.secret(f"{slug}/db01", request="DSR-S7")
        assert len(receipt.fingerprints) == 2 and not set(receipt.fingerprints) & set(plain)
        assert secret_ids(world, client_id) == [] and versions_of(world, db01) == 0
        assert mine.purge.verify_receipt(receipt.id).ok
        mine.close()
