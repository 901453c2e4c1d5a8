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
* settings that fail verification read as their defaults, bounded so that a forged row
  can only keep *more* versions (``retention >= 10``) and warn *sooner*
  (``cryptoperiod <= 365``); signed or not, both are clamped to their ranges where used.
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
from vault.crypto import signing
from vault.crypto.labels import LABEL_SIG_POLICY, LABEL_SIG_SETTINGS
from vault.errors import (
    UntrustedRecord,
)
from vault.keyholder import policies as keyholder_policies
from vault.service.rows import EngineerRecord, PolicyRow
from vault.storage import models as m

if TYPE_CHECKING:
    from vault.keyholder.trust import Trust
    from vault.service.core import Core


DEFAULT_RETENTION, MIN_RETENTION, MAX_RETENTION = 10, 1, 1000
DEFAULT_CRYPTOPERIOD, MIN_CRYPTOPERIOD, MAX_CRYPTOPERIOD = 365, 1, 3650


StoredPolicy = m.ClientPolicy | PolicyRow  # as read by the ORM or by the checkout's Core query


def sign_policy(key: signing.SigningKey, vault_id: bytes, row: m.ClientPolicy, admin_id: int, at: int) -> None:
    """Sign ``row`` as the admin ``admin_id`` (the caller checked they are the acting admin)."""
    row.signed_by, row.signed_at = admin_id, at
    row.signature = key.sign(LABEL_SIG_POLICY, *policy_fields(vault_id, row.client_id, row))


def settings_fields(vault_id: bytes, info: m.VaultInfo) -> tuple[signing.ContextItem, ...]:
    return (
        vault_id,
        int(info.retention_versions),
        int(info.cryptoperiod_days),
        int(info.settings_signed_by or 0),
        int(info.settings_signed_at or 0),
    )


def sign_settings(key: signing.SigningKey, info: m.VaultInfo, admin_id: int, at: int) -> None:
    info.settings_signed_by, info.settings_signed_at = admin_id, at
    info.settings_signature = key.sign(LABEL_SIG_SETTINGS, *settings_fields(info.vault_id, info))


def _clamp(value: object, low: int, high: int, default: int) -> int:
    return min(max(value, low), high) if isinstance(value, int) and not isinstance(value, bool) else default


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

    def settings_signed(self, s: Session) -> bool:
        info = self.core.info(s)
        if info.settings_signature is None:
            return False
        try:
            admin = self.trust.verified_admin(s, info.settings_signed_by or 0)
            assert admin.signing_public is not None
            signing.verify(
                admin.signing_public,
                info.settings_signature,
                LABEL_SIG_SETTINGS,
                *settings_fields(self.core.vid(s), info),
                what="the vault settings",
            )
        except UntrustedRecord:
            return False
        return True

    def retention(self, s: Session) -> int:
        """Versions kept per secret: bounded; at least the default unless an admin signed it."""
        stored = _clamp(self.core.info(s).retention_versions, MIN_RETENTION, MAX_RETENTION, DEFAULT_RETENTION)
        return stored if self.settings_signed(s) else max(stored, DEFAULT_RETENTION)

    def cryptoperiod(self, s: Session) -> int:
        """Days before a key is reported old: bounded; at most the default unless an admin signed it."""
        stored = _clamp(self.core.info(s).cryptoperiod_days, MIN_CRYPTOPERIOD, MAX_CRYPTOPERIOD, DEFAULT_CRYPTOPERIOD)
        return stored if self.settings_signed(s) else min(stored, DEFAULT_CRYPTOPERIOD)

    def settings_warnings(self, s: Session) -> list[str]:
        """For ``status``: settings an admin set that no longer verify (so do not apply)."""
        info = self.core.info(s)
        if self.settings_signed(s):
            return []
        stored = (info.retention_versions, info.cryptoperiod_days)
        if info.settings_signature is None and stored == (DEFAULT_RETENTION, DEFAULT_CRYPTOPERIOD):
            return []  # never set: the defaults apply, as they always did
        return [
            f"the vault settings do not verify, so {self.retention(s)} versions are kept per secret and keys are "
            f"reported old after {self.cryptoperiod(s)} days: set them again with `credvault settings`"
        ]

    def policy(self, s: Session, client_id: int) -> Policy:
        return self.verified_policy(s, client_id, s.get(m.ClientPolicy, client_id))
