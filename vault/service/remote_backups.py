"""``RemoteVault.backups``: an admin's backup through the team server.

``create`` is ``keyholder/backup_served.py`` over ``transport/https_backups.py``: the server commits
the ``backup-create`` event, streams the rows of one snapshot, and the backup file is sealed, checked
and written here, as a host-made backup is (docs/server.md, "Session 16 — helper G"). Its file is a
backup like any other: ``backup verify``/``restore`` read it as they read one made on the host.

A restore writes a whole database and is a **host operation** (``credvault --db URL backup restore``
on an empty database, where the key file is); a key export carries the server's master keys, which
only the host holds (``credvault --db URL --server-key FILE backup export-keys``). Both say so.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vault.errors import ConfigurationError
from vault.keyholder.backup_served import ServedBackupKeyholder
from vault.records import BackupInfo
from vault.service.remote_nouns import _Noun
from vault.service.remotekeys import RemoteKeys
from vault.service.sessions import UnlockedSession
from vault.transport.https import HttpsTransport
from vault.transport.https_backups import HttpsBackupTransport

RESTORE_ON_HOST = (
    "a restore is a host operation: run `credvault --db URL backup restore FILE --keys KEYS` on a new, "
    "empty database where the server runs (then `credvault serve` over it with the key file)"
)
EXPORT_ON_HOST = (
    "a key export carries the team server's master keys, which only its host holds: run "
    "`credvault --db URL --server-key FILE backup export-keys FILE` on the server's host"
)


class _BackupKeys:
    """``RemoteKeys`` as a backup asks for them (``keyholder.backups.BackupKeys``)."""

    def __init__(self, keys: RemoteKeys) -> None:
        self._keys = keys

    def __repr__(self) -> str:
        return "BackupKeys(<redacted>)"

    def session(self) -> UnlockedSession:
        return self._keys.session()

    def sealing_public(self) -> bytes:
        return self._keys.sealing_public()

    def open_recovery(self) -> None:
        self._keys.open_recovery()

    def recovery_version(self) -> int | None:
        return self._keys.recovery_version()

    def recovery_public(self) -> bytes | None:
        found = self._keys.recovery()
        return None if found is None else found[1]

    def open_sealed(self, kind: str, recipient_id: int, version: int, blob: bytes, context: tuple[Any, ...]) -> bytes:
        return self._keys.open_sealed(kind, recipient_id, version, blob, context)


class RemoteBackups(_Noun):
    """``backups.create`` through the server; ``restore`` and ``export_keys`` run on the host."""

    def __init__(self, keys: RemoteKeys, https: HttpsTransport, clock: Callable[[], dt.datetime]) -> None:
        self.keys = keys
        self.keyholder = ServedBackupKeyholder(HttpsBackupTransport(https), _BackupKeys(keys), clock)

    def __repr__(self) -> str:
        return "RemoteBackups()"

    def create(self, path: Path) -> BackupInfo:
        """Write a consistent, encrypted copy of the whole vault to ``path`` (an admin's): the rows as
        the server stores them (data keys under its layer), sealed and checked on this machine."""
        self.keys.me()
        return self.keyholder.create(Path(path))

    def restore(self, *_: object, **__: object) -> BackupInfo:
        raise ConfigurationError(RESTORE_ON_HOST, hint="see docs/server.md, 'Session 16 — helper G'")

    def export_keys(self, *_: object, **__: object) -> int:
        raise ConfigurationError(EXPORT_ON_HOST, hint="keep the key export apart from the backups")
