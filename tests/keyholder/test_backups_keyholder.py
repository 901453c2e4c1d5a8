"""The backups' keyholder against an authority that lies.

A compromised authority (or a DBA, or an engineer with database access) stands between the
admin's keyholder and the rows: it serves one client's rows in another client's section,
drops an audit event or a client, swaps backup-key blobs or sealed client keys between
clients, forges a key record's signature, names another vault or root key, or slips a
non-admin into the recipients of a key export. The keyholder must refuse each before
anything is sealed: no backup or key export file is left, no event is committed, no backup
key is stored. A restore must refuse a section swapped between clients or between files, a
truncated file, and a section sealed (by someone holding the key export) around another
client's rows, before the authority is handed anything.

The vault is built once per module (a refused call changes nothing); the tampering
transport wraps the real in-process authority and alters what passes through the seal.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import backupdoc
import pytest
from sqlalchemy import select

from vault import Vault
from vault.authority.backup_requests import (
    AUDIT,
    CLIENT,
    BackupContext,
    ClientBackupKey,
    RestorePlan,
    SectionRows,
)
from vault.crypto import blobs
from vault.crypto.keyrecord import FLOOR
from vault.errors import DecryptionFailed, IntegrityError, InvalidInput, UntrustedRecord
from vault.keyholder import backupfile
from vault.keyholder.backuprestore import BackupRestorer
from vault.keyholder.backups import BackupKeyholder, BackupSessionKeys
from vault.keyholder.backupsections import open_key_export
from vault.service.sessions import MemorySessionStore
from vault.storage import engine as storage
from vault.storage import models as m
from vault.transport.backups import InProcessBackupTransport

ADMIN, ADMIN_PASS = "root-admin", "admin passphrase ✓"
PASSWORDS = {"acme/fw01": "acme-Fw-Pw-1", "acme/mail": "acme-Mail-Pw-2", "globex/db": "globex-Db-Pw-3"}


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime.now(dt.UTC).replace(microsecond=0)

    def __call__(self) -> dt.datetime:
        return self.now


@dataclasses.dataclass
class World:
    admin: Vault
    alice: Vault
    tmp: Path
    clients: dict[str, int]
    backup: Path
    export: Path
    later: Path  # a second backup of the same vault


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("backups-keyholder")
    path = tmp / "vault.db"
    store = storage.Store(f"sqlite:///{path}")
    storage.upgrade(store)
    store.close()
    url, clock = f"sqlite:///{path}", Clock()
    admin, _ = Vault.create(url, admin=ADMIN, passphrase=ADMIN_PASS, clock=clock, kdf_params=FLOOR)
    admin.engineers.unlock(ADMIN, ADMIN_PASS)
    admin.clients.add("acme", "Acme Ltd")
    admin.clients.add("globex", "Globex Corp")
    for ref, password in PASSWORDS.items():
        admin.secrets.add(ref, password=password)
    code = admin.engineers.invite("alice")
    alice = Vault.open(url, engineer="alice", clock=clock, kdf_params=FLOOR, sessions=MemorySessionStore())
    admin.engineers.confirm("alice", alice.engineers.enroll("alice", code, "pass of alice"))
    alice.engineers.unlock("alice", "pass of alice")
    admin.grants.grant("alice", "acme")
    admin.backups.export_keys(tmp / "keys.json")
    admin.backups.create(tmp / "backup.cvbk")
    admin.backups.create(tmp / "later.cvbk")
    with admin.store.transaction() as s:
        clients = {c.slug_tag.hex(): c.id for c in s.scalars(select(m.Client))}
    names = dict(zip(("acme", "globex"), sorted(clients.values()), strict=True))
    yield World(admin, alice, tmp, names, tmp / "backup.cvbk", tmp / "keys.json", tmp / "later.cvbk")
    alice.close()
    admin.close()


class Tampered:
    """The keyholder's seal as a lying authority passes it on: what it is shown is altered."""

    def __init__(self, seal: Any, hooks: dict[str, Callable[..., Any]]) -> None:
        self.seal, self.hooks = seal, hooks

    def keys(self, context: BackupContext) -> Any:
        return self.seal.keys(self.hooks.get("keys", lambda c: c)(context))

    def write_export(self) -> None:
        self.seal.write_export()

    def begin(self, header: Any) -> None:
        self.seal.begin(header)

    def section(self, section: SectionRows) -> None:
        for changed in self.hooks.get("section", lambda s: [s])(section):
            self.seal.section(changed)

    def finish(self, section: SectionRows, counters: Any) -> None:
        self.seal.finish(section, counters)


