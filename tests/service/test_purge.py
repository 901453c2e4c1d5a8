"""Purging a client or a secret by crypto-shredding: after it, nothing of the client is
left anywhere (raw SQLite file, WAL, every row, exports, fresh backups), no call reveals
anything of it, the audit chain still verifies, and a signed receipt proves it happened.

The byte scans know what to look for: the test captures every plaintext it stored and
every key of the client (each client-key version, each data key, the audit-key ring,
the lookup key, the backup key, the lookup tags) before the purge.

Most tests look at one purged vault per engine (``world``, built once per module);
they run in file order and leave it as they found it, except where said.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from served import ServedTeam, make_test_ca, served_team
from sqlalchemy import create_engine, delete, insert, inspect, select, text, update
from sqlalchemy.engine import make_url

from vault import Vault
from vault.authority.secrets import VIEW_PUBLIC_ONLY
from vault.crypto import _primitives as prim
from vault.crypto import blobs, signing
from vault.crypto.keyrecord import FLOOR
from vault.crypto.labels import LABEL_FP_DATA_KEY
from vault.errors import AccessDenied, InvalidInput, NotFound
from vault.service.records import AuditEntry, PurgePreview, ReceiptInfo
from vault.service.remote import RemoteVault
from vault.service.sessions import MemorySessionStore
from vault.storage import engine as storage
from vault.storage import models as m
from vault.storage.rows import VersionRow

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
ADMIN, ADMIN_PASS = "root-admin", "admin passphrase ✓"
REQUEST = "DSR-1"
REASON = "ticket ZX-4471 on-site visit"
SLUG, NAME = "zephyr-dental", "Zephyr Dental Clinic Qx7"
OTHER = "bystander-co"
SECRETS: dict[str, dict[str, Any]] = {
    "frontdesk-pc-k9": {
        "passwords": ["Fr0ntDesk!Pw-one", "Fr0ntDesk!Pw-two"],
        "username": "frontdesk-jkw",
        "host": "fd-pc.zephyr-dental.example",
        "note": "Key under the reception plant Qz",
        "fields": {"alarm-code": "ALARM-7Q31-ZD"},
    },
    "xray-server-v7": {
        "passwords": ["Xr4y-S3rver-Ωmega"],
        "username": "radiology-svc-v7",
        "host": "10.77.213.9",
        "note": "Vendor support line ext 4471-QQ",
        "fields": {},
    },
}
PLAINTEXTS = [
    SLUG,
    NAME,
    REASON,
    *SECRETS,
    *(p for s in SECRETS.values() for p in s["passwords"]),
    *(s["username"] for s in SECRETS.values()),
    *(s["host"] for s in SECRETS.values()),
    *(s["note"] for s in SECRETS.values()),
    *(v for s in SECRETS.values() for kv in s["fields"].items() for v in kv),
]
SWITCH_PASSWORDS = ["Sw1tch-Pw-first", "Sw1tch-Pw-second", "Sw1tch-Pw-third"]


# -- a vault per engine ----------------------------------------------------------------------------




class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime.now(dt.UTC).replace(microsecond=0)

    def __call__(self) -> dt.datetime:
        return self.now


@dataclass
class Org:
    """A vault with an unlocked admin, and a way to add unlocked engineers."""

    url: str
    admin: Vault
    clock: Clock
    passphrases: dict[str, str] = field(default_factory=dict)
    vaults: list[Vault] = field(default_factory=list)
    served: ServedTeam | None = None  # through a team server: engineers are its RemoteVaults

    def open(self, name: str) -> Vault:
        if self.served is not None and name != ADMIN:
            return self.served.open(name)  # type: ignore[return-value]
        if self.served is not None:  # the admin again, on the server's host with its key file
            vault = Vault(
                self.admin.store, engineer=name, clock=self.clock, kdf_params=FLOOR, sessions=MemorySessionStore()
            )
            for part in ("server_key", "host_layer", "host_server"):
                setattr(vault.core, part, getattr(self.admin.core, part))
            self.vaults.append(vault)
            return vault
        vault = Vault.open(self.url, engineer=name, clock=self.clock, kdf_params=FLOOR, sessions=MemorySessionStore())
        self.vaults.append(vault)
        return vault

    def unlocked(self, name: str) -> Vault:
        vault = self.open(name)
        vault.engineers.unlock(name, self.passphrases[name])
        return vault

    def engineer(self, name: str) -> Vault:
        passphrase = f"pass of {name}"
        code = self.admin.engineers.invite(name)
        mine = self.open(name)
        self.admin.engineers.confirm(name, mine.engineers.enroll(name, code, passphrase))
        self.passphrases[name] = passphrase
        mine.engineers.unlock(name, passphrase)
        return mine

    def close(self) -> None:
        for vault in [*self.vaults, self.admin]:
            vault.close()


def _database(engine: str, tmp: Path, pg_template: str | None) -> tuple[str, Callable[[], None]]:
    """A new, empty, migrated database: a SQLite file, or a clone of the run's PostgreSQL template."""
    if engine == "sqlite":
        url = f"sqlite:///{tmp / 'vault.db'}"
        store = storage.Store(url)
        storage.upgrade(store)
        store.close()
        return url, lambda: None
    if pg_template is None:
        pytest.skip("no PostgreSQL server reachable (set CREDVAULT_TEST_PG)")
    base = os.environ.get("CREDVAULT_TEST_PG", PG_URL)
    name = f"credvault_purge_{uuid.uuid4().hex[:12]}"
    server = create_engine(make_url(base), isolation_level="AUTOCOMMIT")
    with server.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"'))

    def drop() -> None:
        with server.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        server.dispose()

    return make_url(base).set(database=name).render_as_string(hide_password=False), drop


