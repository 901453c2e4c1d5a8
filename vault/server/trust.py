"""The server's trust in a caller's certificate: the organisation key it pinned, and the chain.

``caller_read`` (``vault/authority/policies_caller.py``) asks its ``IdentityChecks`` for two
things before the server believes the signing key an engineer's row names: that the vault's
current organisation key is trusted, and that the engineer's certificate verifies under it.
A row's public key alone proves nothing: a DBA can write one.

``PinnedOrganisation`` trusts the organisation key it was given (``--org-key`` later: what
engineers pin), or else the one it reads first (trust on first use, per process: it then
follows the vault's signed chain of organisation keys forward, as a keyholder does, and a
key the chain does not lead to is refused). The checks are ``vault/authority/certificates.py``'s,
the ones the keyholder makes.
"""

from __future__ import annotations

import threading

from sqlalchemy import select
from sqlalchemy.orm import Session

from vault.authority.certificates import trusted_org_key, verify_certificate
from vault.authority.checkout_reads import org_chain_rows
from vault.errors import UntrustedRecord
from vault.storage import rows
from vault.storage.rows import INFO, EngineerRecord

_TRUSTED = "credvault.server.organisation"  # Session.info: (vault id, organisation key) checked in this unit


class PinnedOrganisation:
    """``IdentityChecks`` under a pinned organisation key (``None``: pinned at first use)."""

    def __init__(self, pinned: bytes | None = None) -> None:
        self._pinned = pinned
        self._lock = threading.Lock()

    @property
    def pinned(self) -> bytes | None:
        return self._pinned

    def organisation_key(self, s: Session, current: bytes) -> None:
        with self._lock:
            if self._pinned is None:
                self._pinned = current
            pinned = self._pinned
        conn = rows.connection(s)
        vault_id = conn.execute(select(INFO.c.vault_id).where(INFO.c.id == 1)).scalar_one()
        trusted_org_key(vault_id, pinned, current, org_chain_rows(conn, pinned, current))
        with self._lock:
            if self._pinned == pinned:
                self._pinned = current  # the signed chain leads here: later requests start from it
        s.info[_TRUSTED] = (vault_id, current)

    def certificate(self, s: Session, row: EngineerRecord) -> None:
        trusted = s.info.get(_TRUSTED)
        if trusted is None:
            raise UntrustedRecord("the organisation key was not checked before a certificate")
        verify_certificate(trusted[0], trusted[1], row)
