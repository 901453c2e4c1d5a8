"""Signed key distribution: a writer of the database who is not an admin cannot get a
key to anyone, cannot extend or forge a grant, and cannot promote anyone."""

from __future__ import annotations

import contextlib
import datetime as dt
import struct
import time
from collections.abc import Iterator
from typing import Any

import pytest
from served import only_local
from sqlalchemy import func, insert, select, update

from vault.crypto import blobs, keyrecord, sealing, signing
from vault.crypto.labels import LABEL_CLIENT_KEY_SEAL, LABEL_SIG_ENGINEER, LABEL_SIG_GRANT
from vault.errors import (
    DecryptionFailed,
    EnrolmentError,
    KeyRecordRejected,
    Locked,
    Unauthenticated,
    UntrustedRecord,
    WrongPassphrase,
)
from vault.service.remote import RemoteVault
from vault.storage import models as m


@pytest.fixture
def shared(shared3):  # type: ignore[no-untyped-def]
    """The module's vault in each of ``shared3``'s modes (SQLite, PostgreSQL, through a team server)."""
    return shared3


@contextlib.contextmanager
def altered(db, model: Any, where: Any, **values: Any) -> Iterator[None]:  # type: ignore[no-untyped-def]
    """Overwrite columns of one row as a database writer would, and put them back after."""
    columns = [getattr(model, name) for name in values]
    rows = db.all(select(*columns).where(where))
    assert len(rows) == 1, f"expected one {model.__tablename__} row, found {len(rows)}"
    old = dict(zip(values, rows[0], strict=True))
    db.run(update(model).where(where).values(**values))
    try:
        yield
    finally:
        db.run(update(model).where(where).values(**old))


def _refused(vault: Any) -> type[Exception]:
    """What refuses a tampered row: the keyholder's check (``UntrustedRecord``) or, for an engineer
    working through a team server, the server's own check of her row before it authenticates her
    request (its certificate no longer vouches for the key: 401, ``Unauthenticated``)."""
    return Unauthenticated if isinstance(vault, RemoteVault) else UntrustedRecord


def flip(raw: bytes, index: int = -1) -> bytes:
    out = bytearray(raw)
    out[index] ^= 0x01
    return bytes(out)


def _count(db, model: Any, *where: Any) -> int:  # type: ignore[no-untyped-def]
    return int(db.scalar(select(func.count()).select_from(model).where(*where)))


@pytest.fixture
def setup(shared):  # type: ignore[no-untyped-def]
    """A client with a secret and a confirmed engineer without a grant."""
    c = shared.client()
    shared.admin.secrets.add(f"{c}/fw01", password="the-real-pw")
    alice = shared.engineer("alice")
    return c, alice, alice.engineer_name, shared.db.engineer_id(alice.engineer_name), shared.db.newest_client_id()


# (a) ---------------------------------------------------------------------------------------


def test_a_swapped_public_key_never_receives_a_grant(shared, setup, reveal):
    c, alice, name, alice_id, _ = setup
    db = shared.db
    for column, attacker_public in (
        ("sealing_public", sealing.KeyPair.generate().public),
        ("signing_public", signing.SigningKey.generate().public),
    ):
        with altered(db, m.Engineer, m.Engineer.id == alice_id, **{column: attacker_public}):
            with pytest.raises(UntrustedRecord) as caught:
                shared.admin.grants.grant(name, c)
            assert name in str(caught.value)
            mine = (m.ClientKeySeal.recipient_kind == "engineer") & (m.ClientKeySeal.recipient_id == alice_id)
            assert _count(db, m.ClientKeySeal, mine) == 0
            assert _count(db, m.Grant, m.Grant.engineer_id == alice_id) == 0
    shared.admin.grants.grant(name, c)  # control: the untouched keys do get the grant
    assert reveal(alice, f"{c}/fw01") == "the-real-pw"


def test_a_public_key_swapped_after_a_grant_is_refused_everywhere(shared, setup, reveal, reopen):
    c, alice, name, alice_id, _ = setup
    shared.admin.grants.grant(name, c)
    with altered(shared.db, m.Engineer, m.Engineer.id == alice_id, sealing_public=sealing.KeyPair.generate().public):
        with pytest.raises(UntrustedRecord):
            shared.admin.grants.grant(name, c)  # a re-grant would seal to the attacker
        fresh = reopen(alice)
        with pytest.raises(_refused(fresh)):
            reveal(fresh, f"{c}/fw01")


# (b) ---------------------------------------------------------------------------------------