def _org(url: str) -> Org:
    clock = Clock()
    admin, _ = Vault.create(url, admin=ADMIN, passphrase=ADMIN_PASS, clock=clock, kdf_params=FLOOR)
    admin.engineers.unlock(ADMIN, ADMIN_PASS)
    return Org(url, admin, clock, {ADMIN: ADMIN_PASS})


# -- the client to purge ------------------------------------------------------------------------------


@dataclass
class Victim:
    """The client to purge and every key of it, captured before the purge."""

    client_id: int
    keys: dict[str, bytes] = field(default_factory=dict)
    fingerprints: list[str] = field(default_factory=list)
    event_seqs: list[int] = field(default_factory=list)


def _all(vault: Vault, statement: Any) -> list[Any]:
    with vault.store.transaction() as s:
        return list(s.execute(statement).all())


def _run(vault: Vault, *statements: Any) -> None:
    with vault.store.transaction() as s:
        for statement in statements:
            s.execute(statement)


def _client_id(vault: Vault, slug: str) -> int:
    with vault.store.transaction() as s:
        return vault.clients.client(s, slug).id


def _secret_id(vault: Vault, ref: str) -> int:
    with vault.store.transaction() as s:
        return vault.secrets.secret(s, ref)[1].id


def _data_keys(vault: Vault, client_id: int, client_keys: dict[int, bytes]) -> dict[tuple[int, int], bytes]:
    """Every data key of the client, unwrapped with the client keys given."""
    rows = _all(
        vault,
        select(
            m.SecretVersion.secret_id, m.SecretVersion.version, m.SecretVersion.key_version, m.SecretVersion.wrapped_dek
        )
        .join(m.Secret, m.Secret.id == m.SecretVersion.secret_id)
        .where(m.Secret.client_id == client_id),
    )
    layer = vault.core.host_layer  # on a served vault's host: the data keys under the server's layer
    if layer is not None:
        with vault.store.read() as s:
            vid = vault.core.vid(s)
            rows = [
                (
                    sid,
                    ver,
                    kv,
                    layer.unlayered(s, vid, client_id, sid, VersionRow(ver, kv, wrapped, b"", b"")).wrapped_dek,
                )
                for sid, ver, kv, wrapped in rows
            ]
    return {
        (sid, ver): blobs.unwrap_data_key(client_keys[kv], kv, wrapped, client_id, sid, ver)
        for sid, ver, kv, wrapped in rows
    }


