"""Offboarding (issue 4): a removed engineer reads nothing new; lost laptops; passphrases.

The central test plays the departing engineer: they keep their private keys and every
key they could open while employed, take a copy of the database after their removal
(plus what was written since), and try every blob in it with every key they have.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from served import ServedTeam, only_local
from sqlalchemy import create_engine, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from vault import Vault
from vault.crypto import blobs, sealing, signing
from vault.crypto.labels import LABEL_CLIENT_KEY_SEAL, LABEL_INVITE, LABEL_ROOT_BUNDLE, LABEL_TAG_CLIENT_SLUG
from vault.errors import (
    AccessDenied,
    DecryptionFailed,
    InvalidInput,
    NotFound,
    Unauthenticated,
    VaultError,
    WrongPassphrase,
)
from vault.keyholder.keys import RootBundle
from vault.storage import models as m

REASON = "T-1 offboarding test"


@pytest.fixture
def team(team3):  # type: ignore[no-untyped-def]
    """Every test of this module in ``team3``'s three modes (SQLite, PostgreSQL, through a server)."""
    return team3


# -- the departing engineer's point of view ----------------------------------------------------------


@contextlib.contextmanager
def _copy_of(url: str) -> Iterator[Session]:
    """The database as someone with a copy of it sees it: rows, no service, no checks."""
    engine: Engine = create_engine(url)
    try:
        with Session(engine, expire_on_commit=False) as s:
            yield s
    finally:
        engine.dispose()


@dataclass(repr=False)
class Loot:
    """Everything the engineer could open while employed."""

    keypairs: list[sealing.KeyPair]
    client_keys: dict[tuple[int, int], bytes] = field(default_factory=dict)
    audit_rings: dict[int, bytes] = field(default_factory=dict)
    data_keys: list[bytes] = field(default_factory=list)
    lookup_keys: list[bytes] = field(default_factory=list)

    def keys_of(self, client_id: int) -> list[tuple[int, bytes]]:
        return [(v, k) for (c, v), k in self.client_keys.items() if c == client_id]


def _harvest(url: str, vault: Vault) -> Loot:
    """Open, with the engineer's own private key, everything in the database that opens."""
    me = vault.keyholder.me()
    loot = Loot([sealing.KeyPair(me.sealing_private)])
    loot.client_keys.update(vault.keyholder.client_keys)  # whatever their vault object still caches
    with _copy_of(url) as s:
        vault_id = s.scalars(select(m.VaultInfo.vault_id)).one()
        for row in s.scalars(select(m.RootSeal)):  # admins: the root bundle, hence the recovery key
            with contextlib.suppress(DecryptionFailed):
                raw = sealing.open_sealed(
                    loot.keypairs[0],
                    row.root_version,
                    row.blob,
                    (LABEL_ROOT_BUNDLE, vault_id, row.root_version, row.engineer_id),
                )
                bundle = RootBundle(raw, row.root_version)
                loot.keypairs.append(bundle.recovery)
                loot.lookup_keys.append(bundle.lookup_key)
        for row in s.scalars(select(m.ClientKeySeal)):
            context = (
                LABEL_CLIENT_KEY_SEAL,
                vault_id,
                row.client_id,
                row.version,
                row.recipient_kind,
                row.recipient_id,
            )
            for keypair in loot.keypairs:
                with contextlib.suppress(DecryptionFailed):
                    loot.client_keys[(row.client_id, row.version)] = sealing.open_sealed(
                        keypair, row.version, row.blob, context
                    )
        for client in s.scalars(select(m.Client)):
            blob = client.audit_keys_blob
            key = loot.client_keys.get((client.id, blobs.blob_key_version(blob))) if blob else None
            if key is not None:
                loot.audit_rings[client.id] = blobs.decrypt_client_field(
                    key, blobs.blob_key_version(blob), blob, client.id, "audit-keys"
                )
        rows = s.execute(select(m.SecretVersion, m.Secret.client_id).join(m.Secret)).all()
        for row, client_id in rows:
            key = loot.client_keys.get((client_id, row.key_version))
            if key is not None:
                loot.data_keys.append(
                    blobs.unwrap_data_key(key, row.key_version, row.wrapped_dek, client_id, row.secret_id, row.version)
                )
    return loot


