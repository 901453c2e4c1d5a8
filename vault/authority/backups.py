"""Backups, where the database is: authorise an admin, read or write rows by section, record, commit.

A backup and a key export are one unit of work each, in this order: who calls (an active,
certified admin of the key generation the request names; anyone else is refused before any
other row is read); the backup-key context (``BackupContext``: ciphertext, signed records,
public keys), shown to the keyholder, whose answer (``NewBackupKeys``) is stored where no
backup key was; the audit event; then, inside the unit (before the commit: no event without
a file), the file is written by the keyholder: a key export at once, a backup one section at
a time (``SectionRows``: the audit log in keyset pages of ``AUDIT_CHUNK`` events, each
client's rows, the global rows and the id counters last). On PostgreSQL the unit reads in
REPEATABLE READ: every section is of one snapshot.

A restore needs no session (its keys are in the key export the keyholder opened): the
target store must be empty; the global section's parents are written, then each section the
keyholder hands over, then the rest, then the id counters move past every id used. Every
table and column named by the keyholder is checked against the schema before any SQL.

The keyholder's hands inside the unit (``BackupSeal``, ``RestoreSource``) are the
in-process seam, as for the checkout (authority/checkouts.py).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from typing import Any, Protocol, cast

from sqlalchemy import Table, func, insert, select, text, update
from sqlalchemy.orm import Session

from vault import validation
from vault.authority.backup_requests import (
    AUDIT,
    AUDIT_TABLE,
    CLIENT,
    CLIENT_TABLES,
    CREATE,
    EXPORT,
    GLOBAL,
    GLOBAL_PARENTS,
    GLOBAL_TABLES,
    SERIAL_TABLES,
    AdminKeys,
    BackupContext,
    BackupDone,
    BackupHeader,
    BackupRequest,
    ClientBackupKey,
    NewBackupKeys,
    RestorePlan,
    SectionRows,
    TableRows,
)
from vault.authority.checkout_reads import ENGINEER_WIDTH, SEALED_KEY, CallerRead
from vault.authority.policies_caller import CallerChecks, CallerGate, checked_caller, checked_pin, org_chain
from vault.authority.requests import ClientKeyRow, SealedClientKey
from vault.crypto.blobs import blob_key_version
from vault.errors import AlreadyExists, IntegrityError, InvalidInput
from vault.storage import engine as storage
from vault.storage import models as m
from vault.storage import rows
from vault.storage.engine import Store
from vault.storage.rows import ACTIVE, ROLE_ADMIN, EngineerRow

AUDIT_CHUNK = 20_000  # audit events per section: a million-event log is fifty sections, not one
MODELS: dict[str, type[m.Base]] = {
    model.__tablename__: model
    for model in (
        m.VaultInfo, m.OrgKey, m.RootKey, m.Engineer, m.EngineerKey, m.RootSeal, m.AuditHead, m.AuditEvent,
        m.PurgeReceipt, m.Client, m.ClientKey, m.ClientKeySeal, m.ClientPolicy, m.Grant, m.Secret,
        m.SecretVersion, m.Checkout, m.Rotation, m.ServerKey, m.ServerClientKey,
    )
}  # fmt: skip
_VALUE_TYPES = (int, str, bytes, dt.datetime, type(None))


class BackupChecks(CallerChecks, Protocol):
    """The trust checks the authority makes: signatures and public keys only (the caller's,
    ``CallerGate``; and the clients' current key versions)."""

    def current_key_version(self, s: Session, client: m.Client) -> int:
        """The client-key version new data goes under: the newest admin-signed one, else IntegrityError."""


class Recorder(Protocol):
    def append(self, s: Session, action: str, *, public: dict[str, Any]) -> int:
        """Append an event in the caller's unit of work; its seq."""


class BackupSeal(Protocol):
    """The keyholder's hands inside the unit of work (the in-process seam)."""

    def keys(self, context: BackupContext) -> NewBackupKeys:
        """Verify the context, open (or make) every backup key; raise to refuse: nothing is written."""

    def write_export(self) -> None:
        """Write the key export of the keys opened (a key export, after its event)."""

    def begin(self, header: BackupHeader) -> None:
        """Start the backup file (a backup, after its event)."""

    def section(self, section: SectionRows) -> None:
        """Check, seal and write one audit or client section."""

    def finish(self, section: SectionRows, counters: tuple[tuple[str, int], ...]) -> None:
        """Check, seal and write the global section (the manifest of the others) and end the file."""


class RestoreSource(Protocol):
    """The keyholder's sections of a restore, opened and checked again as they are written."""

    def sections(self) -> Iterator[SectionRows]: ...

    def done(self) -> None:
        """Raise (the unit rolls back) if the file is not the one checked before."""


def _rows(s: Session, model: type[m.Base], where: Any = None, *, after_seq: int | None = None) -> TableRows:
    """The rows of ``model``'s table (Core: no ORM object per row); with ``after_seq``, the
    next ``AUDIT_CHUNK`` audit events after that sequence number (a keyset page)."""
    table = cast(Table, model.__table__)
    keys = tuple(c.key for c in table.columns)
    query = select(table) if where is None else select(table).where(where)
    if after_seq is not None:
        query = query.where(table.c.seq > after_seq).order_by(table.c.seq).limit(AUDIT_CHUNK)
    return TableRows(model.__tablename__, keys, tuple(tuple(row) for row in s.execute(query)))


def checked_section(section: SectionRows, allowed: tuple[str, ...]) -> SectionRows:
    """``section`` if it names only ``allowed`` tables, each once, with their own columns and
    values of a column's types; else InvalidInput (checked before any SQL)."""
    if not isinstance(section, SectionRows) or not isinstance(section.tables, tuple):
        raise InvalidInput("the restore names no section")
    seen: set[str] = set()
    for rows_ in section.tables:
        if not isinstance(rows_, TableRows) or rows_.table not in allowed or rows_.table in seen:
            raise InvalidInput("a section names a table it may not hold")
        seen.add(rows_.table)
        known = set(cast(Table, MODELS[rows_.table].__table__).columns.keys())
        if not isinstance(rows_.columns, tuple) or not set(rows_.columns) <= known:
            raise InvalidInput(f"a section names a column that {rows_.table} does not have")
        width = len(rows_.columns)
        for row in rows_.rows:
            if not isinstance(row, tuple) or len(row) != width or not all(isinstance(v, _VALUE_TYPES) for v in row):
                raise InvalidInput(f"a row of {rows_.table} is malformed")
    return section


def _insert(s: Session, section: SectionRows, order: tuple[str, ...], most: dict[str, int]) -> None:
    """Insert the tables of ``section`` that are in ``order``, in that order (parents first),
    with Core; note the largest id of each serial table in ``most``."""
    by_name = {t.table: t for t in section.tables}
    for name in order:
        found = by_name.get(name)
        if found is None or not found.rows:
            continue
        values = [dict(zip(found.columns, row, strict=True)) for row in found.rows]
        s.execute(insert(cast(Table, MODELS[name].__table__)), values)
        if name in most:
            most[name] = max(most[name], *(int(cast(int, r["id"])) for r in values))


def _first_org_key(s: Session, section: SectionRows) -> None:
    """A backup made before the organisation-key chain existed: its one key is version 1
    (as migration 0007 does for a live vault)."""
    if any(t.table == m.OrgKey.__tablename__ and t.rows for t in section.tables):
        return
    info = s.get(m.VaultInfo, 1)
    if info is not None:
        s.add(
            m.OrgKey(
                version=1,
                public=info.org_signing_public,
                signed_at=int(info.created_at.timestamp()),
                signature=None,
                created_at=info.created_at,
            )
        )
        s.flush()


def _counters(s: Session) -> tuple[tuple[str, int], ...]:
    """The last id each serial table has handed out (deleted rows included)."""
    out = []
    for table in SERIAL_TABLES:
        if s.get_bind().dialect.name == "sqlite":
            value = s.execute(text("SELECT seq FROM sqlite_sequence WHERE name = :t"), {"t": table}).scalar()
        else:
            sequence = s.execute(text("SELECT pg_get_serial_sequence(:t, 'id')"), {"t": table}).scalar()
            value = s.execute(text(f"SELECT last_value FROM {sequence}")).scalar() if sequence else 0  # noqa: S608
        out.append((table, int(value or 0)))
    return tuple(out)


def _set_counter(s: Session, table: str, value: int) -> None:
    """Make the next id of ``table`` greater than ``value`` (table names are constants)."""
    if s.get_bind().dialect.name == "sqlite":
        s.execute(text("DELETE FROM sqlite_sequence WHERE name = :t"), {"t": table})
        if value > 0:
            s.execute(text("INSERT INTO sqlite_sequence (name, seq) VALUES (:t, :v)"), {"v": value, "t": table})
    else:
        s.execute(
            text("SELECT setval(pg_get_serial_sequence(:t, 'id'), :v, :called)"),
            {"t": table, "v": max(value, 1), "called": value > 0},
        )


class BackupAuthority:
    """Key export, backup and restore, one unit of work each."""

    def __init__(self, store: Store, checks: BackupChecks, recorder: Recorder, clock: Callable[[], dt.datetime]):
        self.store, self.checks, self.recorder, self.clock = store, checks, recorder, clock
        self.gate = CallerGate(checks)

    # -- the operations -------------------------------------------------------------------------

    def export_keys(self, request: BackupRequest, seal: BackupSeal) -> BackupDone:
        """Every live backup key, written by the keyholder to a key export, and its event."""
        self._checked(request, EXPORT)
        with self.store.transaction() as s:
            caller = self.gate.authorise(s, request.caller, admin=True)  # nothing else read when it refuses
            context = self._context(s, caller, request, admins=True)
            self._store_new(s, context, seal.keys(context))
            public: dict[str, Any] = {"clients": len(context.clients)}
            if request.server_master_versions:  # the event says the export carries the server's master keys
                public["server_master_keys"] = list(request.server_master_versions)
            seq = self.recorder.append(s, EXPORT, public=public)
            seal.write_export()  # before the commit: no event without a file
        return BackupDone(seq, len(context.clients))

    def create(self, request: BackupRequest, seal: BackupSeal) -> BackupDone:
        """A consistent copy of every row, handed to the keyholder one section at a time."""
        self._checked(request, CREATE)
        with self.store.transaction() as s:
            if not storage.is_sqlite(self.store.engine):
                s.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            caller = self.gate.authorise(s, request.caller, admin=True)  # nothing else read when it refuses
            context = self._context(s, caller, request, admins=False)
            self._store_new(s, context, seal.keys(context))
            s.flush()
            seq = self.recorder.append(s, CREATE, public={"clients": len(context.clients)})
            s.flush()  # the event and the moved head, before the Core reads below
            schema = s.execute(text("SELECT version_num FROM alembic_version")).scalar()
            seal.begin(BackupHeader(caller.vault_id, str(schema), seq))
            last = 0
            while (events := _rows(s, m.AuditEvent, after_seq=last)).rows:
                seal.section(SectionRows(AUDIT, None, (events,)))
                last = int(cast(int, events.rows[-1][events.columns.index("seq")]))
            for client in context.clients:
                seal.section(SectionRows(CLIENT, client.client_id, self._client_rows(s, client.client_id)))
            tables = tuple(_rows(s, MODELS[name]) for name in GLOBAL_TABLES if name != AUDIT_TABLE)
            seal.finish(SectionRows(GLOBAL, None, tables), _counters(s))  # ids used, purged ones too
        return BackupDone(seq, len(context.clients))

    def restore(self, plan: RestorePlan, source: RestoreSource) -> None:
        """Write a checked backup into this empty store, in one unit of work."""
        if not isinstance(plan, RestorePlan) or not isinstance(plan.counters, tuple):
            raise InvalidInput("not a restore plan")
        checked_section(plan.global_rows, GLOBAL_TABLES)
        counters: dict[str, int] = {}
        for item in plan.counters:
            if not isinstance(item, tuple) or len(item) != 2 or item[0] not in SERIAL_TABLES:
                raise InvalidInput("the restore's id counters are malformed")
            counters[item[0]] = validation.number("id counter", item[1], 0)
        most = dict.fromkeys(SERIAL_TABLES, 0)  # the largest id restored per serial table
        with self.store.transaction() as s:
            if s.scalar(select(func.count()).select_from(m.VaultInfo)):
                raise AlreadyExists("the target store is not empty", hint="restore into a new, empty database")
            _insert(s, plan.global_rows, GLOBAL_TABLES[:GLOBAL_PARENTS], most)  # parents of the clients' rows
            _first_org_key(s, plan.global_rows)
            for section in source.sections():
                _insert(s, checked_section(section, (*CLIENT_TABLES, AUDIT_TABLE)), (*CLIENT_TABLES, AUDIT_TABLE), most)
            source.done()  # rolled back if the file changed while it was being restored
            _insert(s, plan.global_rows, GLOBAL_TABLES[GLOBAL_PARENTS:], most)  # format 1: its audit log here
            for table in SERIAL_TABLES:
                _set_counter(s, table, max(most[table], counters.get(table, 0)))

    # -- who calls ---------------------------------------------------------------------------

    @staticmethod
    def _checked(request: BackupRequest, action: str) -> None:
        """Every field of the request of its type and range, else InvalidInput (before any SQL)."""
        if not isinstance(request, BackupRequest) or request.action != action:
            raise InvalidInput("not a backup request of this action")
        checked_caller(request.caller)
        checked_pin(request.org_pin)
        versions = request.server_master_versions
        if (
            not isinstance(versions, tuple)
            or (versions and action != EXPORT)
            or len(versions) > 16
            or len(set(versions)) != len(versions)
            or not all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v < 2**31 for v in versions)
        ):
            raise InvalidInput("the server master key versions of a key export are distinct positive numbers")

    # -- the backup keys ---------------------------------------------------------------------

    def _context(self, s: Session, caller: CallerRead, request: BackupRequest, *, admins: bool) -> BackupContext:
        info = s.get(m.VaultInfo, 1)
        if info is None or caller.root_version is None:
            raise IntegrityError("the vault has no identity row or no active root key")
        clients = []
        for client in s.scalars(select(m.Client).order_by(m.Client.id)):
            current = self.checks.current_key_version(s, client)
            versions = [current]
            if client.backup_key_blob is not None and blob_key_version(client.backup_key_blob) != current:
                versions.append(blob_key_version(client.backup_key_blob))
            keys = tuple(self._sealed_key(s, client.id, v, caller.root_version) for v in versions)
            clients.append(ClientBackupKey(client.id, client.backup_key_blob, keys))
        recipients: list[AdminKeys] = []
        if admins:
            query = select(m.Engineer).where(m.Engineer.role == ROLE_ADMIN, m.Engineer.status == ACTIVE)
            for admin in s.scalars(query.order_by(m.Engineer.id)):
                if admin.sealing_public is None or admin.key_record is None:
                    continue
                row = EngineerRow(*(getattr(admin, f) for f in EngineerRow._fields))
                recipients.append(AdminKeys(row, admin.key_record))
        return BackupContext(
            vault_id=caller.vault_id,
            org_signing_public=caller.org_signing_public,
            org_chain=org_chain(s, request.org_pin, caller.org_signing_public),
            me=caller.me,
            root_version=caller.root_version,
            vault_key_seal=info.backup_key_seal,
            clients=tuple(clients),
            admins=tuple(recipients),
        )

    @staticmethod
    def _store_new(s: Session, context: BackupContext, new: NewBackupKeys) -> None:
        """The new backup keys, where the context had none (and nowhere else)."""
        if not isinstance(new, NewBackupKeys):
            raise InvalidInput("not a set of new backup keys")
        if new.vault_key_seal is not None:
            if context.vault_key_seal is not None or not isinstance(new.vault_key_seal, bytes):
                raise InvalidInput("a vault backup key exists already")
            s.execute(update(m.VaultInfo).where(m.VaultInfo.id == 1).values(backup_key_seal=new.vault_key_seal))
        empty = {c.client_id for c in context.clients if c.blob is None}
        for client_id, blob in new.client_blobs:
            if client_id not in empty or not isinstance(blob, bytes):
                raise InvalidInput("a new backup key names a client that has one already")
            empty.discard(client_id)
            s.execute(
                update(m.Client)
                .where(m.Client.id == client_id, m.Client.backup_key_blob.is_(None))
                .values(backup_key_blob=blob)
                .execution_options(synchronize_session=False)
            )

    @staticmethod
    def _sealed_key(s: Session, client_id: int, version: int, root_version: int) -> SealedClientKey:
        """A client-key version's signed record, its signer and its copy sealed to the recovery key."""
        params = {"client": client_id, "version": version, "kind": "recovery", "recipient": root_version}
        found = SEALED_KEY.all(rows.connection(s), params)
        if not found:
            raise IntegrityError(f"client key version {version} has no record")
        r = found[0]
        signer = None if r[8] is None else EngineerRow._make(r[8 : 8 + ENGINEER_WIDTH])
        return SealedClientKey(ClientKeyRow(*r[:7]), signer, "recovery", root_version, r[7])

    # -- the rows of a client ----------------------------------------------------------------

    @staticmethod
    def _client_rows(s: Session, client_id: int) -> tuple[TableRows, ...]:
        secret_ids = select(m.Secret.id).where(m.Secret.client_id == client_id)
        filters: dict[type[m.Base], Any] = {
            m.Client: m.Client.id == client_id,
            m.ServerClientKey: m.ServerClientKey.client_id == client_id,
            m.ClientKey: m.ClientKey.client_id == client_id,
            m.ClientKeySeal: m.ClientKeySeal.client_id == client_id,
            m.ClientPolicy: m.ClientPolicy.client_id == client_id,
            m.Grant: m.Grant.client_id == client_id,
            m.Secret: m.Secret.client_id == client_id,
            m.SecretVersion: m.SecretVersion.secret_id.in_(secret_ids),
            m.Checkout: m.Checkout.client_id == client_id,
            m.Rotation: m.Rotation.client_id == client_id,
        }
        return tuple(_rows(s, model, where) for model, where in filters.items())
