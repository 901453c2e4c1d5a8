"""Creating a vault, and engineers: invite, enrol, confirm, unlock, lock, sessions."""

from __future__ import annotations

import datetime as dt
import itertools
import unicodedata

import pytest
from sqlalchemy import select, update

from vault import Vault
from vault.crypto import keyrecord, sealing, shamir, signing
from vault.crypto.keyrecord import FLOOR
from vault.errors import (
    AlreadyExists,
    EnrolmentError,
    Locked,
    NotFound,
    RecoveryShareError,
    SessionExpired,
    Unauthenticated,
    UntrustedRecord,
    WrongPassphrase,
)
from vault.keyholder.keys import RootBundle
from vault.storage import models as m


@pytest.fixture
def shared(shared3):  # type: ignore[no-untyped-def]
    """The module's vault in each of ``shared3``'s modes (SQLite, PostgreSQL, through a team server)."""
    return shared3


def _served(shared) -> bool:  # type: ignore[no-untyped-def]
    return bool(getattr(shared, "served", False))


def _status(db, name: str) -> tuple[str, bytes | None]:  # type: ignore[no-untyped-def]
    (row,) = db.all(select(m.Engineer.status, m.Engineer.certificate).where(m.Engineer.name == name))
    return row[0], row[1]


# -- init --------------------------------------------------------------------------------------


def test_init_twice_on_one_database_is_refused(shared):
    before = shared.db.counts()
    with pytest.raises(AlreadyExists):
        Vault.create(shared.url, admin="second-admin", passphrase="another passphrase", kdf_params=FLOOR)
    assert shared.db.counts() == before
    assert shared.admin.engineers.whoami().engineer == "root-admin"


def test_recovery_shares_rebuild_the_root_bundle_from_any_three_of_five(db_url):
    vault, result = Vault.create(db_url, admin="root-admin", passphrase="pass", kdf_params=FLOOR, shares=(3, 5))
    try:
        assert len(result.shares) == 5 and len(set(result.shares)) == 5
        vault_id = bytes.fromhex(result.vault_id)
        decoded = [shamir.decode_share(vault_id, text) for text in result.shares]
        assert {(k, x) for k, x, _ in decoded} == {(3, x) for x in range(1, 6)}
        with vault.store.transaction() as s:
            recovery_public = s.get(m.RootKey, 1).recovery_public
            org_public = s.get(m.VaultInfo, 1).org_signing_public
            stored = b"".join(
                bytes(v)
                for t in m.Base.metadata.sorted_tables
                for row in s.execute(select(t))
                for v in row
                if isinstance(v, (bytes, bytearray, memoryview))
            )
        bundles = {shamir.combine([(x, y) for _, x, y in subset], 3) for subset in itertools.combinations(decoded, 3)}
        assert len(bundles) == 1, "every 3-subset must rebuild the same bundle"
        bundle = RootBundle(bundles.pop(), 1)
        assert bundle.recovery.public == recovery_public
        assert bundle.org.public == org_public
        assert all(y not in stored for _, _, y in decoded), "a share must not be stored in the database"
        with pytest.raises(RecoveryShareError):
            shamir.combine([(x, y) for _, x, y in decoded[:2]], 3)
        wrong = RootBundle(shamir.combine([(x, y) for _, x, y in decoded[:2]], 2), 1)  # too few, forced
        assert wrong.recovery.public != recovery_public
        corrupted = result.shares[0][:-3] + ("A" if result.shares[0][-3] != "A" else "B") + result.shares[0][-2:]
        with pytest.raises(RecoveryShareError):
            shamir.decode_share(vault_id, corrupted)
        with pytest.raises(RecoveryShareError):
            shamir.decode_share(bytes(16), result.shares[0])  # another vault's id
    finally:
        vault.close()


# -- invite, enrol, confirm ------------------------------------------------------------------


def test_invite_enroll_confirm_makes_an_active_engineer_with_certified_keys(shared):
    admin, name = shared.admin, shared.name("alice")
    code = admin.engineers.invite(name)
    assert code.startswith("CV1-")
    assert _status(shared.db, name) == ("invited", None)
    with pytest.raises(EnrolmentError):
        admin.engineers.pending_fingerprint(name)
    mine = shared.open(name)
    fingerprint = mine.engineers.enroll(name, code, "alice's passphrase")
    assert admin.engineers.pending_fingerprint(name) == fingerprint
    assert _status(shared.db, name) == ("enrolled", None)
    # not usable before an admin confirms (through a server: its key is unknown there, 401)
    with pytest.raises(Unauthenticated if _served(shared) else NotFound):
        shared.open(name).engineers.unlock(name, "alice's passphrase")
    info = admin.engineers.confirm(name, fingerprint.upper().replace(" ", ""))  # spacing and case do not matter
    assert (info.name, info.role, info.status, info.fingerprint) == (name, "engineer", "active", fingerprint)
    status, certificate = _status(shared.db, name)
    assert status == "active" and certificate is not None
    session = mine.engineers.unlock(name, "alice's passphrase")
    assert (session.engineer, session.role) == (name, "engineer")
    listed = {e.name: e for e in admin.engineers.list()}
    assert listed[name].fingerprint == fingerprint and listed[name].status == "active"
    # the code is used up (through a server its key is no longer known there: 401)
    with pytest.raises(Unauthenticated if _served(shared) else EnrolmentError):
        shared.open(name).engineers.enroll(name, code, "another passphrase")
    assert shared.open(name).engineers.unlock(name, "alice's passphrase").engineer == name  # her record kept