def _add_bystander(org: Org) -> None:
    admin = org.admin
    admin.clients.add(OTHER, "Bystander Company")
    admin.secrets.add(f"{OTHER}/router", password="Byst4nder-Pw", kind="equipment", username="by-admin")
    admin.secrets.add(f"{OTHER}/switch", password=SWITCH_PASSWORDS[0], kind="equipment", note="switch v1")
    for password in SWITCH_PASSWORDS[1:]:
        admin.secrets.update(f"{OTHER}/switch", password=password)


def _add_victim(org: Org, backup_dir: Path) -> Victim:
    """Client SLUG: two secrets (one with two versions), a grantee who revealed one, a
    client-key rotation (two key versions), and a backup (so it has a backup key)."""
    admin = org.admin
    admin.clients.add(SLUG, NAME)
    cid = _client_id(admin, SLUG)
    victim = Victim(cid)
    for name, spec in SECRETS.items():
        ref = f"{SLUG}/{name}"
        admin.secrets.add(
            ref,
            password=spec["passwords"][0],
            kind="equipment",
            username=spec["username"],
            host=spec["host"],
            note=spec["note"],
            fields=spec["fields"],
        )
        for later in spec["passwords"][1:]:
            admin.secrets.update(ref, password=later)
    eve = org.engineer("eve")
    admin.grants.grant("eve", SLUG, reason=REASON)
    admin.grants.grant("eve", OTHER)
    assert eve.checkouts.reveal(f"{SLUG}/frontdesk-pc-k9", reason=REASON) == "Fr0ntDesk!Pw-two"
    assert eve.secrets.show(f"{SLUG}/xray-server-v7").username == "radiology-svc-v7"
    client_keys = {1: admin.keyholder.client_keys[(cid, 1)]}
    assert eve.keyholder.client_keys[(cid, 1)] == client_keys[1]  # the grantee's copy is the same key
    before = _data_keys(admin, cid, client_keys)
    admin.keys.rotate_client(SLUG)
    client_keys[2] = admin.keyholder.client_keys[(cid, 2)]
    assert _data_keys(admin, cid, {2: client_keys[2]}) == before  # re-wrapped, not replaced
    for version, key in client_keys.items():
        victim.keys[f"client key v{version}"] = key
    stored = dict(_all(admin, select(m.ClientKey.version, m.ClientKey.fingerprint).where(m.ClientKey.client_id == cid)))
    assert {v: signing.client_key_fingerprint(k) for v, k in client_keys.items()} == stored
    victim.fingerprints = [stored[v].hex() for v in sorted(stored)]
    for (sid, ver), dek in before.items():
        victim.keys[f"data key {sid}/{ver}"] = dek
    if org.served is None:  # a backup of a served vault (its data keys under the layer) is refused: not built
        admin.backups.create(backup_dir / "before-purge.cvbk")
    (row,) = _all(
        admin,
        select(m.Client.audit_keys_blob, m.Client.lookup_key_blob, m.Client.backup_key_blob, m.Client.slug_tag).where(
            m.Client.id == cid
        ),
    )
    ring = blobs.decrypt_client_field(client_keys[2], 2, row[0], cid, "audit-keys")
    assert len(ring) == 64  # one audit-key generation per client-key version
    victim.keys["audit key 1"], victim.keys["audit key 2"] = ring[:32], ring[32:]
    victim.keys["lookup key"] = blobs.decrypt_client_field(client_keys[2], 2, row[1], cid, "lookup-key")
    if row[2] is not None:  # made by its first backup (none on a served vault)
        victim.keys["backup key"] = blobs.decrypt_client_field(client_keys[2], 2, row[2], cid, "backup-key")
    victim.keys["slug tag"] = row[3]
    for (tag,) in _all(admin, select(m.Secret.name_tag).where(m.Secret.client_id == cid)):
        victim.keys[f"name tag {tag.hex()[:8]}"] = tag
    victim.event_seqs = [e.seq for e in admin.audit.log(client=SLUG)]
    return victim