class Lying:
    """A transport to the real authority that alters what it shows the keyholder."""

    def __init__(self, inner: InProcessBackupTransport, **hooks: Callable[..., Any]) -> None:
        self.inner, self.hooks = inner, hooks

    def create(self, request: Any, seal: Any) -> Any:
        return self.inner.create(request, Tampered(seal, self.hooks))

    def export_keys(self, request: Any, seal: Any) -> Any:
        return self.inner.export_keys(request, Tampered(seal, self.hooks))


def _keyholder(world: World, **hooks: Callable[..., Any]) -> BackupKeyholder:
    admin = world.admin
    transport = Lying(admin.backups._in_process(), **hooks)
    return BackupKeyholder(transport, BackupSessionKeys(admin.keyholder, admin.store), admin.core.clock)


def _state(world: World) -> tuple[Any, ...]:
    with world.admin.store.transaction() as s:
        keys = tuple(s.execute(select(m.Client.id, m.Client.backup_key_blob).order_by(m.Client.id)))
        seal = s.scalar(select(m.VaultInfo.backup_key_seal))
    return world.admin.audit.head(), keys, seal


def _refused(world: World, tmp_path: Path, error: type[Exception], what: str = "create", **hooks: Any) -> None:
    before, target = _state(world), tmp_path / f"{what}.out"
    holder = _keyholder(world, **hooks)
    with pytest.raises(error):
        holder.create(target) if what == "create" else holder.export_keys(target)
    assert not target.exists(), "a file was left behind"
    assert _state(world) == before, "something was recorded or stored"


# -- a backup from a lying authority ---------------------------------------------------------------


def test_the_untouched_path_through_the_tampering_transport_writes_a_backup(world: World, tmp_path: Path) -> None:
    """The control: the same transport, altering nothing, gives a backup and its event."""
    head = world.admin.audit.head()[0]
    info = _keyholder(world).create(tmp_path / "fine.cvbk")
    assert (info.clients, info.secrets, info.audit_head) == (2, 3, head + 1)
    assert (tmp_path / "fine.cvbk").exists()


def test_another_clients_rows_served_in_a_clients_section_are_refused(world: World, tmp_path: Path) -> None:
    """The authority hands globex's rows in as acme's section (to be sealed under acme's
    backup key, readable by whoever holds only that)."""
    acme, globex = world.clients["acme"], world.clients["globex"]
    globex_rows: dict[str, SectionRows] = {}

    def learn(section: SectionRows) -> list[SectionRows]:
        if section.kind == CLIENT and section.client_id == globex:
            globex_rows["rows"] = section
        return [section]

    _keyholder(world, section=learn).create(tmp_path / "learn.cvbk")  # what globex's rows look like
    theirs = globex_rows["rows"]

    def as_acmes(section: SectionRows) -> list[SectionRows]:
        if section.kind == CLIENT and section.client_id == acme:
            return [dataclasses.replace(theirs, client_id=acme)]
        return [section]

    def with_a_foreign_secret(section: SectionRows) -> list[SectionRows]:
        if section.kind != CLIENT or section.client_id != acme:
            return [section]
        tables = []
        for table in section.tables:
            extra = next((t for t in theirs.tables if t.table == table.table), None)
            if table.table in ("secrets", "secret_versions") and extra is not None:
                table = dataclasses.replace(table, rows=table.rows + extra.rows)
            tables.append(table)
        return [dataclasses.replace(section, tables=tuple(tables))]

    def acme_twice(section: SectionRows) -> list[SectionRows]:
        if section.kind == CLIENT and section.client_id == globex:
            return []  # globex is left out ...
        return [section, section] if section.kind == CLIENT else [section]  # ... and acme sent twice

    for hook in (as_acmes, with_a_foreign_secret, acme_twice):
        _refused(world, tmp_path, UntrustedRecord, section=hook)


