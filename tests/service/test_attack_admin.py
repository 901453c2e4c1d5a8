"""Attacks on admin removal and the organisation key (issue 12, items 6, 8 and 9).

The attacker is a writer of the database who is not an admin (an engineer with the
team database URL, a DBA) or a removed admin who kept the organisation signing seed.
Each test edits rows directly, then an honest admin runs the public API, and checks
that the attack does not succeed.
"""

from __future__ import annotations

import pytest
from sqlalchemy import delete, insert, select, update

from vault import Vault
from vault.crypto import blobs, keyrecord, sealing, shamir, signing
from vault.crypto.keyrecord import FLOOR
from vault.crypto.labels import LABEL_CLIENT_KEY_SEAL, LABEL_SIG_CLIENT_KEY, LABEL_SIG_ENGINEER
from vault.errors import DecryptionFailed, IntegrityError, UntrustedRecord, VaultError
from vault.keyholder.keys import RootBundle
from vault.service.sessions import MemorySessionStore
from vault.storage import models as m

REASON = "T-1 test"


def _plant_client_key(
    db,
    vault_id: bytes,
    client_id: int,
    version: int,
    signed_by: int,
    recovery_public: bytes,
    recovery_version: int,
    grantee: tuple[int, bytes] | None = None,
) -> bytes:
    """A client-key version the attacker made: its key sealed to the (public) recovery key,
    a fingerprint of it, and a signature that is not by any admin."""
    key = blobs.new_key()
    forger = signing.SigningKey.generate()
    fingerprint = signing.client_key_fingerprint(key)
    row = db.all(select(m.ClientKey).where(m.ClientKey.client_id == client_id).order_by(m.ClientKey.version.desc()))[0][
        0
    ]
    signature = forger.sign(LABEL_SIG_CLIENT_KEY, vault_id, client_id, version, fingerprint, row.signed_at)
    seals = [
        {
            "client_id": client_id,
            "version": version,
            "recipient_kind": "recovery",
            "recipient_id": recovery_version,
            "blob": sealing.seal(
                recovery_public,
                version,
                key,
                (LABEL_CLIENT_KEY_SEAL, vault_id, client_id, version, "recovery", recovery_version),
            ),
        }
    ]
    if grantee is not None:
        engineer_id, public = grantee
        seals.append(
            {
                "client_id": client_id,
                "version": version,
                "recipient_kind": "engineer",
                "recipient_id": engineer_id,
                "blob": sealing.seal(
                    public, version, key, (LABEL_CLIENT_KEY_SEAL, vault_id, client_id, version, "engineer", engineer_id)
                ),
            }
        )
    db.run(
        insert(m.ClientKey).values(
            client_id=client_id,
            version=version,
            state="active",
            fingerprint=fingerprint,
            signed_by=signed_by,
            signature=signature,
            signed_at=row.signed_at,
            encryptions=0,
            created_at=row.created_at,
        ),
        insert(m.ClientKeySeal).values(seals),
    )
    return key


def _recovery(db) -> tuple[int, bytes]:
    version, public = db.all(select(m.RootKey.version, m.RootKey.recovery_public).where(m.RootKey.state == "active"))[0]
    return int(version), bytes(public)


@pytest.mark.parametrize("how", ["rotate", "remove"])
def test_admin_removal_or_rotation_does_not_adopt_a_planted_client_key(team, db, reopen, how):
    """Item 6: a client-key version 'signed by' the leaving admin but forged by a database
    writer (and made current in clients.current_key_version) is not re-signed by the
    acting admin when that admin's keys are rotated or they are removed, its copies are
    deleted, and no secret is written under it afterwards."""
    admin = team.admin
    team.engineer("admin2", role="admin")
    admin.clients.add("acme", "Acme")
    admin.secrets.add("acme/fw", password="old-pw")
    client_id = db.newest_client_id()
    admin2_id = db.engineer_id("admin2")
    root_version, recovery_public = _recovery(db)
    _plant_client_key(db, admin.vault_id(), client_id, 2, admin2_id, recovery_public, root_version)
    db.run(update(m.Client).where(m.Client.id == client_id).values(current_key_version=2))

    acting = reopen(admin)
    if how == "rotate":
        acting.engineers.rotate("admin2")
    else:
        acting.engineers.remove("admin2")

    row = db.all(select(m.ClientKey).where(m.ClientKey.client_id == client_id, m.ClientKey.version == 2))[0][0]
    assert row.signed_by == admin2_id  # never re-signed by the acting admin
    assert (
        db.all(select(m.ClientKeySeal).where(m.ClientKeySeal.client_id == client_id, m.ClientKeySeal.version == 2))
        == []
    )
    fresh = reopen(admin)
    fresh.secrets.update("acme/fw", password="new-pw")
    key_versions = [
        r[0] for r in db.all(select(m.SecretVersion.key_version).join(m.Secret).where(m.Secret.client_id == client_id))
    ]
    assert key_versions and 2 not in key_versions
    assert fresh.checkouts.reveal("acme/fw", reason=REASON) == "new-pw"
    assert acting.adoption_skipped and "version 2" in acting.adoption_skipped[0]


