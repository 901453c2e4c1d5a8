"""The backups' authority, run with no key material at all.

The rows are made once per module by the usual API (an admin, an engineer, two clients
with secrets, a grant), into a SQLite file that each test copies. Then ``BackupAuthority``
is driven alone: its public-key checks are a stand-in that reads only the rows it is
given, its recorder notes the events instead of signing them, and the keyholder's seal is a
fake that returns fixed blobs and notes what it is shown. No client key, backup key or
private key reaches it, yet it must refuse anyone but an admin before it reads any row of
the vault's clients, refuse an ill-typed request or restore before any SQL, store only the
backup keys that were missing, append the event before any file is written, and hand over
each client's rows in that client's section only.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, select, text

from vault import Vault
from vault.authority.backup_requests import (
    AUDIT,
    CLIENT,
    CLIENT_BINDING,
    CREATE,
    EXPORT,
    GLOBAL,
    GLOBAL_TABLES,
    BackupContext,
    BackupHeader,
    BackupRequest,
    NewBackupKeys,
    RestorePlan,
    SectionRows,
    TableRows,
)
from vault.authority.backups import MODELS, BackupAuthority, _rows
from vault.authority.requests import Caller
from vault.crypto.keyrecord import FLOOR
from vault.errors import AccessDenied, AlreadyExists, InvalidInput, Locked, UntrustedRecord
from vault.service.sessions import MemorySessionStore
from vault.storage import engine as storage
from vault.storage import models as m

ADMIN, ADMIN_PASS = "root-admin", "admin passphrase ✓"
PASSWORDS = {"acme/fw01": "acme-Fw-Pw-1", "acme/mail": "acme-Mail-Pw-2", "globex/db": "globex-Db-Pw-3"}
READS_THE_VAULT = re.compile(
    r"\b(clients|client_keys|client_key_seals|client_policies|secrets|secret_versions|checkouts|rotations"
    r"|audit_events|purge_receipts|root_seals|engineer_keys|alembic_version)\b",
    re.IGNORECASE,
)
NEW_BLOB = b"\x01\x05" + (1).to_bytes(4, "big") + b"new backup key blob"  # header: client-key version 1
NEW_SEAL = b"\x02new vault backup key seal"


class Checks:
    """Public-key checks that look at the rows only (the real ones verify signatures)."""

    def organisation_key(self, s: Any, current: bytes) -> None:
        pass

    def certificate(self, s: Any, row: Any) -> None:
        if row.certificate is None:
            raise UntrustedRecord("no certificate")

    def current_key_version(self, s: Any, client: Any) -> int:
        return int(client.current_key_version)


class Recorder:
    """Notes each event appended, in the unit of work (nothing signed: no key here)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def append(self, s: Any, action: str, *, public: dict[str, Any]) -> int:
        self.events.append((action, public))
        return 5000 + len(self.events)


class FakeSeal:
    """The keyholder's seal without a key: notes what it is shown, answers fixed blobs."""

    def __init__(self, recorder: Recorder, *, refuse: bool = False, new: NewBackupKeys | None = None) -> None:
        self.recorder, self.refuse, self.new = recorder, refuse, new
        self.contexts: list[BackupContext] = []
        self.calls: list[tuple[str, int]] = []  # (call, events appended when it came)
        self.header: BackupHeader | None = None
        self.sections: list[SectionRows] = []
        self.counters: tuple[tuple[str, int], ...] = ()

    def keys(self, context: BackupContext) -> NewBackupKeys:
        self.contexts.append(context)
        self.calls.append(("keys", len(self.recorder.events)))
        if self.refuse:
            raise UntrustedRecord("the keyholder refuses this context")
        if self.new is not None:
            return self.new
        blobs = tuple((c.client_id, NEW_BLOB) for c in context.clients if c.blob is None)
        return NewBackupKeys(NEW_SEAL if context.vault_key_seal is None else None, blobs)

    def write_export(self) -> None:
        self.calls.append(("write_export", len(self.recorder.events)))

    def begin(self, header: BackupHeader) -> None:
        self.calls.append(("begin", len(self.recorder.events)))
        self.header = header

    def section(self, section: SectionRows) -> None:
        self.sections.append(section)

    def finish(self, section: SectionRows, counters: tuple[tuple[str, int], ...]) -> None:
        self.calls.append(("finish", len(self.recorder.events)))
        self.sections.append(section)
        self.counters = counters