def test_an_unsigned_or_altered_grant_is_refused(shared, setup, reveal, reopen):
    c, alice, name, alice_id, client_id = setup
    db, admin = shared.db, shared.admin
    admin.grants.grant(name, c, until=shared.clock() + dt.timedelta(hours=1))
    assert reveal(alice, f"{c}/fw01") == "the-real-pw"
    grant_id = db.scalar(select(m.Grant.id).where(m.Grant.engineer_id == alice_id, m.Grant.client_id == client_id))
    signature = db.scalar(select(m.Grant.signature).where(m.Grant.id == grant_id))
    bob = shared.engineer("bob")
    bob_id = db.engineer_id(bob.engineer_name)
    later = int((shared.clock() + dt.timedelta(days=365)).timestamp())
    tampering = [
        dict(signature=None),
        dict(signature=b""),
        dict(signature=flip(signature)),
        dict(until=later),  # extended
        dict(until=None),  # made unlimited
        dict(signed_at=later),
        dict(granted_by=alice_id),  # "signed" by a non-admin
    ]
    for values in tampering:
        with altered(db, m.Grant, m.Grant.id == grant_id, **values):
            with pytest.raises(UntrustedRecord):
                reveal(alice, f"{c}/fw01")  # the object that already read through the grant
            fresh = reopen(alice)
            for call in (lambda: reveal(fresh, f"{c}/fw01"), fresh.clients.list, lambda: fresh.clients.show(c)):
                with pytest.raises(UntrustedRecord):
                    call()
    with altered(db, m.Grant, m.Grant.id == grant_id, engineer_id=bob_id):  # moved to another engineer
        with pytest.raises(UntrustedRecord):
            bob.clients.list()
        with pytest.raises(UntrustedRecord):
            reveal(bob, f"{c}/fw01")
    assert reveal(reopen(alice), f"{c}/fw01") == "the-real-pw"  # control: restored, it works again


# (c) ---------------------------------------------------------------------------------------


def _seal_context(vault_id: bytes, client_id: int, engineer_id: int) -> tuple[Any, ...]:
    return (LABEL_CLIENT_KEY_SEAL, vault_id, client_id, 1, "engineer", engineer_id)


def test_a_grant_inserted_by_a_database_writer_is_refused(shared, setup, reveal, reopen):
    c, alice, _, alice_id, client_id = setup
    db, admin = shared.db, shared.admin
    vault_id = admin.vault_id()
    alice_public = db.scalar(select(m.Engineer.sealing_public).where(m.Engineer.id == alice_id))
    attacker_key = blobs.new_key()
    admin_id = db.engineer_id("root-admin")
    now = shared.clock()
    db.run(
        insert(m.ClientKeySeal).values(
            client_id=client_id,
            version=1,
            recipient_kind="engineer",
            recipient_id=alice_id,
            blob=sealing.seal(alice_public, 1, attacker_key, _seal_context(vault_id, client_id, alice_id)),
        )
    )
    own_key = signing.SigningKey(alice.keyholder.me().signing_seed)
    forged = [
        dict(granted_by=admin_id, signature=None),
        dict(granted_by=admin_id, signature=bytes(64)),
        dict(granted_by=alice_id, signature=None),
    ]
    for values in forged:
        db.run(
            insert(m.Grant).values(
                engineer_id=alice_id,
                client_id=client_id,
                signed_at=int(now.timestamp()),
                until=None,
                created_at=now,
                revoked_at=None,
                **values,
            )
        )
        grant_id = db.scalar(select(func.max(m.Grant.id)))
        if values["granted_by"] == alice_id:  # signed with the engineer's own key, as if she were an admin
            fields = (vault_id, grant_id, alice_id, alice_public, client_id, int(now.timestamp()), 0)
            db.run(
                update(m.Grant).where(m.Grant.id == grant_id).values(signature=own_key.sign(LABEL_SIG_GRANT, *fields))
            )
        for vault in (alice, reopen(alice)):
            with pytest.raises(UntrustedRecord):
                vault.clients.list()
            with pytest.raises(UntrustedRecord):
                reveal(vault, f"{c}/fw01")
        db.run(update(m.Grant).where(m.Grant.id == grant_id).values(revoked_at=now))


