"""Client policies and vault settings: signed by an admin, verified where they are used.

A client's policy (reason required, exclusive, rotate after checkout, checkout length,
stale-after) and the vault's settings (versions kept per secret, cryptoperiod) decide
how much a checkout is watched and how much history a check-in destroys. Stored as
plain rows, any database writer could relax them; so each row carries an Ed25519
signature by an active admin over the vault id, the client id and every field
(docs/format.md, "Signed policies and settings"), checked on every use:

* a policy row that is missing, unsigned, or whose signature or signer fails reads as
  the **strict policy**: a reason required, exclusive, the password flagged for change
  after each checkout, a checkout of at most the default length. An admin re-signs it
  with ``set_policy`` (which starts from the policy as read, so from the strict one);
* settings that fail verification (or are signed but out of bounds) read as their
  defaults, bounded so that a forged row can only keep *more* versions (``retention >=
  10``) and warn *sooner* (``cryptoperiod <= 365``). Their signed layout, verification and
  signing are the keyholder's (``vault/keyholder/settings.py``); a change goes through the
  settings' authority (``vault/authority/settings.py``), never through this module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from vault.authority.policy import DEFAULT_CHECKOUT_MINUTES as DEFAULT_CHECKOUT_MINUTES
from vault.authority.policy import MAX_CHECKOUT_MINUTES as MAX_CHECKOUT_MINUTES
from vault.authority.policy import MAX_STALE_DAYS as MAX_STALE_DAYS
from vault.authority.policy import Policy as Policy
from vault.authority.policy import policy_fields as policy_fields
from vault.authority.policy import strict_policy as strict_policy
from vault.authority.settings_requests import DEFAULT_CRYPTOPERIOD as DEFAULT_CRYPTOPERIOD
from vault.authority.settings_requests import DEFAULT_RETENTION as DEFAULT_RETENTION
from vault.authority.settings_requests import MAX_CRYPTOPERIOD as MAX_CRYPTOPERIOD
from vault.authority.settings_requests import MAX_RETENTION as MAX_RETENTION
from vault.authority.settings_requests import MIN_CRYPTOPERIOD as MIN_CRYPTOPERIOD
from vault.authority.settings_requests import MIN_RETENTION as MIN_RETENTION
from vault.authority.settings_requests import SettingsRow
from vault.crypto import signing
from vault.crypto.labels import LABEL_SIG_POLICY
from vault.keyholder import policies as keyholder_policies
from vault.keyholder import settings as keyholder_settings
from vault.keyholder.settings import Settings
from vault.service.rows import EngineerRecord, PolicyRow
from vault.storage import models as m

if TYPE_CHECKING:
    from vault.keyholder.trust import Trust
    from vault.service.core import Core


StoredPolicy = m.ClientPolicy | PolicyRow  # as read by the ORM or by the checkout's Core query


def sign_policy(key: signing.SigningKey, vault_id: bytes, row: m.ClientPolicy, admin_id: int, at: int) -> None:
    """Sign ``row`` as the admin ``admin_id`` (the caller checked they are the acting admin)."""
    row.signed_by, row.signed_at = admin_id, at
    row.signature = key.sign(LABEL_SIG_POLICY, *policy_fields(vault_id, row.client_id, row))


def stored_settings(info: m.VaultInfo) -> SettingsRow:
    """The settings of the vault's row as stored (unverified)."""
    return SettingsRow(
        info.retention_versions,
        info.cryptoperiod_days,
        info.settings_signed_by,
        info.settings_signed_at,
        info.settings_signature,
    )


def sign_settings(key: signing.SigningKey, info: m.VaultInfo, admin_id: int, at: int) -> None:
    """Re-sign the row's settings as stored, as ``admin_id`` (an admin's removal adopts what the
    departing admin signed, in its own unit of work); the layout is the keyholder's."""
    row = keyholder_settings.signed_settings(
        key.sign, info.vault_id, info.retention_versions, info.cryptoperiod_days, admin_id, at
    )
    info.settings_signed_by, info.settings_signed_at, info.settings_signature = admin_id, at, row.signature


class PolicyCheck:
    """Verified checkout policies and the signed vault settings."""

    def __init__(self, core: Core, trust: Trust) -> None:
        self.core = core
        self.trust = trust

    def _signer(self, s: Session, signer_id: int | None, known: tuple[EngineerRecord | None, ...]) -> EngineerRecord:
        """The signer's row (one the caller read already, else looked up), checked as an active admin."""
        for row in known:
            if row is not None and row.id == signer_id:
                return self.trust.check_admin(s, row)
        return self.trust.verified_admin(s, signer_id or 0)

    def verified_policy(
        self, s: Session, client_id: int, row: StoredPolicy | None, known: tuple[EngineerRecord | None, ...] = ()
    ) -> Policy:
        """The policy that applies to ``client_id`` given its stored ``row`` (ORM or plain)
        (``keyholder/policies.verified_policy``, the signer checked by the Vault's trust)."""
        return keyholder_policies.verified_policy(
            self.core.vid(s), client_id, row, lambda signer_id: self._signer(s, signer_id, known)
        )

    def settings(self, s: Session) -> Settings:
        """The vault settings as they apply, verified in the keyholder (``keyholder/settings.py``)."""
        return keyholder_settings.verified_settings(
            self.core.vid(s), stored_settings(self.core.info(s)), lambda signer_id: self._signer(s, signer_id, ())
        )

    def settings_signed(self, s: Session) -> bool:
        return self.settings(s).signed

    def retention(self, s: Session) -> int:
        """Versions kept per secret: bounded; at least the default unless an admin signed it."""
        return self.settings(s).retention_versions

    def cryptoperiod(self, s: Session) -> int:
        """Days before a key is reported old: bounded; at most the default unless an admin signed it."""
        return self.settings(s).cryptoperiod_days

    def policy(self, s: Session, client_id: int) -> Policy:
        return self.verified_policy(s, client_id, s.get(m.ClientPolicy, client_id))
