"""Attacks on enrolment and confirmation by a writer of the database (issue 12, items 1-3).

The attacker is an engineer (a new hire, or one being re-enrolled) or a DBA who can edit
any row. Each test edits rows directly, then an honest admin runs the public API, and
the test checks that the attack did not succeed: a clear error, and nothing certified,
sealed or granted that an admin did not sign.
"""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, insert, select, update

from vault import Vault
from vault.crypto import keyrecord, sealing, signing
from vault.crypto.keyrecord import FLOOR
from vault.crypto.labels import LABEL_INVITE
from vault.errors import EnrolmentError, NotFound, UntrustedRecord, VaultError
from vault.storage import models as m

REASON = "T-1 test"


# -- what the attacker does --------------------------------------------------------------------


def _plant_grant(db, engineer_id: int, client_id: int, granted_by: int, signature: bytes | None = None) -> int:  # type: ignore[no-untyped-def]
    """Insert a grant row no admin signed; returns its id."""
    now = dt.datetime.now(dt.UTC)
    db.run(
        insert(m.Grant).values(
            engineer_id=engineer_id,
            client_id=client_id,
            granted_by=granted_by,
            signed_at=int(now.timestamp()),
            until=None,
            signature=signature,
            created_at=now,
        )
    )
    return int(db.scalar(select(func.max(m.Grant.id))))


def _forge_enrolment(db, name: str, role: str) -> str:  # type: ignore[no-untyped-def]
    """A complete "enrolled" engineer row made without any invitation; returns its fingerprint.

    The invite secret is sealed to the recovery *public* key, which anyone can read.
    """
    vault_id = db.scalar(select(m.VaultInfo.vault_id))
    org_public = db.scalar(select(m.VaultInfo.org_signing_public))
    root = db.all(select(m.RootKey.version, m.RootKey.recovery_public).where(m.RootKey.state == "active"))[-1]
    now = dt.datetime.now(dt.UTC)
    db.run(insert(m.Engineer).values(name=name, role=role, status="invited", key_generation=0, created_at=now))
    engineer_id = db.engineer_id(name)
    keypair, sign_key, secret = sealing.KeyPair.generate(), signing.SigningKey.generate(), bytes(range(16))
    record = keyrecord.lock_record(
        keyrecord.PrivateBundle(keypair.private, sign_key.seed, org_public), "attacker", vault_id, engineer_id, 1, FLOOR
    )
    db.run(
        update(m.Engineer)
        .where(m.Engineer.id == engineer_id)
        .values(
            status="enrolled",
            key_generation=1,
            sealing_public=keypair.public,
            signing_public=sign_key.public,
            key_record=record,
            invite_seal=sealing.seal(
                root.recovery_public, root.version, secret, (LABEL_INVITE, vault_id, engineer_id, root.version)
            ),
            invite_root_version=root.version,
            invite_expires_at=now + dt.timedelta(hours=1),
            enroll_mac=signing.enrolment_mac(secret, vault_id, engineer_id, name, keypair.public, sign_key.public),
        )
    )
    return signing.engineer_fingerprint(keypair.public, sign_key.public)


# -- what the test looks at ----------------------------------------------------------------------


def _engineer(db, name: str):  # type: ignore[no-untyped-def]
    return db.all(select(m.Engineer).where(m.Engineer.name == name))[0][0]


def _seals_to(db, engineer_id: int) -> list[tuple[int, int]]:  # type: ignore[no-untyped-def]
    rows = db.all(
        select(m.ClientKeySeal.client_id, m.ClientKeySeal.version).where(
            m.ClientKeySeal.recipient_kind == "engineer", m.ClientKeySeal.recipient_id == engineer_id
        )
    )
    return sorted((r[0], r[1]) for r in rows)


def _root_seals_to(db, engineer_id: int) -> int:  # type: ignore[no-untyped-def]
    return int(db.scalar(select(func.count()).select_from(m.RootSeal).where(m.RootSeal.engineer_id == engineer_id)))


def _assert_not_confirmed(db, name: str) -> None:  # type: ignore[no-untyped-def]
    row = _engineer(db, name)
    assert (row.status, row.certificate, row.certified_at) == ("enrolled", None, None)
    assert _root_seals_to(db, row.id) == 0
    assert _seals_to(db, row.id) == []
    assert db.scalar(select(func.count()).select_from(m.EngineerKey).where(m.EngineerKey.engineer_id == row.id)) == 0


