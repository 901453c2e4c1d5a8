"""Restoring a backup: the keyholder opens the key export and every section, the authority writes.

Restoring needs an empty store, a backup, a key export and either an admin's passphrase
(their key record and root seal are in the export) or the recovery shares; no session.
``BackupRestorer.restore`` opens the key export (``backupsections.open_key_export``), then
reads the backup twice: first every section is opened, checked (``check_section``: a
client's section holds that client's rows only) and dropped, only the small global one
kept, its manifest compared with the sections present and its audit head with the header;
then the authority, in one unit of work, writes the global rows' parents, asks for the
sections again (``_Sections``: each opened and checked again as it is handed over), and
refuses if the file changed in between. Memory holds one section; nothing is written unless
every section checked out. A client whose backup key is not in the key export (purged since)
is skipped: unreadable by design.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from vault.authority.backup_requests import AUDIT, CLIENT, GLOBAL, RestorePlan, SectionRows
from vault.crypto import blobs
from vault.errors import IntegrityError, InvalidInput, VaultError
from vault.keyholder import backupfile
from vault.keyholder.backupsections import (
    COUNTERS,
    MANIFEST,
    check_section,
    count_rows,
    open_key_export,
    opened_section,
)
from vault.records import BackupInfo


class RestoreTransport(Protocol):
    def restore(self, plan: RestorePlan, source: Any) -> None: ...


class _Keys:
    """The backup keys of one key export, for one backup."""

    def __init__(self, payload: dict[str, Any], vault_id: bytes, backup_id: bytes) -> None:
        self.vault_key = bytes.fromhex(payload["vault"])
        self.clients = {int(k): bytes.fromhex(v) for k, v in payload["clients"].items()}
        self.vault_id, self.backup_id = vault_id, backup_id

    def __repr__(self) -> str:
        return "BackupKeys(<redacted>)"

    def key_of(self, name: str) -> bytes | None:
        """The key of a section, or None for a client this key export cannot open."""
        if name == "global" or name.startswith("audit:"):
            return self.vault_key
        if not name.startswith("client:"):
            raise IntegrityError(f"the backup has an unknown section {name!r}", hint="use an unmodified backup")
        return self.clients.get(int(name.split(":")[1]))  # None: purged since, unreadable by design

    def opened(self, name: str, blob: bytes, key: bytes) -> tuple[SectionRows, dict[str, Any]]:
        """The section, decrypted (bound to this vault, backup and name) and checked."""
        plain = blobs.decrypt_backup_section(key, blob, self.vault_id, self.backup_id, name)
        if name == "global":
            kind, client_id = GLOBAL, None
        elif name.startswith("audit:"):
            kind, client_id = AUDIT, None
        else:
            kind, client_id = CLIENT, int(name.split(":")[1])
        section, extra = opened_section(kind, client_id, plain)
        check_section(section)
        return section, extra


class _Sections:
    """The authority's ``RestoreSource``: the sections read, opened and checked again."""

    def __init__(self, backup: backupfile.BackupReader, keys: _Keys, seen: list[str]) -> None:
        self._backup, self._keys, self._seen = backup, keys, seen
        self._written: list[str] = []

    def __repr__(self) -> str:
        return "RestoreSource(<redacted>)"

    def sections(self) -> Iterator[SectionRows]:
        for name, blob in self._backup.sections():
            self._written.append(name)
            key = self._keys.key_of(name)
            if name != "global" and key is not None:
                yield self._keys.opened(name, blob, key)[0]

    def done(self) -> None:
        if self._written != self._seen:
            raise IntegrityError("the backup file changed during the restore", hint="restore it again")


class BackupRestorer:
    """Restores a backup into the empty store behind ``transport``."""

    def __init__(self, transport: RestoreTransport) -> None:
        self.transport = transport

    def restore(
        self, path: Path, keys_path: Path, admin: str | None, passphrase: str | None, shares: list[str] | None
    ) -> BackupInfo:
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
        export = backupfile.load_json(keys_path, backupfile.KEYS_MAGIC, "key export")
        header = backup.header
        if header["vault_id"] != export["vault_id"]:
            raise InvalidInput("the key export belongs to another vault than the backup")
        vault_id, backup_id = bytes.fromhex(header["vault_id"]), bytes.fromhex(header["backup_id"])
        keys = _Keys(open_key_export(export, vault_id, admin, passphrase, shares), vault_id, backup_id)
        found: tuple[SectionRows, dict[str, Any]] | None = None
        seen: list[str] = []
        secrets = skipped = 0
        for name, blob in backup.sections():
            seen.append(name)
            key = keys.key_of(name)
            if key is None:
                skipped += 1
                continue
            section, extra = keys.opened(name, blob, key)
            if name == "global":
                found = section, extra
            secrets += count_rows(section, "secrets")
        if found is None:
            raise InvalidInput("the backup has no global section", hint="use an unmodified backup")
        global_rows, extra = found
        manifest: set[str] = {str(name) for name in extra.get(MANIFEST, [])}
        counters = tuple((str(k), int(v)) for k, v in dict(extra.get(COUNTERS, {})).items())
        present = [n for n in seen if n != "global"]
        if manifest != set(present) or len(present) != len(set(present)) or seen.count("global") != 1:
            missing, unexpected = sorted(manifest - set(present)), sorted(set(present) - manifest)
            raise IntegrityError(
                f"the backup's sections do not match its manifest (missing {missing}, unexpected {unexpected})",
                hint="the backup file was altered or cut; use another backup",
            )
        heads = next((t for t in global_rows.tables if t.table == "audit_head"), None)
        seq_at = heads.columns.index("seq") if heads is not None and heads.rows else -1
        audit_head = int(heads.rows[0][seq_at]) if heads is not None and seq_at >= 0 else 0  # type: ignore[arg-type]
        if int(header["audit_head"]) != audit_head:  # the authenticated section, not the plain header
            raise IntegrityError("the backup's header does not match its contents", hint="use an unmodified backup")
        self.transport.restore(RestorePlan(global_rows, counters), _Sections(backup, keys, seen))
        restored = len(present) - skipped - sum(1 for n in present if n.startswith("audit:"))
        return BackupInfo(str(path), backup_id.hex(), restored, secrets, audit_head, skipped)