def test_a_sealed_key_replaced_by_a_database_writer_is_refused(shared, setup, reveal, reopen):
    """A valid grant, but the sealed copy now holds the attacker's key, under which the
    attacker re-encrypted the client's slug and name: the fingerprint check refuses it."""
    c, alice, name, alice_id, client_id = setup
    db, admin = shared.db, shared.admin
    admin.grants.grant(name, c)
    vault_id = admin.vault_id()
    alice_public = db.scalar(select(m.Engineer.sealing_public).where(m.Engineer.id == alice_id))
    attacker_key = blobs.new_key()
    planted = dict(
        slug_blob=blobs.encrypt_client_field(attacker_key, 1, c.encode(), client_id, "slug"),
        name_blob=blobs.encrypt_client_field(attacker_key, 1, b"Planted Name", client_id, "name"),
    )
    seal_where = (
        (m.ClientKeySeal.client_id == client_id)
        & (m.ClientKeySeal.recipient_kind == "engineer")
        & (m.ClientKeySeal.recipient_id == alice_id)
    )
    fake_seal = sealing.seal(alice_public, 1, attacker_key, _seal_context(vault_id, client_id, alice_id))
    with (
        altered(db, m.ClientKeySeal, seal_where, blob=fake_seal),
        altered(db, m.Client, m.Client.id == client_id, **planted),
    ):
        for call in (lambda v: v.clients.list(), lambda v: v.clients.show(c), lambda v: reveal(v, f"{c}/fw01")):
            with pytest.raises(UntrustedRecord) as caught:
                call(reopen(alice))
            assert "Planted" not in str(caught.value)
    recovery_where = (m.ClientKeySeal.client_id == client_id) & (m.ClientKeySeal.recipient_kind == "recovery")
    recovery_public = db.scalar(select(m.RootKey.recovery_public))
    fake_recovery = sealing.seal(
        recovery_public, 1, attacker_key, (LABEL_CLIENT_KEY_SEAL, vault_id, client_id, 1, "recovery", 1)
    )
    with altered(db, m.ClientKeySeal, recovery_where, blob=fake_recovery), pytest.raises(UntrustedRecord):
        reveal(reopen(admin), f"{c}/fw01")
    assert reveal(reopen(alice), f"{c}/fw01") == "the-real-pw"


# (d) ---------------------------------------------------------------------------------------


def test_a_role_or_status_changed_in_the_database_is_refused(shared, setup, reopen):
    _, alice, _, alice_id, _ = setup
    for values in (
        dict(role="admin"),
        dict(status="disabled"),
        dict(certified_at=12345),
        dict(name=shared.name("mallory")),
    ):
        with altered(shared.db, m.Engineer, m.Engineer.id == alice_id, **values):
            for vault in (alice, reopen(alice)):
                expected = (
                    (_refused(vault), Locked) if "name" in values else _refused(vault)
                )  # a renamed row is not her session's
                calls = [
                    vault.engineers.whoami,
                    vault.clients.list,
                    lambda: vault.clients.add(shared.name("evil"), "Evil"),
                ]
                if not isinstance(vault, RemoteVault):  # over HTTPS each refused call counts towards the
                    calls.append(lambda: vault.engineers.invite(shared.name("mallory")))  # address's limit
                for call in calls:
                    with pytest.raises(expected):
                        call()
    assert alice.engineers.whoami().role == "engineer"


def test_an_admin_demoted_or_retitled_in_the_database_cannot_act(shared, setup, reopen):
    c, _alice, _name, _alice_id, _ = setup
    carol = shared.engineer("carol", role="admin")
    carol_id = shared.db.engineer_id(carol.engineer_name)
    again = reopen(carol)
    with altered(shared.db, m.Engineer, m.Engineer.id == carol_id, role="engineer"), pytest.raises(_refused(again)):
        again.clients.add(shared.name("evil"), "Evil")
    assert reopen(carol).clients.show(c).slug == c


# (e) ---------------------------------------------------------------------------------------


def test_a_tampered_client_key_record_is_refused(shared, setup, reveal, reopen):
    c, alice, name, alice_id, client_id = setup
    db, admin = shared.db, shared.admin
    admin.grants.grant(name, c)
    where = (m.ClientKey.client_id == client_id) & (m.ClientKey.version == 1)
    signature, fingerprint = db.all(select(m.ClientKey.signature, m.ClientKey.fingerprint).where(where))[0]
    for values in (
        dict(signature=flip(signature)),
        dict(signature=flip(signature, 0)),
        dict(signature=None),
        dict(fingerprint=flip(fingerprint)),
        dict(signed_by=alice_id),
        dict(signed_at=12345),
    ):
        with altered(db, m.ClientKey, where, **values):
            for vault in (reopen(alice), reopen(admin)):
                with pytest.raises(UntrustedRecord):
                    reveal(vault, f"{c}/fw01")
                with pytest.raises(UntrustedRecord):
                    vault.clients.show(c)
    assert reveal(reopen(alice), f"{c}/fw01") == "the-real-pw"