def _client_with_secret(shared, password: str) -> tuple[str, int]:  # type: ignore[no-untyped-def]
    slug = shared.client()
    shared.admin.secrets.add(f"{slug}/s0", password=password)
    return slug, shared.db.newest_client_id()


def _enrol(shared, name: str, code: str) -> tuple[Vault, str]:  # type: ignore[no-untyped-def]
    passphrase = f"new pass of {name}"
    mine = shared.open(name)
    fingerprint = mine.engineers.enroll(name, code, passphrase)
    shared.passphrases[name] = passphrase
    return mine, fingerprint


def _admin_id(shared) -> int:  # type: ignore[no-untyped-def]
    return shared.db.engineer_id(shared.admin.engineer_name)


# -- 1. confirmation does not launder grants ---------------------------------------------------------


def test_grant_rows_planted_before_confirmation_are_not_carried_over(shared):
    """A new hire inserts grant rows (unsigned, or with a made-up signature) between enrolment
    and confirmation: the confirming admin must not sign and seal them."""
    admin, db = shared.admin, shared.db
    acme, acme_id = _client_with_secret(shared, "acme-pw")
    globex, globex_id = _client_with_secret(shared, "globex-pw")
    name = shared.name("hire")
    mine, fingerprint = _enrol(shared, name, admin.engineers.invite(name))
    hire_id = db.engineer_id(name)
    planted = [
        _plant_grant(db, hire_id, acme_id, _admin_id(shared)),
        _plant_grant(db, hire_id, globex_id, _admin_id(shared), signature=bytes(64)),
    ]

    admin.engineers.confirm(name, fingerprint)

    mine.engineers.unlock(name, shared.passphrases[name])
    assert _seals_to(db, hire_id) == []
    for slug in (acme, globex):
        with pytest.raises(VaultError):
            mine.checkouts.reveal(f"{slug}/s0", "password", reason=REASON)
    signatures = db.all(select(m.Grant.signature).where(m.Grant.id.in_(planted)).order_by(m.Grant.id))
    assert [r[0] for r in signatures] == [None, bytes(64)]  # never signed
    revoked = db.all(select(m.Grant.revoked_at).where(m.Grant.id.in_(planted)))
    assert all(r[0] is not None for r in revoked)  # set aside: no lookup trips over them
    assert mine.clients.list() == []


def test_grant_rows_planted_before_re_confirmation_are_not_carried_over_but_signed_ones_are(shared):
    """After ``rotate_engineer``, only the grants an admin signed over the engineer's previous
    key are re-signed for the new one; planted rows, and a genuine grant of another engineer
    moved onto this one, are not."""
    admin, db = shared.admin, shared.db
    acme, acme_id = _client_with_secret(shared, "acme-pw")
    globex, globex_id = _client_with_secret(shared, "globex-pw")
    initech, initech_id = _client_with_secret(shared, "initech-pw")
    alice, bob = shared.engineer("alice"), shared.engineer("bob")
    alice_name = alice.engineer_name
    admin.grants.grant(alice_name, acme)
    admin.grants.grant(bob.engineer_name, initech)
    alice_id = db.engineer_id(alice_name)
    code = admin.engineers.rotate(alice_name)

    _plant_grant(db, alice_id, globex_id, _admin_id(shared))
    bobs = db.all(select(m.Grant).where(m.Grant.engineer_id == db.engineer_id(bob.engineer_name)))[0][0]
    _plant_grant(db, alice_id, initech_id, bobs.granted_by, signature=bobs.signature)
    mine, fingerprint = _enrol(shared, alice_name, code)
    admin.engineers.confirm(alice_name, fingerprint)

    mine.engineers.unlock(alice_name, shared.passphrases[alice_name])
    assert mine.checkouts.reveal(f"{acme}/s0", "password", reason=REASON) == "acme-pw"
    for slug in (globex, initech):
        with pytest.raises(VaultError):
            mine.checkouts.reveal(f"{slug}/s0", "password", reason=REASON)
    assert {client for client, _ in _seals_to(db, alice_id)} == {acme_id}
    planted = db.all(select(m.Grant.client_id, m.Grant.signature).where(m.Grant.engineer_id == alice_id))
    assert sorted((c, sig) for c, sig in planted if c != acme_id) == sorted(
        [(globex_id, None), (initech_id, bobs.signature)]
    )  # never signed
    assert [c.slug for c in mine.clients.list()] == [acme]