def test_admin_removal_does_not_adopt_a_forged_grant(team, db, reopen):
    """Item 6: a grant row 'granted by' the leaving admin with a forged signature is not
    re-signed by the removing admin: the grantee gets nothing through it."""
    admin = team.admin
    team.engineer("admin2", role="admin")
    mallory = team.engineer("mallory")
    admin.clients.add("acme", "Acme")
    admin.secrets.add("acme/fw", password="acme-pw")
    client_id = db.newest_client_id()
    admin2_id, mallory_id = db.engineer_id("admin2"), db.engineer_id("mallory")
    row = db.all(select(m.ClientKey).where(m.ClientKey.client_id == client_id))[0][0]
    db.run(
        insert(m.Grant).values(
            engineer_id=mallory_id,
            client_id=client_id,
            granted_by=admin2_id,
            signed_at=row.signed_at,
            until=None,
            signature=b"\0" * 64,
            created_at=row.created_at,
        )
    )

    reopen(admin).engineers.remove("admin2")

    grants = db.all(select(m.Grant).where(m.Grant.engineer_id == mallory_id))
    assert grants and all(g[0].granted_by == admin2_id or g[0].revoked_at is not None for g in grants)
    with pytest.raises(VaultError):
        reopen(mallory).checkouts.reveal("acme/fw", reason=REASON)
    assert (
        db.all(
            select(m.ClientKeySeal).where(
                m.ClientKeySeal.recipient_kind == "engineer", m.ClientKeySeal.recipient_id == mallory_id
            )
        )
        == []
    )


def test_current_key_version_column_does_not_choose_the_write_key(team, db, reopen):
    """Item 6: a leaver who kept client key version 1 re-seals it to the (public) recovery
    key, marks it active and points clients.current_key_version at it; the admin's next
    write must not be encrypted under it."""
    admin = team.admin
    alice = team.engineer("alice")
    admin.clients.add("acme", "Acme")
    admin.secrets.add("acme/fw", password="one")
    admin.grants.grant("alice", "acme")
    client_id = db.newest_client_id()
    with alice.store.transaction() as s:
        kept = alice.keyholder.client_key(s, client_id, 1)  # what alice could hold while granted
    admin.keys.rotate_client("acme")  # version 1 destroyed, version 2 current
    vault_id = admin.vault_id()
    root_version, recovery_public = _recovery(db)
    context = (LABEL_CLIENT_KEY_SEAL, vault_id, client_id, 1, "recovery", root_version)
    db.run(
        update(m.ClientKey)
        .where(m.ClientKey.client_id == client_id, m.ClientKey.version == 1)
        .values(state="active", destroyed_at=None),
        update(m.ClientKey)
        .where(m.ClientKey.client_id == client_id, m.ClientKey.version == 2)
        .values(state="retiring"),
        insert(m.ClientKeySeal).values(
            client_id=client_id,
            version=1,
            recipient_kind="recovery",
            recipient_id=root_version,
            blob=sealing.seal(recovery_public, 1, kept, context),
        ),
        update(m.Client).where(m.Client.id == client_id).values(current_key_version=1),
    )

    with pytest.raises(IntegrityError):
        reopen(admin).secrets.update("acme/fw", password="two")
    key_versions = [
        r[0] for r in db.all(select(m.SecretVersion.key_version).join(m.Secret).where(m.Secret.client_id == client_id))
    ]
    assert key_versions == [2]


