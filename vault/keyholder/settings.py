"""The vault settings, where the engineer's keys are: what their signature covers, whether a
stored row verifies, and the signing of a change.

The settings (versions kept per secret, days before a key is reported old) decide how much
history a check-in destroys and when ``status`` warns. Stored as a plain row, any database
writer could set the retention to 1 (and prune every old version at the next check-in) or
the cryptoperiod to a century (and silence every old-key warning); so the row carries an
admin's Ed25519 signature over the vault id, both values, the signer and the time
(``settings_fields``; docs/format.md, "Signed policies and settings"), and every reader
verifies it (``verified_settings``, in ``authority/record_signatures.py``: the server's too):
the service's ``PolicyCheck`` for the pruning and
``status`` (its signer checked by the Vault's trust), and ``SettingsKeyholder`` for the rows
the settings' authority answers (its signer checked under the pinned organisation key).

A row whose signature, signer (an active admin, certified) or bounds do not verify reads as
the defaults, bounded so that a forged row can only keep *more* versions (at least 10) and
warn *sooner* (at most 365 days).

Limit: a signature does not say it is the newest. A DBA who kept an older row an admin
signed (retention 2, later set back to 10) can write it back, and it verifies: the
``settings`` events say which was signed last (``audit verify`` and the events show it).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Protocol

from vault.authority.record_signatures import Settings, verified_settings
from vault.authority.requests import Caller
from vault.authority.settings_requests import (
    CRYPTOPERIOD,
    DEFAULT_CRYPTOPERIOD,
    DEFAULT_RETENTION,
    GET,
    MAX_CRYPTOPERIOD,
    MAX_RETENTION,
    MIN_CRYPTOPERIOD,
    MIN_RETENTION,
    RETENTION,
    SET,
    SETTING_NAMES,
    SettingsRequest,
    SettingsRow,
    SettingsRows,
    is_count,
    settings_fields,
)
from vault.crypto.labels import LABEL_SIG_SETTINGS
from vault.errors import InvalidInput, UntrustedRecord
from vault.keyholder.policies import SigningKeys, verified_caller
from vault.keyholder.responses import ResponseChecks

HINTS = {
    RETENTION: "keep between 1 and 1000 versions",
    CRYPTOPERIOD: "use between 1 and 3650 days",
}


def signed_settings(
    sign: Callable[..., bytes], vault_id: bytes, retention: int, cryptoperiod: int, signer_id: int, at: int
) -> SettingsRow:
    """Both settings signed by ``sign`` (the acting admin's key) as ``signer_id`` at ``at``."""
    row = SettingsRow(retention, cryptoperiod, signer_id, at, None)
    return row._replace(signature=sign(LABEL_SIG_SETTINGS, *settings_fields(vault_id, row)))


def applies(checks: ResponseChecks, answer: SettingsRows) -> Settings:
    """The settings that apply given an authority's answer (the signer's row it carries)."""
    return verified_settings(checks.vault_id, answer.stored, lambda signer_id: checks.admin(answer.signer, signer_id))


def settings_warnings(stored: SettingsRow, applied: Settings) -> list[str]:
    """For ``status``: settings an admin set that no longer verify (so do not apply)."""
    if applied.signed:
        return []
    if stored.signature is None and (stored.retention_versions, stored.cryptoperiod_days) == (
        DEFAULT_RETENTION,
        DEFAULT_CRYPTOPERIOD,
    ):
        return []  # never set: the defaults apply, as they always did
    return [
        f"the vault settings do not verify, so {applied.retention_versions} versions are kept per secret and "
        f"keys are reported old after {applied.cryptoperiod_days} days: set them again with `credvault settings`"
    ]


class SettingsTransport(Protocol):
    def read(self, request: SettingsRequest) -> SettingsRows: ...
    def write(self, request: SettingsRequest) -> SettingsRows: ...


class SettingsKeyholder:
    """Get and set of the vault settings for the acting engineer."""

    def __init__(self, transport: SettingsTransport, keys: SigningKeys, clock: Callable[[], dt.datetime]) -> None:
        self.transport, self.keys, self.clock = transport, keys, clock

    def __repr__(self) -> str:
        return "SettingsKeyholder()"

    def get(self) -> Settings:
        """The settings as they apply (``signed`` False: the stored row does not verify)."""
        answer = self.transport.read(self._request(GET))
        return applies(self._checks(answer, admin=False), answer)

    def set(self, changed: str, value: int) -> Settings:
        """Sign ``changed`` = ``value`` with the other setting as it applies now (an unverified
        value is never signed as it stands) and send it; the answer must be what was signed."""
        if changed not in SETTING_NAMES:
            raise InvalidInput("no such setting")
        bounds = (MIN_RETENTION, MAX_RETENTION) if changed == RETENTION else (MIN_CRYPTOPERIOD, MAX_CRYPTOPERIOD)
        if not is_count(value) or not bounds[0] <= value <= bounds[1]:
            raise InvalidInput(f"bad {changed.split('_')[0]}", hint=HINTS[changed])
        read = self.transport.read(self._request(GET))
        current = applies(self._checks(read, admin=True), read)
        values = {**current._asdict(), changed: value}
        at = int(self.clock().timestamp())
        new = signed_settings(self.keys.sign, read.vault_id, values[RETENTION], values[CRYPTOPERIOD], read.me.id, at)
        me = self.keys.session()
        request = SettingsRequest(
            SET, Caller(me.engineer_id, me.key_generation), me.org_signing_public, new, read.stored, changed
        )
        written = self.transport.write(request)
        checks = self._checks(written, admin=True)
        if written.stored != new:
            raise UntrustedRecord("the authority's answer is not the settings this keyholder signed")
        applied = applies(checks, written)
        if not applied.signed:
            raise UntrustedRecord("the settings stored do not verify under this admin's key")
        return applied

    def _request(self, action: str) -> SettingsRequest:
        me = self.keys.session()
        return SettingsRequest(action, Caller(me.engineer_id, me.key_generation), me.org_signing_public)

    def _checks(self, answer: SettingsRows, *, admin: bool) -> ResponseChecks:
        if not isinstance(answer, SettingsRows) or not isinstance(answer.stored, SettingsRow):
            raise UntrustedRecord("the authority's answer is not a settings answer")
        parts = (answer.vault_id, answer.org_signing_public, answer.org_chain, answer.me)
        return verified_caller(self.keys.session(), self.keys.sealing_public(), self.clock(), parts, admin=admin)


__all__ = [
    "Settings",
    "SettingsKeyholder",
    "applies",
    "settings_fields",
    "settings_warnings",
    "signed_settings",
    "verified_settings",
]