def test_an_expired_grant_stays_verifiable_history_after_re_confirmation(shared):
    """An expired grant is not sealed to the new keys; its signature is renewed over them as
    history, so that it does not make every lookup of the engineer an untrusted record."""
    admin, db = shared.admin, shared.db
    acme, _ = _client_with_secret(shared, "acme-pw")
    globex, _ = _client_with_secret(shared, "globex-pw")
    alice = shared.engineer("alice")
    name = alice.engineer_name
    admin.grants.grant(name, acme, until=shared.now + dt.timedelta(hours=1))
    admin.grants.grant(name, globex)
    with shared.later(hours=2):
        code = admin.engineers.rotate(name)
        mine, fingerprint = _enrol(shared, name, code)
        pending = admin.engineers.pending_confirmation(name)
        assert [g.client for g in pending.carried] == [globex]
        assert [(d.client, d.reason.split()[0]) for d in pending.dropped] == [(acme, "expired")]
        admin.engineers.confirm(name, fingerprint)
        mine.engineers.unlock(name, shared.passphrases[name])
        assert [c.slug for c in mine.clients.list()] == [globex]
        with pytest.raises(NotFound):
            mine.checkouts.reveal(f"{acme}/s0", "password", reason=REASON)
        assert mine.checkouts.reveal(f"{globex}/s0", "password", reason=REASON) == "globex-pw"
    assert {c for c, _ in _seals_to(db, db.engineer_id(name))} == {db.newest_client_id()}


def test_pending_confirmation_shows_what_confirm_will_carry_over_and_drop(shared):
    admin, db = shared.admin, shared.db
    acme, _ = _client_with_secret(shared, "acme-pw")
    globex, globex_id = _client_with_secret(shared, "globex-pw")
    alice = shared.engineer("alice")
    name = alice.engineer_name
    until = shared.now + dt.timedelta(days=30)
    admin.grants.grant(name, acme, until=until)
    code = admin.engineers.rotate(name)
    planted = _plant_grant(db, db.engineer_id(name), globex_id, _admin_id(shared))
    with pytest.raises(EnrolmentError):
        admin.engineers.pending_confirmation(name)  # not enrolled yet
    _, fingerprint = _enrol(shared, name, code)

    pending = admin.engineers.pending_confirmation(name)

    assert (pending.name, pending.role, pending.fingerprint) == (name, "engineer", fingerprint)
    assert pending.invited_by == admin.engineer_name
    assert [(g.client, g.until) for g in pending.carried] == [(acme, until)]
    assert [(d.grant_id, d.client) for d in pending.dropped] == [(planted, globex)]
    assert "not signed" in pending.dropped[0].reason
    assert pending.to_json()["carried"] == [{"client": acme, "until": until.isoformat()}]
    info = admin.engineers.confirm(name, fingerprint, shown=pending)
    assert info.status == "active"


def test_confirm_refuses_when_what_it_would_carry_changed_since_it_was_shown(shared):
    admin, db = shared.admin, shared.db
    acme, _ = _client_with_secret(shared, "acme-pw")
    alice = shared.engineer("alice")
    name = alice.engineer_name
    admin.grants.grant(name, acme, until=shared.now + dt.timedelta(hours=1))
    code = admin.engineers.rotate(name)
    _, fingerprint = _enrol(shared, name, code)
    pending = admin.engineers.pending_confirmation(name)
    assert [g.client for g in pending.carried] == [acme]
    with shared.later(hours=2):  # the grant expired after the admin saw it listed
        with pytest.raises(EnrolmentError) as changed:
            admin.engineers.confirm(name, fingerprint, shown=pending)
        assert "changed since it was shown" in str(changed.value)
        assert _engineer(db, name).status == "enrolled"
        again = admin.engineers.pending_confirmation(name)
        assert again.carried == [] and admin.engineers.confirm(name, fingerprint, shown=again).status == "active"


# -- 2. the role is bound by the inviting admin's signature -------------------------------------------


def test_role_raised_in_the_database_before_confirmation_is_refused(shared):
    admin, db = shared.admin, shared.db
    name = shared.name("hire")
    _, fingerprint = _enrol(shared, name, admin.engineers.invite(name))
    db.run(update(m.Engineer).where(m.Engineer.name == name).values(role="admin"))

    with pytest.raises(UntrustedRecord):
        admin.engineers.confirm(name, fingerprint)

    _assert_not_confirmed(db, name)


