"""Encrypted backups that a purge reaches: per-client sections, keys kept apart.

A backup file holds **audit sections** (the audit chain, 20,000 events each), one
**section per client** (its keys, grants, secrets and versions) and one **global
section** (engineers, recovery and root seals, purge receipts, and the manifest of all
other sections: no client plaintext). Each client section is encrypted under that
client's own **backup key**, the others under the vault's backup key. No backup file
contains any backup key. The file itself (``backupfile.py``) is written and read one
section at a time.

The backup keys live in the live store (each client's wrapped under its client key;
the vault's sealed to the recovery key) and in a small **key export** an admin writes
with ``export_backup_keys`` and keeps apart from the backups. Purging a client deletes
its backup key from the live store, so every key export made afterwards lacks it: with
the latest key export, every old backup restores in full *except* purged clients,
which stay unreadable. Older key exports must be destroyed (the purge says so).

Restoring needs an empty store, a backup, a key export and either an admin's
passphrase (their key record and root seal are in the export) or the recovery shares.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Table, func, insert, select, text
from sqlalchemy.orm import Session

from vault.crypto import _primitives as prim
from vault.crypto import blobs, keyrecord, sealing, shamir
from vault.crypto.labels import LABEL_BACKUP_KEYS, LABEL_BACKUP_VAULT_KEY
from vault.errors import AlreadyExists, DecryptionFailed, IntegrityError, InvalidInput, RecoveryShareError, VaultError
from vault.keyholder.keys import RootBundle
from vault.service import backupfile
from vault.service.backupfile import decode, encode
from vault.service.core import ROLE_ADMIN
from vault.service.records import BackupInfo
from vault.storage import engine as storage
from vault.storage import models as m

if TYPE_CHECKING:
    from vault.authority.journal import Journal
    from vault.keyholder.keys import Keys
    from vault.keyholder.trust import Trust
    from vault.service.core import Core


MANIFEST, COUNTERS = "_sections", "_counters"
AUDIT_CHUNK = 20_000  # audit events per section: a million-event log is fifty sections, not one
GLOBAL_TABLES: tuple[type[m.Base], ...] = (
    m.VaultInfo,
    m.OrgKey,
    m.RootKey,
    m.Engineer,
    m.EngineerKey,
    m.RootSeal,
    m.AuditHead,
    m.AuditEvent,
    m.PurgeReceipt,
)
CLIENT_TABLES: tuple[type[m.Base], ...] = (
    m.Client,
    m.ClientKey,
    m.ClientKeySeal,
    m.ClientPolicy,
    m.Grant,
    m.Secret,
    m.SecretVersion,
    m.Checkout,
    m.Rotation,
)
SERIAL_TABLES = ("engineers", "clients", "grants", "secrets", "checkouts", "rotations", "purge_receipts")


def _rows(s: Session, model: type[m.Base], where: Any = None, *, after_seq: int | None = None) -> list[dict[str, Any]]:
    """The rows of ``model``'s table as plain dicts, read with Core (no ORM object per row);
    with ``after_seq``, the next ``AUDIT_CHUNK`` audit events after that sequence number."""
    table = cast(Table, model.__table__)
    keys = [c.key for c in table.columns]
    query = select(table) if where is None else select(table).where(where)
    if after_seq is not None:
        query = query.where(table.c.seq > after_seq).order_by(table.c.seq).limit(AUDIT_CHUNK)
    return [{k: encode(v) for k, v in zip(keys, row, strict=True)} for row in s.execute(query)]


def _insert(
    s: Session, models: tuple[type[m.Base], ...], tables: dict[str, list[dict[str, Any]]], most: dict[str, int]
) -> None:
    """Insert the rows of ``tables`` for ``models``, in that order (parents first), with
    Core (no ORM object per row); note the largest id of each serial table in ``most``."""
    for model in models:
        rows = [{k: decode(v) for k, v in row.items()} for row in tables.get(model.__tablename__, [])]
        if not rows:
            continue
        s.execute(insert(cast(Table, model.__table__)), rows)
        if model.__tablename__ in most:
            most[model.__tablename__] = max(most[model.__tablename__], *(int(r["id"]) for r in rows))


def _first_org_key(s: Session, tables: dict[str, list[dict[str, Any]]]) -> None:
    """A backup made before the organisation-key chain existed: its one key is version 1
    (as migration 0007 does for a live vault)."""
    if tables.get(m.OrgKey.__tablename__):
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


def _refuse_existing(path: Path) -> None:
    if Path(path).exists():
        raise AlreadyExists(f"{Path(path).name} already exists", hint="choose a new file name")


def _counters(s: Session) -> dict[str, int]:
    """The last id each serial table has handed out (deleted rows included)."""
    out = {}
    for table in SERIAL_TABLES:
        if s.get_bind().dialect.name == "sqlite":
            value = s.execute(text("SELECT seq FROM sqlite_sequence WHERE name = :t"), {"t": table}).scalar()
        else:
            sequence = s.execute(text("SELECT pg_get_serial_sequence(:t, 'id')"), {"t": table}).scalar()
            value = s.execute(text(f"SELECT last_value FROM {sequence}")).scalar() if sequence else 0  # noqa: S608
        out[table] = int(value or 0)
    return out


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


def _open_keys(
    keys: dict[str, Any], vault_id: bytes, admin: str | None, passphrase: str | None, shares: list[str] | None
) -> dict[str, Any]:
    context = (LABEL_BACKUP_KEYS, vault_id)
    root_version = int(keys["root_version"])
    if shares:
        decoded = [shamir.decode_share(vault_id, text) for text in shares]
        if len({k for k, _, _ in decoded}) != 1:
            raise RecoveryShareError("the shares are from different splits")
        bundle = RootBundle(shamir.combine([(x, y) for _, x, y in decoded], decoded[0][0]), root_version)
        if bundle.recovery.public.hex() != keys.get("recovery_public"):
            raise RecoveryShareError(
                "the shares do not rebuild the recovery key of this key export",
                hint="use shares printed for this vault since its last root rotation",
            )
        raw = sealing.open_sealed(bundle.recovery, root_version, decode(keys["recovery"]), context)
    else:
        entry = next((a for a in keys["admins"] if a["name"] == admin), None)
        if entry is None or passphrase is None:
            raise InvalidInput(
                "name an admin listed in the key export and give their passphrase, or use recovery shares"
            )
        private = keyrecord.open_record(
            decode(entry["key_record"]), passphrase, vault_id, int(entry["id"]), int(entry["generation"])
        )
        raw = sealing.open_sealed(
            sealing.KeyPair(private.sealing_private), root_version, decode(entry["keys"]), context
        )
    try:
        payload: dict[str, Any] = json.loads(raw)
    except ValueError:
        raise DecryptionFailed() from None
    return payload


class Backups:
    """Backups: ``vault.backups.export_keys/create/restore``."""

    def __init__(self, core: Core, keys: Keys, trust: Trust, journal: Journal) -> None:
        self.core = core
        self.keys = keys
        self.trust = trust
        self.journal = journal

    def _client_backup_key(self, s: Session, client: m.Client) -> bytes:
        if client.backup_key_blob is None:
            version = self.trust.current_key_version(s, client)
            key = blobs.new_key()
            client.backup_key_blob = blobs.encrypt_client_field(
                self.keys.client_key(s, client.id, version), version, key, client.id, "backup-key"
            )
            return key
        return self.keys.client_field(s, client, client.backup_key_blob, "backup-key")

    def _vault_backup_key(self, s: Session) -> bytes:
        info = self.core.info(s)
        bundle = self.keys.root_bundle(s)
        context = (LABEL_BACKUP_VAULT_KEY, info.vault_id)
        if info.backup_key_seal is None:
            key = blobs.new_key()
            info.backup_key_seal = sealing.seal(bundle.recovery.public, bundle.version, key, context)
            return key
        return sealing.open_sealed(bundle.recovery, bundle.version, info.backup_key_seal, context)

    def export_keys(self, path: Path) -> int:
        """Write the key export: every live backup key, sealed to the recovery key and to
        each admin (with their key records, so that a passphrase can open it). Returns the
        number of client keys in it. Keep it apart from the backups; keep only the newest."""
        _refuse_existing(path)
        with self.core.store.transaction() as s:
            self.trust.my_admin_row(s)
            info = self.core.info(s)
            bundle = self.keys.root_bundle(s)
            keys = {
                "vault": self._vault_backup_key(s).hex(),
                "clients": {str(c.id): self._client_backup_key(s, c).hex() for c in s.scalars(select(m.Client))},
            }
            payload = json.dumps(keys, sort_keys=True).encode("utf-8")
            context = (LABEL_BACKUP_KEYS, info.vault_id)
            admins = []
            for admin in s.scalars(
                select(m.Engineer).where(m.Engineer.role == ROLE_ADMIN, m.Engineer.status == "active")
            ):
                if admin.sealing_public is None or admin.key_record is None:
                    continue
                admins.append(
                    {
                        "name": admin.name,
                        "id": admin.id,
                        "generation": admin.key_generation,
                        "key_record": encode(admin.key_record),
                        "keys": encode(sealing.seal(admin.sealing_public, bundle.version, payload, context)),
                    }
                )
            document = {
                "magic": backupfile.KEYS_MAGIC,
                "format": 1,
                "vault_id": info.vault_id.hex(),
                "root_version": bundle.version,
                "recovery_public": bundle.recovery.public.hex(),
                "created_at": self.core.clock().isoformat(),
                "admins": admins,
                "recovery": encode(sealing.seal(bundle.recovery.public, bundle.version, payload, context)),
            }
            self.journal.append(s, "backup-keys-export", public={"clients": len(keys["clients"])})
            backupfile.write_private(path, json.dumps(document, indent=1))  # before the commit: no event without a file
        return len(keys["clients"])

    # -- backup -------------------------------------------------------------------------------

    def create(self, path: Path) -> BackupInfo:
        """Write a consistent, encrypted copy of the whole vault to ``path``."""
        _refuse_existing(path)
        with self.core.store.transaction() as s:
            if not storage.is_sqlite(self.core.store.engine):
                s.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            self.trust.my_admin_row(s)
            info = self.core.info(s)
            backup_id = prim.random_bytes(16)
            vault_key = self._vault_backup_key(s)
            client_keys = {c.id: self._client_backup_key(s, c) for c in s.scalars(select(m.Client))}
            s.flush()
            event = self.journal.append(s, "backup-create", public={"clients": len(client_keys)})
            s.flush()  # the event and the moved head, before the Core reads below
            header = {
                "vault_id": info.vault_id.hex(),
                "backup_id": backup_id.hex(),
                "schema": s.execute(text("SELECT version_num FROM alembic_version")).scalar(),
                "created_at": self.core.clock().isoformat(),
                "audit_head": event.seq,
            }

            def seal(key: bytes, name: str, rows: dict[str, Any]) -> bytes:
                plain = json.dumps(rows).encode("utf-8")
                return blobs.encrypt_backup_section(key, plain, info.vault_id, backup_id, name)

            # Each section is written as soon as it is made: memory holds one section, not
            # the vault. The global section comes last, listing every other one (its
            # authenticated manifest). Before the commit: no event without a file, and a
            # failed write leaves no file behind.
            names: list[str] = []
            secrets = 0
            with backupfile.private_file(path) as handle:
                out = backupfile.BackupWriter(handle, header)
                last = 0
                while events := _rows(s, m.AuditEvent, after_seq=last):
                    names.append(f"audit:{len(names)}")
                    out.section(names[-1], seal(vault_key, names[-1], {"audit_events": events}))
                    last = int(events[-1]["seq"])
                for client_id, key in client_keys.items():
                    names.append(f"client:{client_id}")
                    rows = self._client_rows(s, client_id)
                    secrets += len(rows["secrets"])
                    out.section(names[-1], seal(key, names[-1], rows))
                global_rows: dict[str, Any] = {
                    t.__tablename__: _rows(s, t) for t in GLOBAL_TABLES if t is not m.AuditEvent
                }
                global_rows[MANIFEST] = sorted(names)
                global_rows[COUNTERS] = _counters(s)  # ids already used, purged ones included: never reused
                out.section("global", seal(vault_key, "global", global_rows))
                out.end()
        return BackupInfo(str(path), backup_id.hex(), len(client_keys), secrets, event.seq)

    @staticmethod
    def _client_rows(s: Session, client_id: int) -> dict[str, list[dict[str, Any]]]:
        secret_ids = select(m.Secret.id).where(m.Secret.client_id == client_id)
        filters: dict[type[m.Base], Any] = {
            m.Client: m.Client.id == client_id,
            m.ClientKey: m.ClientKey.client_id == client_id,
            m.ClientKeySeal: m.ClientKeySeal.client_id == client_id,
            m.ClientPolicy: m.ClientPolicy.client_id == client_id,
            m.Grant: m.Grant.client_id == client_id,
            m.Secret: m.Secret.client_id == client_id,
            m.SecretVersion: m.SecretVersion.secret_id.in_(secret_ids),
            m.Checkout: m.Checkout.client_id == client_id,
            m.Rotation: m.Rotation.client_id == client_id,
        }
        return {model.__tablename__: _rows(s, model, filters[model]) for model in CLIENT_TABLES}

    # -- restore ---------------------------------------------------------------------------------

    def restore(
        self,
        path: Path,
        keys_path: Path,
        *,
        admin: str | None = None,
        passphrase: str | None = None,
        shares: list[str] | None = None,
    ) -> BackupInfo:
        """Restore ``path`` into this (empty, migrated) store, opening it with the key export."""
        try:
            return self._restore(path, keys_path, admin, passphrase, shares)
        except VaultError:
            raise
        except (KeyError, ValueError, TypeError, AttributeError, IndexError):
            raise InvalidInput("the backup or the key export is malformed", hint="use an unmodified file") from None

    def _restore(
        self, path: Path, keys_path: Path, admin: str | None, passphrase: str | None, shares: list[str] | None
    ) -> BackupInfo:
        backup = backupfile.BackupReader(path)
        keys = backupfile.load_json(keys_path, backupfile.KEYS_MAGIC, "key export")
        header = backup.header
        if header["vault_id"] != keys["vault_id"]:
            raise InvalidInput("the key export belongs to another vault than the backup")
        vault_id, backup_id = bytes.fromhex(header["vault_id"]), bytes.fromhex(header["backup_id"])
        payload = _open_keys(keys, vault_id, admin, passphrase, shares)
        vault_key = bytes.fromhex(payload["vault"])
        client_keys = {int(k): bytes.fromhex(v) for k, v in payload["clients"].items()}

        def key_of(name: str) -> bytes | None:
            """The key of a section, or None for a client this key export cannot open."""
            if name == "global" or name.startswith("audit:"):
                return vault_key
            if not name.startswith("client:"):
                raise IntegrityError(f"the backup has an unknown section {name!r}", hint="use an unmodified backup")
            return client_keys.get(int(name.split(":")[1]))  # None: purged since, unreadable by design

        def opened(name: str, blob: bytes, key: bytes) -> dict[str, Any]:
            plain = blobs.decrypt_backup_section(key, blob, vault_id, backup_id, name)
            return cast(dict[str, Any], json.loads(plain))

        # First every section is opened, checked and dropped (only the small global one is
        # kept); then, in one transaction, each is opened again and written. Memory holds
        # one section; nothing is written unless every section checked out.
        tables: dict[str, Any] | None = None
        seen: list[str] = []
        secrets = skipped = 0
        for name, blob in backup.sections():
            seen.append(name)
            key = key_of(name)
            if key is None:
                skipped += 1
                continue
            rows = opened(name, blob, key)
            if name == "global":
                tables = rows
            secrets += len(rows.get("secrets", []))
        if tables is None:
            raise InvalidInput("the backup has no global section", hint="use an unmodified backup")
        manifest: set[str] = {str(name) for name in tables.pop(MANIFEST, [])}
        raw_counters: dict[str, Any] = tables.pop(COUNTERS, {})
        counters: dict[str, int] = {str(k): int(v) for k, v in raw_counters.items()}
        present = [n for n in seen if n != "global"]
        if manifest != set(present) or len(present) != len(set(present)) or seen.count("global") != 1:
            missing, extra = sorted(manifest - set(present)), sorted(set(present) - manifest)
            raise IntegrityError(
                f"the backup's sections do not match its manifest (missing {missing}, unexpected {extra})",
                hint="the backup file was altered or cut; use another backup",
            )
        heads = tables.get("audit_head") or [{"seq": 0}]
        audit_head = int(heads[0]["seq"])  # from the authenticated section, not the plain header
        if int(header["audit_head"]) != audit_head:
            raise IntegrityError("the backup's header does not match its contents", hint="use an unmodified backup")
        most = dict.fromkeys(SERIAL_TABLES, 0)  # the largest id restored per serial table
        with self.core.store.transaction() as s:  # everything is checked above: from here on only rows are written
            if s.scalar(select(func.count()).select_from(m.VaultInfo)):
                raise AlreadyExists("the target store is not empty", hint="restore into a new, empty database")
            _insert(s, GLOBAL_TABLES[:6], tables, most)  # parents of the clients' rows
            _first_org_key(s, tables)
            written = []
            for name, blob in backup.sections():
                written.append(name)
                key = key_of(name)
                if name != "global" and key is not None:
                    _insert(s, (*CLIENT_TABLES, m.AuditEvent), opened(name, blob, key), most)
            if written != seen:  # rolled back: the file changed while it was being restored
                raise IntegrityError("the backup file changed during the restore", hint="restore it again")
            _insert(s, GLOBAL_TABLES[6:], tables, most)  # a format-1 backup keeps its audit events here
            for table in SERIAL_TABLES:
                _set_counter(s, table, max(most[table], counters.get(table, 0)))
        restored = len(present) - skipped - sum(1 for n in present if n.startswith("audit:"))
        return BackupInfo(str(path), backup_id.hex(), restored, secrets, audit_head, skipped)
