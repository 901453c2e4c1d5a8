"""Backups and key exports, where the admin's keys are: verify the context, open the backup keys, seal.

``BackupKeyholder`` asks the authority for a backup or a key export (``BackupRequest``) and
lends it a seal (``_BackupSeal``, the in-process seam) that, inside the authority's unit:

* verifies the context before anything is written: the admin's own row (certified under the
  organisation key it pinned, or one the signed chain leads to; active, an admin, this
  session's keys), the root-key version it holds, each client's key records (signed by an
  active admin) and recovery-sealed copies (matching the signed fingerprint), each backup
  key (opened under its client's key: bound to that client, a blob moved to another client
  does not open), the vault's backup key (sealed to the recovery key, bound to the vault),
  and for a key export every admin it is sealed to (certified, active, an admin; the caller
  among them, so that its own passphrase opens the file);
* makes the backup keys that do not exist yet (only their ciphertext goes back);
* writes a key export, or a backup one section at a time: each section checked
  (``backupsections.check_section``: a client's rows in that client's section only, the
  audit log whole and in order, every client of the context present) before it is sealed
  under its key and written. A refusal raises inside the unit: no event, no file.

A root key rotated between this keyholder opening its recovery key and the authority reading
the context is a race, not a lie: the seal refuses with ``STALE_ROOT`` (nothing written) and
the keyholder opens the current recovery key and asks once more; a second mismatch is
refused as untrusted.

Restoring is ``backuprestore.py``'s.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from vault.authority.backup_requests import (
    AUDIT,
    AUDIT_TABLE,
    CLIENT,
    CREATE,
    EXPORT,
    AdminKeys,
    BackupContext,
    BackupDone,
    BackupHeader,
    BackupRequest,
    NewBackupKeys,
    SectionRows,
)
from vault.authority.requests import Caller, SealedClientKey
from vault.crypto import _primitives as prim
from vault.crypto import blobs, sealing, signing
from vault.crypto.labels import (
    LABEL_BACKUP_KEYS,
    LABEL_BACKUP_SERVER_KEYS,
    LABEL_BACKUP_VAULT_KEY,
    LABEL_CLIENT_KEY_SEAL,
)
from vault.errors import AlreadyExists, ConcurrentChange, DecryptionFailed, UntrustedRecord
from vault.keyholder import backupfile
from vault.keyholder.backupsections import (
    COUNTERS,
    MANIFEST,
    check_section,
    count_rows,
    section_name,
    section_plaintext,
)
from vault.keyholder.policies import verified_caller
from vault.keyholder.responses import ResponseChecks
from vault.keyholder.sessionkeys import SessionKeys
from vault.records import BackupInfo
from vault.storage.rows import ACTIVE, ROLE_ADMIN, EngineerRow

ANOTHER_ROOT = "the authority names another root key than the one this admin holds"
STALE_ROOT = "the root key was rotated since this admin opened the recovery key: nothing was written"


class Session(Protocol):
    """The unlocked session, as a backup asks for it."""

    @property
    def engineer_id(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def key_generation(self) -> int: ...
    @property
    def vault_id(self) -> bytes: ...
    @property
    def org_signing_public(self) -> bytes: ...


class BackupKeys(Protocol):
    """The admin's unlocked keys: the session, and the recovery key (opened, never handed out)."""

    def session(self) -> Session: ...
    def sealing_public(self) -> bytes: ...
    def open_recovery(self) -> None: ...
    def recovery_version(self) -> int | None: ...
    def recovery_public(self) -> bytes | None: ...
    def open_sealed(
        self, kind: str, recipient_id: int, version: int, blob: bytes, context: tuple[Any, ...]
    ) -> bytes: ...


class BackupTransport(Protocol):
    def export_keys(self, request: BackupRequest, seal: Any) -> BackupDone: ...
    def create(self, request: BackupRequest, seal: Any) -> BackupDone: ...


class BackupSessionKeys(SessionKeys):
    """``SessionKeys`` with the recovery key's public half (a backup key is sealed to it)."""

    def recovery_public(self) -> bytes | None:
        bundle = self._keys.root  # opened by ``open_recovery``
        return None if bundle is None else bundle.recovery.public


def refuse_existing(path: Path) -> None:
    if Path(path).exists():
        raise AlreadyExists(f"{Path(path).name} already exists", hint="choose a new file name")


