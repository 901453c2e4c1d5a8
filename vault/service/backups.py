"""Encrypted backups that a purge reaches: per-client sections, keys kept apart.

A backup file holds **audit sections** (the audit chain, 20,000 events each), one
**section per client** (its keys, grants, secrets and versions) and one **global
section** (engineers, recovery and root seals, purge receipts, and the manifest of all
other sections: no client plaintext). Each client section is encrypted under that
client's own **backup key**, the others under the vault's backup key. No backup file
contains any backup key. The file itself (``keyholder/backupfile.py``) is written and
read one section at a time.

The backup keys live in the live store (each client's wrapped under its client key;
the vault's sealed to the recovery key) and in a small **key export** an admin writes
with ``export_keys`` and keeps apart from the backups. Purging a client deletes its
backup key from the live store, so every key export made afterwards lacks it: with the
latest key export, every old backup restores in full *except* purged clients, which
stay unreadable. Older key exports must be destroyed (the purge says so).

Restoring needs an empty store, a backup, a key export and either an admin's
passphrase (their key record and root seal are in the export) or the recovery shares.

The work is split (issue 13): ``authority/backups.py`` authorises the admin and reads and
writes rows by section, ``keyholder/backups.py`` verifies what it is shown, opens and
makes the backup keys and seals each section, ``keyholder/backuprestore.py`` opens a
backup and its key export for a restore; ``transport/backups.py`` joins them in-process.
This noun builds the three from the Vault's collaborators (the adapters below).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from vault.authority.backups import BackupAuthority
from vault.errors import InvalidInput
from vault.keyholder import backupfile
from vault.keyholder.backuprestore import BackupRestorer
from vault.keyholder.backups import BackupKeyholder, BackupSessionKeys
from vault.keyholder.backupsections import open_server_master_keys
from vault.service.records import BackupInfo
from vault.service.rows import EngineerRecord, GrantRecord
from vault.storage import models as m
from vault.storage.rows import EngineerRow
from vault.transport.backups import InProcessBackupTransport

if TYPE_CHECKING:
    from vault.authority.journal import Journal
    from vault.keyholder.keys import Keys
    from vault.keyholder.trust import Trust
    from vault.service.core import Core


class _Checks:
    """The authority's checks (signatures and public keys only), made by the Vault's trust."""

    def __init__(self, trust: Trust) -> None:
        self._trust = trust

    def organisation_key(self, s: Session, current: bytes) -> None:
        s.info["org_current"] = current  # the vault's current key as read in this unit: no second read

    def certificate(self, s: Session, row: EngineerRecord) -> None:
        self._trust.verify_certificate(s, row)

    def first_valid_grant(
        self, s: Session, grants: Sequence[GrantRecord], engineer: EngineerRecord, signers: Sequence[EngineerRow | None]
    ) -> int:
        return self._trust.first_valid_grant(s, grants, engineer, signers)

    def current_key_version(self, s: Session, client: m.Client) -> int:
        return self._trust.current_key_version(s, client)


class _Recorder:
    """The Journal's append (its signature: the keyholder's, lent in-process)."""

    def __init__(self, journal: Journal) -> None:
        self._journal = journal

    def append(self, s: Session, action: str, *, public: dict[str, object]) -> int:
        return self._journal.append(s, action, public=public).seq


class Backups:
    """Backups: ``vault.backups.export_keys/create/restore``."""

    def __init__(self, core: Core, keys: Keys, trust: Trust, journal: Journal) -> None:
        self.core = core
        self.keys = keys
        self.trust = trust
        self.journal = journal
        self._transport: InProcessBackupTransport | None = None

    def export_keys(self, path: Path) -> int:
        """Write the key export: every live backup key, sealed to the recovery key and to
        each admin (with their key records, so that a passphrase can open it). Returns the
        number of client keys in it. Keep it apart from the backups; keep only the newest.
        On the team server's host (``--server-key``: ``core.host_layer``) it also carries every
        master key of the key file, sealed the same way, and its event names their versions."""
        return self._keyholder().export_keys(Path(path))

    def server_master_keys(
        self,
        keys_path: Path,
        *,
        admin: str | None = None,
        passphrase: str | None = None,
        shares: list[str] | None = None,
    ) -> tuple[tuple[int, bytes], ...]:
        """The team server's master keys (version, key) in a key export made on its host, opened
        with an admin's passphrase or the recovery shares: with them a database copy (``pg_dump``)
        opens the server layer again after the key file is lost (docs/deployment.md §8)."""
        export = backupfile.load_json(Path(keys_path), backupfile.KEYS_MAGIC, "key export")
        try:
            vault_id = bytes.fromhex(export["vault_id"])
            return open_server_master_keys(export, vault_id, admin, passphrase, shares)
        except (KeyError, ValueError, TypeError, AttributeError, IndexError):
            raise InvalidInput("the key export is malformed", hint="use an unmodified file") from None

    def create(self, path: Path) -> BackupInfo:
        """Write a consistent, encrypted copy of the whole vault to ``path``. A vault under the
        team server's layer is carried as it is stored (its data keys layered, each client's
        server client key wrapped under the master key, the server's signing keys): a restore
        opens on a server with the key file, or with the master keys of a key export made on
        the host (``server_master_keys``)."""
        return self._keyholder().create(Path(path))

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
        return BackupRestorer(self._in_process()).restore(Path(path), Path(keys_path), admin, passphrase, shares)

    def _in_process(self) -> InProcessBackupTransport:
        if self._transport is None:
            checks, recorder = _Checks(self.trust), _Recorder(self.journal)
            authority = BackupAuthority(self.core.store, checks, recorder, self.core.clock)
            self._transport = InProcessBackupTransport(authority)
        return self._transport

    def _keyholder(self) -> BackupKeyholder:
        """The backups' keyholder of this Vault object, over the in-process transport."""
        layer = self.core.host_layer  # on the team server's host: its key file's master keys go in a key export
        carried = layer.master_keys() if layer is not None else ()
        return BackupKeyholder(
            self._in_process(), BackupSessionKeys(self.keys, self.core.store), self.core.clock, carried
        )
