"""Backups that a purge reaches: per-client sections under per-client backup keys.

THE proof: a backup made before a purge, restored with a key export made after it,
brings back every client except the purged one, whose section stays unreadable; the
restored vault is readable by its admin and by a grantee with their passphrase, and its
audit chain verifies. An older key export still opens the purged client (the documented
reason to destroy old exports). Restores need an empty store and either an admin's
passphrase or the recovery shares; every damaged input is refused with the right error.

Each engine's vault is built once per module (``world``); restores go into new, empty
databases (SQLite files copied from a migrated template, or PostgreSQL clones).
"""

from __future__ import annotations

import base64
import datetime as dt
import itertools
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import backupdoc
import pytest
from sqlalchemy import create_engine, inspect, select, text
from sqlalchemy.engine import make_url

from vault import Vault
from vault.crypto.keyrecord import FLOOR
from vault.errors import (
    AlreadyExists,
    DecryptionFailed,
    IntegrityError,
    InvalidInput,
    NotFound,
    RecoveryShareError,
    StoreUnavailable,
    VaultError,
    WrongPassphrase,
)
from vault.keyholder.backupsections import open_key_export
from vault.service.records import ReceiptInfo
from vault.service.sessions import MemorySessionStore
from vault.storage import engine as storage
from vault.storage import models as m

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
ADMIN, ADMIN_PASS = "root-admin", "admin passphrase ✓"
EVE, EVE_PASS = "eve", "pass of eve ✓"
REASON = "T-1 test"
SECRETS = {  # ref: (password, username, note)
    "acme-k7q/fw01-edge-qx": ("Acme-Fw-Pw-31x", "acme-netadmin-u1", "Rack 4 console port AQ"),
    "globex-w3z/mail-tenant-gx": ("Globex-Mail-Pw-77", "globex-postmaster-u2", "Tenant id note GXQ"),
    "purgeco-p9x/db-vault-pz": ("Purgeco-Db-Pw-55", "purgeco-dba-u9", "Purgeco basement server QQ"),
}
CLIENT_NAMES = {"acme-k7q": "Acme Ltd Kq", "globex-w3z": "Globex Corp Wv", "purgeco-p9x": "Purgeco Holdings Zk"}
PLAINTEXTS = [
    *(v for spec in SECRETS.values() for v in spec),
    *(ref.split("/")[1] for ref in SECRETS),
    *CLIENT_NAMES,
    *CLIENT_NAMES.values(),
]


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime.now(dt.UTC).replace(microsecond=0)

    def __call__(self) -> dt.datetime:
        return self.now


@dataclass
class Databases:
    """New, empty, migrated databases on either engine; dropped at the end."""

    tmp: Path
    pg_template: str | None
    _sqlite_template: Path | None = None
    _drops: list[Callable[[], None]] = field(default_factory=list)
    _count: Iterator[int] = field(default_factory=itertools.count)

    def new(self, engine: str) -> str:
        if engine == "sqlite":
            if self._sqlite_template is None:
                self._sqlite_template = self.tmp / "template.db"
                store = storage.Store(f"sqlite:///{self._sqlite_template}")
                storage.upgrade(store)
                store.close()
            path = self.tmp / f"db-{next(self._count)}.db"
            shutil.copy(self._sqlite_template, path)
            return f"sqlite:///{path}"
        if self.pg_template is None:
            pytest.skip("no PostgreSQL server reachable (set CREDVAULT_TEST_PG)")
        base = os.environ.get("CREDVAULT_TEST_PG", PG_URL)
        name = f"credvault_backups_{uuid.uuid4().hex[:12]}"
        server = create_engine(make_url(base), isolation_level="AUTOCOMMIT")
        with server.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{self.pg_template}"'))

        def drop() -> None:
            with server.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            server.dispose()

        self._drops.append(drop)
        return make_url(base).set(database=name).render_as_string(hide_password=False)

    def close(self) -> None:
        for drop in self._drops:
            drop()


@pytest.fixture(scope="module")
def databases(tmp_path_factory: pytest.TempPathFactory, pg_template: str | None) -> Iterator[Databases]:
    dbs = Databases(tmp_path_factory.mktemp("backup-dbs"), pg_template)
    yield dbs
    dbs.close()


