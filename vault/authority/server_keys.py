"""The team server's signing keys, where the database is: store a key an admin certified.

docs/format.md §5 ("Server signing keys"). An admin's keyholder certifies a server key's public
half with the organisation signing key (``keyholder/serverkeys.py``) and sends the row in a
``ServerKeyRequest``; ``ServerKeyAuthority.certify`` stores it in one unit of work:

* every field checked for its type and size (before any SQL);
* the caller through ``CallerGate``: present, certified, active, an admin;
* the certificate checked under the vault's current organisation key (public keys only:
  a row that does not verify is refused here, and would be ignored by every verifier);
* the version the next one (versions are contiguous from 1, never reused), the key not one
  the vault certified before; the key is stored ``active`` and the version before it, if
  any, marked ``retired`` (the server signs new events with the active one);
* one ``server-key-certify`` event, naming the version and the public key; or, when the key
  file was lost (``recover``), one ``server-key-recover`` event, the same but appended in
  format 2 and signed by the admin, since no server key is left to sign it.

The authority never trusts the row itself: every verifier checks the certificate again
under the organisation key it reached from its own pin.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from vault.authority.policies_caller import CallerChecks, CallerGate, checked_caller
from vault.authority.requests import Caller
from vault.crypto import serverkey
from vault.errors import AlreadyExists, InvalidInput, UntrustedRecord
from vault.storage import models as m
from vault.storage.engine import Store

CERTIFY = "server-key-certify"  # the event of a certification
RECOVER = "server-key-recover"  # the same after the key file was lost: appended in format 2 (journal.LOCAL_ACTIONS)
ACTIVE, RETIRED, REVOKED = "active", "retired", "revoked"
_KEY_BYTES, _SIGNATURE_BYTES, _MAX_VERSION = 32, 64, 2**31 - 1


class ServerKeyRow(NamedTuple):
    """A server key as certified (and as stored, with its ``state``)."""

    version: int
    signing_public: bytes
    certified_at: int
    certificate: bytes
    state: str = ACTIVE


@dataclass(frozen=True)
class ServerKeyRequest:
    """``server-key-certify``: an admin's certified server key; with ``recover``, a
    ``server-key-recover`` (the key file lost: no server key can sign the event)."""

    caller: Caller
    key: ServerKeyRow
    recover: bool = False


class Recorder(Protocol):
    """Appends an event in the caller's unit of work (the Journal)."""

    def append(
        self, s: Session, action: str, *, client_id: int | None, secret_id: int | None, public: dict[str, Any] | None
    ) -> int:
        """The new event's seq."""


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def checked_request(request: object) -> ServerKeyRequest:
    """``request`` if every field is of its type and size, else InvalidInput (before any SQL)."""
    if not isinstance(request, ServerKeyRequest) or not isinstance(request.key, ServerKeyRow):
        raise InvalidInput("the request carries no server key")
    checked_caller(request.caller)
    key = request.key
    if not _is_int(key.version) or not 1 <= key.version <= _MAX_VERSION:
        raise InvalidInput("a server key version is a positive number")
    if not _is_int(key.certified_at) or key.certified_at < 0:
        raise InvalidInput("a server key's certification time is a number of seconds")
    if not isinstance(key.signing_public, bytes) or len(key.signing_public) != _KEY_BYTES:
        raise InvalidInput("a server key is a 32-byte Ed25519 public key")
    if not isinstance(key.certificate, bytes) or len(key.certificate) != _SIGNATURE_BYTES:
        raise InvalidInput("a server key's certificate is a signature")
    if key.state != ACTIVE:
        raise InvalidInput("a server key is certified active")
    if not isinstance(request.recover, bool):
        raise InvalidInput("a server key's recovery is yes or no")
    return request


class ServerKeyAuthority:
    """Stores a certified server key, one unit of work per request (module docstring)."""

    def __init__(self, store: Store, checks: CallerChecks, recorder: Recorder) -> None:
        self.store, self.gate, self.recorder = store, CallerGate(checks), recorder

    def __repr__(self) -> str:
        return "ServerKeyAuthority()"

    def certify(self, request: ServerKeyRequest) -> int:
        """Store the certified key as the active one; the ``server-key-certify`` event's seq."""
        key = checked_request(request).key
        with self.store.transaction() as s:
            caller = self.gate.authorise(s, request.caller, admin=True)
            try:
                serverkey.verify_certificate(
                    caller.org_signing_public,
                    key.certificate,
                    caller.vault_id,
                    key.version,
                    key.signing_public,
                    key.certified_at,
                )
            except UntrustedRecord:
                raise InvalidInput("the server key's certificate does not verify under the organisation key") from None
            newest = s.scalar(select(func.max(m.ServerKey.version))) or 0
            if request.recover and not newest:
                raise InvalidInput("the vault has no server key to recover: certify its first one")
            if key.version != newest + 1:
                raise InvalidInput(f"server key version {newest + 1} comes next: nothing was stored")
            if s.scalar(select(m.ServerKey.version).where(m.ServerKey.signing_public == key.signing_public)):
                raise AlreadyExists("this server key is certified already")
            public = {"version": key.version, "signing_public": key.signing_public.hex()}
            # the event first: the embedded journal appends nothing once the vault has a server key
            action = RECOVER if request.recover else CERTIFY
            seq = self.recorder.append(s, action, client_id=None, secret_id=None, public=public)
            s.execute(update(m.ServerKey).where(m.ServerKey.state == ACTIVE).values(state=RETIRED))
            s.add(m.ServerKey(**key._asdict()))
            return seq


def stored_rows(s: Session) -> list[ServerKeyRow]:
    """Every server key as stored (unverified), oldest first."""
    return [
        ServerKeyRow(k.version, k.signing_public, k.certified_at, k.certificate, k.state)
        for k in s.scalars(select(m.ServerKey).order_by(m.ServerKey.version))
    ]


def certified_key(s: Session, version: int, vault_id: bytes, org_public: bytes) -> bytes | None:
    """The signing key of server key ``version`` if its certificate verifies under
    ``org_public`` and its row is not revoked, else None. A retired key still vouches for
    what it signed while it was the server's (a hold made before a rotation blocks until its
    end), as ``audit verify`` believes its events; ``state`` is unsigned, so a writer can only
    make a key count for less (revoked), which a writer who deletes the hold row does anyway."""
    row = s.get(m.ServerKey, version)
    if row is None or row.state not in (ACTIVE, RETIRED):
        return None
    try:
        serverkey.verify_certificate(
            org_public, row.certificate, vault_id, version, row.signing_public, row.certified_at
        )
    except UntrustedRecord:
        return None
    return bytes(row.signing_public)
