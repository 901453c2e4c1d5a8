"""``Vault``: the public Python API of credvault.

    vault = Vault.open("sqlite:///vault.db", engineer="alice")
    vault.unlock("alice", passphrase)
    vault.add_secret("acme/fw01-admin", password=..., kind="equipment", host="10.0.0.1")

Every method runs in one transaction and raises only ``vault.errors.VaultError``
subclasses on purpose.
"""

from __future__ import annotations

from vault.crypto import keyrecord
from vault.service.backups import BackupOps
from vault.service.base import Clock, utcnow
from vault.service.records import InitResult
from vault.service.sessions import MemorySessionStore, SessionStore
from vault.storage import engine as storage


class Vault(BackupOps):
    """One vault database, seen by one engineer at a time."""

    @classmethod
    def open(
        cls,
        url: str,
        *,
        engineer: str | None = None,
        sessions: SessionStore | None = None,
        clock: Clock = utcnow,
        kdf_params: keyrecord.Argon2Params | None = None,
        upgrade: bool = False,
    ) -> Vault:
        store = storage.Store(url)
        if upgrade:
            storage.upgrade(store)
        return cls(
            store, sessions=sessions or MemorySessionStore(), engineer=engineer, clock=clock, kdf_params=kdf_params
        )

    @classmethod
    def create(
        cls,
        url: str,
        *,
        admin: str,
        passphrase: str,
        shares: tuple[int, int] | None = None,
        sessions: SessionStore | None = None,
        clock: Clock = utcnow,
        kdf_params: keyrecord.Argon2Params | None = None,
    ) -> tuple[Vault, InitResult]:
        """Create the schema and a new vault with its recovery key and first admin."""
        vault = cls.open(url, engineer=admin, sessions=sessions, clock=clock, kdf_params=kdf_params, upgrade=True)
        result = vault._initialise(admin, passphrase, shares)
        return vault, result

    def upgrade_schema(self) -> str | None:
        storage.upgrade(self.store)
        return storage.current_revision(self.store)

    def schema_revision(self) -> str | None:
        return storage.current_revision(self.store)

    def close(self) -> None:
        self.store.close()