# -- item 8: a removed admin keeps the organisation signing seed ---------------------------------


def _org_seed_of(vault) -> signing.SigningKey:  # type: ignore[no-untyped-def]
    """What an admin can copy while still an admin: the organisation signing key."""
    with vault.store.transaction() as s:
        return signing.SigningKey(vault.keyholder.root_bundle(s).org.seed)


def _recertify(db, vault_id: bytes, org: signing.SigningKey, name: str) -> None:  # type: ignore[no-untyped-def]
    """One UPDATE: the engineer is an active admin again, under a certificate made with ``org``."""
    (row,) = db.all(select(m.Engineer).where(m.Engineer.name == name))[0]
    fields = (
        vault_id,
        row.id,
        row.name,
        "admin",
        "active",
        row.key_generation,
        row.sealing_public,
        row.signing_public,
        row.certified_at,
    )
    db.run(
        update(m.Engineer)
        .where(m.Engineer.id == row.id)
        .values(role="admin", status="active", disabled_at=None, certificate=org.sign(LABEL_SIG_ENGINEER, *fields))
    )


def test_a_removed_admin_who_re_certifies_himself_gets_no_new_root_bundle(team, db, reopen):
    """Item 8: admin2 copies the organisation seed, is removed, then re-certifies himself
    with it (one UPDATE); the next `rotate root` must not seal the new bundle to him."""
    admin = team.admin
    admin2 = team.engineer("admin2", role="admin")
    admin.clients.add("acme", "Acme")
    admin.secrets.add("acme/fw", password="acme-pw")
    seed = _org_seed_of(admin2)
    admin.engineers.remove("admin2")
    _recertify(db, admin.vault_id(), seed, "admin2")

    honest = reopen(admin)
    try:
        result = honest.keys.rotate_root()
    except UntrustedRecord:
        result = None  # refusing the whole rotation would also be safe
    admin2_id = db.engineer_id("admin2")
    assert db.all(select(m.RootSeal).where(m.RootSeal.engineer_id == admin2_id)) == []
    assert result is not None and "admin2" not in result.admins
    assert any("admin2" in entry for entry in result.refused)
    info = db.all(select(m.VaultInfo.org_signing_public))[0][0]
    assert info != seed.public  # the copied seed certifies nothing current
    assert reopen(admin).checkouts.reveal("acme/fw", reason=REASON) == "acme-pw"


def test_engineers_keep_working_across_org_key_rotations_without_re_enrolling(team, db, reopen):
    """Item 8: the org key changes at every root rotation and admin removal; an engineer
    enrolled under the first key keeps working (same session, a new one, a new unlock),
    and after an unlock their key record pins the current key."""
    admin = team.admin
    team.engineer("admin2", role="admin")
    alice = team.engineer("alice")
    admin.clients.add("acme", "Acme")
    admin.secrets.add("acme/fw", password="acme-pw")
    admin.grants.grant("alice", "acme")
    first = db.all(select(m.VaultInfo.org_signing_public))[0][0]

    admin.engineers.remove("admin2")
    reopen(admin).keys.rotate_root()

    keys = db.all(select(m.OrgKey.version, m.OrgKey.public).order_by(m.OrgKey.version))
    assert [r[0] for r in keys] == [1, 2, 3] and keys[0][1] == first
    assert keys[2][1] == db.all(select(m.VaultInfo.org_signing_public))[0][0]
    assert alice.checkouts.reveal("acme/fw", reason=REASON) == "acme-pw"  # the session from before
    again = team.open("alice")
    again.engineers.unlock("alice", team.passphrases["alice"])
    assert again.checkouts.reveal("acme/fw", reason=REASON) == "acme-pw"
    record = db.all(select(m.Engineer.key_record).where(m.Engineer.name == "alice"))[0][0]
    opened = keyrecord.open_record(record, team.passphrases["alice"], admin.vault_id(), db.engineer_id("alice"), 1)
    assert opened.org_signing_public == keys[2][1]  # re-pinned at unlock
    assert reopen(admin).audit.verify().ok


