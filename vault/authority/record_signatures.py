"""Two signed records a new version depends on, verified with public keys only.

A new version of a secret goes under the client's current key and prunes old versions by
the vault's retention. Both are signed records: the client-key version's record (an
admin's signature over ``client_key_fields``) and the vault settings (an admin's signature
over ``settings_fields``). The keyholder verifies them in-process (``keyholder/trust.py``,
``keyholder/settings.py``); the team server, which holds no session, verifies them with the
same definitions, which therefore live here, below both (as ``certificates.py``,
``grant_signatures.py`` and ``policy.py`` do for certificates, grants and policies):

* ``client_key_fields`` — what a client-key record's signature covers (docs/format.md);
* ``newest_signed_key`` — the client's newest key version whose record verifies under
  ``signer`` (planted rows are passed over), and ``current_key_version``: that version, which
  must also be what ``clients.current_key_version`` says and must not be destroyed;
* ``verified_settings`` — the settings as they apply given the stored row: as stored if an
  active admin signed them within bounds, else the bounded defaults (a forged row can only
  keep more versions and warn sooner).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import NamedTuple, Protocol

from vault.authority.settings_requests import (
    DEFAULT_CRYPTOPERIOD,
    DEFAULT_RETENTION,
    MAX_CRYPTOPERIOD,
    MAX_RETENTION,
    MIN_CRYPTOPERIOD,
    MIN_RETENTION,
    SettingsRow,
    in_bounds,
    is_count,
    settings_fields,
)
from vault.crypto import signing
from vault.crypto.labels import LABEL_SIG_CLIENT_KEY, LABEL_SIG_SETTINGS
from vault.errors import IntegrityError, UntrustedRecord
from vault.storage.rows import EngineerRecord

DESTROYED = "destroyed"


class ClientKeyRecord(Protocol):
    @property
    def client_id(self) -> int: ...
    @property
    def version(self) -> int: ...
    @property
    def fingerprint(self) -> bytes: ...
    @property
    def signed_at(self) -> int: ...


class SignedClientKey(ClientKeyRecord, Protocol):
    @property
    def signed_by(self) -> int | None: ...
    @property
    def signature(self) -> bytes | None: ...
    @property
    def state(self) -> str: ...


def client_key_fields(vault_id: bytes, ck: ClientKeyRecord) -> tuple[signing.ContextItem, ...]:
    """What a client-key record's signature covers: one definition, to sign and to verify."""
    return (vault_id, ck.client_id, ck.version, ck.fingerprint, ck.signed_at)


def newest_signed_key(
    vault_id: bytes, records: Iterable[SignedClientKey], signer: Callable[[int], EngineerRecord]
) -> SignedClientKey | None:
    """The first of ``records`` (newest first) whose signature verifies under ``signer(id)`` (the
    row of the admin it names, checked as an active admin, else UntrustedRecord)."""
    for ck in records:
        try:
            if ck.signature is None:
                continue
            admin = signer(ck.signed_by or 0)
            if admin.signing_public is None:
                continue
            signing.verify(
                admin.signing_public,
                ck.signature,
                LABEL_SIG_CLIENT_KEY,
                *client_key_fields(vault_id, ck),
                what=f"client key version {ck.version}",
            )
        except UntrustedRecord:
            continue
        return ck
    return None


def current_key_version(client_id: int, stored_current: int, newest: SignedClientKey | None) -> int:
    """The version new data goes under: the newest signed one, which must be what the clients
    row says and not destroyed; else IntegrityError."""
    if newest is None or newest.version != stored_current or newest.state == DESTROYED:
        raise IntegrityError(
            f"the current key of client #{client_id} is not its newest admin-signed key version",
            hint="the database was changed outside credvault; an admin can run `credvault rotate client SLUG`",
        )
    return newest.version


class Settings(NamedTuple):
    """The settings as they apply: verified, or the bounded defaults (``signed`` False)."""

    retention_versions: int
    cryptoperiod_days: int
    signed: bool


def _clamp(value: object, low: int, high: int, default: int) -> int:
    return min(max(value, low), high) if is_count(value) else default  # type: ignore[call-overload]


def verified_settings(vault_id: bytes, row: SettingsRow, signer: Callable[[int], EngineerRecord]) -> Settings:
    """The settings that apply given the stored ``row``: as stored if signed by ``signer(id)``
    (the row of the engineer it names, checked as an active admin, else UntrustedRecord) and
    within bounds; else the defaults, bounded by the row only towards more versions kept and
    an earlier warning. The one definition: the keyholder's and the server's checks call it."""
    signed = False
    if row.signature is not None and in_bounds(row.retention_versions, row.cryptoperiod_days):
        try:
            admin = signer(row.signed_by or 0)
            if admin.signing_public is None:
                raise UntrustedRecord("the settings' signer has no signing key")
            fields = settings_fields(vault_id, row)
            signing.verify(admin.signing_public, row.signature, LABEL_SIG_SETTINGS, *fields, what="the vault settings")
            signed = True
        except UntrustedRecord:
            signed = False
    retention = _clamp(row.retention_versions, MIN_RETENTION, MAX_RETENTION, DEFAULT_RETENTION)
    cryptoperiod = _clamp(row.cryptoperiod_days, MIN_CRYPTOPERIOD, MAX_CRYPTOPERIOD, DEFAULT_CRYPTOPERIOD)
    if signed:
        return Settings(retention, cryptoperiod, True)
    return Settings(max(retention, DEFAULT_RETENTION), min(cryptoperiod, DEFAULT_CRYPTOPERIOD), False)