@dataclass
class World:
    engine: str
    org: Org
    victim: Victim
    preview: PurgePreview
    before: dict[int, AuditEntry]
    receipt: ReceiptInfo
    tmp: Path

    @property
    def admin(self) -> Vault:
        return self.org.admin


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres), "https"]
)  # fmt: skip
def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, pg_template: str | None):  # type: ignore[no-untyped-def]
    """A bystander client, then the victim (the newest client), purged with vacuum off; on SQLite,
    PostgreSQL, then through a team server (over SQLite: the admin on its host, eve remote)."""
    tmp = tmp_path_factory.mktemp(f"purge-{request.param}")
    url, drop = _database("sqlite" if request.param == "https" else request.param, tmp, pg_template)
    org = _org(url)
    if request.param != "https":
        yield from _purged(request.param, org, tmp)
    else:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("CREDVAULT_HOME", str(tmp / "engineer-home"))
            with served_team(url, org.admin, org.clock, org.passphrases, make_test_ca(tmp), FLOOR) as team:
                org.served = team
                yield from _purged(request.param, org, tmp)
    org.close()
    drop()


def _purged(engine: str, org: Org, tmp: Path) -> Iterator[World]:
    _add_bystander(org)
    victim = _add_victim(org, tmp)
    preview = org.admin.purge.preview(SLUG)
    before = {e.seq: e for e in org.admin.audit.log()}
    receipt = org.admin.purge.client(SLUG, request=REQUEST)
    yield World(engine, org, victim, preview, before, receipt, tmp)


def _needles(keys: dict[str, bytes], plaintexts: list[str] = PLAINTEXTS) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for p in plaintexts:
        out[f"{p!r} (UTF-8)"] = p.encode("utf-8")
        out[f"{p!r} (UTF-16-LE)"] = p.encode("utf-16-le")
    for name, key in keys.items():
        out[name] = key
        out[f"{name} (hex)"] = key.hex().encode("ascii")
        out[f"{name} (base64)"] = base64.b64encode(key)
    return out


def _found(raw: bytes, needles: dict[str, bytes]) -> list[str]:
    return [name for name, needle in needles.items() if needle in raw]


def _sqlite_files(url: str) -> list[Path]:
    path = Path(url.removeprefix("sqlite:///"))
    return [p for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists()]


def _cells(vault: Vault) -> list[tuple[str, bytes]]:
    """(table, value as bytes) for every cell of every table."""
    engine = vault.store.engine
    out = []
    with engine.connect() as conn:
        for table in inspect(engine).get_table_names():
            quoted = engine.dialect.identifier_preparer.quote(table)
            for row in conn.execute(text(f"SELECT * FROM {quoted}")):
                for value in row:
                    if isinstance(value, (bytes, bytearray, memoryview)):
                        out.append((table, bytes(value)))
                    elif value is not None:
                        out.append((table, str(value).encode("utf-8")))
    return out


def _scan_after_purge(url: str, admin: Vault, victim: Victim, receipt: ReceiptInfo, tmp: Path) -> None:
    """The database files, an audit export, a fresh backup and key export: none of the client."""
    needles = _needles(victim.keys)
    assert not [k for k in admin.keyholder.client_keys if k[0] == victim.client_id], (
        "the admin's cached copies are gone"
    )
    files = _sqlite_files(url)
    for file in files:
        assert _found(file.read_bytes(), needles) == [], f"{file.name} still holds the purged client"
    wal = Path(f"{url.removeprefix('sqlite:///')}-wal")
    assert not wal.exists() or wal.stat().st_size == 0, "the WAL was checkpointed and truncated"
    raw = b"".join(p.read_bytes() for p in files)
    # the scan does see what is stored in clear: the receipt's request reference and fingerprints
    assert REQUEST.encode() in raw and all(fp.encode() in raw for fp in receipt.fingerprints)

    exported = "\n".join(admin.audit.export()).encode("utf-8")
    assert _found(exported, needles) == []
    assert f"(purged client #{victim.client_id}, receipt #{receipt.id})".encode() in exported
    admin.backups.create(tmp / "after-purge.cvbk")
    admin.backups.export_keys(tmp / "keys-after-purge.json")
    for name in ("after-purge.cvbk", "keys-after-purge.json"):
        document = (tmp / name).read_bytes()
        assert _found(document, needles) == [], name
    assert f"client:{victim.client_id}".encode() not in (tmp / "after-purge.cvbk").read_bytes()
    assert admin.checkouts.reveal(f"{OTHER}/router", reason=REASON) == "Byst4nder-Pw"  # the bystander is untouched


# -- the byte-scan proof ---------------------------------------------------------------------------