def test_role_raised_before_enrolment_is_refused_by_the_enrolling_engineer(shared):
    admin, db = shared.admin, shared.db
    name = shared.name("hire")
    code = admin.engineers.invite(name)
    db.run(update(m.Engineer).where(m.Engineer.name == name).values(role="admin"))

    with pytest.raises(UntrustedRecord):
        shared.open(name).engineers.enroll(name, code, "passphrase")

    row = _engineer(db, name)
    assert (row.status, row.sealing_public, row.key_record) == ("invited", None, None)


def test_invitation_expiry_extended_in_the_database_is_refused_at_enrolment(shared):
    admin, db = shared.admin, shared.db
    name = shared.name("hire")
    code = admin.engineers.invite(name)
    db.run(
        update(m.Engineer).where(m.Engineer.name == name).values(invite_expires_at=shared.now + dt.timedelta(days=365))
    )
    with shared.later(hours=73), pytest.raises(UntrustedRecord):
        shared.open(name).engineers.enroll(name, code, "passphrase")
    assert _engineer(db, name).status == "invited"


def test_role_raised_on_an_active_engineer_is_refused_by_rotate_engineer(shared):
    admin, db = shared.admin, shared.db
    bob = shared.engineer("bob")
    name = bob.engineer_name
    before = _engineer(db, name)
    db.run(update(m.Engineer).where(m.Engineer.name == name).values(role="admin"))

    with pytest.raises(UntrustedRecord):
        admin.engineers.rotate(name)

    after = _engineer(db, name)
    assert (after.status, after.key_record, after.invite_seal) == ("active", before.key_record, None)


def test_role_raised_after_rotate_engineer_is_refused_at_re_confirmation(shared):
    admin, db = shared.admin, shared.db
    bob = shared.engineer("bob")
    name = bob.engineer_name
    code = admin.engineers.rotate(name)
    db.run(update(m.Engineer).where(m.Engineer.name == name).values(role="admin"))
    with pytest.raises(UntrustedRecord):
        shared.open(name).engineers.enroll(name, code, "passphrase")  # the engineer's own check
    db.run(update(m.Engineer).where(m.Engineer.name == name).values(role="engineer"))
    _, fingerprint = _enrol(shared, name, code)
    db.run(update(m.Engineer).where(m.Engineer.name == name).values(role="admin"))

    with pytest.raises(UntrustedRecord):
        admin.engineers.confirm(name, fingerprint)

    row = _engineer(db, name)
    assert (row.status, row.certificate) == ("enrolled", None)
    assert _root_seals_to(db, row.id) == 0


@pytest.mark.parametrize("role", ["engineer", "admin"])
def test_rotate_engineer_re_invites_with_the_signed_role_it_had(shared, role):
    admin, db = shared.admin, shared.db
    person = shared.engineer("person", role=role)
    name = person.engineer_name
    code = admin.engineers.rotate(name)
    mine, fingerprint = _enrol(shared, name, code)
    assert admin.engineers.pending_confirmation(name).role == role
    assert admin.engineers.confirm(name, fingerprint).role == role
    mine.engineers.unlock(name, shared.passphrases[name])
    assert mine.engineers.whoami().role == role
    assert _root_seals_to(db, db.engineer_id(name)) == (1 if role == "admin" else 0)


def test_an_invitation_signature_moved_from_another_invitation_is_refused(shared):
    """An admin invitation's signed fields and signature copied onto an engineer's row."""
    admin, db = shared.admin, shared.db
    boss, hire = shared.name("boss"), shared.name("hire")
    admin.engineers.invite(boss, role="admin")
    _, fingerprint = _enrol(shared, hire, admin.engineers.invite(hire))
    (source,) = db.all(
        select(m.Engineer.invite_signature, m.Engineer.invite_signed_by, m.Engineer.invite_expires_at).where(
            m.Engineer.name == boss
        )
    )
    db.run(
        update(m.Engineer)
        .where(m.Engineer.name == hire)
        .values(
            role="admin",
            invite_signature=source.invite_signature,
            invite_signed_by=source.invite_signed_by,
            invite_expires_at=source.invite_expires_at,
        )
    )
    with pytest.raises(UntrustedRecord):
        admin.engineers.confirm(hire, fingerprint)
    _assert_not_confirmed(db, hire)


# -- 3. no confirmation without a signed invitation ----------------------------------------------------


