"""The vault settings (versions kept per secret, cryptoperiod), verified where they are used.

The one definition of what the settings' signature covers (docs/format.md, "Signed
settings") and of how the stored values apply: bounded where used; settings that do not
verify read as their defaults, bounded so that a forged row can only keep *more* versions
(``retention >= 10``) and warn *sooner* (``cryptoperiod <= 365``). ``PolicyCheck``
(service/policies.py) and the status report (keyholder/reports.py) both apply them so.
"""

from __future__ import annotations

from dataclasses import dataclass

from vault.crypto import signing

DEFAULT_RETENTION, MIN_RETENTION, MAX_RETENTION = 10, 1, 1000
DEFAULT_CRYPTOPERIOD, MIN_CRYPTOPERIOD, MAX_CRYPTOPERIOD = 365, 1, 3650


def settings_fields(
    vault_id: bytes, retention: int, cryptoperiod: int, signed_by: int | None, signed_at: int | None
) -> tuple[signing.ContextItem, ...]:
    """What the settings' signature covers."""
    return (vault_id, int(retention), int(cryptoperiod), int(signed_by or 0), int(signed_at or 0))


def clamp(value: object, low: int, high: int, default: int) -> int:
    return min(max(value, low), high) if isinstance(value, int) and not isinstance(value, bool) else default


@dataclass(frozen=True)
class Settings:
    """The settings as stored, and whether their signature verified."""

    retention_stored: object
    cryptoperiod_stored: object
    signed: bool
    ever_signed: bool  # a signature is stored (valid or not)

    @property
    def retention(self) -> int:
        """Versions kept per secret: bounded; at least the default unless an admin signed it."""
        stored = clamp(self.retention_stored, MIN_RETENTION, MAX_RETENTION, DEFAULT_RETENTION)
        return stored if self.signed else max(stored, DEFAULT_RETENTION)

    @property
    def cryptoperiod(self) -> int:
        """Days before a key is reported old: bounded; at most the default unless an admin signed it."""
        stored = clamp(self.cryptoperiod_stored, MIN_CRYPTOPERIOD, MAX_CRYPTOPERIOD, DEFAULT_CRYPTOPERIOD)
        return stored if self.signed else min(stored, DEFAULT_CRYPTOPERIOD)

    def warnings(self) -> list[str]:
        """For ``status``: settings an admin set that no longer verify (so do not apply)."""
        if self.signed:
            return []
        stored = (self.retention_stored, self.cryptoperiod_stored)
        if not self.ever_signed and stored == (DEFAULT_RETENTION, DEFAULT_CRYPTOPERIOD):
            return []  # never set: the defaults apply, as they always did
        return [
            f"the vault settings do not verify, so {self.retention} versions are kept per secret and keys are "
            f"reported old after {self.cryptoperiod} days: set them again with `credvault settings`"
        ]