def test_an_audit_log_with_an_event_left_out_is_refused(world: World, tmp_path: Path) -> None:
    def drop_one(section: SectionRows) -> list[SectionRows]:
        if section.kind != AUDIT:
            return [section]
        [events] = section.tables
        return [
            dataclasses.replace(section, tables=(dataclasses.replace(events, rows=events.rows[:2] + events.rows[3:]),))
        ]

    _refused(world, tmp_path, UntrustedRecord, section=drop_one)


def test_a_client_left_out_of_the_backup_is_refused(world: World, tmp_path: Path) -> None:
    globex = world.clients["globex"]
    _refused(world, tmp_path, UntrustedRecord, section=lambda s: [] if s.client_id == globex else [s])


def _swap_clients(context: BackupContext, change: Callable[[ClientBackupKey, ClientBackupKey], tuple[Any, Any]]) -> Any:
    first, second = context.clients
    return dataclasses.replace(context, clients=change(first, second))


def _flip(value: bytes, at: int = -1) -> bytes:
    out = bytearray(value)
    out[at] ^= 0x01
    return bytes(out)


def _first_key(context: BackupContext, **changes: Any) -> BackupContext:
    first, second = context.clients
    sealed = first.keys[0]
    record = dataclasses.replace(sealed.record, **changes.pop("record", {}))
    sealed = dataclasses.replace(sealed, record=record, **changes)
    return dataclasses.replace(context, clients=(dataclasses.replace(first, keys=(sealed, *first.keys[1:])), second))


CONTEXT_LIES: dict[str, tuple[Callable[[BackupContext], BackupContext], type[Exception]]] = {
    "backup-key blobs swapped between clients": (
        lambda c: _swap_clients(
            c, lambda a, b: (dataclasses.replace(a, blob=b.blob), dataclasses.replace(b, blob=a.blob))
        ),
        DecryptionFailed,
    ),
    "a client-key record's signature forged": (
        lambda c: _first_key(c, record={"signature": _flip(c.clients[0].keys[0].record.signature or b"\x00")}),
        UntrustedRecord,
    ),
    "another client's key record (wrong row ids)": (
        lambda c: _first_key(c, record={"client_id": c.clients[1].client_id}),
        DecryptionFailed,
    ),
    "another client's sealed copy under this client's record": (
        lambda c: _first_key(c, blob=c.clients[1].keys[0].blob),
        DecryptionFailed,
    ),
    "the vault's backup key seal replaced": (
        lambda c: dataclasses.replace(c, vault_key_seal=_flip(c.vault_key_seal or b"\x00" * 80, 40)),
        DecryptionFailed,
    ),
    "another vault": (lambda c: dataclasses.replace(c, vault_id=b"\x09" * len(c.vault_id)), UntrustedRecord),
    "another root key": (lambda c: dataclasses.replace(c, root_version=c.root_version + 1), UntrustedRecord),
    "the admin's own certificate forged": (
        lambda c: dataclasses.replace(c, me=c.me._replace(certificate=_flip(c.me.certificate or b"\x00"))),
        UntrustedRecord,
    ),
    "a client listed twice": (lambda c: dataclasses.replace(c, clients=(c.clients[0], c.clients[0])), UntrustedRecord),
}


@pytest.mark.parametrize("lie", list(CONTEXT_LIES), ids=list(CONTEXT_LIES))
def test_a_forged_backup_key_context_is_refused_before_anything_is_sealed(
    world: World, tmp_path: Path, lie: str
) -> None:
    change, error = CONTEXT_LIES[lie]
    for what in ("create", "export"):
        _refused(world, tmp_path, error, what, keys=change)