class Opened:
    """Vaults opened on some database during a test; all closed at the end."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.vaults: list[Vault] = []

    def __call__(self, url: str, name: str | None = None, passphrase: str | None = None) -> Vault:
        vault = Vault.open(url, engineer=name, clock=self.clock, kdf_params=FLOOR, sessions=MemorySessionStore())
        self.vaults.append(vault)
        if name is not None and passphrase is not None:
            vault.engineers.unlock(name, passphrase)
        return vault

    def close(self) -> None:
        while self.vaults:
            self.vaults.pop().close()


def _populate(admin: Vault, opened: Opened, url: str) -> Vault:
    for slug, name in CLIENT_NAMES.items():
        admin.clients.add(slug, name)
    for ref, (password, username, note) in SECRETS.items():
        admin.secrets.add(ref, password=password, username=username, note=note)
    code = admin.engineers.invite(EVE)
    eve = opened(url, EVE)
    admin.engineers.confirm(EVE, eve.engineers.enroll(EVE, code, EVE_PASS))
    eve.engineers.unlock(EVE, EVE_PASS)
    admin.grants.grant(EVE, "acme-k7q")
    admin.grants.grant(EVE, "purgeco-p9x")
    assert eve.checkouts.reveal("purgeco-p9x/db-vault-pz", reason=REASON) == SECRETS["purgeco-p9x/db-vault-pz"][0]
    return eve


def _keys(admin: Vault, export: Path) -> dict[str, bytes]:
    """Every backup key (opened from the key export ``export`` just written) and every client
    key the admin can reach now."""
    document = json.loads(export.read_text(encoding="utf-8"))
    opened = open_key_export(document, bytes.fromhex(document["vault_id"]), ADMIN, ADMIN_PASS, None)
    out: dict[str, bytes] = {"vault backup key": bytes.fromhex(opened["vault"])}
    with admin.store.transaction() as s:
        for client in s.scalars(select(m.Client)):
            out[f"backup key {client.id}"] = bytes.fromhex(opened["clients"][str(client.id)])
            out[f"client key {client.id}"] = admin.keyholder.client_key(s, client.id, client.current_key_version)
    return out


@dataclass
class World:
    engine: str
    url: str
    admin: Vault
    opened: Opened
    tmp: Path
    keys: dict[str, bytes]
    early_receipt: ReceiptInfo
    late_receipt: ReceiptInfo

    @property
    def old(self) -> Path:
        return self.tmp / "old.cvbk"

    @property
    def old_keys(self) -> Path:
        return self.tmp / "keys-old.json"

    @property
    def new_keys(self) -> Path:
        return self.tmp / "keys-new.json"


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def world(request: pytest.FixtureRequest, databases: Databases, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """acme, globex and purgeco; an early purge (oldco); a backup and key export; purgeco
    purged; a new key export."""
    url = databases.new(request.param)
    tmp = tmp_path_factory.mktemp(f"backups-{request.param}")
    clock = Clock()
    opened = Opened(clock)
    admin, _ = Vault.create(url, admin=ADMIN, passphrase=ADMIN_PASS, clock=clock, kdf_params=FLOOR)
    opened.vaults.append(admin)
    admin.engineers.unlock(ADMIN, ADMIN_PASS)
    _populate(admin, opened, url)
    admin.clients.add("oldco", "Old Company")
    early = admin.purge.client("oldco", request="DSR-0")
    assert admin.backups.export_keys(tmp / "keys-old.json") == 3
    keys = _keys(admin, tmp / "keys-old.json")
    info = admin.backups.create(tmp / "old.cvbk")
    assert (info.clients, info.secrets) == (3, 3)
    late = admin.purge.client("purgeco-p9x", request="DSR-1")
    assert admin.backups.export_keys(tmp / "keys-new.json") == 2
    yield World(request.param, url, admin, opened, tmp, keys, early, late)
    opened.close()


ENGINE_FREE = pytest.mark.parametrize("world", ["sqlite"], indirect=True)


def _needles(keys: dict[str, bytes]) -> dict[str, bytes]:
    out = {f"{p!r}": p.encode("utf-8") for p in PLAINTEXTS}
    out |= {f"{p!r} (UTF-16-LE)": p.encode("utf-16-le") for p in PLAINTEXTS}
    for name, key in keys.items():
        out |= {name: key, f"{name} (hex)": key.hex().encode(), f"{name} (base64)": base64.b64encode(key)}
    return out


def _found(raw: bytes, needles: dict[str, bytes]) -> list[str]:
    return [name for name, needle in needles.items() if needle in raw]


def _section_bytes(path: Path) -> dict[str, bytes]:
    return {name: base64.b64decode(value["b"]) for name, value in backupdoc.read(path)["sections"].items()}


def _rewrite(source: Path, target: Path, change: Callable[[dict[str, Any]], None]) -> Path:
    document = backupdoc.read(source)
    change(document)
    return backupdoc.write(document, target)


def _row_count(url: str) -> int:
    store = storage.Store(url)
    try:
        with store.engine.connect() as conn:
            return sum(
                int(conn.execute(text(f'SELECT count(*) FROM "{t}"')).scalar() or 0)
                for t in inspect(store.engine).get_table_names()
                if t != "alembic_version"
            )
    finally:
        store.close()


# -- THE proof ---------------------------------------------------------------------------------


def test_an_old_backup_restored_with_the_new_key_export_brings_back_everything_but_the_purged_client(world, databases):
    target = databases.new(world.engine)
    info = world.opened(target).backups.restore(world.old, world.new_keys, admin=ADMIN, passphrase=ADMIN_PASS)
    assert (info.clients, info.skipped_clients, info.secrets) == (2, 1, 2)

    admin = world.opened(target, ADMIN, ADMIN_PASS)
    eve = world.opened(target, EVE, EVE_PASS)  # the grantee, with her own passphrase
    assert {c.slug for c in admin.clients.list()} == {"acme-k7q", "globex-w3z"}
    for ref in ("acme-k7q/fw01-edge-qx", "globex-w3z/mail-tenant-gx"):
        password, username, note = SECRETS[ref]
        assert admin.checkouts.reveal(ref, reason=REASON) == password
        assert (admin.secrets.show(ref).username, admin.secrets.show(ref).note) == (username, note)
    assert eve.checkouts.reveal("acme-k7q/fw01-edge-qx", reason=REASON) == SECRETS["acme-k7q/fw01-edge-qx"][0]
    assert [c.slug for c in eve.clients.list()] == ["acme-k7q"]
    for vault in (admin, eve):
        with pytest.raises(NotFound):
            vault.checkouts.reveal("purgeco-p9x/db-vault-pz", reason=REASON)
        with pytest.raises(NotFound):
            vault.clients.show("purgeco-p9x")
    assert admin.subjects.find("purgeco-dba") == []
    for vault in (admin, eve):
        assert vault.audit.verify().ok
    assert admin.purge.verify_receipt(world.early_receipt.id).ok  # a receipt older than the backup came with it
    # the restored store holds nothing of the purged client, in any row
    store = storage.Store(target)
    try:
        with store.engine.connect() as conn:
            cells = b"".join(
                bytes(v) if isinstance(v, (bytes, memoryview)) else str(v).encode()
                for t in inspect(store.engine).get_table_names()
                for row in conn.execute(text(f'SELECT * FROM "{t}"'))
                for v in row
            )
    finally:
        store.close()
    purged = [*SECRETS["purgeco-p9x/db-vault-pz"], "db-vault-pz", "purgeco-p9x", CLIENT_NAMES["purgeco-p9x"]]
    assert not [p for p in purged if p.encode() in cells]
    assert SECRETS["acme-k7q/fw01-edge-qx"][0].encode() not in cells  # (the others are encrypted, of course)
    # and it is a working vault: new rows get new ids (PostgreSQL sequences were moved on)
    admin.clients.add("newco", "New Company")
    admin.secrets.add("newco/wifi", password="Newco-Wifi-Pw")
    admin.grants.grant(EVE, "newco")
    assert eve.checkouts.reveal("newco/wifi", reason=REASON) == "Newco-Wifi-Pw"
    receipt = admin.purge.client("newco", request="DSR-9")
    assert receipt.id > world.early_receipt.id and admin.purge.verify_receipt(receipt.id).ok


def test_clients_added_after_a_restore_never_take_the_id_of_a_purged_client(world, databases):
    target = databases.new(world.engine)
    info = world.opened(target).backups.restore(world.old, world.new_keys, admin=ADMIN, passphrase=ADMIN_PASS)
    admin = world.opened(target, ADMIN, ADMIN_PASS)
    for slug in ("later-one", "later-two"):
        admin.clients.add(slug, "A later client")
        events = admin.audit.log(client=slug)
        assert events[0].action == "client-create" and events[0].seq > info.audit_head, slug
    assert admin.purge.verify_receipt(world.early_receipt.id).ok


def test_the_old_backup_file_holds_no_plaintext_and_no_key(world):
    needles = _needles(world.keys)
    raw = world.old.read_bytes()
    assert _found(raw, needles) == []
    sections = _section_bytes(world.old)
    clients = {f"client:{n.split()[-1]}" for n in world.keys if n.startswith("client key")}
    assert set(sections) == {"global", "audit:0"} | clients  # a small log: one audit section
    for name, blob in sections.items():
        assert blob[:2] == b"\x01\x07", name  # an encrypted backup section
        assert _found(blob, needles) == [], name
    for export in (world.old_keys, world.new_keys):  # key exports hold every key sealed, none in clear
        assert _found(export.read_bytes(), needles) == [], export.name


def test_an_old_key_export_still_opens_the_purged_client_so_old_exports_must_be_destroyed(world, databases):
    target = databases.new("sqlite")  # from either engine into SQLite: backups are portable
    info = world.opened(target).backups.restore(world.old, world.old_keys, admin=ADMIN, passphrase=ADMIN_PASS)
    assert (info.clients, info.skipped_clients, info.secrets) == (3, 0, 3)
    admin = world.opened(target, ADMIN, ADMIN_PASS)
    for ref, (password, _username, _note) in SECRETS.items():
        assert admin.checkouts.reveal(ref, reason=REASON) == password
    eve = world.opened(target, EVE, EVE_PASS)
    assert eve.checkouts.reveal("purgeco-p9x/db-vault-pz", reason=REASON) == SECRETS["purgeco-p9x/db-vault-pz"][0]
    assert admin.audit.verify().ok


# -- refused restores (engine-independent: one run, on SQLite) -----------------------------------------


@ENGINE_FREE
def test_restores_with_a_wrong_passphrase_admin_or_foreign_key_export_are_refused(world, databases, tmp_path):
    target = databases.new("sqlite")
    restore = world.opened(target).backups.restore
    with pytest.raises(WrongPassphrase):
        restore(world.old, world.new_keys, admin=ADMIN, passphrase="not the passphrase")
    for admin, passphrase in ((EVE, EVE_PASS), ("nobody", ADMIN_PASS), (ADMIN, None), (None, None)):
        with pytest.raises(InvalidInput):
            restore(world.old, world.new_keys, admin=admin, passphrase=passphrase)
    other, _ = Vault.create(
        databases.new("sqlite"), admin=ADMIN, passphrase=ADMIN_PASS, clock=world.opened.clock, kdf_params=FLOOR
    )
    world.opened.vaults.append(other)
    other.engineers.unlock(ADMIN, ADMIN_PASS)
    other.backups.export_keys(tmp_path / "foreign-keys.json")
    with pytest.raises(InvalidInput):
        restore(world.old, tmp_path / "foreign-keys.json", admin=ADMIN, passphrase=ADMIN_PASS)
    assert _row_count(target) == 0  # nothing was written
    restore(world.old, world.new_keys, admin=ADMIN, passphrase=ADMIN_PASS)
    before = _row_count(target)
    with pytest.raises(AlreadyExists):
        restore(world.old, world.new_keys, admin=ADMIN, passphrase=ADMIN_PASS)
    with pytest.raises(AlreadyExists):
        world.opened(world.url).backups.restore(world.old, world.new_keys, admin=ADMIN, passphrase=ADMIN_PASS)
    assert _row_count(target) == before


@ENGINE_FREE
def test_a_tampered_truncated_or_garbage_backup_is_refused(world, databases, tmp_path):
    target = databases.new("sqlite")
    restore = world.opened(target).backups.restore
    later = world.tmp / "later.cvbk"
    if not later.exists():
        world.admin.backups.create(later)
    acme = next(n for n in _section_bytes(world.old) if n.startswith("client:"))

    def flip(section: str, position: int) -> Callable[[dict[str, Any]], None]:
        def change(document: dict[str, Any]) -> None:
            blob = bytearray(base64.b64decode(document["sections"][section]["b"]))
            blob[position] ^= 0x01
            document["sections"][section]["b"] = base64.b64encode(bytes(blob)).decode()

        return change

    def swap_with_later(document: dict[str, Any]) -> None:
        document["sections"][acme] = backupdoc.read(later)["sections"][acme]

    def other_backup_id(document: dict[str, Any]) -> None:
        document["backup_id"] = backupdoc.read(later)["backup_id"]

    def rename(document: dict[str, Any]) -> None:
        sections = document["sections"]
        names = sorted(n for n in sections if n.startswith("client:") and n != acme)
        sections[acme], sections[names[0]] = sections[names[0]], sections[acme]

    cases = {
        "a byte of a client section": flip(acme, 40),
        "the last byte (tag) of a client section": flip(acme, -1),
        "a byte of the global section": flip("global", 50),
        "a header byte of the global section": flip("global", 3),
        "a client section from a later backup": swap_with_later,
        "another backup id": other_backup_id,
        "two client sections swapped": rename,
    }
    for i, (name, change) in enumerate(cases.items()):
        tampered = _rewrite(world.old, tmp_path / f"tampered-{i}.cvbk", change)
        with pytest.raises(DecryptionFailed):
            restore(tampered, world.new_keys, admin=ADMIN, passphrase=ADMIN_PASS)
        assert _row_count(target) == 0, name
    raw = world.old.read_bytes()
    broken = {
        "truncated.cvbk": raw[: len(raw) // 2],
        "garbage.cvbk": os.urandom(2048),
        "empty.cvbk": b"",
        "list.cvbk": b"[1, 2, 3]",
        "keys-as-backup.cvbk": world.new_keys.read_bytes(),
        "other-format.cvbk": backupdoc.text({**backupdoc.read(world.old), "format": 3}).encode(),
        "no end line.cvbk": b"\n".join(raw.splitlines()[:-1]) + b"\n",
        "cut at a line.cvbk": b"\n".join(raw.splitlines()[:2]) + b"\n",
    }
    for name, content in broken.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(InvalidInput):
            restore(tmp_path / name, world.new_keys, admin=ADMIN, passphrase=ADMIN_PASS)
    with pytest.raises(InvalidInput):  # a backup given as the key export
        restore(world.old, world.old, admin=ADMIN, passphrase=ADMIN_PASS)
    with pytest.raises(InvalidInput):
        restore(tmp_path / "missing.cvbk", world.new_keys, admin=ADMIN, passphrase=ADMIN_PASS)
    assert _row_count(target) == 0
    assert restore(world.old, world.new_keys, admin=ADMIN, passphrase=ADMIN_PASS).clients == 2  # still restorable


@ENGINE_FREE
def test_a_backup_with_a_client_section_removed_or_added_is_refused(world, databases, tmp_path):
    target = databases.new("sqlite")
    restore = world.opened(target).backups.restore
    sections = _section_bytes(world.old)
    acme = next(n for n in sections if n.startswith("client:"))
    cut = _rewrite(world.old, tmp_path / "cut.cvbk", lambda d: d["sections"].pop(acme))
    with pytest.raises(IntegrityError):
        restore(cut, world.new_keys, admin=ADMIN, passphrase=ADMIN_PASS)
    extra = _rewrite(
        world.old, tmp_path / "extra.cvbk", lambda d: d["sections"].update({"client:999": d["sections"][acme]})
    )
    with pytest.raises(IntegrityError):
        restore(extra, world.new_keys, admin=ADMIN, passphrase=ADMIN_PASS)
    assert _row_count(target) == 0


@ENGINE_FREE
def test_a_well_labelled_but_malformed_backup_or_key_export_is_refused_as_invalid_input(world, databases, tmp_path):
    restore = world.opened(databases.new("sqlite")).backups.restore
    backup = {**backupdoc.read(world.old), "format": 1}  # written as one document: the format-1 reader
    keys = json.loads(world.new_keys.read_text(encoding="utf-8"))
    bad_backups = {
        "only the magic": {"magic": backup["magic"], "format": 1},
        "no sections": {k: v for k, v in backup.items() if k != "sections"},
        "a backup id that is not hex": {**backup, "backup_id": "zz"},
        "sections as a list": {**backup, "sections": []},
        "no global section": {**backup, "sections": {k: v for k, v in backup["sections"].items() if k != "global"}},
    }
    bad_keys = {
        "only the magic and vault id": {"magic": keys["magic"], "format": 1, "vault_id": keys["vault_id"]},
        "a root version that is not a number": {**keys, "root_version": "x"},
        "no admins": {k: v for k, v in keys.items() if k != "admins"},
    }
    failures = []
    for i, (name, document) in enumerate(bad_backups.items()):
        path = tmp_path / f"bad-{i}.cvbk"
        path.write_text(json.dumps(document), encoding="utf-8")
        try:
            restore(path, world.new_keys, admin=ADMIN, passphrase=ADMIN_PASS)
        except (InvalidInput, IntegrityError):
            continue
        except Exception as error:
            failures.append(f"backup with {name}: {type(error).__name__}")
    for i, (name, document) in enumerate(bad_keys.items()):
        path = tmp_path / f"bad-keys-{i}.json"
        path.write_text(json.dumps(document), encoding="utf-8")
        try:
            restore(world.old, path, admin=ADMIN, passphrase=ADMIN_PASS)
        except (InvalidInput, IntegrityError):
            continue
        except Exception as error:
            failures.append(f"key export with {name}: {type(error).__name__}")
    assert failures == []


@ENGINE_FREE
def test_a_backup_or_key_export_never_overwrites_a_file_and_fails_with_a_vault_error(world, tmp_path):
    existing = tmp_path / "existing"
    existing.write_text("precious", encoding="utf-8")
    head = world.admin.audit.head()[0]
    for call in (world.admin.backups.create, world.admin.backups.export_keys):
        with pytest.raises(VaultError):
            call(existing)
    assert existing.read_text(encoding="utf-8") == "precious"
    assert world.admin.audit.head()[0] == head  # nothing claims a backup was written


def test_a_backup_that_fails_part_way_leaves_no_file_and_records_nothing(world, tmp_path, monkeypatch):
    """The file is written section by section: a failure after the first sections are on
    disk (the disk fills, or the database stops answering) removes what was written and
    rolls the backup's event back."""
    from vault.authority.backups import BackupAuthority
    from vault.service import backupfile

    real_section, real_rows = backupfile.BackupWriter.section, BackupAuthority._client_rows
    head = world.admin.audit.head()[0]
    cut_short: list[int] = []  # the sections written when the failure struck

    def full_after(n: int) -> Callable[..., None]:
        def section(writer: Any, name: str, blob: bytes) -> None:
            if writer.count >= n:
                cut_short.append(writer.count)
                raise OSError(28, "No space left on device")
            real_section(writer, name, blob)

        return section

    for n in (1, 2):  # after the audit section; after the first client's
        target = tmp_path / f"cut-{n}.cvbk"
        monkeypatch.setattr(backupfile.BackupWriter, "section", full_after(n))
        with pytest.raises(StoreUnavailable, match="nothing was recorded"):
            world.admin.backups.create(target)
        monkeypatch.setattr(backupfile.BackupWriter, "section", real_section)
        assert not target.exists(), "a cut-short backup was left behind"
    assert cut_short == [1, 2]
    read = itertools.count()

    def rows_then_unavailable(s: Any, client_id: int) -> Any:
        if next(read) >= 1:  # the first client's section is written, then the database fails
            raise StoreUnavailable("the database is unreachable or failed: nothing was changed")
        return real_rows(s, client_id)

    monkeypatch.setattr(BackupAuthority, "_client_rows", staticmethod(rows_then_unavailable))
    target = tmp_path / "cut-rows.cvbk"
    with pytest.raises(StoreUnavailable, match="unreachable"):
        world.admin.backups.create(target)
    assert not target.exists()
    monkeypatch.setattr(BackupAuthority, "_client_rows", staticmethod(real_rows))
    assert world.admin.audit.head()[0] == head  # no event claims a backup was written
    whole = tmp_path / "whole.cvbk"
    assert world.admin.backups.create(whole).clients == 2 and whole.exists()  # and it works again


