"""Key rotation without downtime (issue 4): client keys, the root key, secret values.

Every test runs on SQLite and PostgreSQL (``team``). Reads are checked through fresh
Vault objects (``reopen``) so that no key cached before a rotation hides what the
database now holds.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from served import ServedTeam, only_local
from sqlalchemy import func, select, update

from vault import Vault
from vault.crypto import blobs, sealing
from vault.errors import (
    AccessDenied,
    AlreadyExists,
    DecryptionFailed,
    EnrolmentError,
    IntegrityError,
    InvalidInput,
    NotFound,
)
from vault.server.layer import is_layered
from vault.service.core import ENCRYPTION_LIMIT, ENCRYPTION_WARNING
from vault.storage import models as m

REASON = "T-1 rotation test"


@pytest.fixture
def team(team3):  # type: ignore[no-untyped-def]
    """Every test of this module in ``team3``'s three modes (SQLite, PostgreSQL, through a server)."""
    return team3


Values = dict[str, list[str]]  # secret name -> its passwords, oldest version first


def _client_id(vault: Vault, slug: str) -> int:
    with vault.store.transaction() as s:
        return vault.clients.client(s, slug).id


def _fill(admin: Vault, slug: str, count: int) -> Values:
    """A client with ``count`` secrets; every other one has a second version."""
    admin.clients.add(slug, f"{slug.title()} Ltd")
    values: Values = {}
    for i in range(count):
        name = f"s{i:02d}"
        values[name] = [f"{slug}-{name}-v1"]
        admin.secrets.add(f"{slug}/{name}", password=values[name][0], username=f"user{i}")
        if i % 2 == 0:
            values[name].append(f"{slug}-{name}-v2")
            admin.secrets.update(f"{slug}/{name}", password=values[name][1])
    return values


def _assert_readable(vault: Vault, slug: str, values: Values) -> None:
    """Every version of every secret reveals the password written; metadata opens too."""
    for name, passwords in values.items():
        for version, password in enumerate(passwords, start=1):
            assert vault.checkouts.reveal(f"{slug}/{name}", version=version, reason=REASON) == password
    assert [(s.name, s.username) for s in vault.secrets.list(slug)] == [
        (name, f"user{int(name[1:])}") for name in sorted(values) if name.startswith("s")
    ]


def _key_versions(db, client_id: int) -> list[int]:  # type: ignore[no-untyped-def]
    """``secret_versions.key_version`` of every row of the client."""
    return [
        r[0] for r in db.all(select(m.SecretVersion.key_version).join(m.Secret).where(m.Secret.client_id == client_id))
    ]


def _seal_versions(db, client_id: int) -> set[int]:  # type: ignore[no-untyped-def]
    return {r[0] for r in db.all(select(m.ClientKeySeal.version).where(m.ClientKeySeal.client_id == client_id))}


