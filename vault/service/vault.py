"""``Vault``: the public Python API of credvault.

    vault = Vault.open("sqlite:///vault.db", engineer="alice")
    vault.unlock("alice", passphrase)
    vault.add_secret("acme/fw01-admin", password=..., kind="equipment", host="10.0.0.1")

Every method runs in one transaction and raises only ``vault.errors.VaultError``
subclasses on purpose. A method whose transaction the database aborts because of a
concurrent one (``ConcurrentChange``: a PostgreSQL serialization failure or deadlock)
is run again from the start, up to ``RETRIES`` times with a short random back-off:
nothing of the aborted attempt was committed or revealed, so running it again is safe
(``vault/service/retrying.py``).
"""

from __future__ import annotations

import inspect

from vault.crypto import keyrecord
from vault.service.backups import BackupOps
from vault.service.base import Clock, utcnow
from vault.service.records import InitResult
from vault.service.retrying import BACKOFF_SECONDS, RETRIES, retried
from vault.service.sessions import MemorySessionStore, SessionStore
from vault.storage import engine as storage

__all__ = ["BACKOFF_SECONDS", "RETRIES", "Vault"]


def _retry_public_methods(cls: type[Vault]) -> type[Vault]:
    for name, member in inspect.getmembers(cls, inspect.isfunction):
        # Instance methods only: static and class methods are not units of work on a vault.
        if not name.startswith("_") and inspect.isfunction(inspect.getattr_static(cls, name)):
            setattr(cls, name, retried(member))
    return cls


@_retry_public_methods
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

    @staticmethod
    def schema_head() -> str:
        """The newest schema revision this version of credvault brings."""
        return storage.head_revision()

    def close(self) -> None:
        self.store.close()
