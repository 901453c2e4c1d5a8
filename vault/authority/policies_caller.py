"""Who calls the policies', purges' and subjects' authorities, checked before anything else.

``CallerGate.authorise`` reads the caller (``CALLER``: the vault's identity, the engineer
and, for a client-scoped request, their grants for it) and refuses, before any row of the
target is read: an unknown engineer (``Locked``), a certificate that does not verify, an
account not active (``AccessDenied``), a key generation that is not the one the request
names (``Locked``), and, for an admin operation, an engineer who is not an admin; for an
engineer's client-scoped read, one without the head of a grant ledger for the client.

``checked_caller`` checks the types and ranges of a request's caller before any SQL;
``org_chain`` reads the signed organisation keys from the pin the request names, for the
keyholder to follow to the current key.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from sqlalchemy.orm import Session

from vault import validation
from vault.authority.checkout_reads import ACTIVE, CALLER, CallerRead, note_vault_id, org_chain_rows
from vault.authority.requests import Caller, OrgKeyRow
from vault.errors import AccessDenied, InvalidInput, Locked
from vault.storage import rows
from vault.storage.rows import ROLE_ADMIN, EngineerRecord, EngineerRow, GrantRecord

KEY_BYTES = 32  # an organisation public key


class IdentityChecks(Protocol):
    """The checks of the caller's own rows: signatures and public keys only."""

    def organisation_key(self, s: Session, current: bytes) -> None:
        """The vault's current organisation key, as read in this unit of work."""

    def certificate(self, s: Session, row: EngineerRecord) -> None:
        """The engineer's certificate verifies under the organisation key, else UntrustedRecord."""


class CallerChecks(IdentityChecks, Protocol):
    """The trust checks the authority makes on the caller: signatures and public keys only."""

    def first_valid_grant(
        self, s: Session, grants: Sequence[GrantRecord], engineer: EngineerRecord, signers: Sequence[EngineerRow | None]
    ) -> int:
        """The index of the grant that counts (the ledger head), else NotFound / GrantExpired."""


def checked_caller(caller: object) -> Caller:
    """``caller`` if it is a ``Caller`` of positive id and a key generation, else InvalidInput."""
    if not isinstance(caller, Caller):
        raise InvalidInput("the request names no caller")
    validation.number("engineer id", caller.engineer_id, 1)
    validation.number("key generation", caller.key_generation, 0)
    return caller


def checked_pin(pin: object) -> bytes:
    if not isinstance(pin, bytes) or len(pin) != KEY_BYTES:
        raise InvalidInput(f"the request's organisation key is not a {KEY_BYTES}-byte value")
    return pin


def org_chain(s: Session, pinned: bytes, current: bytes) -> tuple[OrgKeyRow, ...]:
    """The organisation keys from the pinned one on (empty when the pin is the current key)."""
    return org_chain_rows(rows.connection(s), pinned, current)


def caller_read(s: Session, checks: IdentityChecks, caller: Caller, client_id: int = 0) -> CallerRead:
    """The caller's rows (with their grant ledger for ``client_id``, 0 for none, unchecked:
    the caller's authorisation checks the head): an engineer of this vault, certified under
    its current organisation key, active, of the key generation the request names; else
    Locked / AccessDenied / UntrustedRecord. One statement, which reads nothing of a target."""
    conn = rows.connection(s)
    sqlite = conn.dialect.name == "sqlite"
    found = CALLER[sqlite].all(conn, {"me": caller.engineer_id, "client": client_id})
    if not found:
        raise Locked("the acting engineer no longer exists in this vault")
    read = CallerRead(found, sqlite)
    me = read.me
    note_vault_id(s, read)  # read with the organisation key: its check reads it no more
    checks.organisation_key(s, read.org_signing_public)
    checks.certificate(s, me)
    if me.status != ACTIVE:
        raise AccessDenied(f"the account of {me.name!r} is {me.status}", hint="ask an admin")
    if me.key_generation != caller.key_generation:
        raise Locked(
            f"the keys of {me.name!r} have changed since this session was unlocked",
            hint="run `credvault unlock` again",
        )
    return read


class CallerGate:
    """Authorises the caller of one request, first thing in its unit of work."""

    def __init__(self, checks: CallerChecks) -> None:
        self.checks = checks

    def authorise(self, s: Session, caller: Caller, *, admin: bool, client_id: int | None = None) -> CallerRead:
        """The caller, checked: an active, certified engineer of the key generation named;
        ``admin``: an admin; else, with ``client_id``, an admin or the holder of the head of
        their grant ledger for it. Nothing of any target has been read when this refuses."""
        read = caller_read(s, self.checks, caller, client_id or 0)
        me = read.me
        if me.role != ROLE_ADMIN:
            if admin:
                raise AccessDenied(f"{me.name!r} is not an admin", hint="ask an admin to do this")
            if client_id is not None:
                self.checks.first_valid_grant(s, read.grants, me, read.signers)
        return read