def test_a_key_export_is_never_sealed_to_an_engineer_posing_as_an_admin(world: World, tmp_path: Path) -> None:
    """A DBA makes alice (an engineer, certified as one) an admin row of the export's
    recipients, or gives the real admin's row alice's sealing key: she would open every
    backup key. Neither certificate verifies. A posing recipient beside the real admin is
    left out (the export is written, sealed to the admin alone); the admin's own row with
    her key leaves the caller out of the recipients: refused, no key export written."""
    with world.admin.store.transaction() as s:
        alice = s.scalars(select(m.Engineer).where(m.Engineer.name == "alice")).one()
        alice_public, alice_record = alice.sealing_public, alice.key_record

    def with_alice(context: BackupContext) -> BackupContext:
        [admin] = context.admins
        posing = dataclasses.replace(
            admin, row=admin.row._replace(id=admin.row.id + 100, name="alice", sealing_public=alice_public)
        )
        return dataclasses.replace(context, admins=(admin, dataclasses.replace(posing, key_record=alice_record)))

    def admin_with_alices_key(context: BackupContext) -> BackupContext:
        [admin] = context.admins
        return dataclasses.replace(
            context, admins=(dataclasses.replace(admin, row=admin.row._replace(sealing_public=alice_public)),)
        )

    target = tmp_path / "keys.json"
    _keyholder(world, keys=with_alice).export_keys(target)
    document = json.loads(target.read_text(encoding="utf-8"))
    assert [a["name"] for a in document["admins"]] == [world.admin.engineer_name]
    assert alice_record is not None
    assert all(a["key_record"] != backupfile.encode(alice_record) for a in document["admins"])
    _refused(world, tmp_path, UntrustedRecord, "export", keys=admin_with_alices_key)


def test_a_key_export_that_leaves_the_calling_admin_out_of_its_recipients_is_refused(
    world: World, tmp_path: Path
) -> None:
    """A compromised authority drops the calling admin from the export's recipients (every
    other recipient genuine): the file would not open with the passphrase of the admin who
    made it, who learns so only when restoring. Refused, no key export written."""

    def without_me(context: BackupContext) -> BackupContext:
        assert any(a.row.id == context.me.id for a in context.admins)
        return dataclasses.replace(context, admins=tuple(a for a in context.admins if a.row.id != context.me.id))

    _refused(world, tmp_path, UntrustedRecord, "export", keys=without_me)


class RotatingFirst:
    """A transport that lets another session of the same admin rotate the root key between
    this keyholder opening its recovery key and the authority reading the backup context
    (a race, not a lie), once; then forwards."""

    def __init__(self, inner: InProcessBackupTransport, rotate: Callable[[], Any]) -> None:
        self.inner, self.rotate, self.calls = inner, rotate, 0

    def _first(self) -> None:
        self.calls += 1
        if self.calls == 1:
            self.rotate()

    def create(self, request: Any, seal: Any) -> Any:
        self._first()
        return self.inner.create(request, seal)

    def export_keys(self, request: Any, seal: Any) -> Any:
        self._first()
        return self.inner.export_keys(request, seal)


@pytest.mark.parametrize("what", ["export", "create"])
def test_a_backup_racing_a_root_rotation_reopens_the_recovery_key_and_succeeds(
    team: Any, tmp_path: Path, what: str
) -> None:
    """The root key rotated after this admin opened the recovery key: the authority names the
    new root version. Not a tamper alarm: the keyholder opens the current recovery key and
    asks once more, and the file is sealed under the new root."""
    admin = team.admin
    admin.clients.add("acme", "Acme Ltd")
    admin.secrets.add("acme/fw01", password="acme-Fw-Pw-9")
    other = team.open(ADMIN)
    other.engineers.unlock(ADMIN, team.passphrases[ADMIN])
    transport = RotatingFirst(admin.backups._in_process(), other.keys.rotate_root)
    holder = BackupKeyholder(transport, BackupSessionKeys(admin.keyholder, admin.store), admin.core.clock)
    holder.keys.open_recovery()
    before = holder.keys.recovery_version()
    target = tmp_path / f"{what}.out"
    if what == "export":
        assert holder.export_keys(target) == 1
        assert json.loads(target.read_text(encoding="utf-8"))["root_version"] == before + 1
    else:
        assert holder.create(target).clients == 1
    assert transport.calls == 2 and holder.keys.recovery_version() == before + 1
    other.close()


# -- a restore of a tampered file ---------------------------------------------------------------------


class Recording:
    """An authority that writes nothing and notes whether it was handed anything."""

    def __init__(self) -> None:
        self.plans: list[RestorePlan] = []
        self.sections: list[SectionRows] = []

    def restore(self, plan: RestorePlan, source: Any) -> None:
        self.plans.append(plan)
        self.sections.extend(source.sections())
        source.done()