@pytest.mark.parametrize("role", ["engineer", "admin"])
def test_an_enrolment_forged_without_an_invitation_is_refused_at_confirmation(shared, role):
    admin, db = shared.admin, shared.db
    name = shared.name("forged")
    fingerprint = _forge_enrolment(db, name, role)
    assert admin.engineers.pending_fingerprint(name) == fingerprint

    with pytest.raises(UntrustedRecord) as caught:
        admin.engineers.confirm(name, fingerprint)

    assert "engineer invite" in caught.value.hint
    _assert_not_confirmed(db, name)


def test_an_enrolment_forged_with_a_made_up_invitation_signature_is_refused(shared):
    admin, db = shared.admin, shared.db
    name = shared.name("forged")
    fingerprint = _forge_enrolment(db, name, "admin")
    db.run(
        update(m.Engineer)
        .where(m.Engineer.name == name)
        .values(invite_signature=bytes(range(64)), invite_signed_by=_admin_id(shared))
    )
    with pytest.raises(UntrustedRecord):
        admin.engineers.confirm(name, fingerprint)
    _assert_not_confirmed(db, name)


# -- vaults from before signed invitations ---------------------------------------------------------------


def test_an_invitation_from_before_signed_invitations_is_refused_with_a_hint_to_re_invite(shared):
    admin, db = shared.admin, shared.db
    enrolled, invited = shared.name("old"), shared.name("old")
    _, fingerprint = _enrol(shared, enrolled, admin.engineers.invite(enrolled))
    code = admin.engineers.invite(invited)
    unsigned = {"invite_signature": None, "invite_signed_by": None, "invite_prev_generation": None}
    db.run(update(m.Engineer).where(m.Engineer.name.in_([enrolled, invited])).values(**unsigned))

    with pytest.raises(UntrustedRecord) as refused:
        admin.engineers.confirm(enrolled, fingerprint)
    assert f"credvault engineer invite {enrolled}" in refused.value.hint
    _assert_not_confirmed(db, enrolled)
    with pytest.raises(EnrolmentError) as stale:
        shared.open(invited).engineers.enroll(invited, code, "passphrase")
    assert "engineer invite" in stale.value.hint

    _, fingerprint = _enrol(shared, enrolled, admin.engineers.invite(enrolled))
    assert admin.engineers.confirm(enrolled, fingerprint).status == "active"


def test_a_vault_upgraded_with_an_enrolment_pending_refuses_it_until_re_invited(db_url):
    """A vault at the schema before signed invitations, with an engineer enrolled and not yet
    confirmed, upgrades; the pending enrolment is refused with the fix, and a new invitation works."""
    from alembic import command

    from vault.storage import engine as storage

    admin, _ = Vault.create(db_url, admin="root-admin", passphrase="pass", kdf_params=FLOOR)
    try:
        admin.engineers.unlock("root-admin", "pass")
        code = admin.engineers.invite("carol")
        carol = Vault.open(db_url, engineer="carol", kdf_params=FLOOR)
        fingerprint = carol.engineers.enroll("carol", code, "pass of carol")
        carol.close()
        command.downgrade(storage._alembic_config(admin.store.engine), "0006")
        assert admin.upgrade_schema() == storage.head_revision()
        with pytest.raises(UntrustedRecord) as refused:
            admin.engineers.confirm("carol", fingerprint)
        assert "credvault engineer invite carol" in refused.value.hint
        code = admin.engineers.invite("carol")
        carol = Vault.open(db_url, engineer="carol", kdf_params=FLOOR)
        fingerprint = carol.engineers.enroll("carol", code, "pass of carol")
        assert admin.engineers.confirm("carol", fingerprint).status == "active"
        carol.engineers.unlock("carol", "pass of carol")
        carol.close()
        assert admin.audit.verify().ok
    finally:
        admin.close()


def test_confirmation_is_still_audited(shared):
    admin, db = shared.admin, shared.db
    name = shared.name("hire")
    _, fingerprint = _enrol(shared, name, admin.engineers.invite(name))
    start = admin.audit.head()[0]
    admin.engineers.confirm(name, fingerprint)
    actions = [r[0] for r in db.all(select(m.AuditEvent.action).where(m.AuditEvent.seq > start))]
    assert actions == ["engineer-confirm"]
    assert admin.audit.verify().ok