@pytest.mark.parametrize("world", ["sqlite"], indirect=True)
def test_after_a_purge_no_plaintext_or_key_byte_is_in_the_sqlite_file_wal_exports_or_backups(world):
    keys = world.victim.keys
    assert {"client key v1", "client key v2", "audit key 1", "audit key 2", "lookup key", "backup key"} <= set(keys)
    assert sum(1 for k in keys if k.startswith("data key")) == 3
    _scan_after_purge(world.org.url, world.admin, world.victim, world.receipt, world.tmp)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_purge_with_vacuum_leaves_nothing_either_even_after_close(db_url, tmp_path):
    org = _org(db_url)
    _add_bystander(org)
    victim = _add_victim(org, tmp_path)
    receipt = org.admin.purge.client(SLUG, request=REQUEST, vacuum=True)
    _scan_after_purge(db_url, org.admin, victim, receipt, tmp_path)
    org.close()  # with every connection gone, the files are still clean
    for file in _sqlite_files(db_url):
        assert _found(file.read_bytes(), _needles(victim.keys)) == [], f"{file.name} after close"


def test_after_a_purge_no_row_of_any_table_holds_a_plaintext_or_key_of_the_client(world):
    done = world.admin.purge.scrub(vacuum=True)  # what `purge scrub --vacuum` runs later
    assert ("VACUUM FULL" in done) if world.engine == "postgresql" else ("vacuumed" in done)
    needles = _needles(world.victim.keys)
    cells = _cells(world.admin)
    assert len(cells) > 100
    leaks = [(table, name) for table, value in cells for name in _found(value, needles)]
    assert leaks == []
    for model in (
        m.ClientKeySeal,
        m.ClientKey,
        m.Grant,
        m.ClientPolicy,
        m.Secret,
        m.Checkout,
        m.Rotation,
        m.ServerClientKey,
    ):
        assert _all(world.admin, select(model).where(model.client_id == world.victim.client_id)) == [], model


# -- nothing of the purged client can be read any more -------------------------------------------------


def test_no_call_reveals_anything_of_a_purged_client(world):
    org, victim, receipt = world.org, world.victim, world.receipt
    ref = f"{SLUG}/frontdesk-pc-k9"
    fresh = org.unlocked(ADMIN)  # a new object: no cache can hide anything
    eve = org.unlocked("eve")  # the engineer who held a grant
    for vault in (world.admin, fresh, eve):
        calls = [
            lambda v: v.checkouts.reveal(ref, reason=REASON),
            lambda v: v.checkouts.reveal(ref, "username", reason=REASON),
            lambda v: v.checkouts.checkout(ref, reason=REASON),
            lambda v: v.secrets.show(ref),
            lambda v: v.secrets.history(ref),
            lambda v: v.secrets.list(SLUG),
            lambda v: v.clients.show(SLUG),
        ]
        if not isinstance(vault, RemoteVault):  # through a server: skipped, below
            calls += [lambda v: v.policies.get(SLUG), lambda v: v.audit.log(client=SLUG)]
        for call in calls:
            with pytest.raises(NotFound):
                call(vault)
        assert SLUG not in [c.slug for c in vault.clients.list()]
        assert SLUG not in [s.client for s in vault.secrets.list()]
    assert eve.checkouts.reveal(f"{OTHER}/router", reason=REASON) == "Byst4nder-Pw"  # her other grant still works
    for call in (
        lambda: fresh.purge.client(SLUG, request=REQUEST),
        lambda: fresh.purge.preview(SLUG),
        lambda: fresh.policies.set(SLUG, stale_days=5),
        lambda: fresh.grants.grant("eve", SLUG),
        lambda: fresh.grants.revoke("eve", SLUG),
        lambda: fresh.keys.rotate_client(SLUG),
        lambda: fresh.grants.list(client=SLUG),
    ):
        with pytest.raises(NotFound):
            call()
    assert [g.client for g in fresh.grants.list(engineer="eve")] == [OTHER]
    assert fresh.subjects.find("radiology-svc") == []
    assert fresh.subjects.find("Zephyr Dental") == []

    # its audit events keep their place, pseudonymous, pointing at the receipt
    after = {e.seq: e for e in fresh.audit.log()}
    label = f"(purged client #{victim.client_id}, receipt #{receipt.id})"
    assert victim.event_seqs and all(world.before[seq].readable for seq in victim.event_seqs)
    for seq in victim.event_seqs:
        old, new = world.before[seq], after[seq]
        assert (new.action, new.engineer, new.at, new.client_id) == (old.action, old.engineer, old.at, old.client_id)
        assert new.client == label
        if world.org.served is not None and new.details is not None:  # a served event's public facts, hashed
            assert _numbers(new.details), new.details  # into the chain: numbers and marks, never a name or value
            assert old.details is not None and new.details.items() <= old.details.items()
            if old.details.keys() - new.details.keys():  # it had sealed details: shredded with the audit keys
                assert new.readable is False
        else:
            assert new.details is None
            if old.details is not None:
                assert new.readable is False
    purge_event = after[receipt.event_seq]
    assert purge_event.action == "purge-client" and purge_event.client == label
    assert purge_event.details is not None and purge_event.details["receipt"] == receipt.id
    assert fresh.audit.verify().ok
    mine = [e for e in eve.audit.log() if e.client_id == victim.client_id]
    assert {e.action for e in mine} >= {"reveal", "secret-view"}
    # a served event keeps its public facts (numbers only); nothing sealed opens once purged. Through
    # the server an engineer's log names a purged client by its id only (no receipt is read for it)
    named = label if world.org.served is None else f"(client #{victim.client_id})"
    assert all(e.client == named and (e.details is None or _numbers(e.details)) for e in mine)
    for vault in (fresh, eve):
        assert vault.audit.verify().ok


