"""An admin's removal adopts the policies and settings the departing admin signed, where the
database is: the rows shown as stored, the keyholder's new signatures stored as given.

Runs only inside the removal's unit of work (``s``): the caller authorised first, as an
admin (``CallerGate``), before the departing engineer's row or any policy is read; then the
departing engineer's row, every stored client policy they signed (with their row as its
signer) and the vault settings if they signed them go to the keyholder as a
``DepartingDraft``. What comes back (``Adopted``) is stored only for the rows shown, signed
by the caller: each signature is checked here under the caller's certified public key (a
public-key check; the keyholder decided which records verify and signed only those). A
record the keyholder leaves out keeps its old signature (it then no longer verifies once
its signer is disabled: the strict policy applies), as before the split. No event: the
removal's own ``engineer-remove`` event records the removal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from vault import validation
from vault.authority.policies import engineer_row
from vault.authority.policies_caller import CallerChecks, CallerGate, checked_caller, checked_pin, org_chain
from vault.authority.policy import policy_fields
from vault.authority.policy_requests import ClientPolicy
from vault.authority.requests import Caller, OrgKeyRow
from vault.authority.settings_requests import SettingsRow, settings_fields
from vault.crypto import signing
from vault.crypto.labels import LABEL_SIG_POLICY, LABEL_SIG_SETTINGS
from vault.errors import InvalidInput, NotFound, UntrustedRecord
from vault.storage import models as m
from vault.storage.rows import EngineerRow, PolicyRow

ADOPT_DEPARTING = "policy-adopt-departing"
SIGNATURE_BYTES = 64


@dataclass(frozen=True)
class AdoptDepartingRequest:
    """Adopt what engineer ``engineer_id`` signed (an admin's removal, in its unit of work)."""

    caller: Caller
    engineer_id: int
    org_pin: bytes
    action: str = ADOPT_DEPARTING


@dataclass(frozen=True, repr=False)
class DepartingDraft:
    """What the keyholder is shown: its own row, the departing engineer, what they signed."""

    vault_id: bytes
    org_signing_public: bytes
    org_chain: tuple[OrgKeyRow, ...]
    me: EngineerRow
    departing: EngineerRow
    policies: tuple[ClientPolicy, ...]
    settings: SettingsRow | None


@dataclass(frozen=True, repr=False)
class Adopted:
    """The keyholder's new signatures: (client id, signed at, signature) per policy it adopts,
    and (signed at, signature) of the settings if it adopts them."""

    policies: tuple[tuple[int, int, bytes], ...]
    settings: tuple[int, bytes] | None


class AdoptionSeal(Protocol):
    def adopt(self, draft: DepartingDraft) -> Adopted:
        """Verify the draft, then sign what verifies (raise to refuse: the removal writes nothing)."""


def _policy_row(p: m.ClientPolicy) -> PolicyRow:
    return PolicyRow(
        p.reason_required,
        p.exclusive,
        p.rotate_after_checkout,
        p.checkout_minutes,
        p.stale_days,
        p.signed_by,
        p.signed_at,
        p.signature,
    )


def _signed(what: str, at: object, signature: object) -> tuple[int, bytes]:
    when = validation.number(f"{what} signing time", at, 1, 2**40)
    if not isinstance(signature, bytes) or len(signature) != SIGNATURE_BYTES:
        raise UntrustedRecord(f"the keyholder's {what} signature is not a signature")
    return when, signature


class DepartingPolicyAuthority:
    """``adopt``: re-sign, as the caller, the policies and settings a departing admin signed."""

    def __init__(self, checks: CallerChecks) -> None:
        self.gate = CallerGate(checks)

    def __repr__(self) -> str:
        return "DepartingPolicyAuthority()"

    def adopt(self, request: AdoptDepartingRequest, seal: AdoptionSeal, *, s: Session) -> int:
        """Store the keyholder's adoption; the number of records adopted."""
        if not isinstance(request, AdoptDepartingRequest) or request.action != ADOPT_DEPARTING:
            raise InvalidInput("not an adoption request")
        caller, pin = checked_caller(request.caller), checked_pin(request.org_pin)
        validation.number("engineer id", request.engineer_id, 1)
        s.flush()
        read = self.gate.authorise(s, caller, admin=True)
        me = read.me
        departing = s.get(m.Engineer, request.engineer_id)
        if departing is None:
            raise NotFound("no such engineer")
        if departing.id == me.id:
            raise InvalidInput("an admin does not adopt their own records")
        draft = departing_draft(s, read.vault_id, read.org_signing_public, org_chain(s, pin, read.org_signing_public),
                                me, departing)  # fmt: skip
        adopted = seal.adopt(draft)
        return store_adopted(s, draft, adopted)


def departing_draft(
    s: Session, vault_id: bytes, org_public: bytes, chain: tuple[OrgKeyRow, ...], me: EngineerRow, departing: m.Engineer
) -> DepartingDraft:
    """The policies and settings ``departing`` signed, as the keyholder is shown them (also the draft of
    an adoption through the team server: ``adoption_drafts.py``)."""
    stored = s.scalars(
        select(m.ClientPolicy).where(m.ClientPolicy.signed_by == departing.id).order_by(m.ClientPolicy.client_id)
    ).all()
    clients = select(m.Client.id, m.Client.slug_blob).where(m.Client.id.in_([p.client_id for p in stored]))
    slugs = {int(client_id): bytes(blob) for client_id, blob in s.execute(clients)}
    row = engineer_row(departing)
    info = s.get(m.VaultInfo, 1)
    assert info is not None
    settings = None
    if info.settings_signed_by == departing.id:
        settings = SettingsRow(
            info.retention_versions,
            info.cryptoperiod_days,
            info.settings_signed_by,
            info.settings_signed_at,
            info.settings_signature,
        )
    return DepartingDraft(
        vault_id,
        org_public,
        chain,
        me,
        row,
        tuple(ClientPolicy(p.client_id, slugs.get(p.client_id, b""), _policy_row(p), row) for p in stored),
        settings,
    )


def store_adopted(s: Session, draft: DepartingDraft, adopted: object) -> int:
    """Store the keyholder's new signatures for the rows ``draft`` showed, each checked under the
    caller's certified key (``UntrustedRecord`` otherwise); the number of records adopted."""
    if not isinstance(adopted, Adopted):
        raise UntrustedRecord("the keyholder's answer is not an adoption")
    me, vault_id = draft.me, draft.vault_id
    assert me.signing_public is not None  # certified: checked by the caller's gate
    stored = s.scalars(select(m.ClientPolicy).where(m.ClientPolicy.signed_by == draft.departing.id)).all()
    by_client = {p.client_id: p for p in stored if p.client_id in {d.client_id for d in draft.policies}}
    seen: set[int] = set()
    for client_id, at, signature in adopted.policies:
        policy = by_client.get(client_id)
        if policy is None or client_id in seen:
            raise UntrustedRecord("the keyholder adopted a policy it was not shown")
        seen.add(client_id)
        when, sig = _signed("policy", at, signature)
        new = _policy_row(policy)._replace(signed_by=me.id, signed_at=when)
        signing.verify(me.signing_public, sig, LABEL_SIG_POLICY, *policy_fields(vault_id, client_id, new),
                       what="a policy")  # fmt: skip
        policy.signed_by, policy.signed_at, policy.signature = me.id, when, sig
    if adopted.settings is not None:
        settings, info = draft.settings, s.get(m.VaultInfo, 1)
        if settings is None or info is None:
            raise UntrustedRecord("the keyholder adopted settings it was not shown")
        when, sig = _signed("settings", *adopted.settings)
        new_settings = SettingsRow(settings.retention_versions, settings.cryptoperiod_days, me.id, when, None)
        fields = settings_fields(vault_id, new_settings)
        signing.verify(me.signing_public, sig, LABEL_SIG_SETTINGS, *fields, what="the vault settings")
        info.settings_signed_by, info.settings_signed_at, info.settings_signature = me.id, when, sig
    return len(seen) + (adopted.settings is not None)