class Attempts:
    """Decryption attempts by kind (so that a test is not vacuous), and those that worked."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.opened: list[tuple[str, str]] = []

    def fails(self, kind: str, what: str, decrypt: Callable[..., Any], *args: Any) -> None:
        self.counts[kind] += 1
        try:
            decrypt(*args)
        except DecryptionFailed:
            return
        self.opened.append((kind, what))


FIELD_BLOBS = {
    "slug": "slug_blob",
    "name": "name_blob",
    "lookup-key": "lookup_key_blob",
    "audit-keys": "audit_keys_blob",
}


def _attack(url: str, loot: Loot, *, after_seq: int, before: set[tuple[int, int]]) -> Attempts:
    """Try every key in ``loot`` on every seal, and on every other blob written since ``after_seq``
    (audit events) or not in ``before`` (secret versions); data keys are all re-tried."""
    tries = Attempts()
    with _copy_of(url) as s:
        vault_id = s.scalars(select(m.VaultInfo.vault_id)).one()
        engineer_ids = set(s.scalars(select(m.Engineer.id)))
        roots = set(s.scalars(select(m.RootKey.version)))
        for seal in s.scalars(select(m.ClientKeySeal)):
            for kind in ("engineer", "recovery"):
                for rid in engineer_ids | roots | {seal.recipient_id}:
                    context = (LABEL_CLIENT_KEY_SEAL, vault_id, seal.client_id, seal.version, kind, rid)
                    for keypair in loot.keypairs:
                        what = f"client {seal.client_id} v{seal.version} as {kind} {rid}"
                        tries.fails(
                            "a sealed client key", what, sealing.open_sealed, keypair, seal.version, seal.blob, context
                        )
        for root_seal in s.scalars(select(m.RootSeal)):
            for eid in engineer_ids:
                context = (LABEL_ROOT_BUNDLE, vault_id, root_seal.root_version, eid)
                for keypair in loot.keypairs:
                    tries.fails(
                        "a sealed root bundle",
                        f"root {root_seal.root_version} as {eid}",
                        sealing.open_sealed,
                        keypair,
                        root_seal.root_version,
                        root_seal.blob,
                        context,
                    )
        for invited in s.scalars(select(m.Engineer).where(m.Engineer.invite_seal.is_not(None))):
            for version in roots:
                context = (LABEL_INVITE, vault_id, invited.id, version)
                for keypair in loot.keypairs:
                    tries.fails(
                        "a sealed invite",
                        invited.name,
                        sealing.open_sealed,
                        keypair,
                        version,
                        invited.invite_seal,
                        context,
                    )
        for client in s.scalars(select(m.Client)):
            for purpose, column in FIELD_BLOBS.items():
                blob = getattr(client, column)
                for version, key in loot.keys_of(client.id):
                    for v in {version, blobs.blob_key_version(blob)}:
                        tries.fails(
                            "a client field",
                            f"client {client.id} {purpose}",
                            blobs.decrypt_client_field,
                            key,
                            v,
                            blob,
                            client.id,
                            purpose,
                        )
        for row, client_id in s.execute(select(m.SecretVersion, m.Secret.client_id).join(m.Secret)).all():
            what = f"secret {row.secret_id} v{row.version}"
            for version, key in loot.keys_of(client_id):
                for v in {version, row.key_version}:
                    tries.fails(
                        "a wrapped data key",
                        what,
                        blobs.unwrap_data_key,
                        key,
                        v,
                        row.wrapped_dek,
                        client_id,
                        row.secret_id,
                        row.version,
                    )
            if (row.secret_id, row.version) in before:
                continue
            for dek in loot.data_keys:
                for purpose, blob in (("password", row.password_blob), ("metadata", row.metadata_blob)):
                    tries.fails(
                        "a secret field",
                        f"{what} {purpose}",
                        blobs.decrypt_secret_field,
                        dek,
                        blobs.blob_key_version(blob),
                        blob,
                        client_id,
                        row.secret_id,
                        row.version,
                        purpose,
                    )
        events = s.scalars(
            select(m.AuditEvent).where(m.AuditEvent.seq > after_seq, m.AuditEvent.details_blob.is_not(None))
        )
        for event in events:
            ring = loot.audit_rings.get(event.client_id, b"")
            keys = [ring[i : i + 32] for i in range(0, len(ring), 32)] + [k for _, k in loot.keys_of(event.client_id)]
            for key in keys:
                for v in {event.key_version, *range(1, len(ring) // 32 + 1)}:
                    tries.fails(
                        "audit details",
                        f"event {event.seq}",
                        blobs.decrypt_audit_detail,
                        key,
                        v,
                        event.details_blob,
                        event.client_id,
                        event.seq,
                        event.action,
                    )
    return tries


def _versions(url: str) -> set[tuple[int, int]]:
    with _copy_of(url) as s:
        return {tuple(r) for r in s.execute(select(m.SecretVersion.secret_id, m.SecretVersion.version))}


@pytest.mark.parametrize("role", ["engineer", "admin"])
def test_a_removed_engineer_with_their_old_keys_and_the_database_decrypts_nothing_written_after(team, role):
    only_local(
        team,
        "a database copy harvested by hand: over a served vault the layer stops it (tests/server/test_server_layer.py)",
    )
    admin = team.admin
    for slug in ("acme", "globex", "initech"):
        admin.clients.add(slug, slug.title())
        for i in range(2):
            admin.secrets.add(f"{slug}/s{i}", password=f"{slug}-{i}")
    leaver = team.engineer("leaver", role=role)
    team.engineer("bob")
    if role == "engineer":
        admin.grants.grant("leaver", "acme")
        admin.grants.grant("leaver", "globex")
    leaver.checkouts.reveal("acme/s0", reason=REASON)  # caches acme's version 1
    admin.keys.rotate_client("acme")  # so the leaver holds (or held) two versions of acme
    leaver.checkouts.reveal("acme/s1", reason=REASON)
    leaver.checkouts.reveal("globex/s1", reason=REASON)
    loot = _harvest(team.url, leaver)
    held = {c for c, _ in loot.client_keys}
    assert {(c, v) for c, v in loot.client_keys if c == min(held)} == {(min(held), 1), (min(held), 2)}
    assert len(held) == (3 if role == "admin" else 2)
    assert loot.data_keys and loot.audit_rings and (loot.lookup_keys or role == "engineer")
    before, after_seq = _versions(team.url), admin.audit.head()[0]
    control = _attack(team.url, loot, after_seq=0, before=set())  # the same attack, before removal
    assert {kind for kind, _ in control.opened} >= {
        "a sealed client key",
        "a client field",
        "a wrapped data key",
        "a secret field",
        "audit details",
    } | ({"a sealed root bundle"} if role == "admin" else set())

    admin.engineers.remove("leaver", batch_size=2)
    for slug in ("acme", "globex", "initech"):  # what is written after the removal
        admin.secrets.add(f"{slug}/new", password=f"{slug}-new", username="later")
        admin.secrets.update(f"{slug}/s0", password=f"{slug}-changed")
        admin.checkouts.reveal(f"{slug}/s1", reason=REASON)
    admin.clients.add("umbrella", "Umbrella")
    admin.secrets.add("umbrella/x", password="umbrella-x")
    admin.grants.grant("bob", "acme")
    admin.engineers.invite("carol")

    attack = _attack(team.url, loot, after_seq=after_seq, before=before)
    assert attack.opened == []
    kinds = {
        "a sealed client key",
        "a sealed root bundle",
        "a sealed invite",
        "a client field",
        "a wrapped data key",
        "a secret field",
        "audit details",
    }
    assert set(attack.counts) == kinds and min(attack.counts.values()) > 0, attack.counts
    with _copy_of(team.url) as s:  # audit details after removal use a generation they never held
        for client_id, key_version in s.execute(
            select(m.AuditEvent.client_id, m.AuditEvent.key_version).where(
                m.AuditEvent.seq > after_seq, m.AuditEvent.details_blob.is_not(None)
            )
        ):
            assert key_version > len(loot.audit_rings.get(client_id, b"")) // 32
    if role == "admin":  # the old lookup key no longer matches any slug tag
        with _copy_of(team.url) as s:
            tags = set(s.scalars(select(m.Client.slug_tag)))
        for key in loot.lookup_keys:
            for slug in ("acme", "globex", "initech", "umbrella"):
                assert signing.lookup_tag(key, LABEL_TAG_CLIENT_SLUG, slug) not in tags
    assert admin.audit.verify().ok


def test_removal_during_a_rotation_still_moves_the_client_to_a_key_the_engineer_never_held(team):
    only_local(
        team,
        "a database copy harvested by hand: over a served vault the layer stops it (tests/server/test_server_layer.py)",
    )
    admin = team.admin
    admin.clients.add("acme", "Acme")
    for i in range(4):
        admin.secrets.add(f"acme/s{i}", password=f"acme-{i}")
    leaver = team.engineer("leaver")
    admin.grants.grant("leaver", "acme")
    leaver.checkouts.reveal("acme/s0", reason=REASON)
    with admin.store.transaction() as s:  # a rotation under way (interrupted after one batch)
        rotation_id = admin.keys.start_client_rotation(s, admin.clients.client(s, "acme"))
    admin.keys._rewrap_batch(rotation_id, 2, None)
    loot = _harvest(team.url, leaver)
    assert (1, 2) in loot.client_keys  # the new version was sealed to every grantee at the start
    before, after_seq = _versions(team.url), admin.audit.head()[0]

    admin.engineers.remove("leaver")
    admin.secrets.add("acme/new", password="written after removal")

    current = max(v for v, state in admin.keys.versions("acme") if state == "active")
    held = set(loot.client_keys)
    assert (1, current) not in held
    assert _attack(team.url, loot, after_seq=after_seq, before=before).opened == []


@pytest.mark.parametrize("role", ["engineer", "admin"])
def test_an_interrupted_removal_is_finished_by_resume(team, role, monkeypatch):
    only_local(
        team,
        "a database copy harvested by hand: over a served vault the layer stops it (tests/server/test_server_layer.py)",
    )
    admin = team.admin
    admin.clients.add("acme", "Acme")
    admin.secrets.add("acme/s0", password="acme-0")
    leaver = team.engineer("leaver", role=role)
    if role == "engineer":
        admin.grants.grant("leaver", "acme")
    leaver.checkouts.reveal("acme/s0", reason=REASON)
    loot = _harvest(team.url, leaver)
    before, after_seq = _versions(team.url), admin.audit.head()[0]

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    # The removal commits (grants revoked, root rotated for an admin, every rotation started);
    # the interrupt lands in the re-wrapping that follows, which `resume_rotations` finishes.
    monkeypatch.setattr(admin.keys, "run_rotation", interrupted)
    with pytest.raises(KeyboardInterrupt):
        admin.engineers.remove("leaver")
    monkeypatch.undo()

    admin.keys.resume()
    admin.secrets.add("acme/new", password="written after removal")
    assert admin.keys.versions("acme")[-1] == (2, "active")
    assert _attack(team.url, loot, after_seq=after_seq, before=before).opened == []


# -- what removal does ------------------------------------------------------------------------------


def test_remove_engineer_returns_exactly_the_unchanged_values_they_saw(team):
    admin = team.admin
    admin.clients.add("acme", "Acme")
    admin.clients.add("globex", "Globex")
    admin.secrets.add("acme/fw01", password="fw01-pw")
    admin.secrets.add("acme/sw01", password="sw01-pw")
    admin.secrets.add("acme/vpn", password="vpn-pw", username="vpnuser")
    admin.secrets.add("acme/unseen", password="nobody looked")
    admin.secrets.add("globex/x", password="globex-pw")
    alice = team.engineer("alice")
    admin.grants.grant("alice", "acme")
    alice.checkouts.reveal("acme/fw01", reason="T-10")
    alice.checkouts.reveal("acme/fw01", reason="T-11")
    alice.checkouts.reveal("acme/sw01", reason="T-12")
    alice.checkouts.reveal("acme/vpn", "username", reason="T-13")
    admin.checkouts.reveal("globex/x", reason="the admin, not alice")
    admin.secrets.update("acme/sw01", password="changed on the equipment")  # no longer at risk
    admin.secrets.update("acme/vpn", password="vpn-new")  # the username she saw is unchanged

    at_risk, rotations = admin.engineers.remove("alice")

    assert [(r.client, r.secret, r.field, r.version, r.reason, r.changed_since) for r in at_risk] == [
        ("acme", "fw01", "password", 1, "T-11", False),
        ("acme", "vpn", "username", 1, "T-13", False),
    ]
    assert admin.reports.at_risk("alice") == at_risk
    assert [(r.client, r.from_version, r.to_version, r.state) for r in rotations] == [("acme", 1, 2, "done")]
    assert admin.keys.versions("acme") == [(1, "destroyed"), (2, "active")]
    assert admin.keys.versions("globex") == [(1, "active")]  # she never held globex's key
    admin.secrets.update("acme/fw01", password="changed after she left")
    assert [r.secret for r in admin.reports.at_risk("alice")] == ["vpn"]


def test_removal_disables_the_account_keeps_its_public_keys_and_old_events_verify(team, db):
    admin = team.admin
    admin.clients.add("acme", "Acme")
    admin.secrets.add("acme/fw01", password="fw01-pw")
    alice = team.engineer("alice")
    admin.grants.grant("alice", "acme")
    alice.checkouts.reveal("acme/fw01", reason=REASON)
    alice.clients.list()
    alice_id = db.engineer_id("alice")
    row = db.all(select(m.Engineer).where(m.Engineer.id == alice_id))[0][0]

    admin.engineers.remove("alice")

    after = db.all(select(m.Engineer).where(m.Engineer.id == alice_id))[0][0]
    assert (after.status, after.key_record) == ("disabled", None) and after.disabled_at is not None
    assert (after.sealing_public, after.signing_public) == (row.sealing_public, row.signing_public)
    key = db.all(select(m.EngineerKey).where(m.EngineerKey.engineer_id == alice_id))
    assert [(k.generation, k.state, k.signing_public) for (k,) in key] == [(1, "destroyed", row.signing_public)]
    seals = (
        select(func.count())
        .select_from(m.ClientKeySeal)
        .where(m.ClientKeySeal.recipient_kind == "engineer", m.ClientKeySeal.recipient_id == alice_id)
    )
    assert db.scalar(seals) == 0
    grants = db.all(select(m.Grant.revoked_at).where(m.Grant.engineer_id == alice_id))
    assert grants and all(r[0] is not None for r in grants)
    signed = db.scalar(
        select(func.count())
        .select_from(m.AuditEvent)
        .where(m.AuditEvent.engineer_id == alice_id, m.AuditEvent.signature.is_not(None))
    )
    assert signed >= 3
    assert admin.audit.verify().ok
    served = isinstance(team, ServedTeam)  # the server refuses a removed caller as any unknown key (401)
    for call in (
        lambda: alice.checkouts.reveal("acme/fw01", reason=REASON),
        alice.clients.list,
        alice.engineers.whoami,
    ):
        with pytest.raises(Unauthenticated if served else AccessDenied):
            call()
    with pytest.raises(Unauthenticated if served else NotFound):
        team.open("alice").engineers.unlock("alice", team.passphrases["alice"])
    listed = {e.name: e for e in admin.engineers.list()}
    assert listed["alice"].status == "disabled" and listed["alice"].fingerprint is not None
    with pytest.raises(VaultError):
        admin.grants.grant("alice", "acme")


def test_records_signed_by_a_removed_admin_stay_trusted(team, db, reopen):
    admin = team.admin
    admin2 = team.engineer("admin2", role="admin")
    admin2.clients.add("globex", "Globex")  # client-key version 1 signed by admin2
    admin2.secrets.add("globex/x", password="globex-pw")
    admin.clients.add("acme", "Acme")
    admin.secrets.add("acme/y", password="acme-pw")
    alice = team.engineer("alice")
    admin2.grants.grant("alice", "globex")
    admin2.grants.grant("alice", "acme")
    admin2.keys.rotate_client("acme")  # acme's version 2 signed by admin2 as well
    admin2_id = db.engineer_id("admin2")
    served = isinstance(team, ServedTeam)
    remover = team.remote("root-admin") if served else admin  # through the server: from a machine with no database

    at_risk, rotations = remover.engineers.remove("admin2")

    assert at_risk == []
    assert remover.last_root_rotation is not None and remover.last_root_rotation.admins == ("root-admin",)
    assert sorted((r.client, r.to_version, r.state) for r in rotations) == [("acme", 3, "done"), ("globex", 2, "done")]
    for vault in (alice, reopen(alice)):
        assert vault.checkouts.reveal("globex/x", reason=REASON) == "globex-pw"
        assert vault.checkouts.reveal("acme/y", reason=REASON) == "acme-pw"
        assert [c.slug for c in vault.clients.list()] == ["acme", "globex"]
    roots = db.all(select(m.RootKey.version, m.RootKey.state).order_by(m.RootKey.version))
    assert [tuple(r) for r in roots] == [(1, "destroyed"), (2, "active")]
    assert [tuple(r) for r in db.all(select(m.RootSeal.root_version, m.RootSeal.engineer_id))] == [
        (2, db.engineer_id("root-admin"))
    ]
    assert admin.keys.versions("acme") == [(1, "destroyed"), (2, "destroyed"), (3, "active")]
    assert admin.keys.versions("globex") == [(1, "destroyed"), (2, "active")]
    live = db.all(select(m.Grant.granted_by).where(m.Grant.revoked_at.is_(None)))
    assert live and admin2_id not in {r[0] for r in live}
    signers = db.all(select(m.ClientKey.signed_by).where(m.ClientKey.state != "destroyed"))
    assert admin2_id not in {r[0] for r in signers}
    with pytest.raises(Unauthenticated if isinstance(team, ServedTeam) else AccessDenied):  # the server: unknown key
        admin2.clients.list()
    assert admin.audit.verify().ok
    if served:  # the remover works on with the new bundle sealed to them, and verifies the chain on their machine
        assert remover.audit.verify().ok and [c.slug for c in remover.clients.list()] == ["acme", "globex"]


def test_removing_yourself_or_removing_twice_is_invalid_input(team):
    admin = team.admin
    alice = team.engineer("alice")
    with pytest.raises(InvalidInput):
        admin.engineers.remove("root-admin")
    with pytest.raises(AccessDenied):
        alice.engineers.remove("root-admin")
    with pytest.raises(NotFound):
        admin.engineers.remove("nobody")
    admin.engineers.remove("alice")
    with pytest.raises(InvalidInput):
        admin.engineers.remove("alice")
    assert admin.engineers.whoami().engineer == "root-admin"


# -- a lost laptop ------------------------------------------------------------------------------------


def test_rotate_engineer_destroys_the_old_keys_and_re_enrolment_restores_the_grants(team, db):
    admin = team.admin
    for slug in ("acme", "globex"):
        admin.clients.add(slug, slug.title())
        admin.secrets.add(f"{slug}/s0", password=f"{slug}-pw")
    alice = team.engineer("alice")
    admin.grants.grant("alice", "acme")
    admin.grants.grant("alice", "globex")
    alice.checkouts.reveal("acme/s0", reason=REASON)
    alice_id = db.engineer_id("alice")
    old = db.all(select(m.Engineer).where(m.Engineer.id == alice_id))[0][0]
    old_keypair = sealing.KeyPair(alice.keyholder.me().sealing_private)

    code = admin.engineers.rotate("alice")

    gone = db.all(select(m.Engineer).where(m.Engineer.id == alice_id))[0][0]
    assert (gone.status, gone.key_record, gone.sealing_public) == ("invited", None, None)
    seals = select(m.ClientKeySeal).where(
        m.ClientKeySeal.recipient_kind == "engineer", m.ClientKeySeal.recipient_id == alice_id
    )
    assert db.all(seals) == []
    with pytest.raises(Unauthenticated if isinstance(team, ServedTeam) else NotFound):  # the server: an unknown key
        team.open("alice").engineers.unlock("alice", team.passphrases["alice"])
    with pytest.raises(VaultError):
        alice.checkouts.reveal("acme/s0", reason=REASON)  # the old session's keys are no longer certified

    mine = team.open("alice")
    admin.engineers.confirm("alice", mine.engineers.enroll("alice", code, "a new passphrase"))
    mine.engineers.unlock("alice", "a new passphrase")

    assert [mine.checkouts.reveal(f"{slug}/s0", reason=REASON) for slug in ("acme", "globex")] == [
        "acme-pw",
        "globex-pw",
    ]
    new = db.all(select(m.Engineer).where(m.Engineer.id == alice_id))[0][0]
    assert new.key_generation == old.key_generation + 1 == 2
    assert new.sealing_public != old.sealing_public and new.signing_public != old.signing_public
    keys = db.all(select(m.EngineerKey).where(m.EngineerKey.engineer_id == alice_id).order_by(m.EngineerKey.generation))
    assert [(k.generation, k.state, k.signing_public) for (k,) in keys] == [
        (1, "destroyed", old.signing_public),
        (2, "active", new.signing_public),
    ]
    assert keys[0][0].destroyed_at is not None
    resealed = [r[0] for r in db.all(seals)]
    assert len(resealed) == 2
    vault_id = admin.vault_id()
    for seal in resealed:  # the lost laptop's key opens none of the new copies
        context = (LABEL_CLIENT_KEY_SEAL, vault_id, seal.client_id, seal.version, "engineer", alice_id)
        with pytest.raises(DecryptionFailed):
            sealing.open_sealed(old_keypair, seal.version, seal.blob, context)
    old_events = db.scalar(
        select(func.count())
        .select_from(m.AuditEvent)
        .where(
            m.AuditEvent.engineer_id == alice_id, m.AuditEvent.key_generation == 1, m.AuditEvent.signature.is_not(None)
        )
    )
    assert old_events >= 2
    assert admin.audit.verify().ok
    assert mine.audit.verify().ok  # through the server: her own events and the signed head (docs/server.md)


# -- passphrases ----------------------------------------------------------------------------------------


def test_change_passphrase_changes_only_that_engineers_key_record(team, db):
    admin = team.admin
    alice = team.engineer("alice")
    team.engineer("bob")
    old = team.passphrases["alice"]
    columns = [c.key for c in m.Engineer.__table__.columns]

    def engineers() -> dict[str, dict[str, Any]]:
        return {r.name: dict(zip(columns, r, strict=True)) for r in db.all(select(m.Engineer.__table__))}

    def keys() -> list[Any]:
        return [db.all(select(t)) for t in (m.EngineerKey.__table__, m.ClientKeySeal.__table__, m.RootSeal.__table__)]

    before, keys_before = engineers(), keys()
    with pytest.raises(WrongPassphrase):
        alice.engineers.change_passphrase("not the passphrase", "whatever new")
    assert engineers() == before

    alice.engineers.change_passphrase(old, "alice's new passphrase ✓")

    after = engineers()
    assert after["alice"]["key_record"] != before["alice"]["key_record"]
    assert {**after["alice"], "key_record": None} == {**before["alice"], "key_record": None}
    assert {n: r for n, r in after.items() if n != "alice"} == {n: r for n, r in before.items() if n != "alice"}
    assert keys() == keys_before
    with pytest.raises(WrongPassphrase):
        team.open("alice").engineers.unlock("alice", old)
    again = team.open("alice")
    again.engineers.unlock("alice", "alice's new passphrase ✓")
    assert again.engineers.whoami().engineer == "alice"
    assert alice.engineers.whoami().engineer == "alice"  # the running session is unaffected
    admin.engineers.change_passphrase(team.passphrases["root-admin"], "admin's new passphrase")
    assert engineers()["alice"] == after["alice"]
    assert admin.audit.verify().ok