# (f) ---------------------------------------------------------------------------------------


def _with_params(record: bytes, memory: int, time_cost: int, parallelism: int) -> bytes:
    return record[:2] + struct.pack(">III", memory, time_cost, parallelism) + record[14:]


def test_argon2_floor_and_ceiling_hold_when_a_tampered_key_record_is_opened(shared, setup):
    _c, _alice, name, alice_id, _ = setup
    only_local(
        shared,
        "the key record opened is the one kept on the engineer's machine, not the database's; the same "
        "keyrecord.open_record bounds it (tests/crypto/test_keyrecord.py)",
    )
    passphrase = shared.passphrases[name]
    record = shared.db.scalar(select(m.Engineer.key_record).where(m.Engineer.id == alice_id))
    floor = keyrecord.FLOOR
    assert keyrecord.record_params(record) == floor  # the tests' records are made at the floor
    hostile = [
        (1024, floor.time_cost, floor.parallelism),  # below the memory floor
        (4 * 1024 * 1024, floor.time_cost, floor.parallelism),  # 4 GiB: above the ceiling
        (0xFFFFFFFF, floor.time_cost, floor.parallelism),
        (floor.memory_kib, 1, floor.parallelism),
        (floor.memory_kib, 0xFFFFFFFF, floor.parallelism),
        (floor.memory_kib, floor.time_cost, 0),
        (floor.memory_kib, floor.time_cost, 64),
        (0, 0, 0),
    ]
    for params in hostile:
        with altered(shared.db, m.Engineer, m.Engineer.id == alice_id, key_record=_with_params(record, *params)):
            for attempt in (passphrase, "wrong"):
                started = time.monotonic()
                with pytest.raises(KeyRecordRejected) as caught:
                    shared.open(name).engineers.unlock(name, attempt)
                assert time.monotonic() - started < 2.0, f"{params} was derived before it was refused"
                assert passphrase not in str(caught.value)
    # Raised parameters inside the bounds are authenticated: the record no longer opens.
    with (
        altered(
            shared.db,
            m.Engineer,
            m.Engineer.id == alice_id,
            key_record=_with_params(record, floor.memory_kib + 1024, 2, 1),
        ),
        pytest.raises(WrongPassphrase),
    ):
        shared.open(name).engineers.unlock(name, passphrase)
    for index in (14 + 3, 30 + 2, -1):  # salt, nonce and tag are authenticated too
        tampered = flip(record, index)
        with (
            altered(shared.db, m.Engineer, m.Engineer.id == alice_id, key_record=tampered),
            pytest.raises(DecryptionFailed),
        ):
            shared.open(name).engineers.unlock(name, passphrase)
    assert shared.open(name).engineers.unlock(name, passphrase).engineer == name


# the trust anchor -------------------------------------------------------------------------------


def test_a_replaced_organisation_key_is_refused_by_every_engineer(shared, setup, reopen):
    """A writer replaces the organisation key and re-signs a certificate with their own."""
    _, alice, name, alice_id, _ = setup
    db, admin = shared.db, shared.admin
    attacker = signing.SigningKey.generate()
    vault_id = admin.vault_id()
    row = db.all(select(m.Engineer).where(m.Engineer.id == alice_id))[0][0]
    fields = (
        vault_id,
        row.id,
        row.name,
        "admin",
        row.status,
        row.key_generation,
        row.sealing_public,
        row.signing_public,
        row.certified_at,
    )
    code = admin.engineers.invite(newcomer := shared.name("dave"))
    with (
        altered(db, m.VaultInfo, m.VaultInfo.id == 1, org_signing_public=attacker.public),
        altered(
            db,
            m.Engineer,
            m.Engineer.id == alice_id,
            role="admin",
            certificate=attacker.sign(LABEL_SIG_ENGINEER, *fields),
        ),
    ):
        unlocking = shared.open(name)
        with pytest.raises(_refused(unlocking)):
            unlocking.engineers.unlock(name, shared.passphrases[name])
        for vault in (alice, reopen(alice), reopen(admin)):
            with pytest.raises(_refused(vault)):
                vault.clients.list()
        with pytest.raises(EnrolmentError):
            shared.open(newcomer).engineers.enroll(newcomer, code, "newcomer pass")
    assert reopen(alice).clients.list() == []
