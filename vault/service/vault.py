"""``Vault``: the public Python API of credvault.

    vault = Vault.open("sqlite:///vault.db", engineer="alice")
    vault.unlock("alice", passphrase)
    vault.add_secret("acme/fw01-admin", password=..., kind="equipment", host="10.0.0.1")

Every method runs in one transaction and raises only ``vault.errors.VaultError``
subclasses on purpose. A method whose transaction the database aborts because of a
concurrent one (``ConcurrentChange``: a PostgreSQL serialization failure or deadlock)
is run again from the start, up to ``RETRIES`` times with a short random back-off:
nothing of the aborted attempt was committed or revealed, so running it again is safe.
"""

from __future__ import annotations

import functools
import inspect
import logging
import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

from vault.crypto import keyrecord
from vault.errors import ConcurrentChange
from vault.service.backups import BackupOps
from vault.service.base import Clock, utcnow
from vault.service.records import InitResult
from vault.service.sessions import MemorySessionStore, SessionStore
from vault.storage import engine as storage

RETRIES = 6
BACKOFF_SECONDS = 0.005  # doubled on each attempt, times a random factor in [0.5, 1.5)
log = logging.getLogger("vault")
F = TypeVar("F", bound=Callable[..., Any])


def retried(method: F) -> F:
    """Run ``method`` again when its transaction lost to a concurrent one.

    Only the outermost public call retries (a public method that calls another does not
    multiply the attempts). The count of retries is kept in ``Vault.retries``.
    """

    @functools.wraps(method)
    def wrapper(self: Vault, *args: Any, **kwargs: Any) -> Any:
        if self._retry_depth:
            return method(self, *args, **kwargs)
        self._retry_depth += 1
        try:
            for attempt in range(RETRIES):
                try:
                    return method(self, *args, **kwargs)
                except ConcurrentChange:
                    if attempt == RETRIES - 1:
                        raise
                    self.retries += 1
                    log.info("%s lost to a concurrent change; retrying (attempt %d)", method.__name__, attempt + 2)
                    time.sleep(BACKOFF_SECONDS * 2**attempt * (0.5 + random.random()))  # noqa: S311 - jitter
            raise AssertionError("unreachable")
        finally:
            self._retry_depth -= 1

    return wrapper  # type: ignore[return-value]


def _retry_public_methods(cls: type[Vault]) -> type[Vault]:
    for name, member in inspect.getmembers(cls, inspect.isfunction):
        # Instance methods only: static and class methods are not units of work on a vault.
        if not name.startswith("_") and inspect.isfunction(inspect.getattr_static(cls, name)):
            setattr(cls, name, retried(member))
    return cls


@_retry_public_methods
class Vault(BackupOps):
    """One vault database, seen by one engineer at a time."""

    retries = 0  # transactions run again after a ConcurrentChange, over this object's life
    _retry_depth = 0

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
