"""The values that cross between the keyholder and the authority, for the vault settings.

The vault's two settings (versions kept per secret, the cryptoperiod in days) are one row
signed by an admin (docs/format.md, "Signed policies and settings"). As for the policies
(``policy_requests.py``): frozen values of ints, bytes, strings and plain rows, so that
they can cross a network later.

* ``settings-get``: the stored settings as stored (``SettingsRow``: unverified), the row of
  the engineer who signed them and the caller's own row. The keyholder decides whether
  they verify (``vault/keyholder/settings.py``); the authority never does.
* ``settings-set``: the request carries the new settings the keyholder signed (both values,
  the signer, the time, the signature), the row it read and verified before signing
  (``replaces``: stored only if the row is still that one, else ``ConcurrentChange`` and
  the keyholder reads and signs again), and the name of the setting that changed (the
  one the ``settings`` event names, with its new value, in its public part).

Also here, shared by both halves: the bounds and defaults of each setting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from vault.authority.requests import Caller, OrgKeyRow
from vault.crypto.signing import ContextItem
from vault.storage.rows import EngineerRow

GET, SET = "settings-get", "settings-set"
SETTINGS = "settings"  # the event of a change
RETENTION, CRYPTOPERIOD = "retention_versions", "cryptoperiod_days"
SETTING_NAMES = (RETENTION, CRYPTOPERIOD)
DEFAULT_RETENTION, MIN_RETENTION, MAX_RETENTION = 10, 1, 1000
DEFAULT_CRYPTOPERIOD, MIN_CRYPTOPERIOD, MAX_CRYPTOPERIOD = 365, 1, 3650
CHANGED_SINCE_READ = "the vault settings changed since they were read: nothing was stored"


class SettingsRow(NamedTuple):
    """The vault settings as stored (unverified) or as signed by a keyholder."""

    retention_versions: int
    cryptoperiod_days: int
    signed_by: int | None
    signed_at: int | None
    signature: bytes | None


def settings_fields(vault_id: bytes, row: SettingsRow) -> tuple[ContextItem, ...]:
    """What a settings signature covers (docs/format.md, "Signed policies and settings"): the one
    definition, here beside the row so that the keyholder signs and verifies it and an authority
    may check a signature over it with public keys only."""
    return (
        vault_id,
        int(row.retention_versions),
        int(row.cryptoperiod_days),
        int(row.signed_by or 0),
        int(row.signed_at or 0),
    )


def is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def in_bounds(retention_versions: object, cryptoperiod_days: object) -> bool:
    """Whether both settings are within the bounds a signed setting may have."""
    return (
        is_count(retention_versions)
        and is_count(cryptoperiod_days)
        and MIN_RETENTION <= retention_versions <= MAX_RETENTION  # type: ignore[operator]
        and MIN_CRYPTOPERIOD <= cryptoperiod_days <= MAX_CRYPTOPERIOD  # type: ignore[operator]
    )


@dataclass(frozen=True)
class SettingsRequest:
    """``settings-get`` (any active engineer) or ``settings-set`` (an admin: ``signed``,
    ``replaces`` and ``changed`` given)."""

    action: str
    caller: Caller
    org_pin: bytes
    signed: SettingsRow | None = None
    replaces: SettingsRow | None = None
    changed: str | None = None


@dataclass(frozen=True, repr=False)
class SettingsRows:
    """What the authority read or wrote (``seq`` set): the settings as stored, their signer's
    row (None: no such engineer, or never signed), and the caller's own row."""

    seq: int  # the event's number; 0 for a read
    vault_id: bytes
    org_signing_public: bytes
    org_chain: tuple[OrgKeyRow, ...]
    me: EngineerRow
    stored: SettingsRow
    signer: EngineerRow | None

    def __repr__(self) -> str:
        return f"SettingsRows(seq={self.seq})"