class _BackupSeal:
    """The keyholder's side of ``BackupSeal`` for one backup or key export."""

    def __init__(
        self,
        keys: BackupKeys,
        me: Session,
        path: Path,
        files: contextlib.ExitStack,
        now: dt.datetime,
        *,
        export: bool,
        server_master_keys: tuple[tuple[int, bytes], ...] = (),
    ):
        self._keys, self._me, self._path, self._files, self._now = keys, me, path, files, now
        self._export, self._server_master_keys = export, server_master_keys
        self.context: BackupContext | None = None
        self._vault_key = b""
        self._client_keys: dict[int, bytes] = {}
        self._header: BackupHeader | None = None
        self._backup_id = b""
        self._out: backupfile.BackupWriter | None = None
        self._recipients: tuple[AdminKeys, ...] = ()
        self.names: list[str] = []
        self.secrets = 0
        self._last_seq = 0

    def __repr__(self) -> str:
        return "BackupSeal(<redacted>)"

    # -- the keys ---------------------------------------------------------------------------

    def keys(self, context: BackupContext) -> NewBackupKeys:
        if self.context is not None:
            raise UntrustedRecord("the authority asked for the backup keys twice")
        parts = (context.vault_id, context.org_signing_public, context.org_chain, context.me)
        checks = verified_caller(self._me, self._keys.sealing_public(), self._now, parts, admin=True)
        version, public = self._keys.recovery_version(), self._keys.recovery_public()
        if version is not None and public is not None and context.root_version > version:
            raise ConcurrentChange(STALE_ROOT)  # rotated since it was opened: open the current one, ask again
        if version is None or public is None or context.root_version != version:
            raise UntrustedRecord(ANOTHER_ROOT)
        vault_context = (LABEL_BACKUP_VAULT_KEY, context.vault_id)
        new_vault_seal = None
        if context.vault_key_seal is None:
            self._vault_key = blobs.new_key()
            new_vault_seal = sealing.seal(public, version, self._vault_key, vault_context)
        else:
            self._vault_key = self._keys.open_sealed(
                "recovery", version, version, context.vault_key_seal, vault_context
            )
        new_blobs = []
        for client in context.clients:
            if client.client_id in self._client_keys or not client.keys:
                raise UntrustedRecord("the authority lists a client twice, or without its key")
            opened = {k.record.version: self._client_key(checks, context, client.client_id, k) for k in client.keys}
            if client.blob is None:
                write = client.keys[0].record.version
                key = blobs.new_key()
                blob = blobs.encrypt_client_field(opened[write], write, key, client.client_id, "backup-key")
                new_blobs.append((client.client_id, blob))
            else:
                field = blobs.blob_key_version(client.blob)
                if field not in opened:
                    raise DecryptionFailed()
                key = blobs.decrypt_client_field(opened[field], field, client.blob, client.client_id, "backup-key")
            self._client_keys[client.client_id] = key
        # A key export is sealed only to the admins whose certificate verifies as an active
        # admin's: a row whose role or keys a database writer changed is left out, not sealed to
        # (and does not stop the export: the caller's own row must be among those kept).
        self._recipients = tuple(admin for admin in context.admins if _certified_admin(checks, admin.row))
        if self._export and context.me not in (admin.row for admin in self._recipients):
            raise UntrustedRecord("the key export would not be sealed to the admin who makes it")
        if not self._export and context.admins:
            raise UntrustedRecord("a backup is sealed to no admin")
        self.context = context
        return NewBackupKeys(new_vault_seal, tuple(new_blobs))

    def _client_key(
        self, checks: ResponseChecks, context: BackupContext, client_id: int, sealed: SealedClientKey
    ) -> bytes:
        """A client key: its record signed by an active admin, its copy sealed to the recovery
        key this admin holds, matching the signed fingerprint."""
        version = sealed.record.version
        checks.client_key(sealed, client_id, version)
        if (sealed.kind, sealed.recipient_id) != ("recovery", context.root_version) or sealed.blob is None:
            raise DecryptionFailed()
        seal_context = (LABEL_CLIENT_KEY_SEAL, context.vault_id, client_id, version, "recovery", context.root_version)
        key = self._keys.open_sealed("recovery", context.root_version, version, sealed.blob, seal_context)
        if signing.client_key_fingerprint(key) != sealed.record.fingerprint:
            raise UntrustedRecord(f"the sealed client key does not match its signed version {version}")
        return key

    def _context(self) -> BackupContext:
        if self.context is None:
            raise UntrustedRecord("the authority asked to write before the backup keys were checked")
        return self.context

    # -- a key export ---------------------------------------------------------------------------

    def write_export(self) -> None:
        context = self._context()
        public, version = self._keys.recovery_public(), context.root_version
        assert public is not None
        keys = {"vault": self._vault_key.hex(), "clients": {str(c): k.hex() for c, k in self._client_keys.items()}}
        payload = json.dumps(keys, sort_keys=True).encode("utf-8")
        sealed_to = (LABEL_BACKUP_KEYS, context.vault_id)
        admins = [
            {
                "name": admin.row.name,
                "id": admin.row.id,
                "generation": admin.row.key_generation,
                "key_record": backupfile.encode(admin.key_record),
                "keys": backupfile.encode(sealing.seal(admin.row.sealing_public, version, payload, sealed_to)),
            }
            for admin in self._recipients
            if admin.row.sealing_public is not None
        ]
        document = {
            "magic": backupfile.KEYS_MAGIC,
            "format": 1,
            "vault_id": context.vault_id.hex(),
            "root_version": version,
            "recovery_public": public.hex(),
            "created_at": self._now.isoformat(),
            "admins": admins,
            "recovery": backupfile.encode(sealing.seal(public, version, payload, sealed_to)),
        }
        if self._server_master_keys:
            document["server_master_keys"] = self._sealed_server_keys(context.vault_id, public, version)
        backupfile.write_private(self._path, json.dumps(document, indent=1))

    def _sealed_server_keys(self, vault_id: bytes, public: bytes, version: int) -> dict[str, Any]:
        """The team server's master keys (on its host), sealed like the backup keys: to the recovery
        key and to each admin of the export, under their own label (docs/format.md §11)."""
        keys = {str(v): key.hex() for v, key in self._server_master_keys}
        payload = json.dumps(keys, sort_keys=True).encode("utf-8")
        sealed_to = (LABEL_BACKUP_SERVER_KEYS, vault_id)

        def sealed(recipient: bytes) -> Any:
            return backupfile.encode(sealing.seal(recipient, version, payload, sealed_to))

        admins = {str(a.row.id): sealed(a.row.sealing_public) for a in self._recipients if a.row.sealing_public}
        return {"versions": [v for v, _ in self._server_master_keys], "recovery": sealed(public), "admins": admins}

    # -- a backup -------------------------------------------------------------------------------

    def begin(self, header: BackupHeader) -> None:
        context = self._context()
        if self._out is not None or header.vault_id != context.vault_id:
            raise UntrustedRecord("the authority began another backup than this one")
        self._header, self._backup_id = header, prim.random_bytes(16)
        handle = self._files.enter_context(backupfile.private_file(self._path))  # removed if anything fails
        head = {
            "vault_id": context.vault_id.hex(),
            "backup_id": self._backup_id.hex(),
            "schema": header.schema,
            "created_at": self._now.isoformat(),
            "audit_head": header.audit_head,
        }
        self._out = backupfile.BackupWriter(handle, head)

    def section(self, section: SectionRows) -> None:
        if section.kind not in (AUDIT, CLIENT):
            raise UntrustedRecord("the authority sent a section of an unknown kind")
        check_section(section)
        if section.kind == AUDIT:
            self._check_audit(section)
            key = self._vault_key
        else:
            assert section.client_id is not None
            name = section_name(section, 0)
            if name in self.names or section.client_id not in self._client_keys:
                raise UntrustedRecord(f"the authority sent the section of client #{section.client_id} unasked")
            key = self._client_keys[section.client_id]
            self.secrets += count_rows(section, "secrets")
        self._write(
            section_name(section, sum(n.startswith("audit:") for n in self.names)), key, section_plaintext(section)
        )

    def _check_audit(self, section: SectionRows) -> None:
        """The audit log comes whole and in order: each event follows the last one sealed."""
        [events] = section.tables
        at = events.columns.index("seq") if "seq" in events.columns else -1
        for row in events.rows:
            if at < 0 or row[at] != self._last_seq + 1:
                raise UntrustedRecord("the audit log of the backup is not whole and in order")
            self._last_seq += 1

    def finish(self, section: SectionRows, counters: tuple[tuple[str, int], ...]) -> None:
        context, header = self._context(), self._header
        if section.kind != "global" or header is None:
            raise UntrustedRecord("the authority ended the backup with another section than the global one")
        check_section(section)
        if any(t.table == AUDIT_TABLE for t in section.tables) or self._last_seq != header.audit_head:
            raise UntrustedRecord("the audit log of the backup does not end at the backup's own event")
        missing = {f"client:{c.client_id}" for c in context.clients} - set(self.names)
        if missing:
            raise UntrustedRecord(f"the authority left clients out of the backup: {sorted(missing)}")
        extra = {MANIFEST: sorted(self.names), COUNTERS: {str(t): int(v) for t, v in counters}}
        self._write("global", self._vault_key, section_plaintext(section, extra), manifest=False)
        assert self._out is not None
        self._out.end()
        self._files.close()  # the file closed (and flushed) inside the unit: no event without a whole file

    def _write(self, name: str, key: bytes, plain: bytes, *, manifest: bool = True) -> None:
        if self._out is None:
            raise UntrustedRecord("the authority sent a section before the backup began")
        assert self.context is not None
        self._out.section(name, blobs.encrypt_backup_section(key, plain, self.context.vault_id, self._backup_id, name))
        if manifest:
            self.names.append(name)

    @property
    def backup_id(self) -> bytes:
        return self._backup_id

    @property
    def header(self) -> BackupHeader | None:
        return self._header


