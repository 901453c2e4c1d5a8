"""Which of the key file's signing keys the server signs answers with (docs/server.md §5, rotation).

During a rotation (``credvault serve rotate-key``) the key file holds two signing keys: the
version an admin certified and the next one, not yet certified. Events are signed in their unit
with the version ``server_keys`` holds as active (``serverjournal.active_key``); answers and
``/v1/identity`` use the same choice, read here:

* ``ActiveSigningKey.refresh()`` reads it in a short read of its own (``/v1/identity`` does it on
  every call, so what it names is what this process signs with next);
* ``current()`` is the last choice read; the response signer refreshes it when it is older than
  ``ttl`` seconds (in the thread pool), so an admin's certification reaches every answer of every
  process within about a second, without a restart.

Before any version is certified (or with the database unreachable) the newest key (or the last
choice) is kept: an engineer's machine refuses an answer signed by a key it cannot verify, which
is what should happen. A ring of one key is never refreshed: its one key signs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import NamedTuple

from sqlalchemy.exc import SQLAlchemyError

from vault.authority.serverjournal import active_key
from vault.crypto.serverkey import ServerSigningKey, SigningKeys, keyring_of
from vault.errors import VaultError
from vault.storage import models as m
from vault.storage.engine import Store

LOGGER = logging.getLogger("credvault.server")
TTL = 1.0  # seconds a choice is believed before the signer reads it again


class Certified(NamedTuple):
    """The organisation key's certificate of the chosen key, as ``server_keys`` holds it."""

    certificate: bytes
    certified_at: int


class ActiveSigningKey:
    """The server's choice of signing key, read from ``server_keys`` (module docstring)."""

    def __init__(
        self, store: Store, keys: SigningKeys, *, ttl: float = TTL, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.store, self.ring, self.ttl, self.clock = store, keyring_of(keys), ttl, clock
        self._current, self._read_at = self.ring.newest, float("-inf")
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ActiveSigningKey({self.ring!r}, current={self._current.version})"

    def current(self) -> ServerSigningKey:
        """The last choice read (the newest key before the first read)."""
        return self._current

    def stale(self) -> bool:
        """Whether the choice should be read again before signing (never for a ring of one)."""
        return len(self.ring) > 1 and self.clock() - self._read_at >= self.ttl

    def refresh(self) -> tuple[ServerSigningKey, Certified | None]:
        """Read the choice: the ring's active certified key and its certificate (None: no version
        of the ring is active, and the last choice is kept)."""
        try:
            with self.store.read() as s:
                key = active_key(s, self.ring)
                row = s.get(m.ServerKey, key.version) if key is not None else None
                certified = Certified(bytes(row.certificate), int(row.certified_at)) if row is not None else None
        except (VaultError, SQLAlchemyError) as error:
            LOGGER.warning("server key choice not read: %s", type(error).__name__)
            return self._current, None
        with self._lock:
            if key is not None and key is not self._current:
                LOGGER.info("signing with server key version %d", key.version)
                self._current = key
            self._read_at = self.clock()
            return self._current, certified