@dataclasses.dataclass(frozen=True)
class Template:
    path: Path
    empty: Path  # a migrated, empty store
    admin: tuple[int, int]  # (id, key generation)
    alice: tuple[int, int]  # an engineer, granted acme
    clients: dict[str, int]
    org_pin: bytes


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime.now(dt.UTC).replace(microsecond=0)

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Template:
    """Built once: the rows every test copies (keys were used to make them; none is used below)."""
    tmp = tmp_path_factory.mktemp("backups-authority")
    empty = tmp / "empty.db"
    store = storage.Store(f"sqlite:///{empty}")
    storage.upgrade(store)
    store.close()
    path = tmp / "vault.db"
    shutil.copy(empty, path)
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
    admin.grants.grant("alice", "acme")
    with admin.store.transaction() as s:
        ids = {n: (i, g) for i, n, g in s.execute(select(m.Engineer.id, m.Engineer.name, m.Engineer.key_generation))}
        clients = {c.id: c.id for c in s.scalars(select(m.Client))}
        pin = s.scalar(select(m.VaultInfo.org_signing_public))
    names = dict(zip(("acme", "globex"), sorted(clients), strict=True))
    alice.close()
    admin.close()
    return Template(path, empty, ids[ADMIN], ids["alice"], names, pin)


@dataclasses.dataclass
class Scene:
    template: Template
    store: storage.Store
    recorder: Recorder
    authority: BackupAuthority
    statements: list[str]

    def request(self, who: tuple[int, int], action: str = CREATE, **changes: Any) -> BackupRequest:
        if "action_" in changes:
            changes["action"] = changes.pop("action_")
        return dataclasses.replace(BackupRequest(action, Caller(*who), self.template.org_pin), **changes)

    def state(self) -> tuple[Any, ...]:
        with self.store.transaction() as s:
            blobs = tuple(s.execute(select(m.Client.id, m.Client.backup_key_blob).order_by(m.Client.id)))
            seal = s.scalar(select(m.VaultInfo.backup_key_seal))
            head = s.scalar(select(m.AuditHead.seq))
        return blobs, seal, head


def _scene(template: Template, source: Path, tmp_path: Path) -> Iterator[Scene]:
    path = tmp_path / "copy.db"
    shutil.copy(source, path)
    store = storage.Store(f"sqlite:///{path}")
    seen: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    event.listen(store.engine, "before_cursor_execute", count)
    recorder = Recorder()
    try:
        yield Scene(template, store, recorder, BackupAuthority(store, Checks(), recorder, Clock()), seen)
    finally:
        event.remove(store.engine, "before_cursor_execute", count)
        store.close()


@pytest.fixture
def scene(template: Template, tmp_path: Path) -> Iterator[Scene]:
    yield from _scene(template, template.path, tmp_path)


@pytest.fixture
def empty(template: Template, tmp_path: Path) -> Iterator[Scene]:
    yield from _scene(template, template.empty, tmp_path)


def _call(scene: Scene, action: str, request: BackupRequest, seal: FakeSeal) -> Any:
    method = scene.authority.create if action == CREATE else scene.authority.export_keys
    return method(request, seal)


# -- who calls -----------------------------------------------------------------------------------