class BackupKeyholder:
    """Key export and backup for the admin whose keys ``keys`` holds."""

    def __init__(
        self,
        transport: BackupTransport,
        keys: BackupKeys,
        clock: Callable[[], dt.datetime],
        server_master_keys: tuple[tuple[int, bytes], ...] = (),
    ) -> None:
        """``server_master_keys``: on the team server's host, every live master key of its key file
        (version, key), which a key export then carries sealed (``LABEL_BACKUP_SERVER_KEYS``)."""
        self.transport, self.keys, self.clock = transport, keys, clock
        self.server_master_keys = server_master_keys

    def export_keys(self, path: Path) -> int:
        refuse_existing(path)
        _, done = self._run(EXPORT, Path(path))
        return done.clients

    def create(self, path: Path) -> BackupInfo:
        refuse_existing(path)
        seal, done = self._run(CREATE, Path(path))
        if seal.header is None or done.seq != seal.header.audit_head:
            raise UntrustedRecord("the authority's answer is not the backup this keyholder wrote")
        return BackupInfo(str(path), seal.backup_id.hex(), done.clients, seal.secrets, done.seq)

    def _run(self, action: str, path: Path) -> tuple[_BackupSeal, BackupDone]:
        """The call, sent once more if the root key was rotated since the recovery key was
        opened (``STALE_ROOT``: the current one is opened for the second); checked."""
        for attempt in range(2):
            me, request = self._request(action)
            with contextlib.ExitStack() as files:  # the file is removed if the unit fails after it began
                export = action == EXPORT
                carried = self.server_master_keys if export else ()
                seal = _BackupSeal(self.keys, me, path, files, self.clock(), export=export, server_master_keys=carried)
                try:
                    send = self.transport.export_keys if action == EXPORT else self.transport.create
                    done = send(request, seal)
                except ConcurrentChange as error:
                    if str(error) != STALE_ROOT:
                        raise
                    if attempt == 0:
                        continue
                    raise UntrustedRecord(ANOTHER_ROOT) from error
            self._check_done(seal, done)
            return seal, done
        raise AssertionError("unreachable")

    def _request(self, action: str) -> tuple[Session, BackupRequest]:
        me = self.keys.session()
        self.keys.open_recovery()  # the admin's recovery key, opened and checked (a read unit)
        versions = tuple(v for v, _ in self.server_master_keys) if action == EXPORT else ()
        return me, BackupRequest(action, Caller(me.engineer_id, me.key_generation), me.org_signing_public, versions)

    @staticmethod
    def _check_done(seal: _BackupSeal, done: BackupDone) -> None:
        if seal.context is None or done.clients != len(seal.context.clients):
            raise UntrustedRecord("the authority's answer is not the backup this keyholder wrote")


def _certified_admin(checks: ResponseChecks, row: EngineerRow) -> bool:
    """Whether ``row`` is an active admin whose certificate verifies (a key export's recipient)."""
    try:
        checks.certificate(row)
    except UntrustedRecord:
        return False
    return row.role == ROLE_ADMIN and row.status == ACTIVE