def _numbers(value: Any) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and _numbers(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_numbers(v) for v in value)
    return isinstance(value, int) or value == VIEW_PUBLIC_ONLY


def test_the_receipt_counts_what_the_preview_showed(world):
    preview = world.preview
    assert (preview.secrets, preview.versions, preview.grants, preview.key_versions) == (2, 3, 1, 2)
    assert preview.audit_events == len(world.victim.event_seqs)
    expected = preview.to_json()
    expected.pop("client")
    assert world.receipt.counts == expected


# -- the receipt ----------------------------------------------------------------------------------------


def test_a_client_receipt_verifies_is_listed_and_is_readable_without_any_key(world):
    admin, receipt, victim = world.admin, world.receipt, world.victim
    assert (receipt.kind, receipt.request, receipt.client_id, receipt.admin) == (
        "client",
        REQUEST,
        victim.client_id,
        ADMIN,
    )
    assert receipt.fingerprints == victim.fingerprints  # every destroyed version, oldest first
    assert len(receipt.secret_ids) == 2
    assert admin.purge.verify_receipt(receipt.id).ok
    assert receipt.id in [r.id for r in admin.purge.receipts()]
    eve = world.org.unlocked("eve")
    assert eve.purge.verify_receipt(receipt.id).ok  # anyone may check it; listing is for admins
    with pytest.raises(AccessDenied):
        eve.purge.receipts()
    with pytest.raises(NotFound):
        admin.purge.verify_receipt(receipt.id + 1000)
    # plaintext columns: a reader of the database who holds no key at all reads it
    engine = admin.store.engine
    with engine.connect() as conn:
        row = conn.execute(text(f"SELECT * FROM purge_receipts WHERE id = {receipt.id}")).mappings().one()
    assert (row["request_ref"], row["kind"], row["client_id"]) == (REQUEST, "client", victim.client_id)
    assert json.loads(row["fingerprints"]) == victim.fingerprints
    assert json.loads(row["counts"])["key_versions"] == 2