def test_a_chain_cut_back_to_a_removed_admins_key_is_refused(team, db, reopen):
    """Item 8: the removed admin deletes the newer org key and puts back the one he holds
    (with certificates he signs again); an engineer who unlocked since refuses it."""
    admin = team.admin
    admin2 = team.engineer("admin2", role="admin")
    team.engineer("alice")
    admin.clients.add("acme", "Acme")
    admin.secrets.add("acme/fw", password="acme-pw")
    admin.grants.grant("alice", "acme")
    seed = _org_seed_of(admin2)
    admin.engineers.remove("admin2")
    alice = team.open("alice")
    alice.engineers.unlock("alice", team.passphrases["alice"])  # re-pins the current org key
    vault_id = admin.vault_id()
    db.run(delete(m.OrgKey).where(m.OrgKey.version > 1), update(m.VaultInfo).values(org_signing_public=seed.public))
    _resign_all(db, vault_id, seed)
    with pytest.raises(UntrustedRecord):
        reopen(alice).checkouts.reveal("acme/fw", reason=REASON)


def test_an_admin_certificate_the_audit_chain_never_made_gets_no_new_root_bundle(team, db, reopen):
    """Item 8: admin2, while still an admin, makes alice an admin with one UPDATE (a
    certificate with role admin signed with the organisation seed he holds; no event says
    so); the rotation that removes him must not re-issue it nor seal the new bundle to her."""
    admin = team.admin
    admin2 = team.engineer("admin2", role="admin")
    team.engineer("alice")
    admin.clients.add("acme", "Acme")
    admin.secrets.add("acme/fw", password="acme-pw")
    _recertify(db, admin.vault_id(), _org_seed_of(admin2), "alice")

    admin.engineers.remove("admin2")
    result = admin.last_root_rotation
    assert result is not None
    assert "alice" not in result.admins
    assert any("alice" in entry for entry in result.refused)
    assert db.all(select(m.RootSeal).where(m.RootSeal.engineer_id == db.engineer_id("alice"))) == []
    assert reopen(admin).checkouts.reveal("acme/fw", reason=REASON) == "acme-pw"


def test_an_admin_whose_public_keys_were_swapped_gets_no_new_root_bundle(team, db):
    """Item 8: admin2, holding the organisation seed, puts his own sealing key in admin3's
    row and signs her certificate again; the rotation that removes him must not seal the
    new bundle to that key (the confirmation event names the keys it certified)."""
    admin = team.admin
    admin2 = team.engineer("admin2", role="admin")
    team.engineer("admin3", role="admin")
    seed = _org_seed_of(admin2)
    vault_id = admin.vault_id()
    (row,) = db.all(select(m.Engineer).where(m.Engineer.name == "admin3"))[0]
    swapped = sealing.KeyPair.generate().public
    fields = (vault_id, row.id, row.name, "admin", "active", row.key_generation, swapped, row.signing_public)
    certificate = seed.sign(LABEL_SIG_ENGINEER, *fields, row.certified_at)
    db.run(update(m.Engineer).where(m.Engineer.id == row.id).values(sealing_public=swapped, certificate=certificate))

    admin.engineers.remove("admin2")
    result = admin.last_root_rotation
    assert result is not None and "admin3" not in result.admins
    assert any("admin3" in entry for entry in result.refused)
    assert db.all(select(m.RootSeal).where(m.RootSeal.engineer_id == row.id)) == []


def _resign_all(db, vault_id: bytes, org: signing.SigningKey) -> None:  # type: ignore[no-untyped-def]
    """Every engineer certificate signed again with ``org``."""
    for (row,) in db.all(select(m.Engineer).where(m.Engineer.certificate.is_not(None))):
        fields = (
            vault_id,
            row.id,
            row.name,
            row.role,
            row.status,
            row.key_generation,
            row.sealing_public,
            row.signing_public,
            row.certified_at,
        )
        db.run(
            update(m.Engineer).where(m.Engineer.id == row.id).values(certificate=org.sign(LABEL_SIG_ENGINEER, *fields))
        )