def test_confirm_with_a_wrong_fingerprint_is_refused_and_the_engineer_stays_enrolled(shared):
    admin, name = shared.admin, shared.name("alice")
    code = admin.engineers.invite(name)
    fingerprint = shared.open(name).engineers.enroll(name, code, "passphrase")
    wrong = signing.engineer_fingerprint(sealing.KeyPair.generate().public, signing.SigningKey.generate().public)
    for attempt in (wrong, fingerprint[:-1] + ("0" if fingerprint[-1] != "0" else "1"), ""):
        with pytest.raises(UntrustedRecord):
            admin.engineers.confirm(name, attempt)
        assert _status(shared.db, name) == ("enrolled", None)
    admin.engineers.confirm(name, fingerprint)
    assert _status(shared.db, name)[0] == "active"


def test_enroll_with_a_code_for_another_vault_is_refused(shared):
    name = shared.name("alice")
    shared.admin.engineers.invite(name)
    foreign = signing.make_enrolment_code(bytes(16), signing.SigningKey.generate().public)
    if _served(shared):  # the server authenticates the request under the code's key first: unknown there
        with pytest.raises(Unauthenticated, match="unknown-key"):
            shared.open(name).engineers.enroll(name, foreign, "passphrase")
    else:
        with pytest.raises(EnrolmentError) as caught:
            shared.open(name).engineers.enroll(name, foreign, "passphrase")
        assert "another vault" in str(caught.value)
    assert _status(shared.db, name) == ("invited", None)


def test_enroll_without_an_invitation_is_refused(shared):
    name = shared.name("alice")
    code = shared.admin.engineers.invite(name)
    for who in (shared.name("nobody"), "root-admin"):
        with pytest.raises(EnrolmentError):
            shared.open(who).engineers.enroll(who, code, "passphrase")


def test_a_malformed_code_is_refused_without_echoing_it(shared):
    name = shared.name("alice")
    code = shared.admin.engineers.invite(name)
    body = code.removeprefix("CV1-")
    typo = "CV1-" + ("B" if body[0] != "B" else "C") + body[1:]
    for bad in (
        "",
        "hello",
        "CV1-",
        "CV1-!!!!-????",
        code[:-5],
        code + "-AAAA",
        typo,
        "CV2-" + body,
        "CV1-" + "A" * 80,
    ):
        with pytest.raises(EnrolmentError) as caught:
            shared.open(name).engineers.enroll(name, bad, "passphrase")
        if len(bad) > 8:
            assert bad not in str(caught.value)
    assert _status(shared.db, name) == ("invited", None)


def test_enroll_after_the_invitation_expired_is_refused(shared):
    """Invitations last 72 hours (in that order: a served vault's clock only moves forward)."""
    name, other = shared.name("alice"), shared.name("bob")
    code, others = shared.admin.engineers.invite(name), shared.admin.engineers.invite(other)
    with shared.later(hours=71):
        fingerprint = shared.open(other).engineers.enroll(other, others, "passphrase")
    shared.admin.engineers.confirm(other, fingerprint)
    with shared.later(hours=73), pytest.raises(EnrolmentError) as caught:
        shared.open(name).engineers.enroll(name, code, "passphrase")
    assert "expired" in str(caught.value)
    assert _status(shared.db, name) == ("invited", None)


def test_keys_replaced_between_enroll_and_confirm_are_refused(shared):
    """A writer of the database swaps in their own keys and shows the admin their fingerprint."""
    admin, db, name = shared.admin, shared.db, shared.name("alice")
    code = admin.engineers.invite(name)
    shared.open(name).engineers.enroll(name, code, "passphrase")
    engineer_id = db.engineer_id(name)
    vault_id = db.scalar(select(m.VaultInfo.vault_id))
    org_public = db.scalar(select(m.VaultInfo.org_signing_public))
    attacker_seal, attacker_sign = sealing.KeyPair.generate(), signing.SigningKey.generate()
    record = keyrecord.lock_record(
        keyrecord.PrivateBundle(attacker_seal.private, attacker_sign.seed, org_public),
        "attacker",
        vault_id,
        engineer_id,
        1,
        FLOOR,
    )
    db.run(
        update(m.Engineer)
        .where(m.Engineer.id == engineer_id)
        .values(sealing_public=attacker_seal.public, signing_public=attacker_sign.public, key_record=record)
    )
    attacker_fingerprint = signing.engineer_fingerprint(attacker_seal.public, attacker_sign.public)
    assert admin.engineers.pending_fingerprint(name) == attacker_fingerprint
    with pytest.raises(UntrustedRecord) as caught:
        admin.engineers.confirm(name, attacker_fingerprint)
    assert "not made with their enrolment code" in str(caught.value)
    assert _status(db, name) == ("enrolled", None)


