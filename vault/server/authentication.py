"""Who sent a request: its RFC 9421 signature, checked under the engineer's certified key.

``Authenticator.authenticate`` runs ``vault.wire.httpsig.verify_request`` (the headers, the
``Content-Digest`` against the bytes received, the one profile, ``created`` within the window,
the signature, then the nonce) with the ``@authority`` of the server's configured public URL.
The ``keyid`` ``e:<engineer id>:<key generation>`` is resolved by the authority's own caller
check (``caller_read``: the engineer of this vault, certified under the organisation key the
server trusts, active, of that key generation current) in a read unit of its own; only then is
the row's signing key used. Whatever that check refuses (no such engineer, a certificate that
does not verify, a removed or disabled account, an old key generation) answers as one
``unknown-key``: an unauthenticated sender learns nothing of the roster. The server's log
names the refusal's class.

A row's public key alone proves nothing (a DBA can write one): ``PinnedOrganisation`` is the
``IdentityChecks`` ``caller_read`` asks. It trusts the organisation key it was given (what
engineers pin), or else the one it reads first (trust on first use, per process), and follows
the vault's signed chain of organisation keys forward from it, as a keyholder does; the
certificate must verify under the key the chain leads to. The checks are the keyholder's own
(``vault/authority/certificates.py``).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterable
from typing import NamedTuple
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from vault.authority.certificates import trusted_org_key, verify_certificate
from vault.authority.checkout_reads import CallerRead, org_chain_rows, unit_vault_id
from vault.authority.policies_caller import IdentityChecks, caller_read
from vault.authority.requests import Caller
from vault.errors import AccessDenied, Locked, NotFound, Unauthenticated, UntrustedRecord
from vault.storage import rows
from vault.storage.engine import Store
from vault.storage.rows import INFO, EngineerRecord
from vault.wire.httpsig import REPLAYED, NonceStore, Verified, verify_request
from vault.wire.nonces import DbNonceStore

LOGGER = logging.getLogger("credvault.server")
_TRUSTED = "credvault.server.organisation"  # Session.info: (vault id, organisation key) checked in this unit
KEYID = re.compile(r"e:([1-9][0-9]{0,17}):(0|[1-9][0-9]{0,8})")


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
        vault_id = unit_vault_id(s)  # read with ``current`` by the unit's caller read, else read here
        if vault_id is None:
            vault_id = conn.execute(select(INFO.c.vault_id).where(INFO.c.id == 1)).scalar_one()
        trusted_org_key(vault_id, pinned, current, org_chain_rows(conn, pinned, current))
        with self._lock:
            if self._pinned == pinned:
                self._pinned = current  # the signed chain leads here: later requests start from it
        s.info[_TRUSTED] = (vault_id, current)

    def trusted(self, s: Session) -> tuple[bytes, bytes]:
        """(vault id, organisation key) as ``organisation_key`` checked them in this unit."""
        trusted = s.info.get(_TRUSTED)
        if trusted is None:
            raise UntrustedRecord("the organisation key was not checked before a certificate")
        return trusted  # type: ignore[no-any-return]

    def certificate(self, s: Session, row: EngineerRecord) -> None:
        vault_id, org = self.trusted(s)
        verify_certificate(vault_id, org, row)


class PendingNonce:
    """A verified request's nonce, to be remembered inside the operation's own write unit
    (docs/server.md §3: no extra commit on the hot path; a second in-flight copy waits on the
    key, then fails as ``replayed``). ``verify_request`` hands it here instead of storing it."""

    def __init__(self, nonces: NonceStore) -> None:
        self.nonces = nonces
        self.pair: tuple[str, str, int] | None = None

    def __repr__(self) -> str:
        return "PendingNonce()"

    def remember(self, keyid: str, nonce: str, created: int) -> bool:
        self.pair = (keyid, nonce, created)
        return True

    def within(self, unit: Session) -> None:
        """Store the nonce in ``unit`` (kept if it commits); ``Unauthenticated`` if it is a replay."""
        if self.pair is None:
            raise UntrustedRecord("no verified nonce to remember")
        if not isinstance(self.nonces, DbNonceStore) or not self.nonces.remember_in(unit, *self.pair):
            raise Unauthenticated(REPLAYED, hint="this nonce was already used; sign every request afresh")

    def now(self) -> None:
        """Store the nonce now, in the store's own way; ``Unauthenticated`` if it is a replay."""
        if self.pair is None:
            raise UntrustedRecord("no verified nonce to remember")
        if not self.nonces.remember(*self.pair):
            raise Unauthenticated(REPLAYED, hint="this nonce was already used; sign every request afresh")