def _empty_database(url: str, tmp_path, pg_template) -> tuple[str, object]:  # type: ignore[no-untyped-def]
    """A new, migrated, empty database on the engine of ``url`` and a function that drops it."""
    import uuid

    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from vault.storage import engine as storage

    if url.startswith("sqlite"):
        target = f"sqlite:///{tmp_path / 'restored.db'}"
        store = storage.Store(target)
        storage.upgrade(store)
        store.close()
        return target, lambda: None
    name = f"credvault_restore_{uuid.uuid4().hex[:12]}"
    server = create_engine(make_url(url), isolation_level="AUTOCOMMIT")
    with server.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"'))

    def drop() -> None:
        with server.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        server.dispose()

    return make_url(url).set(database=name).render_as_string(hide_password=False), drop


def test_a_backup_carries_the_signed_invitation(shared, tmp_path, pg_template):
    """An invitation pending when a backup was made is still verifiable once restored."""
    admin, db = shared.admin, shared.db
    admin_name = admin.engineer_name
    name = shared.name("pending")
    code = admin.engineers.invite(name)
    admin.backups.export_keys(tmp_path / "keys.json")
    admin.backups.create(tmp_path / "vault.backup")
    target, drop = _empty_database(shared.url, tmp_path, pg_template)
    try:
        restored = Vault.open(target, engineer=admin_name, kdf_params=FLOOR)
        passphrase = shared.passphrases[admin_name]
        restored.backups.restore(
            tmp_path / "vault.backup", tmp_path / "keys.json", admin=admin_name, passphrase=passphrase
        )
        columns = (m.Engineer.invite_signature, m.Engineer.invite_signed_by, m.Engineer.invite_prev_generation)
        with restored.store.transaction() as s:
            copied = s.execute(select(*columns).where(m.Engineer.name == name)).one()
        assert tuple(copied) == tuple(db.all(select(*columns).where(m.Engineer.name == name))[0])
        assert copied[0] is not None
        restored.engineers.unlock(admin_name, passphrase)
        mine = Vault.open(target, engineer=name, kdf_params=FLOOR)
        fingerprint = mine.engineers.enroll(name, code, "passphrase")
        assert restored.engineers.confirm(name, fingerprint).status == "active"
        mine.close()
        restored.close()
    finally:
        drop()  # type: ignore[operator]


def test_a_revocation_cleared_before_re_confirmation_carries_nothing(shared):
    """Issue 12, items 1 and 4: after ``rotate_engineer``, the engineer clears every mark of
    the revocation of a grant (and deletes a newer, shorter grant of another client, so the
    older open-ended one is the ledger's newest row). The re-confirmation must carry neither:
    the audit log's last word about each is a revocation or a newer grant."""
    admin, db = shared.admin, shared.db
    acme, acme_id = _client_with_secret(shared, "acme-pw")
    globex, globex_id = _client_with_secret(shared, "globex-pw")
    initech, _ = _client_with_secret(shared, "initech-pw")
    alice = shared.engineer("alice")
    name = alice.engineer_name
    alice_id = db.engineer_id(name)
    for slug in (acme, globex, initech):
        admin.grants.grant(name, slug)
    admin.grants.revoke(name, acme)
    admin.grants.grant(name, globex, until=shared.now + dt.timedelta(minutes=5))
    newer = db.scalar(select(func.max(m.Grant.id)).where(m.Grant.client_id == globex_id))
    code = admin.engineers.rotate(name)

    with shared.later(minutes=10):
        cleared = {"revoked_at": None, "revoked_by": None, "revocation": None}
        db.run(update(m.Grant).where(m.Grant.engineer_id == alice_id).values(**cleared))  # the attacks: the
        db.run(m.Grant.__table__.delete().where(m.Grant.id == newer))  # revocation cleared, the newer grant deleted
        mine, fingerprint = _enrol(shared, name, code)
        pending = admin.engineers.pending_confirmation(name)
        assert [g.client for g in pending.carried] == [initech]
        assert sorted(d.client for d in pending.dropped) == sorted([acme, globex])
        admin.engineers.confirm(name, fingerprint, shown=pending)

        mine.engineers.unlock(name, shared.passphrases[name])
        assert mine.checkouts.reveal(f"{initech}/s0", "password", reason=REASON) == "initech-pw"
        for slug in (acme, globex):
            with pytest.raises(VaultError):
                mine.checkouts.reveal(f"{slug}/s0", "password", reason=REASON)
        assert {c for c, _ in _seals_to(db, alice_id)} == {db.newest_client_id()}
        assert [c.slug for c in mine.clients.list()] == [initech]
    assert acme_id not in {c for c, _ in _seals_to(db, alice_id)}