def test_a_tampered_receipt_or_a_resurrected_key_version_fails_verification(world):
    admin, receipt, victim = world.admin, world.receipt, world.victim
    rid = receipt.id
    (original,) = _all(admin, select(m.PurgeReceipt.__table__).where(m.PurgeReceipt.id == rid))
    original = dict(original._mapping)
    flipped = bytearray(original["signature"])
    flipped[10] ^= 1
    changes: dict[str, Any] = {
        "request_ref": "DSR-2",
        "counts": json.dumps({**receipt.counts, "secrets": 1}, sort_keys=True),
        "fingerprints": json.dumps(victim.fingerprints[:1]),
        "secret_ids": json.dumps(receipt.secret_ids[:1]),
        "signature": bytes(flipped),
        "purged_at": original["purged_at"] + 1,
        "client_id": victim.client_id + 100,
        "kind": "secret",
        "event_seq": original["event_seq"] - 1,
    }
    try:
        for column, value in changes.items():
            _run(admin, update(m.PurgeReceipt).where(m.PurgeReceipt.id == rid).values({column: value}))
            check = admin.purge.verify_receipt(rid)
            assert not check.ok, column
            assert f"receipt #{rid} has an invalid signature" in check.problems, (column, check)
            _run(admin, update(m.PurgeReceipt).where(m.PurgeReceipt.id == rid).values({column: original[column]}))
            assert admin.purge.verify_receipt(rid).ok, column
    finally:
        _run(admin, update(m.PurgeReceipt).where(m.PurgeReceipt.id == rid).values(original))

    # a destroyed key version recorded again (under the bystander's id, for the foreign key)
    other = _client_id(admin, OTHER)
    (template,) = _all(admin, select(m.ClientKey.__table__).where(m.ClientKey.client_id == other))
    for fingerprint in victim.fingerprints:
        row = dict(template._mapping) | {"version": 77, "fingerprint": bytes.fromhex(fingerprint)}
        _run(admin, insert(m.ClientKey).values(row))
        try:
            check = admin.purge.verify_receipt(rid)
            assert not check.ok and "a purged client-key version is still recorded" in check.problems
        finally:
            _run(admin, delete(m.ClientKey).where(m.ClientKey.client_id == other, m.ClientKey.version == 77))
    assert admin.purge.verify_receipt(rid).ok


def test_a_client_row_put_back_under_the_purged_id_fails_verification(world):
    admin, victim = world.admin, world.victim
    (template,) = _all(admin, select(m.Client.__table__).where(m.Client.id == _client_id(admin, OTHER)))
    _run(admin, insert(m.Client).values(dict(template._mapping) | {"id": victim.client_id, "slug_tag": bytes(32)}))
    try:
        check = admin.purge.verify_receipt(world.receipt.id)
        assert not check.ok and "the purged client still exists" in check.problems
    finally:
        _run(admin, delete(m.Client).where(m.Client.id == victim.client_id))
    assert admin.purge.verify_receipt(world.receipt.id).ok


# -- who may purge, and with what reference -----------------------------------------------------------


def test_a_valid_request_reference_is_required_and_nothing_is_purged_without_one(world):
    admin = world.admin
    receipts = len(admin.purge.receipts())
    bad = ["", "jane@example.org", "x" * 65, "-DSR-1", "DSR 1", "DSR-1\n", "Jane Müller", None]
    for ref in bad:
        for call in (
            lambda r: admin.purge.client(OTHER, request=r),
            lambda r: admin.purge.secret(f"{OTHER}/router", request=r),
            lambda r: admin.subjects.purge("by-admin", request=r),
        ):
            with pytest.raises(InvalidInput):
                call(ref)
    assert len(admin.purge.receipts()) == receipts
    assert admin.checkouts.reveal(f"{OTHER}/router", reason=REASON) == "Byst4nder-Pw"
    assert admin.clients.show(OTHER).secrets == 2


def test_only_an_admin_may_purge_and_unknown_names_are_not_found(world):
    admin = world.admin
    receipts = len(admin.purge.receipts())
    eve = world.org.unlocked("eve")
    for call in (  # through a server too (the subjects since session 15)
        lambda: eve.purge.client(OTHER, request=REQUEST),
        lambda: eve.purge.preview(OTHER),
        lambda: eve.purge.receipts(),
        lambda: eve.purge.secret(f"{OTHER}/router", request=REQUEST),
        lambda: eve.subjects.purge("by-admin", request=REQUEST),
        lambda: eve.subjects.find("by-admin"),
        lambda: eve.subjects.report("by-admin"),
    ):
        with pytest.raises(AccessDenied):
            call()
    for call in (
        lambda: admin.purge.client("nobody-here", request=REQUEST),
        lambda: admin.purge.secret(f"{OTHER}/nope", request=REQUEST),
        lambda: admin.purge.secret("nobody-here/router", request=REQUEST),
        lambda: admin.purge.preview("nobody-here"),
    ):
        with pytest.raises(NotFound):
            call()
    assert len(admin.purge.receipts()) == receipts
    assert eve.checkouts.reveal(f"{OTHER}/router", reason=REASON) == "Byst4nder-Pw"