def _interrupt_after(vault: Vault, batches: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``vault``'s re-wrap loop stop with a Ctrl-C after ``batches`` batches."""
    original = vault.keys._rewrap_batch
    calls = {"n": 0}

    def rewrap(rotation_id: int, batch_size: int, progress: Callable[[int, int], None] | None) -> int:
        if calls["n"] == batches:
            raise KeyboardInterrupt
        calls["n"] += 1
        return original(rotation_id, batch_size, progress)

    monkeypatch.setattr(vault.keys, "_rewrap_batch", rewrap)


# -- client keys -------------------------------------------------------------------------------


def test_rotate_client_makes_a_new_version_current_and_destroys_the_old_one(team, db, reopen):
    admin = team.admin
    values = _fill(admin, "acme", 5)
    cid = _client_id(admin, "acme")
    fingerprint = db.scalar(select(m.ClientKey.fingerprint).where(m.ClientKey.client_id == cid))
    rows = len(_key_versions(db, cid))
    seen: list[tuple[int, int]] = []

    info = admin.keys.rotate_client("acme", batch_size=3, progress=lambda done, total: seen.append((done, total)))

    assert (info.client, info.from_version, info.to_version, info.state) == ("acme", 1, 2, "done")
    assert info.done == info.total == rows == 8
    assert seen == [(3, 8), (6, 8), (8, 8)]
    assert admin.keys.versions("acme") == [(1, "destroyed"), (2, "active")]
    v1 = db.all(select(m.ClientKey).where(m.ClientKey.client_id == cid, m.ClientKey.version == 1))[0][0]
    assert v1.fingerprint == fingerprint and v1.destroyed_at is not None and v1.retired_at is not None
    assert _seal_versions(db, cid) == {2}
    assert set(_key_versions(db, cid)) == {2}
    for vault in (admin, reopen(admin)):
        _assert_readable(vault, "acme", values)
        assert vault.clients.show("acme").key_version == 2

    admin.secrets.add("acme/new", password="written after")
    newest = db.all(select(m.SecretVersion).order_by(m.SecretVersion.secret_id.desc()).limit(1))[0][0]
    assert newest.key_version == 2
    if isinstance(team, ServedTeam):  # stored under the server's layer, the client-key version inside it
        assert is_layered(newest.wrapped_dek)
    else:
        assert blobs.blob_key_version(newest.wrapped_dek) == 2
    assert reopen(admin).checkouts.reveal("acme/new", reason=REASON) == "written after"
    assert admin.keys.list() == [info]
    assert admin.audit.verify().ok


def test_reads_work_throughout_an_interrupted_rotation_and_resume_finishes_it(team, db, reopen, monkeypatch):
    admin = team.admin
    values = _fill(admin, "acme", 6)
    cid = _client_id(admin, "acme")
    _interrupt_after(admin, 2, monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        admin.keys.rotate_client("acme", batch_size=3)
    monkeypatch.undo()

    assert sorted(_key_versions(db, cid)) == [1] * 3 + [2] * 6  # mixed: two batches of three done
    assert admin.keys.versions("acme") == [(1, "retiring"), (2, "active")]
    for vault in (admin, reopen(admin)):
        _assert_readable(vault, "acme", values)
    running = admin.keys.list(running_only=True)
    assert [(r.client, r.from_version, r.to_version, r.state, r.done, r.total) for r in running] == [
        ("acme", 1, 2, "running", 6, 9)
    ]
    status = admin.reports.status()
    assert status.open_rotations == 1
    assert any("incomplete (6/9)" in w and "rotate resume" in w for w in status.warnings)
    with pytest.raises(InvalidInput) as again:
        admin.keys.rotate_client("acme")
    assert "resume" in again.value.hint
    admin.secrets.add("acme/during", password="written during")  # new writes use the new version at once
    values["during"] = ["written during"]
    assert db.all(select(m.SecretVersion.key_version).order_by(m.SecretVersion.secret_id.desc()).limit(1))[0][0] == 2

    finished = admin.keys.resume(batch_size=4)
    assert [(r.client, r.state, r.done, r.total) for r in finished] == [("acme", "done", 9, 9)]
    assert admin.keys.list(running_only=True) == []
    assert admin.reports.status().open_rotations == 0
    assert admin.keys.versions("acme") == [(1, "destroyed"), (2, "active")]
    assert set(_key_versions(db, cid)) == {2} and _seal_versions(db, cid) == {2}
    vault = reopen(admin)
    for name, passwords in values.items():
        for version, password in enumerate(passwords, start=1):
            assert vault.checkouts.reveal(f"acme/{name}", version=version, reason=REASON) == password
    assert admin.keys.resume() == []
    assert admin.audit.verify().ok


def test_grantees_keep_access_and_a_grant_made_mid_rotation_gets_both_versions(team, db, reopen):
    admin = team.admin
    values = _fill(admin, "acme", 4)
    cid = _client_id(admin, "acme")
    alice, bob = team.engineer("alice"), team.engineer("bob")
    admin.grants.grant("alice", "acme")
    _assert_readable(alice, "acme", values)  # alice now caches version 1

    admin.keys.rotate_client("acme", batch_size=2)
    for vault in (alice, reopen(alice)):
        _assert_readable(vault, "acme", values)

    # a rotation started by hand and stopped after one batch of three
    with admin.store.transaction() as s:
        rotation_id = admin.keys.start_client_rotation(s, admin.clients.client(s, "acme"))
    assert admin.keys._rewrap_batch(rotation_id, 3, None) == 3
    assert sorted(set(_key_versions(db, cid))) == [2, 3]
    bob_id = db.engineer_id("bob")
    admin.grants.grant("bob", "acme")
    bob_seals = db.all(
        select(m.ClientKeySeal.version).where(
            m.ClientKeySeal.client_id == cid,
            m.ClientKeySeal.recipient_kind == "engineer",
            m.ClientKeySeal.recipient_id == bob_id,
        )
    )
    assert sorted(r[0] for r in bob_seals) == [2, 3]
    for vault in (bob, reopen(alice)):
        _assert_readable(vault, "acme", values)

    admin.keys.resume()
    assert admin.keys.versions("acme") == [(1, "destroyed"), (2, "destroyed"), (3, "active")]
    assert _seal_versions(db, cid) == {3}
    for vault in (reopen(bob), reopen(alice)):
        _assert_readable(vault, "acme", values)
    for call in (  # each one served now: AccessDenied through a server as in-process (no ConfigurationError)
        lambda: alice.keys.rotate_client("acme"),
        lambda: alice.keys.rotate_root(),
        lambda: alice.keys.resume(),
        lambda: alice.keys.list(),
        lambda: alice.reports.status(),
        lambda: alice.keys.set_retention(3),
    ):
        with pytest.raises(AccessDenied):
            call()


def test_audit_details_stay_readable_to_admins_and_the_old_client_key_reads_nothing_new(team, db):
    only_local(
        team, "it opens format-2 detail blobs (bound to the event's seq) by hand; format 3 binds them to the request"
    )
    admin = team.admin
    _fill(admin, "acme", 3)
    cid = _client_id(admin, "acme")
    admin.checkouts.reveal("acme/s01", reason="before the rotation")
    old_key = admin.keyholder.client_keys[(cid, 1)]  # what someone holding only version 1 has
    client = db.all(select(m.Client).where(m.Client.id == cid))[0][0]
    old_ring = blobs.decrypt_client_field(old_key, 1, client.audit_keys_blob, cid, "audit-keys")
    assert len(old_ring) == 32

    admin.keys.rotate_client("acme")
    admin.checkouts.reveal("acme/s01", reason="after the rotation")

    reveals = [e for e in admin.audit.log(client="acme") if e.action == "reveal"]
    assert [(e.readable, e.details["reason"]) for e in reveals] == [
        (True, "before the rotation"),
        (True, "after the rotation"),
    ]
    before, after = (
        r[0] for r in db.all(select(m.AuditEvent).where(m.AuditEvent.action == "reveal").order_by(m.AuditEvent.seq))
    )
    assert (before.key_version, after.key_version) == (1, 2)

    # the old key (and the ring it opened) still opens the event written before the rotation...
    raw = blobs.decrypt_audit_detail(old_ring, 1, before.details_blob, cid, before.seq, "reveal")
    assert json.loads(raw)["reason"] == "before the rotation"
    # ...and nothing written by or after the rotation
    client = db.all(select(m.Client).where(m.Client.id == cid))[0][0]
    attempts = 0
    for version in (1, 2):
        for blob, purpose in (
            (client.audit_keys_blob, "audit-keys"),
            (client.lookup_key_blob, "lookup-key"),
            (client.slug_blob, "slug"),
            (client.name_blob, "name"),
        ):
            with pytest.raises(DecryptionFailed):
                blobs.decrypt_client_field(old_key, version, blob, cid, purpose)
            attempts += 1
        for key in (old_ring, old_key):
            with pytest.raises(DecryptionFailed):
                blobs.decrypt_audit_detail(key, version, after.details_blob, cid, after.seq, "reveal")
            attempts += 1
    rows = db.all(select(m.SecretVersion).join(m.Secret).where(m.Secret.client_id == cid))
    assert rows
    for (row,) in rows:
        for version in (1, 2):
            with pytest.raises(DecryptionFailed):
                blobs.unwrap_data_key(old_key, version, row.wrapped_dek, cid, row.secret_id, row.version)
            attempts += 1
    assert attempts == 12 + 2 * len(rows)


# -- the root key ------------------------------------------------------------------------------


def test_rotate_root_keeps_every_client_readable_and_destroys_the_old_root(team, db, reopen):
    admin = team.admin
    acme, globex = _fill(admin, "acme", 3), _fill(admin, "globex", 2)
    alice = team.engineer("alice")
    admin2 = team.engineer("admin2", role="admin")
    admin.grants.grant("alice", "acme")
    admin.keys.rotate_client("globex")  # globex has versions 1 (destroyed) and 2
    code = admin.engineers.invite("carol")  # issued before the root rotation
    live = db.scalar(select(func.count()).select_from(m.ClientKey).where(m.ClientKey.state != "destroyed"))

    result = admin.keys.rotate_root()
    assert (result.root_version, result.org_version, result.clients) == (2, 2, 2)
    assert result.admins == ("admin2", "root-admin") and result.shares == () and result.refused == ()

    roots = db.all(select(m.RootKey.version, m.RootKey.state).order_by(m.RootKey.version))
    assert [tuple(r) for r in roots] == [(1, "destroyed"), (2, "active")]
    assert db.scalar(select(m.RootKey.destroyed_at).where(m.RootKey.version == 1)) is not None
    recovery = db.all(select(m.ClientKeySeal.recipient_id).where(m.ClientKeySeal.recipient_kind == "recovery"))
    assert sorted(r[0] for r in recovery) == [2] * live
    assert sorted(tuple(r) for r in db.all(select(m.RootSeal.root_version, m.RootSeal.engineer_id))) == [
        (2, db.engineer_id("root-admin")),
        (2, db.engineer_id("admin2")),
    ]
    for vault in (reopen(admin), admin2):
        assert [c.slug for c in vault.clients.list()] == ["acme", "globex"]
        _assert_readable(vault, "acme", acme)
        _assert_readable(vault, "globex", globex)
    _assert_readable(alice, "acme", acme)
    admin.clients.add("initech", "Initech")  # the new lookup key tags new slugs too
    with pytest.raises(AlreadyExists):
        reopen(admin).clients.add("acme", "Acme again")
    assert reopen(admin).clients.show("initech").name == "Initech"

    carol = team.open("carol")
    with pytest.raises(EnrolmentError) as stale:  # the code names the organisation key, rotated with the root
        carol.engineers.enroll("carol", code, "pass of carol")
    assert "key was replaced" in str(stale.value)
    assert db.scalar(select(m.Engineer.status).where(m.Engineer.name == "carol")) == "invited"
    fresh = admin.engineers.invite("carol")
    carol = team.open("carol")
    admin.engineers.confirm("carol", carol.engineers.enroll("carol", fresh, "pass of carol"))
    carol.engineers.unlock("carol", "pass of carol")
    assert admin.audit.verify().ok


def test_a_root_rotation_keeps_every_engineer_and_admin_the_chain_certified(team, db):
    """Found by the third mode: engineers confirmed on the server's host are certified by format-3
    events (signed by the server key); the rotation checked its anchors under engineer keys only,
    so it re-issued no certificate to them and sealed the new root to no admin confirmed so."""
    admin = team.admin
    acme = _fill(admin, "acme", 2)
    alice = team.engineer("alice")
    team.engineer("admin2", role="admin")
    admin.grants.grant("alice", "acme")
    result = admin.keys.rotate_root()
    assert (result.admins, result.refused) == (("admin2", "root-admin"), ())
    assert sorted(r[0] for r in db.all(select(m.RootSeal.engineer_id).where(m.RootSeal.root_version == 2))) == sorted(
        [db.engineer_id("root-admin"), db.engineer_id("admin2")]
    )
    _assert_readable(alice, "acme", acme)  # her certificate re-issued under the new organisation key
    assert admin.audit.verify().ok


def test_root_rotation_cost_grows_with_clients_not_secrets(team, db, monkeypatch):
    admin = team.admin
    for slug in ("acme", "globex"):
        _fill(admin, slug, 5)
    calls = {"seal": 0, "wrap": 0}
    seal, wrap = sealing.seal, blobs.wrap_data_key

    def counting_seal(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["seal"] += 1
        return seal(*args, **kwargs)

    def counting_wrap(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["wrap"] += 1
        return wrap(*args, **kwargs)

    monkeypatch.setattr(sealing, "seal", counting_seal)
    monkeypatch.setattr(blobs, "wrap_data_key", counting_wrap)

    def cost() -> int:
        calls["seal"] = calls["wrap"] = 0
        before = db.all(select(m.SecretVersion.secret_id, m.SecretVersion.version, m.SecretVersion.wrapped_dek))
        admin.keys.rotate_root()
        after = db.all(select(m.SecretVersion.secret_id, m.SecretVersion.version, m.SecretVersion.wrapped_dek))
        assert sorted(before) == sorted(after)  # no data key is touched
        assert calls["wrap"] == 0
        return calls["seal"]

    small = cost()
    assert small == 2 + 1  # one recovery seal per live client-key version, one bundle per admin
    for slug in ("acme", "globex"):
        for i in range(5, 50):
            admin.secrets.add(f"{slug}/s{i:02d}", password=f"p{i}")
    assert db.scalar(select(func.count()).select_from(m.Secret)) == 100
    assert cost() == small
    admin.clients.add("initech", "Initech")
    admin.clients.add("umbrella", "Umbrella")
    assert cost() == small + 2


# -- secret values -------------------------------------------------------------------------------


def test_rotate_secret_stores_a_new_version_with_a_different_password(team, reopen):
    admin = team.admin
    admin.clients.add("acme", "Acme")
    admin.secrets.add("acme/fw01", password="original", username="root")
    info = admin.keys.rotate_secret("acme/fw01")
    assert info.version == 2
    generated = admin.checkouts.reveal("acme/fw01", reason=REASON)
    assert generated != "original" and len(generated) >= 16
    assert admin.checkouts.reveal("acme/fw01", version=1, reason=REASON) == "original"
    assert admin.checkouts.reveal("acme/fw01", "username", reason=REASON) == "root"
    assert admin.keys.rotate_secret("acme/fw01", length=40).version == 3
    assert len(admin.checkouts.reveal("acme/fw01", reason=REASON)) == 40
    assert admin.keys.rotate_secret("acme/fw01", password="chosen").version == 4
    assert reopen(admin).checkouts.reveal("acme/fw01", reason=REASON) == "chosen"
    assert [v.version for v in admin.secrets.history("acme/fw01")] == [1, 2, 3, 4]


def test_retention_keeps_only_the_newest_versions(team, db, reopen):
    admin = team.admin
    admin.clients.add("acme", "Acme")
    admin.secrets.add("acme/fw01", password="v1")
    admin.secrets.add("acme/sw01", password="other")
    with pytest.raises(InvalidInput):
        admin.keys.set_retention(0)
    admin.keys.set_retention(3)
    for version in range(2, 7):
        admin.secrets.update("acme/fw01", password=f"v{version}")
    secret_id = db.all(select(m.SecretVersion.secret_id).where(m.SecretVersion.version == 6))[0][0]
    kept = db.all(select(m.SecretVersion.version).where(m.SecretVersion.secret_id == secret_id))
    assert sorted(r[0] for r in kept) == [4, 5, 6]
    assert db.scalar(select(func.count()).select_from(m.SecretVersion)) == 4  # sw01 keeps its one version
    vault = reopen(admin)
    for version in (1, 2, 3):
        with pytest.raises(NotFound):
            vault.checkouts.reveal("acme/fw01", version=version, reason=REASON)
    assert [vault.checkouts.reveal("acme/fw01", version=v, reason=REASON) for v in (4, 5, 6)] == ["v4", "v5", "v6"]
    assert [v.version for v in vault.secrets.history("acme/fw01")] == [4, 5, 6]
    admin.keys.rotate_secret("acme/fw01", password="v7")
    kept = db.all(select(m.SecretVersion.version).where(m.SecretVersion.secret_id == secret_id))
    assert sorted(r[0] for r in kept) == [5, 6, 7]


# -- counting encryptions -------------------------------------------------------------------------


def test_the_encryption_limit_refuses_writes_until_the_client_key_is_rotated(team, db, reopen):
    admin = team.admin
    admin.clients.add("acme", "Acme")
    admin.secrets.add("acme/fw01", password="first")
    cid = _client_id(admin, "acme")
    db.run(
        update(m.ClientKey)
        .where(m.ClientKey.client_id == cid, m.ClientKey.version == 1)
        .values(encryptions=ENCRYPTION_LIMIT - 1)
    )
    admin.secrets.add("acme/sw01", password="the last one allowed")
    assert db.scalar(select(m.ClientKey.encryptions).where(m.ClientKey.client_id == cid)) == ENCRYPTION_LIMIT
    assert any("encryptions" in w and "rotate" in w for w in admin.reports.status().warnings)
    before = (db.counts(), admin.audit.head())
    with pytest.raises(IntegrityError) as refused:
        admin.secrets.add("acme/vpn", password="one too many")
    assert "rotate" in refused.value.hint
    with pytest.raises(IntegrityError):
        admin.secrets.update("acme/fw01", password="also too many")
    assert (db.counts(), admin.audit.head()) == before

    admin.keys.rotate_client("acme")
    admin.secrets.add("acme/vpn", password="after the rotation")
    admin.secrets.update("acme/fw01", password="second")
    vault = reopen(admin)
    assert [vault.checkouts.reveal(f"acme/{n}", reason=REASON) for n in ("fw01", "sw01", "vpn")] == [
        "second",
        "the last one allowed",
        "after the rotation",
    ]
    new = db.scalar(select(m.ClientKey.encryptions).where(m.ClientKey.client_id == cid, m.ClientKey.version == 2))
    assert 0 < new < ENCRYPTION_WARNING
    assert not any("encryptions" in w for w in admin.reports.status().warnings)


def test_status_warns_about_keys_older_than_the_cryptoperiod(team):
    admin, clock = team.admin, team.clock
    admin.clients.add("acme", "Acme")
    team.engineer("alice")
    assert admin.reports.status().warnings == []
    clock.advance(days=366)
    admin.engineers.unlock("root-admin", team.passphrases["root-admin"])  # the session expired meanwhile
    warnings = admin.reports.status().warnings
    assert any("recovery key is older than 365 days" in w and "rotate root" in w for w in warnings)
    assert any(w.startswith("client acme: key version 1 is older than 365 days") for w in warnings)
    assert {w for w in warnings if w.startswith("engineer ")} == {
        "engineer root-admin: keys older than 365 days",
        "engineer alice: keys older than 365 days",
    }
    admin.keys.rotate_root()
    admin.keys.rotate_client("acme")
    assert [w for w in admin.reports.status().warnings if not w.startswith("engineer ")] == []
    with pytest.raises(InvalidInput):
        admin.keys.set_cryptoperiod(0)
    admin.keys.set_cryptoperiod(400)
    assert admin.reports.status().warnings == []


# -- the audit trail of key operations -------------------------------------------------------------


def test_every_key_operation_is_an_audit_event(team, db):
    admin = team.admin
    _fill(admin, "acme", 2)
    team.engineer("alice")
    bob = team.engineer("bob")
    admin.grants.grant("alice", "acme")
    admin.grants.grant("bob", "acme")
    start = admin.audit.head()[0]

    admin.keys.rotate_client("acme")
    admin.keys.rotate_root()
    admin.engineers.rotate("alice")
    bob.engineers.change_passphrase(team.passphrases["bob"], "a new passphrase for bob")
    admin.engineers.remove("bob")

    rows = db.all(
        select(m.AuditEvent.action, m.AuditEvent.engineer_id, m.AuditEvent.client_id, m.AuditEvent.signature)
        .where(m.AuditEvent.seq > start)
        .order_by(m.AuditEvent.seq)
    )
    key_actions = {
        "client-key-rotate",
        "client-key-rotated",
        "root-key-rotate",
        "engineer-key-rotate",
        "engineer-remove",
        "passphrase-change",
    }
    cid, admin_id, bob_id = _client_id(admin, "acme"), db.engineer_id("root-admin"), db.engineer_id("bob")
    got = [(r.action, r.engineer_id, r.client_id) for r in rows if r.action in key_actions]
    assert got == [
        ("client-key-rotate", admin_id, cid),
        ("client-key-rotated", admin_id, cid),
        ("root-key-rotate", admin_id, None),
        ("engineer-key-rotate", admin_id, None),
        ("passphrase-change", bob_id, None),
        # bob held acme's key: the removal starts its rotation in the same transaction
        ("client-key-rotate", admin_id, cid),
        ("engineer-remove", admin_id, None),
        ("client-key-rotated", admin_id, cid),
    ]
    assert all(r.signature is not None for r in rows if r.action in key_actions)
    details = [e.details for e in admin.audit.log(client="acme") if e.action == "client-key-rotate"]
    assert [(d["from_version"], d["to_version"]) for d in details] == [(1, 2), (2, 3)]
    public = {e.action: e.details for e in admin.audit.log() if e.action in key_actions and e.client is None}
    assert public["root-key-rotate"]["to_version"] == 2
    assert public["engineer-key-rotate"]["engineer"] == "alice"
    assert public["engineer-remove"]["engineer"] == "bob"
    assert admin.audit.verify().ok


def test_rotate_root_with_shares_checks_k_of_n_and_returns_them_once(team, db):
    admin = team.admin
    _fill(admin, "acme", 1)
    for bad in ((1, 3), (4, 3), (2, 17), (10, 12)):
        with pytest.raises(InvalidInput):
            admin.keys.rotate_root(shares=bad)
    assert [r[0] for r in db.all(select(m.RootKey.version))] == [1]  # nothing rotated
    result = admin.keys.rotate_root(shares=(2, 4))
    assert (result.threshold, len(result.shares), len(set(result.shares))) == (2, 4, 4)
    assert "redacted" in repr(result) and not any(share in repr(result) for share in result.shares)
    assert db.all(select(m.OrgKey.share_threshold, m.OrgKey.share_count).where(m.OrgKey.version == 2)) == [(2, 4)]