FORMAT1 = Path(__file__).resolve().parent.parent / "vectors" / "backup-format1"


@pytest.mark.parametrize("engine", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_a_backup_in_format_1_made_by_the_previous_version_still_restores(databases, engine):
    """tests/vectors/backup-format1 was written by credvault before backups became JSON
    Lines (format 2): one JSON document, the audit log inside the global section."""
    expected = json.loads((FORMAT1 / "expected.json").read_text(encoding="utf-8"))
    assert json.loads((FORMAT1 / "backup.cvbk").read_text(encoding="utf-8"))["format"] == 1
    target = databases.new(engine)
    opened = Opened(Clock())
    try:
        info = opened(target).backups.restore(
            FORMAT1 / "backup.cvbk", FORMAT1 / "keys.json", admin=expected["admin"], passphrase=expected["passphrase"]
        )
        assert (info.clients, info.secrets, info.skipped_clients) == (2, 3, 0)
        assert info.audit_head == expected["audit_head_seq"]
        admin = opened(target, expected["admin"], expected["passphrase"])
        for ref, password in expected["secrets"].items():
            assert admin.checkouts.reveal(ref, reason=REASON) == password
        bob = opened(target, expected["engineer"], expected["engineer_passphrase"])
        assert bob.checkouts.reveal("acme/fw01", reason=REASON) == expected["secrets"]["acme/fw01"]
        with pytest.raises(NotFound):
            bob.checkouts.reveal("globex/mail", reason=REASON)  # no grant for globex, restored as it was
        assert admin.audit.verify().ok
        admin.secrets.add("acme/new", password="after the restore")  # a working vault: ids move on
        assert bob.checkouts.reveal("acme/new", reason=REASON) == "after the restore"
    finally:
        opened.close()


@ENGINE_FREE
def test_a_long_audit_log_is_split_into_sections_each_checked_and_all_restored(world, databases, tmp_path, monkeypatch):
    from vault.authority import backups

    monkeypatch.setattr(backups, "AUDIT_CHUNK", 4)
    path = tmp_path / "chunked.cvbk"
    world.admin.backups.create(path)
    sections = _section_bytes(path)
    audit = sorted((n for n in sections if n.startswith("audit:")), key=lambda n: int(n.split(":")[1]))
    events = world.admin.audit.head()[0]
    assert len(audit) == -(-events // 4) >= 5, (events, audit)  # every event, four to a section
    target = databases.new("sqlite")
    info = world.opened(target).backups.restore(path, world.new_keys, admin=ADMIN, passphrase=ADMIN_PASS)
    assert info.audit_head == events
    restored = world.opened(target, ADMIN, ADMIN_PASS)
    verified = restored.audit.verify()
    assert verified.ok and verified.first_seq == 1 and verified.checked >= events  # (+ the unlock just now)
    middle = audit[len(audit) // 2]
    refused = {
        "an audit section removed": (
            _rewrite(path, tmp_path / "cut.cvbk", lambda d: d["sections"].pop(middle)),
            IntegrityError,
        ),
        "two audit sections swapped": (
            _rewrite(
                path,
                tmp_path / "swapped.cvbk",
                lambda d: d["sections"].update({audit[0]: d["sections"][audit[1]], audit[1]: d["sections"][audit[0]]}),
            ),
            DecryptionFailed,
        ),
    }
    for name, (tampered, error) in refused.items():
        empty = databases.new("sqlite")
        with pytest.raises(error):
            world.opened(empty).backups.restore(tampered, world.new_keys, admin=ADMIN, passphrase=ADMIN_PASS)
        assert _row_count(empty) == 0, name
    lines = path.read_bytes().splitlines()
    dropped = b"\n".join(line for line in lines if middle.encode() not in line) + b"\n"  # end line kept
    (tmp_path / "dropped.cvbk").write_bytes(dropped)
    empty = databases.new("sqlite")
    with pytest.raises(IntegrityError):  # the end line counts one section more than there is
        world.opened(empty).backups.restore(
            tmp_path / "dropped.cvbk", world.new_keys, admin=ADMIN, passphrase=ADMIN_PASS
        )
    assert _row_count(empty) == 0


@ENGINE_FREE
def test_a_backup_file_that_changes_between_the_check_and_the_write_is_refused(world, databases, monkeypatch):
    """A restore reads the file twice (check, then write): if a section has gone by the
    second reading, the transaction is rolled back and nothing is written."""
    from vault.service import backupfile

    real = backupfile.BackupReader.sections
    readings = itertools.count()

    def sections(reader: Any) -> Iterator[tuple[str, bytes]]:
        first = next(readings) == 0
        for name, blob in real(reader):
            if first or not name.startswith("client:"):
                yield name, blob

    monkeypatch.setattr(backupfile.BackupReader, "sections", sections)
    target = databases.new("sqlite")
    with pytest.raises(IntegrityError, match="changed during the restore"):
        world.opened(target).backups.restore(world.old, world.new_keys, admin=ADMIN, passphrase=ADMIN_PASS)
    assert _row_count(target) == 0


# -- recovery shares, and rotations ---------------------------------------------------------------------


@dataclass
class Shared:
    url: str
    admin: Vault
    shares: tuple[str, ...]
    opened: Opened
    tmp: Path


@pytest.fixture(scope="module")
def with_shares(databases: Databases, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shared]:
    """A SQLite vault created with 2-of-3 recovery shares, a backup and a key export."""
    url = databases.new("sqlite")
    tmp = tmp_path_factory.mktemp("shares")
    opened = Opened(Clock())
    admin, result = Vault.create(
        url, admin=ADMIN, passphrase=ADMIN_PASS, shares=(2, 3), clock=opened.clock, kdf_params=FLOOR
    )
    opened.vaults.append(admin)
    admin.engineers.unlock(ADMIN, ADMIN_PASS)
    _populate(admin, opened, url)
    admin.backups.create(tmp / "b1.cvbk")
    admin.backups.export_keys(tmp / "k1.json")
    yield Shared(url, admin, result.shares, opened, tmp)
    opened.close()


def test_any_two_of_three_recovery_shares_restore_a_backup(with_shares, databases):
    env = with_shares
    assert len(env.shares) == 3
    for pair in itertools.combinations(env.shares, 2):
        target = databases.new("sqlite")
        info = env.opened(target).backups.restore(env.tmp / "b1.cvbk", env.tmp / "k1.json", shares=list(pair))
        assert (info.clients, info.skipped_clients, info.secrets) == (3, 0, 3)
        admin = env.opened(target, ADMIN, ADMIN_PASS)
        assert (
            admin.checkouts.reveal("globex-w3z/mail-tenant-gx", reason=REASON)
            == SECRETS["globex-w3z/mail-tenant-gx"][0]
        )
    # reordered, with all three, and in lower case with spaces: still the same bundle
    target = databases.new("sqlite")
    shares = [env.shares[2].lower(), " " + env.shares[0] + " "]
    assert env.opened(target).backups.restore(env.tmp / "b1.cvbk", env.tmp / "k1.json", shares=shares).clients == 3


def test_wrong_recovery_shares_are_refused(with_shares, databases):
    env = with_shares
    target = databases.new("sqlite")
    restore = env.opened(target).backups.restore
    other, foreign = Vault.create(
        databases.new("sqlite"), admin=ADMIN, passphrase=ADMIN_PASS, shares=(2, 3), kdf_params=FLOOR
    )
    env.opened.vaults.append(other)
    corrupted = env.shares[1][:-3] + ("A" if env.shares[1][-3] != "A" else "B") + env.shares[1][-2:]
    wrong = {
        "one share": [env.shares[0]],
        "the same share twice": [env.shares[0], env.shares[0]],
        "a corrupted share": [env.shares[0], corrupted],
        "shares of another vault": list(foreign.shares[:2]),
        "one of another vault": [env.shares[0], foreign.shares[1]],
        "not a share": [env.shares[0], "cvs1-2-02-NOTASHARE"],
    }
    for name, shares in wrong.items():
        with pytest.raises(RecoveryShareError):
            restore(env.tmp / "b1.cvbk", env.tmp / "k1.json", shares=shares)
        assert _row_count(target) == 0, name
    other.engineers.unlock(ADMIN, ADMIN_PASS)
    other.backups.create(env.tmp / "foreign.cvbk")
    with pytest.raises(InvalidInput):  # a backup of another vault, the key export and shares of this one
        restore(env.tmp / "foreign.cvbk", env.tmp / "k1.json", shares=list(env.shares[:2]))
    assert _row_count(target) == 0


def test_backups_keep_working_across_client_key_and_root_rotations(with_shares, databases):
    """Last of the shares tests: it rotates the root, after which the printed shares are void."""
    env = with_shares
    admin = env.admin
    admin.keys.rotate_client("acme-k7q")
    admin.keys.rotate_client("acme-k7q")
    assert admin.keys.rotate_root().clients == 3
    admin.backups.create(env.tmp / "b2.cvbk")
    admin.backups.export_keys(env.tmp / "k2.json")
    for backup, current in (("b2.cvbk", 3), ("b1.cvbk", 1)):  # made after the rotations, and before them
        target = databases.new("sqlite")
        keys = env.tmp / "k2.json"
        info = env.opened(target).backups.restore(env.tmp / backup, keys, admin=ADMIN, passphrase=ADMIN_PASS)
        assert (info.clients, info.skipped_clients) == (3, 0), backup
        restored = env.opened(target, ADMIN, ADMIN_PASS)
        eve = env.opened(target, EVE, EVE_PASS)
        for ref, (password, _username, _note) in SECRETS.items():
            assert restored.checkouts.reveal(ref, reason=REASON) == password, (backup, ref)
        assert eve.checkouts.reveal("acme-k7q/fw01-edge-qx", reason=REASON) == SECRETS["acme-k7q/fw01-edge-qx"][0]
        assert restored.audit.verify().ok
        assert [v for v, state in restored.keys.versions("acme-k7q") if state == "active"] == [current]
    target = databases.new("sqlite")
    for pair in itertools.combinations(env.shares, 2):  # printed before the root rotation
        with pytest.raises(RecoveryShareError):
            env.opened(target).backups.restore(env.tmp / "b2.cvbk", env.tmp / "k2.json", shares=list(pair))
    assert _row_count(target) == 0