def _restore(world: World, backup: Path) -> Recording:
    authority = Recording()
    BackupRestorer(authority).restore(backup, world.export, ADMIN, ADMIN_PASS, None)
    return authority


def _client_names(path: Path) -> list[str]:
    return sorted(n for n in backupdoc.read(path)["sections"] if n.startswith("client:"))


def test_the_untouched_backup_is_handed_over_each_client_in_its_own_section(world: World) -> None:
    authority = _restore(world, world.backup)
    assert len(authority.plans) == 1
    assert sorted(s.client_id for s in authority.sections if s.kind == CLIENT) == sorted(world.clients.values())


def test_a_section_swapped_between_clients_or_files_or_a_truncated_file_is_refused_before_the_authority(
    world: World, tmp_path: Path
) -> None:
    acme, globex = _client_names(world.backup)
    later = backupdoc.read(world.later)["sections"]

    def swapped(d: dict[str, Any]) -> None:
        d["sections"][acme], d["sections"][globex] = d["sections"][globex], d["sections"][acme]

    def from_another_file(d: dict[str, Any]) -> None:
        d["sections"][acme] = later[acme]

    for i, (change, error) in enumerate(((swapped, DecryptionFailed), (from_another_file, DecryptionFailed))):
        document = backupdoc.read(world.backup)
        change(document)
        authority = Recording()
        with pytest.raises(error):
            BackupRestorer(authority).restore(
                backupdoc.write(document, tmp_path / f"t{i}.cvbk"), world.export, ADMIN, ADMIN_PASS, None
            )
        assert authority.plans == [] and authority.sections == []
    raw = world.backup.read_bytes()
    (tmp_path / "cut.cvbk").write_bytes(raw[: len(raw) * 2 // 3])
    authority = Recording()
    with pytest.raises(InvalidInput):
        BackupRestorer(authority).restore(tmp_path / "cut.cvbk", world.export, ADMIN, ADMIN_PASS, None)
    assert authority.plans == []


def test_a_section_resealed_around_another_clients_rows_is_refused_before_the_authority(
    world: World, tmp_path: Path
) -> None:
    """Someone holding the key export (an old one, kept against the rules) opens acme's
    section, adds globex's secrets to it and seals it again under acme's key: the section
    opens, but the rows are not acme's."""
    export = json.loads(world.export.read_text(encoding="utf-8"))
    vault_id = bytes.fromhex(export["vault_id"])
    keys = open_key_export(export, vault_id, ADMIN, ADMIN_PASS, None)
    document = backupdoc.read(world.backup)
    backup_id = bytes.fromhex(document["backup_id"])
    acme, globex = _client_names(world.backup)

    def opened(name: str) -> dict[str, Any]:
        key = bytes.fromhex(keys["clients"][name.split(":")[1]])
        blob = base64.b64decode(document["sections"][name]["b"])
        return json.loads(blobs.decrypt_backup_section(key, blob, vault_id, backup_id, name))  # type: ignore[no-any-return]

    theirs, ours = opened(globex), opened(acme)
    ours["secrets"] = ours["secrets"] + theirs["secrets"]
    ours["secret_versions"] = ours["secret_versions"] + theirs["secret_versions"]
    key = bytes.fromhex(keys["clients"][acme.split(":")[1]])
    sealed = blobs.encrypt_backup_section(key, json.dumps(ours).encode(), vault_id, backup_id, acme)
    document["sections"][acme] = {"b": base64.b64encode(sealed).decode()}
    authority = Recording()
    with pytest.raises(IntegrityError, match="another client"):
        BackupRestorer(authority).restore(
            backupdoc.write(document, tmp_path / "resealed.cvbk"), world.export, ADMIN, ADMIN_PASS, None
        )
    assert authority.plans == [] and authority.sections == []


def test_a_copy_of_the_backup_restores_as_before(world: World, tmp_path: Path) -> None:
    """The refusals above are of the changes: an unchanged copy is handed over whole."""
    copy = tmp_path / "copy.cvbk"
    shutil.copy(world.backup, copy)
    assert len(_restore(world, copy).sections) == len(backupdoc.read(world.backup)["sections"]) - 1