def test_enrolling_with_another_engineers_code_is_refused_at_confirm(shared):
    admin, alice, bob = shared.admin, shared.name("alice"), shared.name("bob")
    admin.engineers.invite(alice)
    bobs_code = admin.engineers.invite(bob)
    if _served(shared):  # the server shows only the invitation of the name the code was made for
        with pytest.raises(EnrolmentError, match="no open invitation"):
            shared.open(alice).engineers.enroll(alice, bobs_code, "passphrase")
        assert _status(shared.db, alice) == ("invited", None)
        return
    fingerprint = shared.open(alice).engineers.enroll(alice, bobs_code, "passphrase")
    with pytest.raises(UntrustedRecord):
        admin.engineers.confirm(alice, fingerprint)
    assert _status(shared.db, alice) == ("enrolled", None)


# -- unlock, sessions, lock --------------------------------------------------------------------


def test_unlock_with_a_wrong_passphrase_is_refused(shared):
    alice = shared.engineer("alice")
    name = alice.engineer_name
    real = shared.passphrases[name]
    for wrong in ("not-it-Q7x", real.upper(), real + " ", real[:-1]):
        with pytest.raises(WrongPassphrase) as caught:
            shared.open(name).engineers.unlock(name, wrong)
        assert real not in f"{caught.value} {caught.value.hint}" and wrong not in str(caught.value)
    with pytest.raises(Locked if _served(shared) else NotFound):  # served: no key record on this machine
        shared.open("nobody").engineers.unlock("nobody", real)


def test_nfc_and_nfd_forms_of_a_passphrase_unlock_the_same_account(shared):
    nfc = "Café Ångström ñ ✓"
    nfd = unicodedata.normalize("NFD", nfc)
    assert nfc != nfd
    for enrolled_with, unlocked_with in ((nfd, nfc), (nfc, nfd)):
        name = shared.name("zoe")
        code = shared.admin.engineers.invite(name)
        mine = shared.open(name)
        shared.admin.engineers.confirm(name, mine.engineers.enroll(name, code, enrolled_with))
        assert shared.open(name).engineers.unlock(name, unlocked_with).engineer == name


def test_whoami_and_lock(shared, reveal, reopen):
    alice = shared.engineer("alice")
    name = alice.engineer_name
    me = alice.engineers.whoami()
    assert (me.engineer, me.role, me.vault_id) == (name, "engineer", shared.admin.vault_id().hex())
    assert me.expires_at > shared.clock()

    def another() -> Vault:  # another Vault object on the same session store (another command)
        return reopen(alice)

    assert another().engineers.whoami().engineer == name  # the session store holds it
    assert alice.engineers.lock() is True
    for vault in (alice, another()):
        with pytest.raises(Locked):
            vault.engineers.whoami()
        with pytest.raises(Locked):
            vault.clients.list()
    assert alice.engineers.lock() is False
    with pytest.raises(Locked):
        shared.open().engineers.whoami()  # no engineer selected


def test_a_session_past_its_expiry_is_refused_and_deleted(shared):
    alice = shared.engineer("alice")
    name, vault_id = alice.engineer_name, alice.vault_id()
    sessions = alice.keyholder.sessions if _served(shared) else alice.sessions
    alice.engineers.unlock(name, shared.passphrases[name])  # the default session lasts 15 minutes
    assert sessions.get(vault_id, name) is not None
    with shared.later(minutes=14):
        assert alice.engineers.whoami().engineer == name
    with shared.later(minutes=16):
        with pytest.raises(SessionExpired):
            alice.engineers.whoami()
        assert sessions.get(vault_id, name) is None
        with pytest.raises(Locked) as caught:
            alice.clients.list()
        assert not isinstance(caught.value, SessionExpired)
    alice.engineers.unlock(name, shared.passphrases[name], ttl=dt.timedelta(minutes=5))
    with shared.later(minutes=6), pytest.raises(SessionExpired):
        alice.clients.list()


def test_an_invitation_is_signed_by_the_inviting_admin_and_cleared_at_confirmation(shared):
    admin, name = shared.admin, shared.name("alice")
    code = admin.engineers.invite(name, role="admin")
    columns = (m.Engineer.invite_signature, m.Engineer.invite_signed_by, m.Engineer.invite_prev_generation)
    ((signature, signed_by, previous),) = shared.db.all(select(*columns).where(m.Engineer.name == name))
    assert len(signature) == 64 and signed_by == shared.db.engineer_id(admin.engineer_name) and previous == 0
    fingerprint = shared.open(name).engineers.enroll(name, code, "passphrase")
    pending = admin.engineers.pending_confirmation(name)
    assert (pending.role, pending.invited_by, pending.carried, pending.dropped) == (
        "admin",
        admin.engineer_name,
        [],
        [],
    )
    admin.engineers.confirm(name, fingerprint)
    assert shared.db.all(select(*columns).where(m.Engineer.name == name)) == [(None, None, None)]