@pytest.mark.parametrize("action", [CREATE, EXPORT])
def test_an_engineer_who_is_not_an_admin_is_refused_before_any_row_of_the_vault_is_read(
    scene: Scene, action: str
) -> None:
    """An engineer (a grant of their own, a valid certificate) asks for a backup or a key
    export of every client directly from the authority."""
    before, seal = scene.state(), FakeSeal(scene.recorder)
    scene.statements.clear()
    with pytest.raises(AccessDenied, match="not an admin"):
        _call(scene, action, scene.request(scene.template.alice, action), seal)
    assert scene.statements, "the authority read nothing"
    assert not [st for st in scene.statements if READS_THE_VAULT.search(st)], scene.statements
    assert seal.calls == [] and scene.recorder.events == [] and scene.state() == before


@pytest.mark.parametrize("action", [CREATE, EXPORT])
def test_a_stale_unknown_or_suspended_admin_is_refused_before_any_row_of_the_vault_is_read(
    scene: Scene, action: str
) -> None:
    admin_id, generation = scene.template.admin
    callers = {"an old key generation": (admin_id, generation + 1), "no such engineer": (999, 1)}
    for name, who in callers.items():
        seal = FakeSeal(scene.recorder)
        scene.statements.clear()
        with pytest.raises(Locked):
            _call(scene, action, scene.request(who, action), seal)
        assert not [st for st in scene.statements if READS_THE_VAULT.search(st)], name
        assert seal.calls == [] and scene.recorder.events == [], name
    with scene.store.transaction() as s:  # a DBA marks the admin suspended: refused as well
        s.execute(text("UPDATE engineers SET status = 'suspended' WHERE id = :i"), {"i": admin_id})
    seal = FakeSeal(scene.recorder)
    scene.statements.clear()
    with pytest.raises(AccessDenied, match="suspended"):
        _call(scene, action, scene.request(scene.template.admin, action), seal)
    assert not [st for st in scene.statements if READS_THE_VAULT.search(st)]
    assert seal.calls == [] and scene.recorder.events == []


FORGED = {
    "another action": {"action_": "backup-everything"},
    "the other action": {"action_": EXPORT},
    "an engineer id as text": {"caller": Caller("1", 1)},  # type: ignore[arg-type]
    "engineer id 0": {"caller": Caller(0, 1)},
    "a bool for an id": {"caller": Caller(True, 1)},
    "a negative key generation": {"caller": Caller(1, -1)},
    "no caller": {"caller": None},
    "a short organisation key": {"org_pin": b"\x00" * 31},
    "an organisation key as text": {"org_pin": "00" * 32},
}


@pytest.mark.parametrize("forged", list(FORGED), ids=list(FORGED))
def test_a_forged_or_ill_typed_request_is_refused_before_any_sql(scene: Scene, forged: str) -> None:
    seal = FakeSeal(scene.recorder)
    request = scene.request(scene.template.admin, CREATE, **FORGED[forged])
    scene.statements.clear()
    with pytest.raises(InvalidInput):
        scene.authority.create(request, seal)
    assert scene.statements == [] and seal.calls == [] and scene.recorder.events == []


# -- a backup ------------------------------------------------------------------------------------


def _rows_of(section: SectionRows, table: str) -> list[dict[str, Any]]:
    found = [t for t in section.tables if t.table == table]
    return [dict(zip(t.columns, row, strict=True)) for t in found for row in t.rows]


