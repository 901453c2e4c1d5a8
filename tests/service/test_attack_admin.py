"""Attacks on admin removal and the organisation key (issue 12, items 6, 8 and 9).

The attacker is a writer of the database who is not an admin (an engineer with the
team database URL, a DBA) or a removed admin who kept the organisation signing seed.
Each test edits rows directly, then an honest admin runs the public API, and checks
that the attack does not succeed.
"""

from __future__ import annotations

import pytest
from sqlalchemy import insert, select, update

from vault.crypto import blobs, sealing, signing
from vault.crypto.labels import LABEL_CLIENT_KEY_SEAL, LABEL_SIG_CLIENT_KEY
from vault.errors import IntegrityError, VaultError
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
    admin.add_client("acme", "Acme")
    admin.add_secret("acme/fw", password="old-pw")
    client_id = db.newest_client_id()
    admin2_id = db.engineer_id("admin2")
    root_version, recovery_public = _recovery(db)
    _plant_client_key(db, admin.vault_id(), client_id, 2, admin2_id, recovery_public, root_version)
    db.run(update(m.Client).where(m.Client.id == client_id).values(current_key_version=2))

    acting = reopen(admin)
    if how == "rotate":
        acting.rotate_engineer("admin2")
    else:
        acting.remove_engineer("admin2")

    row = db.all(select(m.ClientKey).where(m.ClientKey.client_id == client_id, m.ClientKey.version == 2))[0][0]
    assert row.signed_by == admin2_id  # never re-signed by the acting admin
    assert (
        db.all(select(m.ClientKeySeal).where(m.ClientKeySeal.client_id == client_id, m.ClientKeySeal.version == 2))
        == []
    )
    fresh = reopen(admin)
    fresh.update_secret("acme/fw", password="new-pw")
    key_versions = [
        r[0] for r in db.all(select(m.SecretVersion.key_version).join(m.Secret).where(m.Secret.client_id == client_id))
    ]
    assert key_versions and 2 not in key_versions
    assert fresh.reveal("acme/fw", reason=REASON) == "new-pw"
    assert acting.adoption_skipped and "version 2" in acting.adoption_skipped[0]


def test_admin_removal_does_not_adopt_a_forged_grant(team, db, reopen):
    """Item 6: a grant row 'granted by' the leaving admin with a forged signature is not
    re-signed by the removing admin: the grantee gets nothing through it."""
    admin = team.admin
    team.engineer("admin2", role="admin")
    mallory = team.engineer("mallory")
    admin.add_client("acme", "Acme")
    admin.add_secret("acme/fw", password="acme-pw")
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

    reopen(admin).remove_engineer("admin2")

    grants = db.all(select(m.Grant).where(m.Grant.engineer_id == mallory_id))
    assert grants and all(g[0].granted_by == admin2_id or g[0].revoked_at is not None for g in grants)
    with pytest.raises(VaultError):
        reopen(mallory).reveal("acme/fw", reason=REASON)
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
    admin.add_client("acme", "Acme")
    admin.add_secret("acme/fw", password="one")
    admin.grant("alice", "acme")
    client_id = db.newest_client_id()
    with alice.store.transaction() as s:
        kept = alice._client_key(s, client_id, 1)  # what alice could hold while granted
    admin.rotate_client("acme")  # version 1 destroyed, version 2 current
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
        reopen(admin).update_secret("acme/fw", password="two")
    key_versions = [
        r[0] for r in db.all(select(m.SecretVersion.key_version).join(m.Secret).where(m.Secret.client_id == client_id))
    ]
    assert key_versions == [2]