def test_a_fork_with_an_old_key_record_is_refused_by_the_machines_org_key_memory(team, db, tmp_path, monkeypatch):
    """Item 8: admin2 keeps the organisation seed and a copy of alice's key record (which
    pins that key); after his removal he puts the record back and cuts ``org_keys`` back to
    his key. The record alone cannot tell; alice's machine remembers the newer key it
    verified, and her next unlock refuses the fork (and rewrites nothing)."""
    from vault.service.config import OrgKeyMemory

    monkeypatch.setenv("CREDVAULT_HOME", str(tmp_path))
    memory = OrgKeyMemory()
    admin = team.admin
    admin2 = team.engineer("admin2", role="admin")
    team.engineer("alice")
    admin.clients.add("acme", "Acme")
    admin.secrets.add("acme/fw", password="acme-pw")
    admin.grants.grant("alice", "acme")
    vault_id = admin.vault_id()
    seed = _org_seed_of(admin2)
    (old_record,) = db.all(select(m.Engineer.key_record).where(m.Engineer.name == "alice"))[0]

    admin.engineers.remove("admin2")
    alice = team.open("alice")
    alice.engineers.unlock("alice", team.passphrases["alice"], org_memory=memory)
    head = db.all(select(m.OrgKey.version, m.OrgKey.public).order_by(m.OrgKey.version.desc()))[0]
    assert memory.head(vault_id.hex()) == (head[0], head[1]) and head[0] == 2
    assert oct(OrgKeyMemory.path(vault_id.hex()).stat().st_mode & 0o777) == "0o600"

    db.run(
        delete(m.OrgKey).where(m.OrgKey.version > 1),
        update(m.VaultInfo).values(org_signing_public=seed.public),
        update(m.Engineer).where(m.Engineer.name == "alice").values(key_record=old_record),
    )
    _resign_all(db, vault_id, seed)
    again = team.open("alice")
    with pytest.raises(UntrustedRecord, match="does not reach version 2"):
        again.engineers.unlock("alice", team.passphrases["alice"], org_memory=memory)
    assert db.all(select(m.Engineer.key_record).where(m.Engineer.name == "alice"))[0][0] == old_record
    assert memory.head(vault_id.hex()) == (head[0], head[1])


# -- item 9: recovery shares -------------------------------------------------------------------------


class _Db:
    """The ``db`` fixture's reader and writer, for a vault these tests make themselves."""

    def __init__(self, store) -> None:  # type: ignore[no-untyped-def]
        self.store = store

    def run(self, *statements) -> None:  # type: ignore[no-untyped-def]
        with self.store.transaction() as s:
            for statement in statements:
                s.execute(statement)

    def all(self, statement):  # type: ignore[no-untyped-def]
        with self.store.transaction() as s:
            return list(s.execute(statement).all())


def _combine(texts, vault_id: bytes, version: int):  # type: ignore[no-untyped-def]
    decoded = [shamir.decode_share(vault_id, text) for text in texts]
    return RootBundle(shamir.combine([(x, y) for _, x, y in decoded], decoded[0][0]), version)


def _opens_nothing_current(db, bundle) -> None:  # type: ignore[no-untyped-def]
    """The bundle's recovery key is not the vault's, opens no sealed client key, and its
    organisation key is not the current one."""
    _, recovery_public = _recovery(db)
    assert bundle.recovery.public != recovery_public
    assert bundle.org.public != db.all(select(m.VaultInfo.org_signing_public))[0][0]
    vault_id = db.all(select(m.VaultInfo.vault_id))[0][0]
    seals = db.all(select(m.ClientKeySeal).where(m.ClientKeySeal.recipient_kind == "recovery"))
    assert seals
    for (seal,) in seals:
        context = (LABEL_CLIENT_KEY_SEAL, vault_id, seal.client_id, seal.version, "recovery", seal.recipient_id)
        with pytest.raises(DecryptionFailed):
            sealing.open_sealed(bundle.recovery, seal.version, seal.blob, context)