def test_a_backup_hands_each_client_its_own_rows_after_the_event_and_stores_only_missing_keys(
    scene: Scene,
) -> None:
    before = scene.state()
    assert all(blob is None for _, blob in before[0]) and before[1] is None  # no backup key yet
    seal = FakeSeal(scene.recorder)
    done = scene.authority.create(scene.request(scene.template.admin), seal)
    # the event is appended after the keys are checked and before the file begins
    assert [c for c, _ in seal.calls] == ["keys", "begin", "finish"]
    assert [n for _, n in seal.calls] == [0, 1, 1]
    assert scene.recorder.events == [(CREATE, {"clients": 2})]
    assert seal.header is not None and seal.header.audit_head == done.seq == 5001 and done.clients == 2
    [context] = seal.contexts
    assert [c.client_id for c in context.clients] == sorted(scene.template.clients.values())
    assert context.admins == ()  # a backup is sealed to nobody: the admins are a key export's
    for client in context.clients:
        assert client.blob is None and [k.record.version for k in client.keys] == [1]
        assert client.keys[0].kind == "recovery" and client.keys[0].blob is not None  # ciphertext only
    # each client's section holds that client's rows, and nothing of the other's
    by_kind: dict[str, list[SectionRows]] = {AUDIT: [], CLIENT: [], GLOBAL: []}
    for section in seal.sections:
        by_kind[section.kind].append(section)
    assert len(by_kind[GLOBAL]) == 1 and seal.sections[-1].kind == GLOBAL
    assert [s.client_id for s in by_kind[CLIENT]] == [c.client_id for c in context.clients]
    for section in by_kind[CLIENT]:
        secrets = {r["id"] for r in _rows_of(section, "secrets")}
        assert len(secrets) == (2 if section.client_id == scene.template.clients["acme"] else 1)
        for table, column in CLIENT_BINDING.items():
            allowed = secrets if column == "secret_id" else {section.client_id}
            assert {r[column] for r in _rows_of(section, table)} <= allowed, (section.client_id, table)
    assert not {t.table for t in by_kind[GLOBAL][0].tables} & set(CLIENT_BINDING)
    seqs = [r["seq"] for s in by_kind[AUDIT] for r in _rows_of(s, "audit_events")]
    assert seqs == list(range(1, len(seqs) + 1))
    assert dict(seal.counters)["clients"] == 2
    # only the missing backup keys were stored, exactly as the keyholder made them
    blobs, vault_seal, _head = scene.state()
    assert [b for _, b in blobs] == [NEW_BLOB, NEW_BLOB] and vault_seal == NEW_SEAL


def test_a_refused_context_writes_nothing(scene: Scene) -> None:
    before = scene.state()
    for action in (CREATE, EXPORT):
        seal = FakeSeal(scene.recorder, refuse=True)
        with pytest.raises(UntrustedRecord):
            _call(scene, action, scene.request(scene.template.admin, action), seal)
        assert [c for c, _ in seal.calls] == ["keys"] and scene.recorder.events == [], action
        assert scene.state() == before, action


def test_new_keys_for_a_client_that_has_one_or_does_not_exist_are_refused(scene: Scene) -> None:
    """A keyholder (or whoever speaks for it) may fill a missing backup key; it may not
    replace an existing one, nor write one for a client the context did not name."""
    scene.authority.create(scene.request(scene.template.admin), FakeSeal(scene.recorder))  # keys now exist
    before, events = scene.state(), list(scene.recorder.events)
    acme = scene.template.clients["acme"]
    for new in (
        NewBackupKeys(None, ((acme, b"\x01replaced"),)),
        NewBackupKeys(None, ((999, b"\x01for nobody"),)),
        NewBackupKeys(b"\x02replaced vault seal", ()),
    ):
        with pytest.raises(InvalidInput):
            scene.authority.export_keys(scene.request(scene.template.admin, EXPORT), FakeSeal(scene.recorder, new=new))
        assert scene.state() == before and scene.recorder.events == events


def test_a_key_export_shows_the_active_admins_and_writes_after_its_event(scene: Scene) -> None:
    seal = FakeSeal(scene.recorder)
    done = scene.authority.export_keys(scene.request(scene.template.admin, EXPORT), seal)
    assert [c for c, _ in seal.calls] == ["keys", "write_export"] and [n for _, n in seal.calls] == [0, 1]
    assert scene.recorder.events == [(EXPORT, {"clients": 2})] and done.clients == 2
    [context] = seal.contexts
    assert [(a.row.id, a.row.role) for a in context.admins] == [(scene.template.admin[0], "admin")]
    assert context.admins[0].key_record  # the passphrase-locked record: ciphertext
    assert seal.header is None and seal.sections == []  # a key export holds no rows


