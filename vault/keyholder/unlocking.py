"""Unlocking, where the keys are: open the key record the authority hands over, follow the
organisation key chain from the key it pins, and record the unlock once the session is kept.

``Unlocking`` asks the authority for an engineer's key record by name (no session yet),
opens it with the passphrase typed (a wrong one is recorded by the authority as an
unsigned ``unlock-failed`` event), and trusts the organisation key the vault names only if
the signed chain leads to it from the key the record pins (and from the newest key this
machine verified before, if known). If the organisation key was rotated since, the record
is re-locked to pin the current one (same Argon2 parameters); the authority stores it with
the unlock's event only if the stored record is still the one opened. The session itself
(``UnlockedSession``) is the service's: this module returns what it is made of.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from vault.authority.engineer_requests import (
    UNLOCK_FAILED,
    EngineerAnswer,
    KeyRecordRequest,
    KeyRecordRows,
    UnlockRequest,
)
from vault.authority.requests import Caller, OrgKeyRow
from vault.crypto import keyrecord
from vault.errors import UntrustedRecord, WrongPassphrase
from vault.keyholder.responses import trusted_org_key
from vault.storage.rows import EngineerRow


class UnlockTransport(Protocol):
    def key_record(self, request: KeyRecordRequest) -> KeyRecordRows: ...
    def unlock_failed(self, request: KeyRecordRequest) -> int: ...
    def unlock(self, request: UnlockRequest) -> EngineerAnswer: ...


@dataclass(frozen=True, repr=False)
class OpenedRecord:
    """An engineer's opened key record, re-pinned if the organisation key was rotated since."""

    vault_id: bytes
    engineer_id: int
    name: str
    key_generation: int
    bundle: keyrecord.PrivateBundle  # pinning the current organisation key
    record: bytes  # the record as stored
    repinned: bytes | None  # the record re-locked to pin the current key, to store
    head: tuple[int, bytes]  # the current organisation key: (version, public key)
    engineer: EngineerRow  # as the authority answered: verified by the caller once the session is made

    def __repr__(self) -> str:
        return f"OpenedRecord(engineer={self.engineer_id}, <redacted>)"


def _chain_from(pinned: bytes, keys: tuple[OrgKeyRow, ...]) -> tuple[OrgKeyRow, ...]:
    start = next((i for i, key in enumerate(keys) if key.public == pinned), None)
    return () if start is None else keys[start:]


class Unlocking:
    """Opens an engineer's key record and records the unlock, through the transport."""

    def __init__(self, transport: UnlockTransport) -> None:
        self.transport = transport

    def __repr__(self) -> str:
        return "Unlocking()"

    def open(self, name: str, passphrase: str, seen: tuple[int, bytes] | None = None) -> OpenedRecord:
        """The key record of ``name`` opened with ``passphrase`` (WrongPassphrase, recorded, if
        it does not open) and the organisation key trusted from its pin (and from ``seen``)."""
        rows = self.transport.key_record(KeyRecordRequest(name))
        engineer = rows.engineer
        if engineer.name != name:
            raise UntrustedRecord(f"the authority answered with another engineer's record than {name!r}")
        try:
            bundle = keyrecord.open_record(
                rows.key_record, passphrase, rows.vault_id, engineer.id, engineer.key_generation
            )
        except WrongPassphrase:
            self.transport.unlock_failed(KeyRecordRequest(name, UNLOCK_FAILED))
            raise
        current, keys = rows.org_signing_public, rows.org_keys
        if seen is not None:
            try:
                trusted_org_key(rows.vault_id, seen[1], current, _chain_from(seen[1], keys))
            except UntrustedRecord:
                raise UntrustedRecord(
                    f"the vault's organisation key chain does not reach version {seen[0]}, which this machine "
                    "verified before: it was cut back or replaced (a holder of an old organisation key?)",
                    hint="do not use this vault; tell your admins. If the vault was restored from an older "
                    "backup on purpose, delete this machine's file orgkey-<vault id>.json in the credvault "
                    "config folder",
                ) from None
        pinned = bundle.org_signing_public
        trusted_org_key(rows.vault_id, pinned, current, _chain_from(pinned, keys))
        version = next((key.version for key in keys if key.public == current), 0)
        repinned = None
        if current != pinned:
            bundle = keyrecord.PrivateBundle(bundle.sealing_private, bundle.signing_seed, current)
            params = keyrecord.record_params(rows.key_record)
            repinned = keyrecord.lock_record(
                bundle, passphrase, rows.vault_id, engineer.id, engineer.key_generation, params
            )
        return OpenedRecord(
            rows.vault_id,
            engineer.id,
            engineer.name,
            engineer.key_generation,
            bundle,
            rows.key_record,
            repinned,
            (version, current),
            engineer,
        )

    def record(self, opened: OpenedRecord, ttl_seconds: int) -> EngineerAnswer:
        """The unlock's event, once the session is kept (a re-pinned record stored with it); the
        caller's row is then verified by the caller (``EngineerKeyholder.verified_me``)."""
        request = UnlockRequest(
            Caller(opened.engineer_id, opened.key_generation),
            opened.bundle.org_signing_public,
            ttl_seconds,
            opened.record if opened.repinned is not None else None,
            opened.repinned,
        )
        return self.transport.unlock(request)
