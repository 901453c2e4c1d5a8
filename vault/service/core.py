"""The service core: the acting engineer, and every trust decision.

Every key-distribution record is verified here before it is used:
engineer certificates against the organisation signing key (the trust anchor pinned
in each engineer's key record), client-key versions and grants against the signing
key of an admin whose own certificate verifies. Unsealed keys are cached for the life
of this object only.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session

from vault.crypto import keyrecord, signing
from vault.crypto.serverkey import SigningKeys
from vault.errors import (
    InvalidInput,
    StoreUnavailable,
)
from vault.service.records import RootRotation
from vault.service.sessions import SessionStore
from vault.storage import models as m
from vault.storage.engine import Store
from vault.storage.rows import ACTIVE as ACTIVE
from vault.storage.rows import ENCRYPTION_LIMIT as ENCRYPTION_LIMIT
from vault.storage.rows import ENCRYPTION_WARNING as ENCRYPTION_WARNING
from vault.storage.rows import ROLE_ADMIN as ROLE_ADMIN
from vault.storage.rows import ROLE_ENGINEER as ROLE_ENGINEER
from vault.storage.rows import is_revoked as is_revoked

Clock = Callable[[], dt.datetime]


def check_share_policy(k: int, n: int) -> None:
    """Recovery shares: any k of n rebuild the root bundle (docs/format.md §6)."""
    if not 2 <= k <= n <= 16 or k > 9:
        raise InvalidInput(
            "bad recovery shares", hint="use --shares K-of-N with 2 <= K <= N <= 16 and K <= 9 (e.g. 3-of-5)"
        )


def share_policy_fields(s: Session, core: Core, key: m.OrgKey, k: int, n: int) -> tuple[signing.ContextItem, ...]:
    """What the k-of-n of the recovery shares is signed over (by the organisation key ``key``)."""
    return (core.vid(s), key.version, key.public, k, n)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def epoch(value: dt.datetime) -> int:
    return int(value.timestamp())


class Core:
    """What every part of the service shares: the store, the clock, the session store, the engineer's
    name, the vault's identity and the retry counters."""

    retries = 0  # transactions run again after a ConcurrentChange (retrying.py), over this vault's life
    _retry_depth = 0
    # On the team server's host: the server key that signs an admin's work in format 3
    # (authority/local_events.py); None elsewhere.
    server_key: SigningKeys | None = None
    # and the server layer of its key file (``vault.server.layer.ServerLayer``), which a purge there
    # removes from the data keys it fingerprints; None elsewhere
    host_layer: Any = None
    # and the server's own pipeline in this process (``vault.server.host.HostServer``): an admin's
    # checkouts, reveals, check-ins and breaks there go through it, recorded as the server records them
    host_server: Any = None

    def __init__(
        self,
        store: Store,
        *,
        sessions: SessionStore,
        engineer: str | None = None,
        clock: Clock = utcnow,
        kdf_params: keyrecord.Argon2Params | None = None,
    ) -> None:
        self.store = store
        self.sessions = sessions
        self.engineer_name = engineer
        self.clock = clock
        self._kdf_params = kdf_params
        self.cached_vault_id: bytes | None = None
        self.adoption_skipped: list[str] = []  # forged records the last admin removal or rotation did not adopt
        self.last_root_rotation: RootRotation | None = None  # its shares are printed once by the CLI

    @property
    def kdf_params(self) -> keyrecord.Argon2Params:
        """Argon2 parameters for new key records (the module default unless given)."""
        return self._kdf_params or keyrecord.DEFAULT_PARAMS

    def __repr__(self) -> str:
        url = self.store.engine.url.render_as_string(hide_password=True)
        return f"{type(self).__name__}(url={url!r}, engineer={self.engineer_name!r})"

    # -- vault identity -----------------------------------------------------------

    def info(self, s: Session) -> m.VaultInfo:
        """The vault_info row, read once per transaction (held in ``s.info``: the identity map is weak)."""
        info: m.VaultInfo | None = s.info.get("vault_info")
        if info is None:
            info = s.get(m.VaultInfo, 1)
            if info is None:
                raise StoreUnavailable(
                    "this database holds no vault",
                    hint="run `credvault init --admin NAME` first, or check --db / CREDVAULT_DB",
                )
            s.info["vault_info"] = info
        self.cached_vault_id = info.vault_id
        return info

    def vid(self, s: Session) -> bytes:
        """The vault id, read once per Vault object (it never changes)."""
        return self.cached_vault_id if self.cached_vault_id is not None else self.info(s).vault_id

    def vault_id(self) -> bytes:
        if self.cached_vault_id is None:
            with self.store.read() as s:  # a read: no write lock for a value that never changes
                self.info(s)
        assert self.cached_vault_id is not None
        return self.cached_vault_id
