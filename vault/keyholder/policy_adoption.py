"""An admin's removal adopts the policies and settings the departing admin signed, where the
acting admin's keys are: verify each record as stored, re-sign only what verifies.

``DepartingAdoption.adopt`` sends an ``AdoptDepartingRequest`` naming the departing engineer
and lends the authority a seal for that one request, inside the removal's unit of work. The
seal checks its own row (this vault, the organisation key its pin leads to, certified,
active, an admin, this session's keys) and that the draft is of the engineer asked for;
then each policy: the departing engineer's row as its signer, certified and an active
admin (they still are: the removal disables them after the adoption), the signature over
the stored values verified, the values within bounds (``verified_policy``); the settings
likewise. Only those are re-signed by this admin (docs/format.md: the policy and settings
signatures); a record that does not verify is left as stored, and so reads as the strict
policy (or the default settings) once its signer is gone: a DBA's planted policy is never
adopted.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any, Protocol

from vault.authority.policy import policy_fields
from vault.authority.policy_adoption import (
    AdoptDepartingRequest,
    Adopted,
    DepartingDraft,
)
from vault.authority.requests import Caller
from vault.authority.settings_requests import SettingsRow, settings_fields
from vault.crypto import signing
from vault.crypto.labels import LABEL_SIG_POLICY, LABEL_SIG_SETTINGS
from vault.errors import UntrustedRecord
from vault.keyholder.policies import SigningKeys, verified_caller, verified_policy
from vault.keyholder.responses import ResponseChecks


class AdoptionTransport(Protocol):
    def adopt(self, request: AdoptDepartingRequest, seal: Any, unit: Any) -> int: ...


class _Seal:
    """The keyholder's hands for one adoption, and for nothing after it."""

    def __init__(self, sign: Callable[[DepartingDraft], Adopted]) -> None:
        self._sign: Callable[[DepartingDraft], Adopted] | None = sign

    def __repr__(self) -> str:
        return "AdoptionSeal(<redacted>)"

    def adopt(self, draft: DepartingDraft) -> Adopted:
        if self._sign is None or not isinstance(draft, DepartingDraft):
            raise UntrustedRecord("this seal adopts nothing")
        return self._sign(draft)

    def close(self) -> None:
        self._sign = None


class DepartingAdoption:
    """Re-signs, as the admin whose keys ``keys`` holds, what a departing admin signed."""

    def __init__(self, transport: AdoptionTransport, keys: SigningKeys, clock: Callable[[], dt.datetime]) -> None:
        self.transport, self.keys, self.clock = transport, keys, clock

    def __repr__(self) -> str:
        return "DepartingAdoption(<redacted>)"

    def adopt(self, engineer_id: int, unit: Any) -> int:
        """Adopt inside the removal's unit of work ``unit``; the number of records adopted."""
        me = self.keys.session()
        request = AdoptDepartingRequest(Caller(me.engineer_id, me.key_generation), engineer_id, me.org_signing_public)
        made: list[Adopted] = []

        def sign(draft: DepartingDraft) -> Adopted:
            if made:
                raise UntrustedRecord("the authority asked for a second adoption in one request")
            made.append(self.sign_draft(engineer_id, draft))
            return made[0]

        seal = _Seal(sign)
        try:
            count = self.transport.adopt(request, seal, unit)
        finally:
            seal.close()
        if not made or count != len(made[0].policies) + (made[0].settings is not None):
            raise UntrustedRecord("the authority's answer is not the adoption this keyholder signed")
        return count

    def sign_draft(self, engineer_id: int, draft: DepartingDraft) -> Adopted:
        """The draft verified, then what verifies re-signed by this admin (also a re-key's adoption through
        the team server: ``keyholder/adoption.py``)."""
        answer = (draft.vault_id, draft.org_signing_public, draft.org_chain, draft.me)
        checks = verified_caller(self.keys.session(), self.keys.sealing_public(), self.clock(), answer, admin=True)
        departing = draft.departing
        if departing.id != engineer_id or departing.id == draft.me.id:
            raise UntrustedRecord("the authority showed the records of another engineer than the one removed")
        at = int(self.clock().timestamp())
        policies = []
        seen: set[int] = set()
        for p in draft.policies:
            if p.client_id in seen or p.stored is None or p.stored.signed_by != departing.id:
                raise UntrustedRecord("the authority showed a policy the departing engineer did not sign")
            seen.add(p.client_id)
            if not verified_policy(draft.vault_id, p.client_id, p.stored, lambda i: checks.admin(departing, i)).signed:
                continue  # planted or out of bounds: never adopted
            new = p.stored._replace(signed_by=draft.me.id, signed_at=at)
            fields = policy_fields(draft.vault_id, p.client_id, new)
            policies.append((p.client_id, at, self.keys.sign(LABEL_SIG_POLICY, *fields)))
        settings = None
        if draft.settings is not None and self._settings_verify(checks, draft, draft.settings):
            new_settings = SettingsRow(
                draft.settings.retention_versions, draft.settings.cryptoperiod_days, draft.me.id, at, None
            )
            fields = settings_fields(draft.vault_id, new_settings)
            settings = (at, self.keys.sign(LABEL_SIG_SETTINGS, *fields))
        return Adopted(tuple(policies), settings)

    @staticmethod
    def _settings_verify(checks: ResponseChecks, draft: DepartingDraft, row: SettingsRow) -> bool:
        if row.signature is None or row.signed_by != draft.departing.id:
            return False
        try:
            admin = checks.admin(draft.departing, row.signed_by)
            assert admin.signing_public is not None
            fields = settings_fields(draft.vault_id, row)
            signing.verify(admin.signing_public, row.signature, LABEL_SIG_SETTINGS, *fields, what="the vault settings")
        except UntrustedRecord:
            return False
        return True