def test_root_rotation_and_admin_removal_issue_new_shares_and_old_ones_open_nothing(db_url, clock):
    """Item 9: with a 2-of-3 vault, `rotate root` and admin removal return new shares that
    rebuild the current bundle; every older set rebuilds only destroyed keys."""
    admin, made = Vault.create(
        db_url, admin="root-admin", passphrase="admin pass", clock=clock, kdf_params=FLOOR, shares=(2, 3)
    )
    admin.engineers.unlock("root-admin", "admin pass")
    admin.clients.add("acme", "Acme")
    admin.secrets.add("acme/fw", password="acme-pw")
    code = admin.engineers.invite("admin2", role="admin")
    admin2 = Vault.open(db_url, engineer="admin2", clock=clock, kdf_params=FLOOR, sessions=MemorySessionStore())
    admin.engineers.confirm("admin2", admin2.engineers.enroll("admin2", code, "admin2 pass"))
    db = _Db(admin.store)
    vault_id = admin.vault_id()

    rotated = admin.keys.rotate_root()
    assert len(rotated.shares) == 3 and rotated.threshold == 2
    _opens_nothing_current(db, _combine(made.shares[:2], vault_id, 1))
    current = _combine(rotated.shares[1:], vault_id, 2)
    assert current.recovery.public == _recovery(db)[1]
    assert current.org.public == db.all(select(m.VaultInfo.org_signing_public))[0][0]

    admin.engineers.remove("admin2")
    removal = admin.last_root_rotation
    assert removal is not None and len(removal.shares) == 3 and removal.admins == ("root-admin",)
    _opens_nothing_current(db, _combine(rotated.shares[:2], vault_id, 2))
    assert _combine([removal.shares[0], removal.shares[2]], vault_id, 3).recovery.public == _recovery(db)[1]
    admin.close()
    admin2.close()


def test_a_database_writer_cannot_lower_the_share_threshold(db_url, clock):
    """Item 9: the k-of-n is signed by the organisation key: a writer who lowers 3-of-5 to
    2-of-5 gets no weaker shares issued (none, and a warning naming the fix)."""
    admin, _ = Vault.create(
        db_url, admin="root-admin", passphrase="admin pass", clock=clock, kdf_params=FLOOR, shares=(3, 5)
    )
    admin.engineers.unlock("root-admin", "admin pass")
    admin.clients.add("acme", "Acme")
    _Db(admin.store).run(update(m.OrgKey).values(share_threshold=2, share_count=5))
    result = admin.keys.rotate_root()
    assert result.shares == () and any("rotate root --shares" in w for w in result.warnings)
    result = admin.keys.rotate_root(shares=(3, 5))
    assert len(result.shares) == 5 and result.threshold == 3
    assert len(admin.keys.rotate_root().shares) == 5
    admin.close()


def test_a_vault_from_before_the_org_key_chain_upgrades_and_rotates(team, db, reopen):
    """Migration 0009 gives an existing vault its one organisation key as version 1 (no
    share policy); engineers enrolled before keep working through a root rotation."""
    from alembic import command

    from vault.storage import engine as storage

    admin = team.admin
    alice = team.engineer("alice")
    admin.clients.add("acme", "Acme")
    admin.secrets.add("acme/fw", password="acme-pw")
    admin.grants.grant("alice", "acme")
    first = db.all(select(m.VaultInfo.org_signing_public))[0][0]
    config = storage._alembic_config(admin.store.engine)
    command.downgrade(config, "0008")  # the revision before the organisation-key chain (0009)
    command.upgrade(config, "head")
    keys = db.all(select(m.OrgKey.version, m.OrgKey.public, m.OrgKey.signature, m.OrgKey.share_threshold))
    assert [tuple(k) for k in keys] == [(1, first, None, None)]

    result = reopen(admin).keys.rotate_root()
    assert result.org_version == 2 and result.shares == ()
    assert reopen(alice).checkouts.reveal("acme/fw", reason=REASON) == "acme-pw"
    assert reopen(admin).audit.verify().ok


def test_a_departing_admin_who_rewrites_her_row_as_an_engineer_is_not_removed_without_a_root_rotation(team, db):
    """admin2, leaving, also has database access: she rewrites her own row to an engineer who
    never got a certificate, hoping the removal skips the root rotation and leaves her the
    recovery key and the organisation seed she holds. The signed audit log made her an admin:
    the removal is refused (nothing changes) until the row is restored; it never reports
    success with the root key she holds still current."""
    team.engineer("admin2", role="admin")
    (before,) = db.all(select(m.RootKey.version).where(m.RootKey.state == "active"))[-1]
    db.run(
        update(m.Engineer)
        .where(m.Engineer.name == "admin2")
        .values(role="engineer", status="enrolled", certified_at=None)
    )
    with pytest.raises(UntrustedRecord, match="signed audit log made them an admin"):
        team.admin.engineers.remove("admin2")
    (after,) = db.all(select(m.RootKey.version).where(m.RootKey.state == "active"))[-1]
    assert after == before
    assert db.all(select(m.Engineer.status).where(m.Engineer.name == "admin2")) == [("enrolled",)]