# -- purging one secret (changes the world: the bystander loses its switch) -------------------------------


def test_purge_secret_removes_only_that_secret_every_version_and_data_key(world):
    admin, org = world.admin, world.org
    target, kept = f"{OTHER}/switch", f"{OTHER}/router"
    cid, sid = _client_id(admin, OTHER), _secret_id(admin, target)
    assert admin.keyholder.client_keys[(cid, 1)]
    deks = {k: v for k, v in _data_keys(admin, cid, {1: admin.keyholder.client_keys[(cid, 1)]}).items() if k[0] == sid}
    assert len(deks) == 3
    longest = "R" + "1234567890" * 6 + "a#:"  # 64 characters: the longest reference accepted
    assert len(longest) == 64

    receipt = admin.purge.secret(target, request=longest)

    assert (receipt.kind, receipt.request, receipt.secret_ids, receipt.counts["versions"]) == (
        "secret",
        longest,
        [sid],
        3,
    )
    assert sorted(receipt.fingerprints) == sorted(
        prim.sha256(prim.ctx(LABEL_FP_DATA_KEY, dek))[:16].hex() for dek in deks.values()
    )
    assert admin.purge.verify_receipt(receipt.id).ok
    eve = org.unlocked("eve")
    for vault in (admin, eve):
        for call in (
            lambda v: v.checkouts.reveal(target, reason=REASON),
            lambda v: v.secrets.show(target),
            lambda v: v.secrets.history(target),
        ):
            with pytest.raises(NotFound):
                call(vault)
        assert vault.checkouts.reveal(kept, reason=REASON) == "Byst4nder-Pw"
        assert [s.name for s in vault.secrets.list(OTHER)] == ["router"]
    assert admin.clients.show(OTHER).secrets == 1
    assert _all(admin, select(m.SecretVersion).where(m.SecretVersion.secret_id == sid)) == []
    assert admin.audit.verify().ok
    needles = _needles({f"dek {k}": v for k, v in deks.items()}, SWITCH_PASSWORDS)
    assert _found(b"".join(v for _, v in _cells(admin)), needles) == []
    if world.engine == "sqlite":
        assert _found(b"".join(p.read_bytes() for p in _sqlite_files(org.url)), needles) == []
    # a secret row put back under the purged id is caught
    (template,) = _all(admin, select(m.Secret.__table__).where(m.Secret.client_id == cid))
    _run(admin, insert(m.Secret).values(dict(template._mapping) | {"id": sid, "name_tag": bytes(32)}))
    try:
        check = admin.purge.verify_receipt(receipt.id)
        assert not check.ok and "a purged secret still exists" in check.problems
    finally:
        _run(admin, delete(m.Secret).where(m.Secret.id == sid))
    assert admin.purge.verify_receipt(receipt.id).ok


# -- ids of purged rows (last: it adds a client and a secret) -----------------------------------------------


def test_ids_of_purged_rows_are_never_reused_so_receipts_and_old_events_stay_apart(world):
    admin, victim, receipt = world.admin, world.victim, world.receipt
    admin.secrets.add(f"{OTHER}/extra-1", password="Extra-Pw-1")  # takes the next secret id
    admin.clients.add(SLUG, "A different company")  # the slug is free again; takes the next client id
    admin.secrets.add(f"{SLUG}/frontdesk-pc-k9", password="New-Company-Pw")
    assert admin.secrets.list(SLUG)[0].username is None
    assert _client_id(admin, SLUG) != victim.client_id
    assert all(admin.purge.verify_receipt(r.id).ok for r in admin.purge.receipts())
    assert next(e.seq for e in admin.audit.log(client=SLUG)) > receipt.event_seq
    label = f"(purged client #{victim.client_id}, receipt #{receipt.id})"
    assert {e.client for e in admin.audit.log() if e.seq in victim.event_seqs} == {label}