class Authenticated(NamedTuple):
    """A verified request: its signature's facts and the caller's checked rows; ``nonce``: its
    nonce still to be remembered in the operation's unit (else it was remembered already)."""

    verified: Verified
    caller: CallerRead
    nonce: PendingNonce | None = None


def keyid_of(engineer_id: int, key_generation: int) -> str:
    return f"e:{engineer_id}:{key_generation}"


def public_authority(public_url: str) -> str:
    """The ``@authority`` requests must be signed for: the public URL's host[:port], lower case."""
    parts = urlsplit(public_url)
    if parts.scheme not in ("https", "http") or not parts.netloc or parts.path not in ("", "/"):
        raise ValueError("the public URL is https://HOST[:PORT] (http only on loopback)")
    return parts.netloc.lower()


class Authenticator:
    """Checks each request's signature under its engineer's certified signing key."""

    def __init__(
        self,
        store: Store,
        checks: IdentityChecks,
        nonces: NonceStore,
        public_url: str,
        clock: Callable[[], float],
    ) -> None:
        self.store, self.checks, self.nonces, self.clock = store, checks, nonces, clock
        self.authority = public_authority(public_url)

    def authenticate(
        self,
        method: str,
        path: str,
        headers: Iterable[tuple[str, str]],
        body: bytes,
        *,
        in_unit: bool = False,
        limit: Callable[[Session], None] | None = None,
    ) -> Authenticated:
        """The request's signer, or ``Locked`` with the refusal's code (``unsigned`` …).
        ``in_unit``: the operation writes, so a database nonce store's nonce is left for its
        unit (``Authenticated.nonce``); otherwise it is stored once the signature verified.
        ``limit``: the failed-authentication limit's check (``RateLimited``), run first in the
        read that then resolves the keyid (one read unit: no transaction of its own)."""
        found: list[CallerRead] = []
        pending = PendingNonce(self.nonces) if in_unit and isinstance(self.nonces, DbNonceStore) else None
        held = pending if pending is not None else PendingNonce(self.nonces)  # else: stored once the read closed
        with self.store.lookup() as s:  # SELECTs only: no transaction's round trips on PostgreSQL
            if limit is not None:
                limit(s)  # before anything of the request is checked, as before its own read

            def public_key_for(keyid: str) -> bytes | None:
                read = self._caller(s, keyid)
                if read is None:
                    return None
                found.append(read)
                return read.me.signing_public

            verified = verify_request(
                method, self.authority, path, list(headers), body, public_key_for, self.clock(), nonces=held
            )
        if pending is None:
            held.now()  # a nonce store's own short transaction: never while this read holds a connection
        return Authenticated(verified, found[-1], pending)

    def _caller(self, s: Session, keyid: str) -> CallerRead | None:
        match = KEYID.fullmatch(keyid)
        if match is None:
            return None
        caller = Caller(int(match.group(1)), int(match.group(2)))
        try:
            return caller_read(s, self.checks, caller)
        except (Locked, AccessDenied, NotFound, UntrustedRecord) as refusal:  # a damaged schema is not a refusal
            LOGGER.warning("a request's key was refused: %s", type(refusal).__name__)
            return None