# -- a restore -----------------------------------------------------------------------------------


def _plan(*tables: TableRows, counters: tuple[tuple[str, int], ...] = ()) -> RestorePlan:
    return RestorePlan(SectionRows(GLOBAL, None, tables), counters)


class Source:
    def __init__(self, *sections: SectionRows) -> None:
        self.items, self.given, self.ended = sections, 0, False

    def sections(self) -> Iterator[SectionRows]:
        for section in self.items:
            self.given += 1
            yield section

    def done(self) -> None:
        self.ended = True


BAD_PLANS = {
    "a client table in the global section": _plan(TableRows("secrets", ("id",), ((1,),))),
    "an unknown table": _plan(TableRows("sqlite_master", ("name",), (("x",),))),
    "an unknown column": _plan(TableRows("engineers", ("id", "is_superuser"), ((1, 1),))),
    "a row of another width": _plan(TableRows("engineers", ("id", "name"), ((1,),))),
    "a value of no column's type": _plan(TableRows("engineers", ("id",), ((1.5,),))),
    "a table twice": _plan(TableRows("engineers", ("id",), ()), TableRows("engineers", ("id",), ())),
    "a counter of an unknown table": _plan(counters=(("alembic_version", 1),)),
    "a negative counter": _plan(counters=(("clients", -1),)),
}


@pytest.mark.parametrize("bad", list(BAD_PLANS), ids=list(BAD_PLANS))
def test_an_ill_typed_restore_plan_is_refused_before_any_sql(empty: Scene, bad: str) -> None:
    source = Source()
    empty.statements.clear()
    with pytest.raises(InvalidInput):
        empty.authority.restore(BAD_PLANS[bad], source)
    assert empty.statements == [] and source.given == 0


def _row_count(scene: Scene) -> int:
    with scene.store.transaction() as s:
        return sum(int(s.scalar(select(func.count()).select_from(model.__table__)) or 0) for model in (
            m.VaultInfo, m.Engineer, m.Client, m.Secret, m.AuditEvent,
        ))  # fmt: skip


def _template_rows(template: Template) -> tuple[RestorePlan, dict[int, tuple[TableRows, ...]]]:
    """The template's rows as a restore would hand them over: the global section and each client's."""
    store = storage.Store(f"sqlite:///{template.path}")
    try:
        with store.read() as s:
            tables = tuple(_rows(s, MODELS[name]) for name in GLOBAL_TABLES)
            clients = {c: BackupAuthority._client_rows(s, c) for c in template.clients.values()}
    finally:
        store.close()
    return RestorePlan(SectionRows(GLOBAL, None, tables), ()), clients


def test_a_restore_section_naming_a_table_it_may_not_hold_rolls_everything_back(
    template: Template, empty: Scene
) -> None:
    """Whoever speaks for the keyholder slips an admin of their own into a client's section,
    after a genuine one: refused, and what was written before it is rolled back."""
    plan, clients = _template_rows(template)
    acme = template.clients["acme"]
    mallory = TableRows("engineers", ("id", "name", "role", "status"), ((77, "mallory", "admin", "active"),))
    source = Source(SectionRows(CLIENT, acme, clients[acme]), SectionRows(CLIENT, acme, (mallory,)))
    with pytest.raises(InvalidInput):
        empty.authority.restore(plan, source)
    assert source.given == 2 and not source.ended and _row_count(empty) == 0
    source = Source(*(SectionRows(CLIENT, c, tables) for c, tables in clients.items()))
    empty.authority.restore(plan, source)  # the same rows, untouched: restored
    assert source.ended and _row_count(empty) > 0


def test_a_restore_into_a_store_that_is_not_empty_is_refused_before_anything_is_written(scene: Scene) -> None:
    before, source = scene.state(), Source()
    with pytest.raises(AlreadyExists):
        scene.authority.restore(_plan(), source)
    assert source.given == 0 and scene.state() == before
